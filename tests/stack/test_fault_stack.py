"""Faults that need other settings than the defaults, on a stack of their own.

- A worker's *main* process SIGKILLed: its unacknowledged tasks stay in Redis's `unacked` set
  and come back after `visibility_timeout` (kombu sweeps every 10 s for messages older than
  that). With the kit's default 7200 s they run two hours later: never lost, but late. This
  stack uses the smallest visibility timeout the kit accepts (60 s, time limits below it) to show
  the mechanism end to end in a minute.
- A broker outage longer than the retry budget (CELERYKIT_BROKER_CONNECTION_MAX_RETRIES, here 2
  instead of Celery's 100): the workers exit, the restart policy starts them again, they consume.
- Beat killed right after it sent a periodic task: with a heartbeat of 20 s, a duplicate run
  after the restart would show as two runs a few seconds apart.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import drills
import pytest
from conftest import POOLS, Compose, compose_env

from celerykit.verify import checks
from celerykit.verify.target import Target

pytestmark = pytest.mark.faults

VISIBILITY_TIMEOUT = 60
HEARTBEAT = 20
SETTINGS = {
    "CELERYKIT_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    "CELERYKIT_TIME_LIMIT": "50",
    "CELERYKIT_SOFT_TIME_LIMIT": "45",
    "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES": "2",
    "CELERYKIT_DEMO_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "CELERYKIT_LOW_CONCURRENCY": "2",
}
ALL_QUEUES = [queue for queues in POOLS.values() for queue in queues]


class FaultStack:
    def __init__(self, compose: Compose, target: Target):
        self.compose = compose
        self.target = target


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    tmp = tmp_path_factory.mktemp("fault-stack")
    compose = Compose(f"celerykit-faults-{uuid.uuid4().hex[:8]}", compose_env(tmp, **SETTINGS))
    result = compose.run("up", "--build", "--detach", "--wait", check=False)
    try:
        if result.returncode:
            logs = compose.run("logs", "--no-color", "--tail", "40", check=False).stdout
            pytest.fail(f"fault stack did not come up:\n{result.stderr[-3000:]}\n{logs[-6000:]}")
        target = Target(
            url=f"https://127.0.0.1:{compose.env['CELERYKIT_HTTPS_PORT']}",
            user="admin",
            password=(tmp / "secrets" / "flower_password").read_text().strip(),
            ca_file=str(Path(compose.env["CELERYKIT_TLS_DIR"]) / "tls.crt"),
        )
        yield FaultStack(compose, target)
    finally:
        compose.down()


def test_a_killed_worker_main_process_loses_no_task(fault_stack: FaultStack):
    """Fault 1: SIGKILL worker-low's main process while its 2 processes run long tasks (2 more
    queued). The container restarts (restart policy); the queued tasks run at once, the two that
    were running come back after the visibility timeout and run again. Nothing is lost; the two
    interrupted tasks are started twice and finished once."""
    compose = fault_stack.compose
    restarts = compose.restart_count("worker-low")
    outcome = drills.kill_drill(
        fault_stack.target,
        queue="low_priority",
        running=2,
        queued=2,
        seconds=10,
        inject=lambda: compose.kill("worker-low"),
        timeout=VISIBILITY_TIMEOUT + 120,
    )
    drills.record(
        "fault1-kill-worker-main-process",
        visibility_timeout=VISIBILITY_TIMEOUT,
        container_restarts=compose.restart_count("worker-low") - restarts,
        **outcome.summary(),
    )
    assert compose.restart_count("worker-low") == restarts + 1
    assert outcome.lost == [] and outcome.executed_twice == [], outcome.summary()
    assert len(outcome.restarted) == 2, outcome.summary()  # the two that were running
    assert outcome.seconds >= VISIBILITY_TIMEOUT  # they came back through the visibility timeout


def heartbeats(target: Target) -> list[float]:
    tasks = target.request("GET", target.flower("api/tasks?taskname=celerykit.demo.heartbeat&limit=1000")).json()
    return sorted(t["received"] for t in tasks.values() if t.get("received"))


def next_heartbeat(target: Target, after: float, timeout: float = 3 * HEARTBEAT) -> float:
    deadline = time.monotonic() + timeout
    while True:
        newer = [t for t in heartbeats(target) if t > after]
        if newer:
            return min(newer)
        assert time.monotonic() < deadline, f"no heartbeat within {timeout}s"
        time.sleep(0.2)


def beat_processes(compose: Compose) -> int:
    out = compose.exec("beat", "python3", "-c", COUNT_BEATS).stdout
    return int(out.strip())


COUNT_BEATS = """
import os
count = 0
for pid in [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]:  # 1: the container init
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\\0")
    except FileNotFoundError:
        continue
    count += b"celery" in b" ".join(args) and b"beat" in args
