"""Fixes the kit carries for the Celery versions it runs, each with its upstream reference.

**A task cancelled at a broker loss must stay unacknowledged** (celery#7185; celery#10382 in 5.7.0
only stops the worker from crashing). With `worker_cancel_long_running_tasks_on_connection_loss`,
a worker that loses the broker kills each running late-ack task (`Request.cancel`) so that it is
redelivered instead of finishing twice. `cancel` kills the child first and then announces the
cancellation: it stores a RETRY state in the result backend and only then sets `_already_cancelled`.
With Redis as broker *and* result backend, that store fails exactly when the broker is gone, so
the flag is never set. The killed child is reported next, and `on_failure` takes its path for a
task terminated *without* a cancellation: a revoke. Its store retries until Redis is back, then
the message is acknowledged, so the task ends REVOKED ("terminated") and is never run again,
though nothing revoked it.

The fix records the cancellation before anything can fail, and a failed announcement is logged,
not raised: the message stays in Redis's unacked set and is redelivered after
`visibility_timeout`, as for every other task running at a broker loss.
"""

from __future__ import annotations

import functools
import logging

import celery
from celery.worker.request import Request

logger = logging.getLogger(__name__)

# Versions read and found affected. A newer Celery is patched only once someone has read it
# (tests/unit/test_patches.py fails on an unknown version).
AFFECTED = ((5, 0), (5, 7))


def affected(version: tuple[int, ...]) -> bool:
    return AFFECTED[0] <= tuple(version[:2]) <= AFFECTED[1]


def cancel_keeps_the_message(announce_cancelled):
    @functools.wraps(announce_cancelled)
    def announce(self, *args, **kwargs):
        self._already_cancelled = True  # first: on_failure must not turn this into a revoke
        try:
            announce_cancelled(self, *args, **kwargs)
        except Exception as error:  # the broker is gone; the task must stay unacked
            logger.warning(
                "Task %s[%s] was cancelled at a broker connection loss; its RETRY state could not be "
                "stored (%r). The message stays unacknowledged and is redelivered after the visibility timeout.",
                self.task_name,
                self.id,
                error,
            )

    announce.celerykit_patched = True
    return announce


def apply(version: tuple[int, ...] = tuple(celery.VERSION)) -> bool:
    """Patch the installed Celery if it is an affected version; return whether it is patched."""
    if getattr(Request._announce_cancelled, "celerykit_patched", False):
        return True
    if not affected(version):
        return False
    Request._announce_cancelled = cancel_keeps_the_message(Request._announce_cancelled)
    return True
