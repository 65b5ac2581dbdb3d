"""A freed pool process gets the message waiting for it before the finished task is acknowledged
(celerykit.handoff), on a real prefork worker against a throw-away Redis.

The acknowledgement is made slow on purpose: the first task pauses Redis's writes for PAUSE_S as it
ends (`CLIENT PAUSE ... WRITE`), so the worker's main process waits that long for its ack's reply. The
second task, already reserved in the main process (prefetch 2), writes its start time to a file, not
to Redis. With the fix it starts at once; in Celery's order it starts only after the acknowledgement.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType, SimpleNamespace

import pytest
from celerykit_testing.local_worker import app_module, start_worker, stop_workers

from celerykit import handoff, patches

PAUSE_S = 2.0

APP = """
import os, time
from celery import Celery

from celerykit import handoff, patches

patches.apply()
if os.environ.get("CELERY_ORDER"):
    handoff.undo()
app = Celery("handoffapp", broker={url!r}, backend={url!r})
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=2, task_ignore_result=True)


@app.task(name="handoffapp.slow_ack")
def slow_ack(path):
    client = app.broker_connection().default_channel.client
    deadline = time.monotonic() + 30
    while client.llen("h") and time.monotonic() < deadline:  # until the worker has reserved the second
        time.sleep(0.01)  # task: its fetch writes to Redis too, and the pause would hold it back
    client.execute_command("CLIENT", "PAUSE", {pause_ms}, "WRITE")
    with open(path, "a") as handle:
        handle.write(f"ended {{time.time()}}\\n")


@app.task(name="handoffapp.pid")
def pid():
    return os.getpid()


@app.task(name="handoffapp.started")
def started(path):
    with open(path, "a") as handle:
        handle.write(f"started {{time.time()}}\\n")
"""


@contextmanager
def one_process_worker(redis_el, tmp_path: Path, *args: str, celery_order: bool = False) -> Iterator[ModuleType]:
    """The app module, to send with; the worker (one process, prefetch 2) starts when the block's
    sends are done, and stops at its end."""
    redis_el.client().flushall()
    source = APP.format(url=redis_el.url, pause_ms=int(PAUSE_S * 1000))
    workers: list[subprocess.Popen] = []
    env = {"CELERY_ORDER": "1" if celery_order else ""}
    with app_module(tmp_path, "handoffapp", source) as handoffapp:
        handoffapp.start = lambda: workers.append(start_worker(handoffapp, "h", *args, env=env))
        try:
            yield handoffapp
        finally:
            stop_workers(workers)


def gap_after_a_slow_ack(redis_el, tmp_path: Path, celery_order: bool) -> float:
    """Seconds from the first task's end to the second one's start."""
    timeline = tmp_path / "timeline"
    with one_process_worker(redis_el, tmp_path, celery_order=celery_order) as app:
        # Both sent before the worker starts: it reserves both (prefetch 2 x 1 process).
        app.slow_ack.apply_async([str(timeline)], queue="h")
        app.started.apply_async([str(timeline)], queue="h")
        app.start()
        deadline = time.monotonic() + 60
        while len(timeline.read_text().splitlines() if timeline.exists() else []) < 2:
            assert time.monotonic() < deadline, "the two tasks did not run within 60 s"
            time.sleep(0.05)
    times = dict(line.split() for line in timeline.read_text().splitlines())
    return float(times["started"]) - float(times["ended"])


def test_the_next_task_starts_while_the_finished_one_is_acknowledged(redis_el, tmp_path):
    assert gap_after_a_slow_ack(redis_el, tmp_path, celery_order=False) < PAUSE_S / 2


def test_in_celerys_order_the_next_task_waits_for_the_acknowledgement(redis_el, tmp_path):
    """The same worker without the fix: what the test above would see if the fix did nothing."""
    assert gap_after_a_slow_ack(redis_el, tmp_path, celery_order=True) >= PAUSE_S / 2


def test_a_process_at_its_task_limit_gets_nothing_more_and_every_task_runs_once(redis_el, tmp_path):
    """One task per process: the reserved task waits for the replacement instead of being written to
    the process that exits."""
    with one_process_worker(redis_el, tmp_path, "--max-tasks-per-child=1") as app:
        sent = [app.pid.apply_async(queue="h", ignore_result=False) for _ in range(6)]
        app.start()
        pids = [result.get(timeout=60) for result in sent]
    assert len(set(pids)) == 6, pids  # six processes, one task each, none lost


def fake_pool(limit: int, done: dict[int, int | None]) -> SimpleNamespace:
    """Four processes (inqueue fds 10-13, pids 100-103), as AsynPool keeps them: fd 10 busy, fd 11
    being written to, fd 12 and 13 idle; `done` is the results read from each pid (None: no counter)."""
    procs = {fd: SimpleNamespace(pid=fd * 10) for fd in (10, 11, 12, 13)}
    counters = {pid: SimpleNamespace(value=value) for pid, value in done.items() if value is not None}
    return SimpleNamespace(
        _all_inqueues={10, 11, 12, 13},
        _busy_workers={10},
        _active_writes={11},
        _fileno_to_inq=procs,
        _on_ready_counters=counters,
        _maxtasksperchild=limit,
    )


@pytest.mark.parametrize(
    ("limit", "done", "idle"),
    [
        (0, {100: 9, 110: 9, 120: 9, 130: 9}, [12, 13]),  # no limit: every idle process
        (5, {100: 5, 110: 5, 120: 4, 130: 0}, [12, 13]),  # below the limit
        (5, {100: 0, 110: 0, 120: 5, 130: 2}, [13]),  # 120 has run its five: it exits
        (5, {100: 0, 110: 0, 120: None, 130: 2}, [13]),  # no counter (being reaped): left alone
    ],
)
def test_idle_processes_are_those_celery_would_write_to_but_for_those_at_their_limit(limit, done, idle):
    assert sorted(handoff.idle_processes(fake_pool(limit, done))) == idle


@pytest.mark.parametrize("times", [1, 2])
def test_the_fix_is_applied_once(times):
    for _ in range(times):
        patches.apply()
    from celery.concurrency import asynpool

    assert asynpool.AsynPool._create_write_handlers.celerykit_patched
    assert not getattr(asynpool.AsynPool._create_write_handlers.__wrapped__, "celerykit_patched", False)
    handoff.undo()
    assert not getattr(asynpool.AsynPool._create_write_handlers, "celerykit_patched", False)
    patches.apply()
