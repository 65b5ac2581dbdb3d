"""The tasks every benchmark runs, on the kit's pools and on the baseline worker alike.

This module is "the user's app": it configures nothing. The kit runs it as CELERYKIT_APP (and applies
its settings on top); the baseline runs it through `baseline.py` with Celery's defaults.
"""

from __future__ import annotations

import time

from celery import Celery

app = Celery("bench")


@app.task(name="bench.noop")
def noop() -> None:
    return None


@app.task(name="bench.sleep")
def sleep(seconds: float = 1.0) -> None:
    time.sleep(seconds)


@app.task(name="bench.probe")
def probe(sent_at: float) -> float:
    """Return when the task started, in seconds since the epoch (all containers share the host's clock)."""
    del sent_at  # kept in the message so the task's arguments show the enqueue time in Flower
    return time.time()
