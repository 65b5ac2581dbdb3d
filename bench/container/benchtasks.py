"""The tasks every benchmark runs, on the kit's pools and on the baseline worker alike.

This module is "the user's app": it configures nothing. The kit runs it as CELERYKIT_APP (and applies
its settings on top); the baseline runs it through `baseline.py` with Celery's defaults.

Benchmark switches, read from the environment by a kit worker only (bench/compose.bench.yaml passes
them; empty means the kit as it ships), each to price one of the kit's choices:
  BENCH_KIT_CONF     a JSON object of Celery settings laid over the kit's (an ablation)
  BENCH_FETCH        "brpop": kombu's own fetch instead of the kit's (celerykit.atomic_fetch)
  BENCH_RECYCLING    "celery": Celery's and billiard's replacement of a pool process, without the
                     kit's fixes (celerykit.recycling)
  BENCH_HANDOFF      "celery": Celery's order, the next task written to a freed process only after the
                     finished one's acknowledgement (without celerykit.handoff)
  BENCH_TIMELINE     "1": each pool process records in Redis when it takes its first task and when
                     it exits (`bench:timeline`), for the replacement gap
"""

from __future__ import annotations

import json
import os
import sys
import time

from celery import Celery, current_app, signals

app = Celery("bench")
TIMELINE = "bench:timeline"


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


def _kit_switches() -> None:
    kit = sys.modules.get("celerykit.app")  # importing this module: the kit lays its settings on next
    if kit is None:
        return
    if conf := json.loads(os.environ.get("BENCH_KIT_CONF") or "{}"):
        kit_settings = kit.kit_settings
        kit.kit_settings = lambda env: {**kit_settings(env), **conf}
    if os.environ.get("BENCH_FETCH") == "brpop":
        from celerykit import atomic_fetch

        atomic_fetch.undo()
    if os.environ.get("BENCH_RECYCLING") == "celery":
        from celerykit import recycling

        recycling.undo()
    if os.environ.get("BENCH_HANDOFF") == "celery":
        from celerykit import handoff

        handoff.undo()


def _record(kind: str) -> None:
    current_app.backend.client.rpush(TIMELINE, f"{kind} {os.getpid()} {time.time():.6f}")


if os.environ.get("BENCH_TIMELINE") == "1":

    @signals.task_prerun.connect(weak=False)
    def first_task(**_) -> None:
        if not getattr(first_task, "seen", False):
            first_task.seen = True  # per process: a replacement starts with a fresh module state
            _record("first")

    @signals.worker_process_shutdown.connect(weak=False)
    def exiting(**_) -> None:
        _record("exit")


_kit_switches()
