"""What crosses the network to Redis: a capture on Redis's host (tcpdump, every interface) while a
worker logs in again and a task with a marked argument runs. With TLS (the multinode hosts: clients on
other hosts turn it on) it holds neither the Celery user's password nor the argument; without (one
host, loopback) it holds both, so the capture sees what it should."""

import uuid

from celerykit_testing.deployment import worker
from celerykit_testing.monitoring_drills import wait_for
from conftest import hosts, templated

from celerykit.verify import checks

testinfra_hosts = ["ansible://redis"]
CAPTURE = "/tmp/celerykit-redis.pcap"  # noqa: S108 - the test host's own


def test_redis_traffic_holds_no_password_and_no_task_argument_over_tls(host, proxy, deployment):
    over_tls = "tls-port" in host.file("/etc/redis/redis.conf").content_string
    marker = f"celerykit-marker-{uuid.uuid4().hex}"
    host.run(f"rm -f {CAPTURE}; setsid -f timeout 120 tcpdump -i any -U -s 0 -w {CAPTURE} port 6379 >/dev/null 2>&1")
    try:
        # tcpdump writes its file's header (24 bytes) once it captures: from then on nothing is missed.
        header = host.file(CAPTURE)
        wait_for("tcpdump capturing", lambda: header.exists and header.size >= 24, 30, every=0.2)
        deployment.restart_pool("high")  # new connections: the Celery user logs in again
        deployment.wait_running(worker("high"))
        body = {"args": [marker], "queue": "high_priority"}
        task = proxy.request("POST", proxy.flower("api/task/send-task/celery.accumulate"), body=body).json()["task-id"]
        assert checks.wait_for_task(proxy, task)["state"] == "SUCCESS"
    finally:
        host.run("pkill -INT tcpdump; timeout 10 sh -c 'while pgrep -x tcpdump >/dev/null; do sleep 0.1; done'")
    seen = host.file(CAPTURE).content
    password = str(templated(host, "celerykit_redis_password")).encode()
    found = {"password": password in seen, "task argument": marker.encode() in seen}
    assert len(seen) > 10_000, "the capture holds next to nothing: nothing to conclude"
    if over_tls:
        assert found == {"password": False, "task argument": False}
    else:
        assert found == {"password": True, "task argument": True}  # plain text: what TLS hides


def test_the_workers_reach_redis_over_tls_exactly_when_one_runs_elsewhere(host):
    """auto: TLS when a client host is not Redis's host (and then no plain port at all)."""
    clients = {h.backend.host for group in ("celery_workers", "celery_beat", "flower") for h in hosts(group)}
    elsewhere = bool(clients - {host.backend.host})
    assert ("tls-port" in host.file("/etc/redis/redis.conf").content_string) == elsewhere
    (worker,) = hosts("celery_workers")[:1]
    env = worker.file("/etc/celerykit/celery.env").content_string
    assert f"CELERYKIT_REDIS_TLS={'true' if elsewhere else 'false'}" in env
