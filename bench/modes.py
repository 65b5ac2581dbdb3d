"""Switch the stack between the kit's pools and the baseline worker, so they never compete for the CPU."""

from __future__ import annotations

import time

from bench.stack import KIT_POOLS, Stack, StackError

SETTLE_S = 5  # after a (re)start: let worker start-up work (mingle, first health checks) pass
KIT_QUEUES = "high_priority,medium_priority,low_priority"
ALL_QUEUES = "high_priority,medium_priority,default,low_priority"


def _ready(stack: Stack, app: str, queues: str, database: str | None = None) -> None:
    env = {"BENCH_REDIS_DB": database} if database else None
    answer = stack.client("--app", app, "ready", "--queues", queues, "--timeout", "180", timeout=240, env=env)
    if not answer["ready"]:
        raise StackError(f"{app}: consumers of {queues} did not answer within 180 s")
    time.sleep(SETTLE_S)


def kit(stack: Stack, pool_env: dict[str, str] | None = None) -> None:
    """The kit's three pools running with their defaults, or recreated with `pool_env`; baseline stopped."""
    # The baseline hands early-acked tasks to its processes: a warm stop would run its whole backlog first.
    stack.compose("stop", "--timeout", "5", "baseline-worker")
    stack.compose("up", "--detach", "--no-deps", *KIT_POOLS, env=pool_env or {})
    _ready(stack, "kit", KIT_QUEUES)


def baseline(stack: Stack, concurrency: int, reliable: bool = False, switches: dict[str, str] | None = None) -> None:
    """Only the baseline worker running: the kit's pools are stopped so both get the same CPU. `switches`:
    more of bench/compose.bench.yaml's (BENCH_CONF, BENCH_BASELINE_DB)."""
    stack.compose("stop", *KIT_POOLS)
    env = {"BENCH_BASELINE_CONCURRENCY": str(concurrency), "BENCH_RELIABLE": "1" if reliable else "0"}
    env |= switches or {}
    stack.compose("up", "--detach", "--no-deps", "baseline-worker", env=env)
    _ready(stack, "baseline", ALL_QUEUES, database=env.get("BENCH_BASELINE_DB"))
