"""A worker sends its task events in batches, a few dozen times a second (Celery 5.7's consumer).

Flower builds its view from task events: a worker sends `task-received`, `task-started` and
`task-succeeded` (or `-failed`, `-retried`) for every task. Celery buffers them and flushes the buffer
(one `task.multi` message, one PUBLISH) from the event loop's very next turn (`Consumer.on_send_event_buffered`
calls `hub.call_soon`), so a busy one-process pool publishes two or three times per task, each time
serializing and encoding the message twice (kombu's envelope and base64 body). Measured on a
one-process pool of no-op tasks: the events cost a fifth of its throughput, and flushing them at most
every FLUSH_SECONDS took back nearly all of it.

The fix flushes FLUSH_SECONDS after the first event buffered since the last flush instead, so the events
of many tasks travel in one message. Every event still reaches Flower, at most FLUSH_SECONDS later
(Celery's own limit still flushes a buffer of 24 at once). When the consumer stops or reconnects, Celery
drops the dispatcher with what it still buffers (a turn's events before; FLUSH_SECONDS' now), so the fix
also flushes the buffer first; after a lost connection that flush fails and those events are gone, as
they were.
"""

from __future__ import annotations

import functools
import logging

from celery.worker.consumer import consumer as consumer_module
from celery.worker.consumer import events as events_module

logger = logging.getLogger(__name__)

FLUSH_SECONDS = 0.02


def flush_in_batches(on_send_event_buffered):
    @functools.wraps(on_send_event_buffered)
    def buffered(consumer):
        if not consumer.hub:  # no event loop (the solo pool's synchronous loop): as Celery does
            return on_send_event_buffered(consumer)
        if getattr(consumer, "_celerykit_flush", None) is None:  # one flush scheduled at a time

            def flush() -> None:
                consumer._celerykit_flush = None
                consumer._flush_events()

            consumer._celerykit_flush = consumer.hub.call_later(FLUSH_SECONDS, flush)
        return None

    buffered.celerykit_patched = True
    return buffered


def flush_before_closing(close):
    @functools.wraps(close)
    def closing(step, consumer):
        dispatcher = consumer.event_dispatcher
        if dispatcher is not None and dispatcher.enabled:
            try:
                dispatcher.flush(errors=False)
            except Exception as error:  # the connection is gone: so are the buffered events, as in Celery
                logger.debug("Could not send the buffered task events: %r", error)
        return close(step, consumer)

    closing.celerykit_patched = True
    return closing


def apply() -> None:
    """Apply the fix (the caller checked the Celery version)."""
    for owner, name, fix in (
        (consumer_module.Consumer, "on_send_event_buffered", flush_in_batches),
        (events_module.Events, "_close", flush_before_closing),
    ):
        if not getattr(getattr(owner, name), "celerykit_patched", False):  # once per process
            setattr(owner, name, fix(getattr(owner, name)))
