"""The app every kit service runs: yours (CELERYKIT_APP, as for `celery -A`) with the kit's settings.

`celery -A celerykit.app worker` loads the app named by CELERYKIT_APP (default: the demo app) and
overrides broker, serialization and reliability settings with the kit's. Routes, schedules and
anything else your app configures stay as they are.
"""

from __future__ import annotations

import os

from celery import signals
from celery.app.utils import find_app

from celerykit import defaults, patches
from celerykit.celeryconfig import kit_settings
from celerykit.settings import Env

patches.apply()
app = find_app(os.environ.get("CELERYKIT_APP", "celerykit.demo:app"))
app.conf.update(kit_settings(Env.current()))


@signals.worker_process_init.connect(weak=False)
def store_results_through_a_broker_loss(**_) -> None:
    """In pool processes only: a task that finished while Redis was away waits for it to store its
    result, instead of ending FAILED with the ConnectionError (and running again once redelivered).
    The main process keeps failing fast: at a broker loss it must cancel tasks and reconnect, and
    Flower must answer, not wait for Redis (result_backend_always_retry would make every process wait)."""
    app.backend.always_retry = True
    app.backend.max_retries = defaults.RESULT_STORE_RETRIES
