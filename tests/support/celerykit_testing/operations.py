"""Day-2 operations under load: a steady stream of counted tasks to every queue while an operation
runs (a rolling restart, an upgrade), then every task counted by id and, per queue, the longest time
no task of it started or finished during the operation (`gaps`).

The stream and the count are the chaos soak's (`soak.Stream`, `soak.count`): sent from inside the
deployment straight to Redis, counted from the result backend. Nothing is injected here: every task
must succeed exactly once; the caller asserts it.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from celerykit_testing import drills
from celerykit_testing.deployment import Deployment
from celerykit_testing.gaps import longest_gaps
from celerykit_testing.soak import Stream, Tally, count

LEAD = 5.0  # seconds the stream flows before and after the operation: every queue busy around it
DRAIN = 180.0  # seconds the streamed tasks have to finish after the stream ends


def under_stream(
    deployment: Deployment, operation: Callable[[], Any], *, name: str, drain: float = DRAIN
) -> tuple[Any, Tally, dict]:
    """Run `operation` while counted tasks flow to every queue; return its result, the tally and the
    figures (also recorded as `name`). `drain`: how long the count waits for the last tasks (a drill
    that expects some never to finish waits less)."""
    queues = sorted({q for qs in deployment.pools().values() for q in qs})
    seed = random.SystemRandom().randrange(1_000_000)
    stream = Stream(deployment, queues, seed, seconds=1800)  # `stop` ends it once the operation is done
    sender = threading.Thread(target=stream.run, daemon=True)
    sender.start()
    time.sleep(LEAD)
    started = time.time()
    try:
        result = operation()
    finally:
        ended = time.time()
        time.sleep(LEAD)
        stream.stop()
        sender.join(timeout=300)
    if stream.error:
        raise stream.error
    tally, drain_seconds = count(deployment.target, stream.sent, time.monotonic() + drain)
    workers: dict[str, int] = defaultdict(int)
    for task_result in tally.results.values():
        workers[str(task_result.get("worker"))] += 1
    figures = {
        "operation_seconds": round(ended - started, 1),
        "sent": len(stream.sent),
        "refused": dict(stream.refused),
        "succeeded": tally.succeeded,
        "states": dict(tally.states),
        "lost": [s.task_id for s in tally.lost],
        "failed": tally.failed,
        "revoked": tally.revoked,
        "redelivered": len(tally.redelivered),
        "executed_twice": len(tally.executed_twice),
        "drain_seconds": round(drain_seconds, 1),
        "longest_gap_seconds": longest_gaps(stream.sent, tally.results, started, ended),
        "tasks_per_worker": dict(sorted(workers.items())),
        "window": (started, ended),
        "sent_tasks": stream.sent,
    }
    drills.record(name, **{k: v for k, v in figures.items() if k not in ("window", "sent_tasks")})
    return result, tally, figures