print(count)
"""


@pytest.mark.parametrize("how", ["graceful restart", "sigkill"])
def test_beat_restarted_or_killed_runs_each_periodic_task_once(fault_stack: FaultStack, how: str):
    """Fault 5: right after Beat sent the heartbeat, restart it (TERM) or SIGKILL its process.
    The next heartbeat comes a full interval later (no second run for the same tick), and one
    Beat container with one scheduler process runs afterwards."""
    compose, target = fault_stack.compose, fault_stack.target
    before = next_heartbeat(target, after=time.time())
    if how == "sigkill":
        restarts = compose.restart_count("beat")
        compose.kill("beat")
    else:
        compose.run("restart", "beat")
    after = next_heartbeat(target, after=before)
    gap = after - before
    schedulers = beat_processes(compose)
    containers = len(compose.run("ps", "--quiet", "beat").stdout.split())
    drills.record(
        f"fault5-beat-{how.replace(' ', '-')}", interval=HEARTBEAT, gap_s=round(gap, 1), schedulers=schedulers
    )
    assert gap > 0.75 * HEARTBEAT, f"heartbeat ran twice: {gap:.1f}s apart"
    assert (containers, schedulers) == (1, 1)
    if how == "sigkill":
        assert compose.restart_count("beat") == restarts + 1


def test_workers_restart_after_a_broker_outage_longer_than_their_retry_budget(fault_stack: FaultStack):
    """Fault 6: Redis stopped until every worker gave up reconnecting (2 retries) and exited;
    the restart policy starts them again; once Redis is back each pool consumes within 30 s."""
    compose = fault_stack.compose
    workers = [f"worker-{pool}" for pool in POOLS]
    restarts = {w: compose.restart_count(w) for w in workers}
    stopped = time.monotonic()
    compose.run("stop", "redis")
    try:
        deadline = time.monotonic() + 180
        while any(compose.restart_count(w) == restarts[w] for w in workers):
            assert time.monotonic() < deadline, "workers kept waiting for the broker beyond their retry budget"
            time.sleep(1)
        gave_up = time.monotonic() - stopped
    finally:
        compose.run("start", "redis")
    restarted_at = time.time()
    resumed = drills.resume_seconds(fault_stack.target, ALL_QUEUES, since=restarted_at, timeout=180)
    task_ids = drills.send_tallies(fault_stack.target, 10, "medium_priority")
    outcome = drills.settle(fault_stack.target, task_ids, timeout=60)
    counts = {w: compose.restart_count(w) - restarts[w] for w in workers}
    drills.record(
        "fault6-broker-outage-beyond-retry-budget",
        max_retries=2,
        all_workers_exited_after_s=round(gave_up, 1),
        container_restarts=counts,
        resume_seconds=resumed,
        **outcome.summary(),
    )
    assert max(resumed.values()) <= 30, resumed
    assert outcome.lost == [], outcome.summary()
    result = checks.workers(fault_stack.target, POOLS)
    assert result, result.detail
