"""Faults injected into the systemd deployment, each counted task by task (drills shared with the
compose tests). Every test leaves the hosts as it found them: what was killed runs again.

Faults that need other settings (a short visibility timeout, a small retry budget) are in
../reconfigure, run on the all-in-one scenario.
"""

from __future__ import annotations

import time

import drills
import pytest
import testinfra
from conftest import expected_workers, hosts, pools_of

from celerykit.verify import checks
from celerykit.verify.target import Target


def owner(queue: str) -> tuple[testinfra.host.Host, str]:
    """The worker host and pool consuming `queue`."""
    for host in hosts("celery_workers"):
        for pool, queues in pools_of(host).items():
            if queue in queues:
                return host, pool
    raise LookupError(queue)


def unit_state(host: testinfra.host.Host, unit: str) -> dict[str, str]:
    out = host.check_output(f"systemctl show {unit} -p MainPID -p NRestarts -p ActiveState -p SubState")
    return dict(line.split("=", 1) for line in out.splitlines())


def wait_unit_running(host: testinfra.host.Host, unit: str, timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        state = unit_state(host, unit)
        if state["SubState"] == "running" and state["MainPID"] != "0":
            return state
        assert time.monotonic() < deadline, f"{unit}: {state}"
        time.sleep(0.5)


def wait_workers(proxy: Target) -> None:
    """Every pool of every host consumes exactly its queues again."""
    pools: dict[str, set[str]] = {}
    for name, queues in expected_workers().items():
        pools.setdefault(name.split("@", 1)[0], set()).update(queues)
    result = checks.workers(proxy, {pool: sorted(queues) for pool, queues in pools.items()}, timeout=120)
    assert result, result.detail


def test_killed_pool_processes_requeue_their_tasks_at_once(proxy: Target):
    """Fault 1 (pool processes): SIGKILL the prefork children of the pool consuming high_priority
    while they run long tasks: task_reject_on_worker_lost puts each back at once; all succeed,
    the interrupted ones are started twice and finished once."""
    host, pool = owner("high_priority")
    unit = f"celery-worker@{pool}"
    main = unit_state(host, unit)["MainPID"]
    running = int(host.check_output(f"pgrep -c -P {main}"))  # the prefork processes
    outcome = drills.kill_drill(
        proxy,
        queue="high_priority",
        running=running,
        queued=4,
        seconds=5,
        inject=lambda: host.check_output(f"pkill -KILL -P {main}"),
        timeout=120,
    )
    drills.record("systemd-fault1-kill-pool-processes", host=host.backend.host, killed=running, **outcome.summary())
    assert outcome.lost == [] and outcome.executed_twice == [], outcome.summary()
    assert len(outcome.restarted) == running, outcome.summary()
    assert unit_state(host, unit)["MainPID"] == main  # the pool itself never went down


def test_a_graceful_pool_restart_lets_the_running_task_finish(proxy: Target):
    """Fault 2: `systemctl restart celery-worker@low` while a task runs: warm shutdown (the
    restart waits for it), SUCCESS, no WorkerLostError in the journal, the queued ones run after."""
    host, pool = owner("low_priority")
    unit = f"celery-worker@{pool}"
    since = host.check_output("date '+%Y-%m-%d %H:%M:%S'")
    running = drills.send_tally(proxy, "low_priority", seconds=6)
    drills.wait_started(proxy, [running])
    queued = drills.send_tallies(proxy, 3, "low_priority")
    start = time.monotonic()
    host.check_output(f"systemctl restart {unit}")
    restart_seconds = time.monotonic() - start
    outcome = drills.settle(proxy, [running, *queued], timeout=120, since=start)
    journal = host.check_output(f"journalctl -u {unit} --since '{since}' --no-pager -o cat")
    drills.record("systemd-fault2-graceful-restart", restart_seconds=round(restart_seconds, 1), **outcome.summary())
    assert outcome.lost == [] and outcome.restarted == [] and outcome.executed_twice == [], outcome.summary()
    assert "WorkerLostError" not in journal
    assert drills.task_info(proxy, running)["worker"].startswith(f"{pool}@")
    wait_unit_running(host, unit)


def test_workers_resume_and_queued_tasks_survive_a_redis_crash(proxy: Target):
    """Fault 3: tasks wait in Redis (the low pool stops consuming its queue), redis-server is
    SIGKILLed and started again. Every pool consumes again within 30 s; every queued task runs
    once (AOF everysec: the promise covers tasks enqueued more than ~1 s before the crash)."""
    (redis,) = hosts("redis")
    host, pool = owner("low_priority")
    low = f"{pool}@{host.check_output('hostname')}"
    consumer = proxy.flower(f"api/worker/queue/%s/{low}?queue=low_priority")
    wait_workers(proxy)  # Flower knows the worker (404 otherwise)
    assert proxy.request("POST", consumer % "cancel-consumer").status == 200
    try:
        queued = drills.send_tallies(proxy, 20, "low_priority")
        time.sleep(1.5)  # appendfsync everysec
        redis.check_output("systemctl kill --signal=SIGKILL --kill-whom=main redis-server")
        redis.check_output("systemctl restart redis-server")
        restarted_at = time.time()
    finally:
        deadline = time.monotonic() + 120
        while proxy.request("POST", consumer % "add-consumer").status != 200:
            assert time.monotonic() < deadline, "low pool does not take its queue back"
            time.sleep(1)
    queues = sorted({q for qs in expected_workers().values() for q in qs})
    resumed = drills.resume_seconds(proxy, queues, since=restarted_at)
    outcome = drills.settle(proxy, queued, timeout=60)
    # Flower learns of a task from worker events, sent over Redis pub/sub: those published while
    # Flower reconnects are gone. The result backend has the word on such a task.
    backend = {task_id: backend_result(proxy, task_id) for task_id in outcome.lost}
    missed = [t for t, (state, tally) in backend.items() if state == "SUCCESS" and tally.get("completions") == 1]
    lost = sorted(set(outcome.lost) - set(missed))
    drills.record(
        "systemd-fault3-redis-sigkill",
        resume_seconds=resumed,
        really_lost=len(lost),
        ran_but_flower_missed_the_events=len(missed),
        **outcome.summary(),
    )
    assert max(resumed.values()) <= 30, resumed
    assert lost == [] and outcome.executed_twice == [], (backend, outcome.summary())
    assert set(outcome.workers) <= {pool}
    wait_workers(proxy)


def backend_result(proxy: Target, task_id: str) -> tuple[str, dict]:
    """A task's state and tally as the result backend (Redis) holds them, asked through Flower."""
    info = proxy.request("GET", proxy.flower(f"api/task/result/{task_id}")).json()
    return info.get("state", "?"), drills.tally_of(info)


def flower_back(proxy: Target, timeout: float = 120) -> float:
    start = time.monotonic()
    while True:
        try:
            if proxy.request("GET", proxy.flower("api/workers")).status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        assert time.monotonic() - start < timeout, "Flower did not come back"
        time.sleep(0.5)


def known(proxy: Target, task_ids: list[str]) -> int:
    return sum(drills.task_info(proxy, t).get("state") == "SUCCESS" for t in task_ids)


FLOWER_DB_MTIME = "find /var/lib/celerykit/flower -maxdepth 1 -name 'flower.db*' -printf '%T@\\n' | sort -n | tail -1"


@pytest.mark.parametrize("how", ["graceful restart", "sigkill"])
def test_flower_comes_back_with_its_task_history(flower_host: testinfra.host.Host, proxy: Target, how: str):
    """Fault 4: 20 tasks finished, then Flower restarted (TERM: it saves at exit) or SIGKILLed
    after its periodic save (systemd restarts it): every task is still listed afterwards."""
    task_ids = drills.send_tallies(proxy, 20, "high_priority")
    assert drills.settle(proxy, task_ids, timeout=60).lost == []
    before = unit_state(flower_host, "flower")
    if how == "sigkill":
        finished = max(drills.task_info(proxy, t)["succeeded"] for t in task_ids)
        deadline = time.monotonic() + 60
        while float(flower_host.check_output(FLOWER_DB_MTIME) or 0) <= finished:
            assert time.monotonic() < deadline, "Flower did not save its state"
            time.sleep(0.5)
        flower_host.check_output("systemctl kill --signal=SIGKILL --kill-whom=main flower")
    else:
        flower_host.check_output("systemctl restart flower")
    back = flower_back(proxy)
    after = wait_unit_running(flower_host, "flower")
    kept = known(proxy, task_ids)
    drills.record(f"systemd-fault4-flower-{how.replace(' ', '-')}", tasks=20, kept=kept, api_back_s=round(back, 1))
    assert kept == 20
    if how == "sigkill":
        assert int(after["NRestarts"]) == int(before["NRestarts"]) + 1  # systemd brought it back


def test_flower_survives_a_damaged_state_file(flower_host: testinfra.host.Host, proxy: Target):
    """Fault 4 (damaged db): garbage in Flower's db file, then SIGKILL (no save at exit): Flower
    comes back once and stays up instead of crash-looping, and takes tasks again."""
    before = unit_state(flower_host, "flower")
    flower_host.check_output(
        "for f in /var/lib/celerykit/flower/flower.db*; do"
        ' head -c 2000 /dev/urandom > "$f"; done;'
        " systemctl kill --signal=SIGKILL --kill-whom=main flower"
    )
    back = flower_back(proxy)
    first = wait_unit_running(flower_host, "flower")
    deadline = time.monotonic() + 10  # still the same process a while later: no crash loop
    while time.monotonic() < deadline:
        assert unit_state(flower_host, "flower")["MainPID"] == first["MainPID"]
        time.sleep(1)
    restarts = int(first["NRestarts"]) - int(before["NRestarts"])
    drills.record("systemd-fault4-flower-damaged-db", api_back_s=round(back, 1), restarts=restarts)
    assert restarts == 1
    assert checks.wait_for_task(proxy, checks.send_probe(proxy, "high_priority"))["state"] == "SUCCESS"


HEARTBEAT = "celerykit.demo.heartbeat"


def heartbeats(proxy: Target) -> list[float]:
    tasks = proxy.request("GET", proxy.flower(f"api/tasks?taskname={HEARTBEAT}&limit=1000")).json()
    return sorted(t["received"] for t in tasks.values() if t.get("received"))


def next_heartbeat(proxy: Target, after: float, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while True:
        newer = [t for t in heartbeats(proxy) if t > after]
        if newer:
            return min(newer)
        assert time.monotonic() < deadline, f"no heartbeat within {timeout}s"
        time.sleep(0.5)


def schedulers() -> int:
    """Beat processes on every host of the inventory."""
    return sum(int(h.run("pgrep -c -u celerykit -f ' beat'").stdout.strip() or 0) for h in hosts("all"))


@pytest.mark.parametrize("how", ["graceful restart", "sigkill"])
def test_beat_restarted_or_killed_runs_each_periodic_task_once(proxy: Target, how: str):
    """Fault 5: right after Beat sent the heartbeat, restart it (TERM) or SIGKILL its main process
    (systemd restarts it). The next heartbeat comes a full interval later (no second run for the
    same tick) and one scheduler runs in the whole inventory."""
    (beat,) = hosts("celery_beat")
    setting = "sed -n 's/^CELERYKIT_DEMO_HEARTBEAT_SECONDS=//p' /etc/celerykit/celery.env"
    interval = float(beat.check_output(setting) or 30)
    state = unit_state(beat, "celery-beat")
    before = next_heartbeat(proxy, after=time.time(), timeout=3 * interval)
    if how == "sigkill":
        beat.check_output("systemctl kill --signal=SIGKILL --kill-whom=main celery-beat")
    else:
        beat.check_output("systemctl restart celery-beat")
    after = next_heartbeat(proxy, after=before, timeout=3 * interval)
    running = wait_unit_running(beat, "celery-beat")
    count = schedulers()
    drills.record(
        f"systemd-fault5-beat-{how.replace(' ', '-')}",
        interval=interval,
        gap_s=round(after - before, 1),
        schedulers=count,
    )
    assert after - before > 0.75 * interval, f"heartbeat ran twice: {after - before:.1f}s apart"
    assert count == 1
    if how == "sigkill":
        assert int(running["NRestarts"]) == int(state["NRestarts"]) + 1
