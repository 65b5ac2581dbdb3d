"""Switch the stack between the kit's pools and the baseline worker, so they never compete for the CPU."""

from __future__ import annotations

import json
import time

from bench.stack import KIT_POOLS, Stack, StackError

SETTLE_S = 5  # after a (re)start: let worker start-up work (mingle, first health checks) pass
KIT_QUEUES = "high_priority,medium_priority,low_priority"
ALL_QUEUES = "high_priority,medium_priority,default,low_priority"


def _ready(stack: Stack, app: str, queues: str, database: int | None = None) -> None:
    env = client_env(database)
    answer = stack.client("--app", app, "ready", "--queues", queues, "--timeout", "180", timeout=240, env=env)
    if not answer["ready"]:
        raise StackError(f"{app}: consumers of {queues} did not answer within 180 s")
    time.sleep(SETTLE_S)


def client_env(database: int | None) -> dict[str, str] | None:
    """The bench client's environment for a baseline on `database` (None: its own)."""
    return {"BENCH_REDIS_DB": str(database)} if database is not None else None


def kit(stack: Stack, pool_env: dict[str, str] | None = None) -> None:
    """The kit's three pools running with their defaults, or recreated with `pool_env`; baseline stopped."""
    # The baseline hands early-acked tasks to its processes: a warm stop would run its whole backlog first.
    stack.compose("stop", "--timeout", "5", "baseline-worker")
    stack.compose("up", "--detach", "--no-deps", *KIT_POOLS, env=pool_env or {})
    _ready(stack, "kit", KIT_QUEUES)


def baseline(
    stack: Stack, concurrency: int, reliable: bool = False, conf: dict | None = None, database: int | None = None
) -> None:
    """Only the baseline worker running: the kit's pools are stopped so both get the same CPU. `conf`: more
    Celery settings for it; `database`: the Redis database it uses instead of its own (1)."""
    stack.compose("stop", *KIT_POOLS)
    env = {"BENCH_BASELINE_CONCURRENCY": str(concurrency), "BENCH_RELIABLE": "1" if reliable else "0"}
    env |= {"BENCH_CONF": json.dumps(conf)} if conf else {}
    env |= {"BENCH_BASELINE_DB": str(database)} if database is not None else {}
    stack.compose("up", "--detach", "--no-deps", "baseline-worker", env=env)
    _ready(stack, "baseline", ALL_QUEUES, database=database)
