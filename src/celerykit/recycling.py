"""A recycled pool process is replaced within milliseconds (Celery 5.7's prefork pool, billiard 4.3).

A pool process exits after `max_tasks_per_child` tasks or once it holds more than
`max_memory_per_child` (the kit's leak guards), and the worker's main process starts another. Measured
on one pool process replacing itself every 100 no-op tasks, the pool consumed nothing for 1.5-4.7 s per
replacement (celery#9588, #9579); with the first fix below 50-70 ms; every cost that remained was in the
main process, each found by timing it there:

1. **The exit is seen before the process can be reaped** (up to 5 s). The parent hears of the exit from
   the child's sentinel pipe (`AsynPool._event_process_exit`), stops watching it and runs
   `maintain_pool` once. The pipe closes while the kernel still tears the process down, before
   `waitpid` can reap it, so that call often reaps nothing and starts no replacement; the pool's 5 s
   `maintain_pool` timer does, later. The fix retries `maintain_pool` from the event loop 1, 2, 4 ...
   512 ms after the sentinel fired until the child is reaped (the 5 s timer stays as the last resort),
   and the exiting child checks every 5 ms instead of 100 ms whether the parent has read its last
   result (billiard's GUARANTEE_MESSAGE_CONSUMPTION_*, the same 30 s ceiling).
2. **A reaped process's result pipe is waited on for 10 ms, once or twice.** Reaping it flushes its
   result pipe (`AsynPool.process_flush_queues`) with a 10 ms `select`; the parent holds the pipe's
   write end itself, so the pipe never reaches end-of-file and every flush waits the full 10 ms. Once
   the process is reaped nothing more can arrive: the fix reads what is there without waiting.
3. **A full garbage collection before every fork** (`gc.collect()`, celery#2927: the child must not
   inherit garbage whose finalizers would run in it) scanned every object of the main process: 16 ms
   after start, and growing with the next cost. The kit collects once when the worker is ready and
   freezes what is alive then (`gc.freeze()`, as Python's documentation advises for a process that
   forks workers); the collection before each fork then scans only what was made since, and still
   collects all garbage.
4. **Every task leaves a cancelled timer in the event loop for its soft time limit.** Each task gets a
   soft-time-limit timer (3300 s); a finished task cancels it, but kombu's timer only flags an entry,
   which stays in the heap until its time comes (kombu's `Timer`). A pool doing 500 tasks a second held
   1.6 million dead entries: memory, a slower collection before each fork, and a timer wake-up for each.
   The fix removes cancelled entries from the heap every TIMER_SWEEP_SECONDS.

Measured (docs/benchmarks.md, `bench/run recycling`): the gap from the old process's exit to the new one
taking its first task, per replacement over hundreds of replacements.
"""

from __future__ import annotations

import functools
import gc
import heapq
import logging

from billiard import pool as billiard_pool
from celery import signals
from celery.concurrency import asynpool

logger = logging.getLogger(__name__)

FIRST_RETRY, LAST_RETRY = 0.001, 0.512  # seconds between maintain_pool retries after a child exits
TIMER_SWEEP_SECONDS = 10  # at 1,000 tasks a second, 10,000 entries to drop: about a millisecond
FREEZE = "celerykit-freeze"  # the worker_ready receiver's dispatch_uid


def reap_promptly(event_process_exit):
    @functools.wraps(event_process_exit)
    def on_exit(self, hub, proc):
        event_process_exit(self, hub, proc)  # stops watching the sentinel, maintain_pool() once
        if proc in self._pool:  # the sentinel closed, but the child cannot be reaped yet
            _retry(self, hub, proc, FIRST_RETRY)

    def _retry(pool, hub, proc, delay: float) -> None:
        def again() -> None:
            if proc not in pool._pool:  # reaped meanwhile
                return
            pool.maintain_pool()
            if proc in pool._pool and delay < LAST_RETRY:
                _retry(pool, hub, proc, delay * 2)

        hub.call_later(delay, again)

    on_exit.celerykit_patched = True
    return on_exit


def _select_now(select, readers=None, writers=None, err=None, timeout=0):
    return select(readers, writers, err, timeout=0)


def flush_the_reaped_without_waiting(process_flush_queues):
    @functools.wraps(process_flush_queues)
    def flush(self, proc):
        if proc.exitcode is None:  # alive (a consumer restart): it may still write its last result
            return process_flush_queues(self, proc)
        waiting = asynpool._select
        asynpool._select = functools.partial(_select_now, waiting)  # the event loop is one thread
        try:
            return process_flush_queues(self, proc)
        finally:
            asynpool._select = waiting

    flush.celerykit_patched = True
    return flush


def sweep_cancelled_timers(timer) -> int:
    """Drop the cancelled entries of a kombu timer's heap, in place (the event loop holds the list);
    return how many."""
    queue = timer._queue
    kept = [entry for entry in queue if not entry.entry.canceled]
    dropped = len(queue) - len(kept)
    if dropped:
        heapq.heapify(kept)
        queue[:] = kept
    return dropped


def pool_sweeps_its_timers(register_with_event_loop):
    @functools.wraps(register_with_event_loop)
    def register(self, hub):
        register_with_event_loop(self, hub)
        # One sweep per event loop. A consumer restarted without a broker loss keeps its sweep; at a
        # broker loss Celery cancels every timer entry the event loop registered, this one among them.
        sweep = getattr(hub, "_celerykit_timer_sweep", None)
        if sweep is None or sweep.canceled:
            hub._celerykit_timer_sweep = hub.call_repeatedly(TIMER_SWEEP_SECONDS, sweep_cancelled_timers, hub.timer)

    register.celerykit_patched = True
    return register


def freeze_what_startup_made(**_) -> None:
    """worker_ready, in the main process: collect, then exempt the survivors from later collections."""
    gc.collect()
    gc.freeze()


FIXES = (
    ("_event_process_exit", reap_promptly),
    ("process_flush_queues", flush_the_reaped_without_waiting),
    ("register_with_event_loop", pool_sweeps_its_timers),
)


def apply() -> None:
    """Apply the four fixes (the caller checked the Celery and billiard versions)."""
    for name, fix in FIXES:
        if not getattr(getattr(asynpool.AsynPool, name), "celerykit_patched", False):  # once per process
            setattr(asynpool.AsynPool, name, fix(getattr(asynpool.AsynPool, name)))
    billiard_pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL = 0.005  # from 0.1 s
    billiard_pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = 6000  # 30 s, as before (300 x 0.1 s)
    signals.worker_ready.connect(freeze_what_startup_made, dispatch_uid=FREEZE, weak=False)


def undo() -> None:
    """Celery's and billiard's own replacement again (the benchmark prices the fixes with it)."""
    for name, _ in FIXES:
        if getattr(getattr(asynpool.AsynPool, name), "celerykit_patched", False):
            setattr(asynpool.AsynPool, name, getattr(asynpool.AsynPool, name).__wrapped__)
    billiard_pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_INTERVAL = 0.1
    billiard_pool.GUARANTEE_MESSAGE_CONSUMPTION_RETRY_LIMIT = 300
    signals.worker_ready.disconnect(dispatch_uid=FREEZE)
