"""Redis behind Sentinels, on many hosts: the primary's Redis killed while counted tasks flow.

The scenario's inventory has a primary (group redis), two replicas (redis_replicas) and a Sentinel
beside each Redis (redis_sentinels); the Celery services ask the Sentinels for the primary, over
TLS. The drill SIGKILLs the primary's redis-server and keeps it down (its unit told not to restart
it, as if its host were gone) until a replica is promoted and tasks run again; then it comes back,
and the Sentinels make it a replica of the new primary. No manual step in between.

Counted (the stream and the count are the day-2 drills', celerykit_testing.operations): every task
Redis acknowledged, by id, and whether it ran, ran twice, or never ran. A task acknowledged more than
`SAFE_AFTER` seconds before the kill must not be lost: replication is asynchronous, but a replica in
sync holds a write within milliseconds of its acknowledgement. What the kill took is reported with
the replication lag measured just before it.

This module runs after the day-2 operations: the primary stays where the failover moved it. Its last test
runs the redis role's replication step again there, as every later converge does.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from pathlib import Path

from celerykit_testing import drills, operations
from conftest import ANSIBLES_OWN_STRATEGY, all_secrets, hosts, playbook, secret_file

from celerykit import defaults

SAFE_AFTER = 1.0  # seconds: a task acknowledged longer before the kill must survive it
# Every task the new primary holds finishes within seconds once the stream stops; the count waits
# this long for the others (what the kill took) before saying where they are.
DRAIN = 30.0
PROMOTION_TIMEOUT = 90.0
DRILL_UNIT = "/run/systemd/system/redis-server.service.d/zz-celerykit-drill.conf"


def sentinel(host, *command: str) -> list[str]:
    """A Sentinel's answer (redis-cli's lines), over TLS with the Sentinels' password."""
    cli = ["redis-cli", "--no-auth-warning", "--tls", "--cacert", "/etc/redis/tls/ca.crt"]
    cli += ["-h", "127.0.0.1", "-p", str(defaults.REDIS_SENTINEL_PORT), *command]
    password = secret_file(host, "celerykit_redis_sentinel_password")
    result = host.run(f'REDISCLI_AUTH="$(cat {password})" {shlex.join(cli)}')
    assert result.rc == 0, result.stderr
    return result.stdout.split()


def primary(host) -> str:
    return sentinel(host, "SENTINEL", "get-master-addr-by-name", defaults.REDIS_SENTINEL_MASTER)[0]


def replication(host) -> dict[str, str]:
    """INFO replication of the Redis on `host`, as the replication user."""
    password = secret_file(host, "celerykit_redis_replication_password")
    cli = ["redis-cli", "--no-auth-warning", "--tls", "--cacert", "/etc/redis/tls/ca.crt", "-h", "127.0.0.1"]
    cli += ["--user", defaults.REDIS_REPLICATION_USER, "INFO", "replication"]
    out = host.check_output(f'REDISCLI_AUTH="$(cat {password})" {shlex.join(cli)}')
    return dict(line.split(":", 1) for line in out.splitlines() if ":" in line)


def by_name(name: str):
    (host,) = [h for h in hosts("redis") + hosts("redis_replicas") if h.backend.host == name]
    return host


# Where a task that did not finish is in the new primary: waiting in a queue, reserved by a worker
# that lost it at the kill (kombu's `unacked` hash: delivered again after the visibility timeout), or
# nowhere (the kill took it before a replica had it).
WHERE = """
import json, sys
from celerykit.app import app
client, wanted, found = app.backend.client, set(sys.argv[1].split(",")), {}
def task_id(raw):
    message = json.loads(raw)
    message = message[0] if isinstance(message, list) else message
    return (message.get("headers") or {}).get("id") or (message.get("properties") or {}).get("correlation_id")
for raw in client.hvals("unacked"):
    if task_id(raw) in wanted:
        found[task_id(raw)] = "reserved (unacked)"
for key in client.scan_iter(count=1000):
    if client.type(key) == b"list":
        for raw in client.lrange(key, 0, -1):
            try:
                if task_id(raw) in wanted:
                    found[task_id(raw)] = "queued in " + key.decode(errors="replace")
            except (ValueError, AttributeError):
                continue
print(json.dumps({t: found.get(t, "nowhere") for t in wanted}))
"""


