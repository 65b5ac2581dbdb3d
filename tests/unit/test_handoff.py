"""A freed pool process gets the message waiting for it before the finished task is acknowledged
(celerykit.handoff), on a real prefork worker against a throw-away Redis.

The acknowledgement is made slow on purpose: the first task pauses Redis's writes for PAUSE_S as it
ends (`CLIENT PAUSE ... WRITE`), so the worker's main process waits that long for its ack's reply. The
second task, already reserved in the main process (prefetch 2), writes its start time to a file, not
to Redis. With the fix it starts at once; in Celery's order it starts only after the acknowledgement.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celerykit import handoff, patches

PAUSE_S = 2.0

APP = """
import os, time
from celery import Celery

from celerykit import handoff, patches

patches.apply()
if os.environ.get("CELERY_ORDER"):
    handoff.undo()
app = Celery("handoffapp", broker={url!r})
app.conf.update(task_acks_late=True, worker_prefetch_multiplier=2, task_ignore_result=True)


@app.task(name="handoffapp.slow_ack")
def slow_ack(path):
    time.sleep(0.5)  # the worker reserves the second task meanwhile (its fetch writes to Redis too)
    app.broker_connection().default_channel.client.execute_command("CLIENT", "PAUSE", {pause_ms}, "WRITE")
    with open(path, "a") as handle:
        handle.write(f"ended {{time.time()}}\\n")


@app.task(name="handoffapp.started")
def started(path):
    with open(path, "a") as handle:
        handle.write(f"started {{time.time()}}\\n")
"""


def gap_after_a_slow_ack(redis_el, tmp_path: Path, celery_order: bool) -> float:
    """Seconds from the first task's end to the second one's start."""
    redis_el.client().flushall()
    (tmp_path / "handoffapp.py").write_text(APP.format(url=redis_el.url, pause_ms=int(PAUSE_S * 1000)))
    timeline = tmp_path / "timeline"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "CELERY_ORDER": "1" if celery_order else ""}
    argv = [sys.executable, "-m", "celery", "-A", "handoffapp", "worker", "-P", "prefork", "-c", "1", "-Q", "h"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "WARNING"]
    sys.path.insert(0, str(tmp_path))
    try:
        import handoffapp
    finally:
        sys.path.remove(str(tmp_path))
    try:
        # Both sent before the worker starts: it reserves both (prefetch 2 x 1 process).
        handoffapp.slow_ack.apply_async([str(timeline)], queue="h")
        handoffapp.started.apply_async([str(timeline)], queue="h")
        worker = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while len(timeline.read_text().splitlines() if timeline.exists() else []) < 2:
                assert time.monotonic() < deadline, "the two tasks did not run within 60 s"
                time.sleep(0.05)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    finally:
        sys.modules.pop("handoffapp", None)
    times = dict(line.split() for line in timeline.read_text().splitlines())
    return float(times["started"]) - float(times["ended"])


def test_the_next_task_starts_while_the_finished_one_is_acknowledged(redis_el, tmp_path):
    assert gap_after_a_slow_ack(redis_el, tmp_path, celery_order=False) < PAUSE_S / 2


def test_in_celerys_order_the_next_task_waits_for_the_acknowledgement(redis_el, tmp_path):
    """The same worker without the fix: what the test above would see if the fix did nothing."""
    assert gap_after_a_slow_ack(redis_el, tmp_path, celery_order=True) >= PAUSE_S / 2


@pytest.mark.parametrize("times", [1, 2])
def test_the_fix_is_applied_once(times):
    for _ in range(times):
        patches.apply()
    from celery.concurrency import asynpool

    assert asynpool.AsynPool._create_write_handlers.celerykit_patched
    assert not getattr(asynpool.AsynPool._create_write_handlers.__wrapped__, "celerykit_patched", False)
    handoff.undo()
    assert not getattr(asynpool.AsynPool._create_write_handlers, "celerykit_patched", False)
    patches.apply()
