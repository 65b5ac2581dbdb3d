"""A worker's liveness as a file, for its container's health check.

The worker's main process touches the file every TOUCH_SECONDS while its consumer is connected to the
broker and consuming, and removes it when the consumer stops (the broker lost, a shutdown); a consumer
that connects again touches it again. `python3 -m celerykit.health worker` then reads the file's age, a few
milliseconds of CPU, where pinging the worker through Redis imported Celery and the app: a third of a
second of CPU every 20 s for each worker container, most of what an idle compose stack spent.

On where CELERYKIT_WORKER_LIVENESS_FILE names the file (compose sets it in every worker container).
Hosts set none: systemd watches their workers, and the health check without it is a configuration
error.

This module is imported by every worker health check: Celery and logging are imported only where the
step is installed.
"""

from __future__ import annotations

import os
import time
from typing import Any

VARIABLE = "CELERYKIT_WORKER_LIVENESS_FILE"
TOUCH_SECONDS = 5.0
# Six touches missed: the event loop stuck, or the consumer gone without its stop (killed).
MAX_AGE_SECONDS = 30.0


def is_alive(path: str) -> bool:
    """The worker touched the file within MAX_AGE_SECONDS."""
    try:
        age = time.time() - os.stat(path).st_mtime
    except FileNotFoundError:
        return False
    return age < MAX_AGE_SECONDS


def install(app: Any) -> None:
    """Add the step to the app's worker consumer (it runs only where VARIABLE is set)."""
    import logging
    from pathlib import Path

    from celery import bootsteps

    logger = logging.getLogger(__name__)

    class Liveness(bootsteps.StartStopStep):
        """Touches the file on the worker's own timer (the event loop's), as Celery's heartbeat sends."""

        requires = ("celery.worker.consumer.tasks:Tasks",)  # consuming: connected, its queues declared

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.path = os.environ.get(VARIABLE, "").strip()
            self.tref = None

        def include_if(self, parent: Any) -> bool:
            return bool(self.path)

        def start(self, parent: Any) -> None:
            self.touch()
            self.tref = parent.timer.call_repeatedly(TOUCH_SECONDS, self.touch)

        def stop(self, parent: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as error:  # logged: an error here would cut short the worker's shutdown
                logger.warning("could not remove the liveness file %s: %s", self.path, error)

        shutdown = stop

        def touch(self) -> None:
            Path(self.path).touch()

    app.steps["consumer"].add(Liveness)