def where(deployment, task_ids: list[str]) -> dict[str, str]:
    if not task_ids:
        return {}
    return json.loads(deployment.run_python(WHERE, ",".join(task_ids), timeout=120).strip().splitlines()[-1])


def wait_for(what: str, check, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.5)
    return time.time()


def test_every_sentinel_watches_the_primary_and_both_replicas_follow_it():
    (first,) = hosts("redis")
    for host in hosts("redis_sentinels"):
        assert primary(host) == first.backend.host, host
        replicas = sentinel(host, "SENTINEL", "master", defaults.REDIS_SENTINEL_MASTER)
        fields = dict(zip(replicas[::2], replicas[1::2], strict=True))
        assert fields["num-slaves"] == "2" and fields["num-other-sentinels"] == "2", fields
    info = replication(first)
    assert info["role"] == "master" and info["connected_slaves"] == "2", info


def test_redis_never_rewrites_the_file_ansible_wrote():
    """Sentinel's CONFIG REWRITE after a REPLICAOF fails: the file stays Ansible's (no restart on the
    next converge after a failover)."""
    (replica, *_) = hosts("redis_replicas")
    password = secret_file(replica, "celerykit_redis_replication_password")
    cli = ["redis-cli", "--no-auth-warning", "--tls", "--cacert", "/etc/redis/tls/ca.crt", "-h", "127.0.0.1"]
    cli += ["--user", defaults.REDIS_REPLICATION_USER, "CONFIG", "REWRITE"]
    before = replica.file("/etc/redis/redis.conf").md5sum
    out = replica.run(f'REDISCLI_AUTH="$(cat {password})" {shlex.join(cli)}').stdout
    assert "Read-only file system" in out or "ERR" in out, out
    assert replica.file("/etc/redis/redis.conf").md5sum == before


def test_a_client_without_the_sentinels_password_is_refused():
    (host, *_) = hosts("redis_sentinels")
    cli = ["redis-cli", "--tls", "--cacert", "/etc/redis/tls/ca.crt", "-h", "127.0.0.1"]
    cli += ["-p", str(defaults.REDIS_SENTINEL_PORT), "SENTINEL", "masters"]
    assert "NOAUTH" in host.run(shlex.join(cli)).stdout


def exporter_redis_up(host) -> bool:
    url = f"http://127.0.0.1:{defaults.EXPORTER_PORT}/metrics"
    script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    metrics = host.run(f"python3 -c {shlex.quote(script)}").stdout
    return "celerykit_redis_up 1.0" in metrics


