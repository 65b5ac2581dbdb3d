"""Faults injected into the running stack (the session's), each counted task by task.

Every test leaves the stack as it found it: the killed or restarted service is healthy again.
Faults that need other settings (a short visibility timeout, a small retry budget) run in
test_fault_stack.py on a stack of their own. Figures go to the drill report (see conftest).
"""

from __future__ import annotations

import time

import drills
import pytest
from conftest import POOLS, Stack

from celerykit.verify import checks

pytestmark = pytest.mark.faults

ALL_QUEUES = [queue for queues in POOLS.values() for queue in queues]


def worker_name(stack: Stack, pool: str, timeout: float = 60) -> str:
    """The pool's worker name as Flower knows it (asking the workers, not Flower's cache)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = stack.target.request("GET", stack.target.flower("api/workers?refresh=1")).json()
        names = [w for w in workers if w.startswith(f"{pool}@")]
        if len(names) == 1:
            return names[0]
        assert time.monotonic() < deadline, f"pool {pool}: workers {names}"
        time.sleep(1)


def test_killed_pool_processes_requeue_their_tasks_at_once(stack: Stack):
    """Fault 1 (pool processes): SIGKILL the prefork children while they run N long tasks.
    task_reject_on_worker_lost puts each task back at once; all N (and the ones queued behind
    them) succeed. A task whose first run was killed is started twice, finished once."""
    killed: list[int] = []
    outcome = drills.kill_drill(
        stack.target,
        queue="high_priority",
        running=2,  # worker-high's concurrency
        queued=4,
        seconds=5,
        inject=lambda: killed.extend(stack.compose.kill("worker-high", which="children")),
        timeout=120,
    )
    drills.record("fault1-kill-pool-processes", killed=len(killed), **outcome.summary())
    assert killed
    assert outcome.lost == [], outcome.summary()
    assert outcome.executed_twice == [], outcome.summary()
    assert len(outcome.restarted) == 2, outcome.summary()  # exactly the two that were running
    assert outcome.workers == {"high": 6}
    stack.compose.wait_healthy("worker-high")


def test_a_graceful_pool_restart_lets_the_running_task_finish(stack: Stack):
    """Fault 2: `docker compose restart worker-low` while a task runs: warm shutdown, SUCCESS, no WorkerLostError."""
    since = time.time()
    running = drills.send_tally(stack.target, "low_priority", seconds=6)
    drills.wait_started(stack.target, [running])
    queued = drills.send_tallies(stack.target, 3, "low_priority")
    start = time.monotonic()
    stack.compose.run("restart", "worker-low")
    restart_seconds = time.monotonic() - start
    stack.compose.wait_healthy("worker-low")
    outcome = drills.settle(stack.target, [running, *queued], timeout=120, since=start)
    logs = stack.compose.run("logs", "--no-color", "--since", str(int(since)), "worker-low").stdout
    drills.record("fault2-graceful-restart", restart_seconds=round(restart_seconds, 1), **outcome.summary())
    assert outcome.lost == [] and outcome.restarted == [] and outcome.executed_twice == [], outcome.summary()
    assert "WorkerLostError" not in logs
    assert drills.task_info(stack.target, running)["worker"].startswith("low@")


def test_workers_resume_and_queued_tasks_survive_a_redis_crash(stack: Stack):
    """Fault 3: tasks wait in Redis (the low pool stops consuming its queue), Redis is SIGKILLed
    and started again. Every pool consumes again within 30 s; every queued task runs once (AOF)."""
    low = worker_name(stack, "low")
    consumer = stack.target.flower(f"api/worker/queue/%s/{low}?queue=low_priority")
    assert stack.target.request("POST", consumer % "cancel-consumer").status == 200
    try:
        queued = drills.send_tallies(stack.target, 20, "low_priority")
        # appendfsync everysec: the promise covers tasks enqueued more than ~1 s before a crash.
        time.sleep(1.5)
        stack.compose.run("kill", "--signal", "SIGKILL", "redis")
        stack.compose.run("start", "redis")
        restarted_at = time.time()
        stack.compose.wait_healthy("redis")
        redis_seconds = time.time() - restarted_at
    finally:
        # The low pool consumes its queue again (retried until its worker is reconnected and answers).
        deadline = time.monotonic() + 120
        while stack.target.request("POST", consumer % "add-consumer").status != 200:
            assert time.monotonic() < deadline, "low pool does not take its queue back"
            time.sleep(1)
    resumed = drills.resume_seconds(stack.target, ALL_QUEUES, since=restarted_at)
    outcome = drills.settle(stack.target, queued, timeout=120)
    drills.record(
        "fault3-redis-sigkill",
        redis_healthy_seconds=round(redis_seconds, 1),
        resume_seconds=resumed,
        **outcome.summary(),
    )
    assert max(resumed.values()) <= 30, resumed
    assert outcome.lost == [] and outcome.executed_twice == [], outcome.summary()
    assert outcome.workers == {"low": 20}
    result = checks.workers(stack.target, POOLS)  # the low pool has its queue back, no pool more
    assert result, result.detail


def flower_db_mtime(stack: Stack) -> float:
    out = stack.compose.exec("flower", "python3", "-c", FLOWER_DB_MTIME).stdout.strip()
    return float(out or 0)


FLOWER_DB_MTIME = """
import glob, os
files = [f for f in glob.glob("/var/lib/celerykit/flower/flower.db*") if ".tmp" not in f and ".corrupt" not in f]
print(max((os.stat(f).st_mtime for f in files), default=0))
"""


def flower_back(stack: Stack, timeout: float = 120) -> float:
    """Seconds until Flower answers its API again."""
    start = time.monotonic()
    deadline = start + timeout
    while True:
        try:
            if stack.target.request("GET", stack.target.flower("api/workers")).status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        assert time.monotonic() < deadline, "Flower did not come back"
        time.sleep(0.5)


def known(stack: Stack, task_ids: list[str]) -> int:
    return sum(drills.task_info(stack.target, t).get("state") == "SUCCESS" for t in task_ids)


def test_flower_keeps_its_history_across_a_graceful_restart(stack: Stack):
    """Fault 4 (graceful): tasks finished just before `restart flower` are all still listed."""
    task_ids = drills.send_tallies(stack.target, 20, "high_priority")
    assert drills.settle(stack.target, task_ids, timeout=60).lost == []
    stack.compose.run("restart", "flower")
    stack.compose.wait_healthy("flower")
    back = flower_back(stack)
    kept = known(stack, task_ids)
    drills.record("fault4-flower-graceful-restart", tasks=20, kept=kept, lost=20 - kept, api_back_s=round(back, 1))
    assert kept == 20


def test_flower_comes_back_after_sigkill_with_its_saved_history(stack: Stack):
    """Fault 4 (crash): SIGKILL Flower's process after its periodic save: the restart policy
    brings it back with every task it had saved; only tasks newer than the last save (at most
    CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS) could be missing."""
    task_ids = drills.send_tallies(stack.target, 20, "medium_priority")
    assert drills.settle(stack.target, task_ids, timeout=60).lost == []
    finished = max(drills.task_info(stack.target, t)["succeeded"] for t in task_ids)
    deadline = time.monotonic() + 60
    while flower_db_mtime(stack) <= finished:  # wait for the periodic save after the last task
        assert time.monotonic() < deadline, "Flower did not save its state"
        time.sleep(0.5)
    restarts = stack.compose.restart_count("flower")
    stack.compose.kill("flower")
    back = flower_back(stack)
    stack.compose.wait_healthy("flower")
    kept = known(stack, task_ids)
    drills.record("fault4-flower-sigkill", tasks=20, kept=kept, lost=20 - kept, api_back_s=round(back, 1))
    assert stack.compose.restart_count("flower") == restarts + 1
    assert kept == 20


def test_flower_survives_a_damaged_state_file(stack: Stack):
    """Fault 4 (damaged db): garbage in Flower's db file, then SIGKILL (no save at exit): Flower
    moves the file aside and starts with an empty history, once, instead of crash-looping."""
    restarts = stack.compose.restart_count("flower")
    stack.compose.exec("flower", "python3", "-c", DAMAGE_AND_KILL)
    back = flower_back(stack)
    stack.compose.wait_healthy("flower")
    # Still up a while later: not a crash loop.
    time.sleep(5)
    stack.compose.wait_healthy("flower")
    corrupt = stack.compose.exec("flower", "sh", "-c", "ls /var/lib/celerykit/flower/").stdout.split()
    drills.record("fault4-flower-damaged-db", api_back_s=round(back, 1), files=corrupt)
    assert stack.compose.restart_count("flower") == restarts + 1
    assert any(name.endswith(".corrupt") for name in corrupt), corrupt
    assert checks.send_probe(stack.target, "high_priority")


DAMAGE_AND_KILL = """
import glob, os
for name in glob.glob("/var/lib/celerykit/flower/flower.db*"):
    with open(name, "wb") as f:
        f.write(b"this is not a dbm file" * 100)
""" + "\n".join(
    [
        "def ppid(pid):",
        "    with open(f'/proc/{pid}/stat') as f:",
        "        return int(f.read().rsplit(')', 1)[1].split()[1])",
        "for p in [int(p) for p in os.listdir('/proc') if p.isdigit() and p != '1']:",
        "    try:",
        "        if ppid(p) == 1:",
        "            os.kill(p, 9)",
        "    except (FileNotFoundError, ProcessLookupError):",
        "        pass",
    ]
)
