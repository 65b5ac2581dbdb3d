"""The app every kit service runs: yours (CELERYKIT_APP, as for `celery -A`) with the kit's settings.

`celery -A celerykit.app worker` loads the app named by CELERYKIT_APP (default: the demo app) and
overrides broker, serialization and reliability settings with the kit's. Routes, schedules and
anything else your app configures stay as they are.
"""

from __future__ import annotations

import logging
import os
import time

from celery import signals
from celery.app.utils import find_app

from celerykit import defaults, exporter, liveness, logs, patches
from celerykit.celeryconfig import kit_settings
from celerykit.settings import Env

logger = logging.getLogger(__name__)
logs.setup(Env.current())  # JSON lines (CELERYKIT_LOG_FORMAT), before your app logs anything
patches.apply()
app = find_app(os.environ.get("CELERYKIT_APP", "celerykit.demo:app"))
app.conf.update(kit_settings(Env.current()))
liveness.install(app)  # for the container's health check (CELERYKIT_WORKER_LIVENESS_FILE)


@signals.worker_process_init.connect(weak=False)
def store_results_through_a_broker_loss(**_) -> None:
    """In pool processes only: a task that finished while Redis was away waits for it to store its
    result, instead of ending FAILED with the ConnectionError (and running again once redelivered).
    The main process keeps failing fast: at a broker loss it must cancel tasks and reconnect, and
    Flower must answer, not wait for Redis (result_backend_always_retry would make every process wait)."""
    app.backend.always_retry = True
    app.backend.max_retries = defaults.RESULT_STORE_RETRIES


@signals.beat_init.connect(weak=False)
def record_what_beat_sends(sender, **_) -> None:
    """In Beat only: every periodic task it sends stamps the time into Redis, with the schedule's
    shortest interval, so the exporter can tell a silent Beat (its alert) from a quiet schedule."""
    from datetime import timedelta

    intervals = []
    for entry in sender.scheduler.schedule.values():
        every = getattr(entry.schedule, "run_every", None)
        if isinstance(every, timedelta) and every.total_seconds() > 0:
            intervals.append(every.total_seconds())
    interval = min(intervals, default=3600.0)

    @signals.after_task_publish.connect(weak=False)
    def stamp(**_) -> None:
        try:
            app.backend.client.hset(exporter.BEAT_KEY, mapping={"last_sent": time.time(), "interval": interval})
        except Exception as error:  # the task is sent; a missed stamp only ages the alert's clock
            logger.warning("could not record the periodic task sent: %r", error)
