"""The demo app: one task per priority queue, a periodic heartbeat, a sleeper and a task that retries.

Run your own app instead by setting CELERYKIT_APP (see README, "Your own app").
"""

from __future__ import annotations

import contextlib
import os
import time

import redis
from celery import Celery

app = Celery("celerykit_demo")

HEARTBEAT_SECONDS = float(os.environ.get("CELERYKIT_DEMO_HEARTBEAT_SECONDS", "30"))
RETRY_DELAY_SECONDS = int(os.environ.get("CELERYKIT_DEMO_RETRY_DELAY_SECONDS", "60"))
# A long tally task's state in the result backend once its run is counted: a drill interrupts it
# only then (the worker reports STARTED a moment before the task's body runs, and a run killed in
# between was never counted).
COUNTED = "COUNTED"

app.conf.task_routes = {
    "celerykit.demo.urgent": {"queue": "high_priority"},
    "celerykit.demo.report": {"queue": "medium_priority"},
    "celerykit.demo.bulk": {"queue": "low_priority"},
    "celerykit.demo.sleep": {"queue": "low_priority"},
    "celerykit.demo.tally": {"queue": "low_priority"},
    "celerykit.demo.flaky": {"queue": "default"},
    "celerykit.demo.heartbeat": {"queue": "default"},
}
app.conf.beat_schedule = {
    "heartbeat": {"task": "celerykit.demo.heartbeat", "schedule": HEARTBEAT_SECONDS},
}


class TransientError(Exception):
    """A failure worth retrying (a flaky upstream, say)."""


def _where(task) -> dict:
    return {"worker": task.request.hostname, "queue": (task.request.delivery_info or {}).get("routing_key")}


@app.task(bind=True, name="celerykit.demo.urgent")
def urgent(self, payload=None):
    return {**_where(self), "payload": payload}


@app.task(bind=True, name="celerykit.demo.report")
def report(self, payload=None):
    return {**_where(self), "payload": payload}


@app.task(bind=True, name="celerykit.demo.bulk")
def bulk(self, payload=None):
    return {**_where(self), "payload": payload}


@app.task(bind=True, name="celerykit.demo.sleep")
def sleep(self, seconds: float = 1.0):
    time.sleep(seconds)
    return {**_where(self), "slept": seconds}


def _count(client, key: str, patience: float = 60.0) -> int:
    """INCR a counter, waiting for Redis if it is down (a drill may have killed it): the count must
    not turn into the task's failure."""
    deadline = time.monotonic() + patience
    while True:
        try:
            count = client.incr(key)
            client.expire(key, 86400)
            return int(count)
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@app.task(bind=True, name="celerykit.demo.tally")
def tally(self, seconds: float = 0.0):
    """Count this task id's executions in the result backend, sleep, return the count.

    Fault drills send it (to any queue) and read the result from Flower: `runs` counts the starts
    (2 = started again after its worker died), `completions` the runs that got to the end
    (2 = executed twice). The counter lives in Redis, so it survives the worker that ran the task.
    """
    started = time.time()  # when this run began: drills measure how long a queue went without a start
    key = f"celerykit:tally:{self.request.id}"
    runs = _count(self.app.backend.client, key)
    if seconds:
        with contextlib.suppress(redis.RedisError):  # a signal for the drills, never the task's failure
            self.update_state(state=COUNTED)
    time.sleep(seconds)
    completions = _count(self.app.backend.client, key + ":done")
    return {**_where(self), "runs": runs, "completions": completions, "slept": seconds, "started": started}


@app.task(bind=True, name="celerykit.demo.heartbeat")
def heartbeat(self):
    return {**_where(self), "at": time.time()}


@app.task(
    bind=True,
    name="celerykit.demo.flaky",
    autoretry_for=(TransientError,),
    max_retries=3,
    default_retry_delay=RETRY_DELAY_SECONDS,
)
def flaky(self, failures: int = 1):
    """Fail the first `failures` attempts, then succeed: shows retries with backoff."""
    if self.request.retries < failures:
        raise TransientError(f"attempt {self.request.retries + 1} of {failures + 1} fails on purpose")
    return {**_where(self), "retries": self.request.retries}
