"""The pool-process replacement fixes (celerykit.recycling), on kombu's timer, Celery's pool and a real
prefork worker against a throw-away Redis. How long a replacement takes is measured by the benchmark
(`bench/run recycling`), not here: these show what each fix does, and that the leak guards still
replace processes."""

from __future__ import annotations

import gc
from collections import Counter
from types import SimpleNamespace

import pytest
from billiard.pool import RUN
from billiard.queues import _SimpleQueue
from celery.concurrency import asynpool
from celery.worker import loops
from celerykit_testing.local_worker import app_module, start_worker, stop_workers
from kombu.asynchronous import Hub
from kombu.asynchronous.timer import Timer

from celerykit import patches, recycling

ORIGINAL_FLUSH = getattr(asynpool.AsynPool.process_flush_queues, "__wrapped__", asynpool.AsynPool.process_flush_queues)


def test_a_finished_tasks_cancelled_timer_stays_in_the_heap_until_swept():
    """kombu only flags a cancelled entry; the sweep removes those and keeps the heap a heap."""
    timer = Timer()
    entries = [timer.call_after(3300 + n, print, (n,)) for n in range(6)]  # six soft time limits
    for entry in entries[::2]:  # three tasks finished: their limits are cancelled
        entry.cancel()
    assert len(timer._queue) == 6  # kombu keeps them: one per finished task, for 3300 s
    queue = timer._queue
    assert recycling.sweep_cancelled_timers(timer) == 3
    assert timer._queue is queue  # the same list: the event loop holds it
    assert [e.entry.args[0] for e in sorted(queue)] == [1, 3, 5]
    assert queue[0] == min(queue)  # still a heap: the next due comes first
    assert recycling.sweep_cancelled_timers(timer) == 0


def test_the_sweep_is_registered_once_per_event_loop_and_again_after_a_broker_loss():
    """Celery cancels the entries its event loop registered when the broker connection is lost, and
    registers the pool with the event loop again once it reconnects."""
    hub = Hub(timer=Timer())
    register = recycling.pool_sweeps_its_timers(lambda pool, hub: None)

    def sweeps() -> list:
        return [e for e in hub.timer._queue if not e.entry.canceled and e.entry is hub._celerykit_timer_sweep]

    before = loops._timer_entries(hub.timer)
    register(None, hub)
    register(None, hub)  # a consumer restart without a broker loss
    assert len(sweeps()) == 1
    loops._cancel_timer_entries(hub.timer, loops._timer_entries(hub.timer) - before)  # the broker lost
    assert not sweeps()
    register(None, hub)  # connected again
    assert len(sweeps()) == 1


def flushed(exitcode: int | None, monkeypatch) -> tuple[list, list[float]]:
    """Flush a pool process's result pipe holding one result, as the pool does once it reaped the
    process (exitcode set) or at a consumer restart (alive: None). The parent keeps the pipe's write end,
    as Celery's pool does. Returns the results handed on and the select timeouts used."""
    results, timeouts, select = [], [], asynpool._select

    def recording(readers=None, writers=None, err=None, timeout=0):
        timeouts.append(timeout)
        return select(readers, writers, err, timeout=timeout)

    monkeypatch.setattr(asynpool, "_select", recording)
    outq = _SimpleQueue(wnonblock=True)
    outq._writer.send(("result", "of the last task"))
    pool = SimpleNamespace(_result_handler=SimpleNamespace(on_state_change=results.append), _state=RUN)
    proc = SimpleNamespace(exitcode=exitcode, outq=outq)
    recycling.flush_the_reaped_without_waiting(ORIGINAL_FLUSH)(pool, proc)
    outq.close()
    return results, timeouts


def test_a_reaped_process_s_last_result_is_read_without_waiting(monkeypatch):
    results, timeouts = flushed(0, monkeypatch)
    assert results == [("result", "of the last task")]  # nothing it wrote is dropped
    assert timeouts and set(timeouts) == {0}  # Celery's: 0.01 s each, as below
    assert asynpool._select is not recycling._select_now  # put back


def test_a_live_process_s_pipe_is_flushed_as_celery_does(monkeypatch):
    results, timeouts = flushed(None, monkeypatch)
    assert results == [("result", "of the last task")]
    assert set(timeouts) == {0.01}


def test_what_startup_made_is_frozen_and_later_garbage_still_collected():
    try:
        recycling.freeze_what_startup_made()
        assert gc.get_freeze_count() > 0
        cycle: list = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # the collection before each fork still frees what came since
    finally:
        gc.unfreeze()


# -- a real prefork worker ----------------------------------------------------------------------------------

APP = """
import os
from celery import Celery

from celerykit import patches

patches.apply()
app = Celery("recycleapp", broker={url!r}, backend={url!r})
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=1)
kept = []


@app.task(name="recycleapp.pid")
def pid():
    return os.getpid()


@app.task(name="recycleapp.leak")
def leak(mib):
    kept.append(bytearray(b"x") * (mib << 20))  # written, so resident
    return os.getpid()
"""


@pytest.fixture
def worker(redis_el, tmp_path):
    """Start a one-process prefork worker with the kit's patches and the given arguments; yields the
    app module to send with."""
    redis_el.client().flushall()
    started: list = []
    with app_module(tmp_path, "recycleapp", APP.format(url=redis_el.url)) as recycleapp:

        def start(*args: str):
            started.append(start_worker(recycleapp, "recycle", *args))
            return recycleapp

        try:
            yield start
        finally:
            stop_workers(started)


def run(app, name: str, count: int, *args) -> list[int]:
    task = app.app.tasks[name]
    return [task.apply_async(args, queue="recycle").get(timeout=60) for _ in range(count)]


def test_the_count_guard_replaces_a_process_after_its_tasks(worker):
    app = worker("--max-tasks-per-child=5")
    pids = Counter(run(app, "recycleapp.pid", 30))
    assert sorted(pids.values()) == [5] * 6, pids  # every process ran exactly 5, then was replaced


def test_the_memory_guard_replaces_a_leaking_process_and_spares_the_others(worker):
    app = worker("--max-memory-per-child=300000")  # KiB: about 293 MiB
    assert len(set(run(app, "recycleapp.pid", 10))) == 1  # no leak: one process throughout
    leaking = run(app, "recycleapp.leak", 12, 64)  # 64 MiB more resident memory each
    assert len(set(leaking)) >= 3, leaking  # replaced every few tasks, each one's memory given back


def test_the_fixes_are_applied_once_each():
    patches.apply()
    patches.apply()
    assert asynpool.AsynPool.process_flush_queues.__wrapped__ is ORIGINAL_FLUSH
    assert asynpool.AsynPool.register_with_event_loop.celerykit_patched