def test_the_primary_killed_a_replica_takes_over_and_nothing_acknowledged_before_is_lost(deployment, flower_host):
    sentinels = hosts("redis_sentinels")
    old = primary(sentinels[0])
    old_host = by_name(old)
    moments: dict[str, float] = {}

    def kill_the_primary() -> dict:
        # As if the host were gone: its Redis stays down until the drill starts it again.
        old_host.check_output(f"mkdir -p {DRILL_UNIT.rsplit('/', 1)[0]}")
        old_host.check_output(f"printf '[Service]\\nRestart=no\\n' > {DRILL_UNIT} && systemctl daemon-reload")
        before = replication(old_host)
        offset = int(before["master_repl_offset"])
        lag = {
            value.split(",")[0].split("=")[1]: offset - int(value.split("offset=")[1].split(",")[0])
            for key, value in before.items()
            if key.startswith("slave") and "offset=" in value
        }
        moments["killed"] = time.time()
        old_host.check_output("systemctl kill --signal=SIGKILL redis-server.service")
        moments["promoted"] = wait_for("a replica promoted", lambda: primary(sentinels[1]) != old, PROMOTION_TIMEOUT)
        time.sleep(15)  # tasks flow on the new primary while the old one is still away
        old_host.check_output(f"rm -f {DRILL_UNIT} && systemctl daemon-reload && systemctl start redis-server")
        moments["back"] = time.time()
        wait_for(
            "the old primary a replica again",
            lambda: replication(old_host).get("master_link_status") == "up",
            PROMOTION_TIMEOUT,
        )
        moments["rejoined"] = time.time()
        # Bytes of the stream each replica had not yet confirmed (replicas confirm once a second: an
        # upper bound on what it lacked).
        return {"unconfirmed_bytes_at_kill": lag}

    result, tally, figures = operations.under_stream(
        deployment, kill_the_primary, name="sentinel-failover-stream", drain=DRAIN
    )
    new = primary(sentinels[0])
    killed = moments["killed"]
    # Flowing again: the first start of a task the new primary took (acknowledged a second after the
    # kill: the old primary took none after its process died, a moment after `killed`).
    started_after = sorted(
        tally.results[sent.task_id]["started"]
        for sent in figures["sent_tasks"]
        if sent.acknowledged > killed + 1.0
        and isinstance((tally.results.get(sent.task_id) or {}).get("started"), float)
    )
    places = where(deployment, [s.task_id for s in tally.lost])
    lost_early = [s.task_id for s in tally.lost if s.acknowledged < killed - SAFE_AFTER]
    report = drills.record(
        "sentinel-failover",
        old_primary=old,
        new_primary=new,
        failover_seconds=round(moments["promoted"] - killed, 1),
        flowing_again_seconds=round(started_after[0] - killed, 1) if started_after else None,
        rejoined_seconds=round(moments["rejoined"] - moments["back"], 1),
        sent=figures["sent"],
        refused=figures["refused"],
        unfinished_count=len(tally.lost),
        unfinished=[
            {"acknowledged_after_kill": round(s.acknowledged - killed, 3), "where": places.get(s.task_id)}
            for s in tally.lost
        ],
        executed_twice=len(tally.executed_twice),
        redelivered=figures["redelivered"],
        failed=len(tally.failed),
        longest_gap_seconds=figures["longest_gap_seconds"],
        **result,
    )
    assert new != old and new in [h.backend.host for h in hosts("redis_replicas")], report
    assert lost_early == [], report  # nothing acknowledged more than SAFE_AFTER before the kill
    assert started_after, report  # tasks sent after the kill ran: the services followed the Sentinels
    assert tally.failed == {} and tally.revoked == [], report
    # Every service followed without a manual step: Beat keeps sending, the exporter reads the new
    # primary, and Flower answered the whole count (it asks the result backend through the Sentinels).
    beat = deployment.run_python(
        "from celerykit.app import app; print(app.backend.client.hget('celerykit:beat', 'last_sent').decode())",
        timeout=60,
    )
    wait_for("the exporter on the new primary", lambda: exporter_redis_up(flower_host), 60)
    assert float(beat.strip()) > moments["promoted"], report


# The redis role's replication step alone, on every Redis host (its own tasks file, as site.yml runs it).
REPLICATION_PLAY = """
- name: Replicate the primary the Sentinels name
  hosts: redis:redis_replicas
  gather_facts: false
  tasks:
    - name: The redis role's replication step
      ansible.builtin.include_role:
        name: celerykit.platform.redis
        tasks_from: replication.yml
"""


def command_lines_while(action) -> tuple[object, set[str]]:
    """Run `action` while reading every process's command line on this machine (the controller's
    `docker exec` and, through the shared kernel, the processes in the hosts) every few ms."""
    seen: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
                try:
                    seen.add(cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"))
                except OSError:  # the process ended
                    continue
            time.sleep(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        return action(), seen
    finally:
        done.set()
        sampler.join()


def test_a_converge_after_the_failover_keeps_the_new_primary_and_shows_no_password_in_ps(tmp_path):
    """The replication step asks the Sentinels (it does not point every Redis back at the inventory's
    first primary), and the passwords it uses never reach a command line: Ansible writes a task's
    `environment` into the remote shell's command, so they go to redis-cli on its standard input."""
    sentinels = hosts("redis_sentinels")
    before = primary(sentinels[0])
    play = tmp_path / "replication.yml"
    play.write_text(REPLICATION_PLAY)
    result, command_lines = command_lines_while(lambda: playbook(play=play, **ANSIBLES_OWN_STRATEGY))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    assert primary(sentinels[0]) == before
    for host in hosts("redis") + hosts("redis_replicas"):
        if host.backend.host != before:
            assert replication(host)["master_host"] == before, host.backend.host
    secrets = all_secrets()

    def redacted(line: str) -> str:  # reports name the commands, never the passwords
        for secret in secrets:
            line = line.replace(secret, "<password>")
        return line

    shown = {redacted(line) for line in command_lines}
    # The sampler saw the run: Ansible's `docker exec` into each host carries the module's shell command.
    execs = [line for line in shown if " exec " in line and "/bin/sh -c" in line]
    assert len(execs) >= 3, sorted(shown)[:50]
    leaks = sorted(line for line in shown if "<password>" in line)
    assert not leaks, leaks
