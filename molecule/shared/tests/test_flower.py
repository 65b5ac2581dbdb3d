"""Flower behind nginx, seen from outside: auth, TLS, redirect, every worker, routing, history."""

import time

import pytest
from conftest import expected_workers, hosts

from celerykit.verify import checks

testinfra_hosts = ["ansible://flower"]


def test_flower_listens_on_loopback_only(host):
    sockets = [s for s in host.socket.get_listening_sockets() if s.endswith(":5555")]
    assert sockets == ["tcp://127.0.0.1:5555"]


@pytest.mark.parametrize(
    "check",
    [
        checks.https_redirect,
        checks.auth_required,
        checks.auth_accepted,
        checks.tls_versions,
        checks.hsts,
        checks.metrics_hidden,
    ],
    ids=lambda check: check.__name__,
)
def test_proxy_keeps_its_promise(proxy, check):
    result = check(proxy)
    assert result, result.detail


def _workers_seen(proxy, expected: dict, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        listing = proxy.request("GET", proxy.flower("api/workers?refresh=1")).json()
        seen = {
            name: tuple(sorted(q["name"] for q in info.get("active_queues") or [])) for name, info in listing.items()
        }
        if seen == expected or time.monotonic() > deadline:
            return seen
        time.sleep(2)


def test_flower_sees_every_worker_of_every_host_on_its_queues(proxy):
    expected = {name: tuple(sorted(queues)) for name, queues in expected_workers().items()}
    assert _workers_seen(proxy, expected) == expected


def test_a_task_sent_to_each_queue_runs_on_the_pool_and_host_that_own_it(proxy):
    owners = {queue: name for name, queues in expected_workers().items() for queue in queues}
    sent = {queue: checks.send_probe(proxy, queue) for queue in owners}
    ran = {queue: checks.wait_for_task(proxy, task_id) for queue, task_id in sent.items()}
    assert {q: (i["state"], i["worker"]) for q, i in ran.items()} == {q: ("SUCCESS", w) for q, w in owners.items()}


def test_a_flower_restart_keeps_the_task_history(host, proxy):
    task_id = checks.send_probe(proxy, next(iter(expected_workers().values()))[0])
    assert checks.wait_for_task(proxy, task_id)["state"] == "SUCCESS"
    host.check_output("systemctl restart flower")
    deadline = time.monotonic() + 60
    while not checks.auth_accepted(proxy) and time.monotonic() < deadline:
        time.sleep(1)
    info = proxy.request("GET", proxy.flower(f"api/task/info/{task_id}"))
    assert info.status == 200
    assert info.json()["state"] == "SUCCESS"


def test_port_5555_is_closed_on_every_route_but_loopback(host):
    """Flower's host address refuses 5555, asked from every host of the inventory (itself included)."""
    address = host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]
    probe = f"timeout 3 bash -c '</dev/tcp/{address}/5555'"
    reached = [node.backend.host for node in hosts("all") if node.run(probe).rc == 0]
    assert not reached, f"reached Flower on {address}:5555 from {reached}"
