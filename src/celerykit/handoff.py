"""A pool process that finishes a task gets the next one before the finished task is acknowledged
(Celery 5.7's prefork pool, billiard 4.3).

With late acknowledgement (the kit's default) the worker's main process learns that a task is done
from the pool process's result, and in that same step acknowledges the message: a Redis round trip,
waited for in the event loop. A message already waiting in the main process for that pool process
(with a prefetch multiplier above 1) is only written to it on a later turn of the loop, after the
acknowledgement's reply, so every task pays the round trip before the next one starts. Measured on a
one-process pool of 10 ms tasks: 0.86 of a plain Celery worker's rate, against 0.96 with the next task
handed over first (docs/benchmarks.md, "Throughput: where the rest goes").

How it goes in Celery: the result arrives (billiard's `ResultHandler.on_ready`); the pool's slot is
released (`putlock.release`), which hands the waiting message to the pool at once (`apply_async`: it
joins the pool's outbound buffer); then the result's callbacks run, the acknowledgement among them; the
buffer is written to the process only once the event loop polls again. The fix writes a job the moment
it joins the buffer if a process is idle, with Celery's own writer (`schedule_writes`, which the event
loop calls for a writable pipe; a write the pipe cannot take at once continues from the loop, as
always). The acknowledgement still follows the result in the same step, so nothing about when a message
is acknowledged changes. A process that has run `max_tasks_per_child` tasks, and so exits instead of
reading another one, gets nothing: the message waits for its replacement. One that exits for another
reason after its result (its memory limit, `SystemExit` in a task) may get the message, as it may from
Celery's own write on the next poll; the pool puts the message back when it reaps the process. A
message that reaches an idle pool from the broker is written in the same turn too, one poll sooner.
"""

from __future__ import annotations

import functools

from celery.concurrency import asynpool


def _exits_before_its_next_task(pool, fd) -> bool:
    """A process that has run max_tasks_per_child tasks exits instead of reading another one."""
    limit = pool._maxtasksperchild
    proc = pool._fileno_to_inq.get(fd)
    counter = pool._on_ready_counters.get(getattr(proc, "pid", None))  # results read from it so far
    return bool(limit) and (counter is None or counter.value >= limit)


def _raise(error: Exception) -> None:
    raise error


def idle_processes(pool) -> list[int]:
    """The inqueue descriptors of the processes that can take a job now (as Celery's fair scheduling
    chooses them), but for those that exit instead of reading another one."""
    return [
        fd
        for fd in pool._all_inqueues
        if fd not in pool._busy_workers and fd not in pool._active_writes and not _exits_before_its_next_task(pool, fd)
    ]


def write_at_once(create_write_handlers):
    @functools.wraps(create_write_handlers)
    def create(self, hub, *args, **kwargs):
        result = create_write_handlers(self, hub, *args, **kwargs)
        put, write = self._quick_put, hub.consolidate_callback  # Celery's send_job and schedule_writes

        def put_and_write(job) -> None:
            put(job)
            if idle := idle_processes(self):
                try:
                    write(idle)
                except Exception as error:
                    # Raised here, it would pass for a fault of the finished process's result pipe,
                    # which the pool then stops reading; from the loop it stops the worker, as an
                    # error of Celery's own write does.
                    hub.call_soon(_raise, error)

        self._quick_put = put_and_write
        return result

    create.celerykit_patched = True
    return create


def apply() -> None:
    """Apply the fix to pools created from now on (the caller checked the Celery and billiard versions)."""
    create = asynpool.AsynPool._create_write_handlers
    if not getattr(create, "celerykit_patched", False):  # once per process
        asynpool.AsynPool._create_write_handlers = write_at_once(create)


def undo() -> None:
    """Celery's own order again (the benchmark prices the fix with it)."""
    create = asynpool.AsynPool._create_write_handlers
    if getattr(create, "celerykit_patched", False):
        asynpool.AsynPool._create_write_handlers = create.__wrapped__
