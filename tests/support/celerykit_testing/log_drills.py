"""What a failing task leaves in the JSON logs, checked once for both deployments: one ERROR line
from the pool process with the task's id, name, pool and worker and the whole traceback, and the
main process's "received" line naming the same task."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

FAILING = "celerykit.demo.urgent"
FAILING_ARGS = ["one", "two", "three"]  # one argument too many: a TypeError in the task


def failing_task_logged(records: Callable[[], list[dict[str, Any]]], task_id: str, pool: str, worker: str) -> None:
    """`records()`: the records of the worker that ran the task (its container's or unit's log)."""
    deadline = time.monotonic() + 10  # Flower may learn of the failure before the log has the line
    while True:
        mine = [r for r in records() if r.get("task_id") == task_id]
        failed = [r for r in mine if r["level"] == "ERROR" and "exc_info" in r]
        if failed or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert failed, mine
    (line,) = failed
    assert line["task_name"] == FAILING
    assert line["process"].startswith("ForkPoolWorker-"), line  # a pool process
    assert (line["pool"], line["hostname"]) == (pool, worker)
    assert task_id in line["message"] and "TypeError" in line["message"]
    assert line["exc_info"].startswith("Traceback (most recent call last):\n"), line["exc_info"]
    assert "TypeError: " in line["exc_info"] and "positional argument" in line["exc_info"]
    # The main process's "received" line names the task too.
    assert any(r["process"] == "MainProcess" and "received" in r["message"] for r in mine), mine
