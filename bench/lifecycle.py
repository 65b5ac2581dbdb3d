"""Benchmark 5, stack lifecycle: cold image build, `up` to all-healthy, one pool restart to consuming again."""

from __future__ import annotations

import time

from bench.sizes import Sizes
from bench.stack import KIT_SERVICES, Stack, StackError
from bench.stats import median

# One service per image: the Celery image serves init, the pools, Beat, Flower and the exporter; the
# monitoring image Prometheus and Alertmanager.
BUILT = ("init", "redis", "nginx", "prometheus")


def build(stack: Stack, sizes: Sizes) -> dict:
    args = ["build", "--no-cache"] if sizes.cold_build else ["build"]
    seconds = stack.timed(*args, *BUILT, timeout=1800)
    return {"build_s": round(seconds, 1), "cold": sizes.cold_build}


def up(stack: Stack) -> dict:
    """From no containers and no volumes (secrets and certificate generated) to every service healthy."""
    stack.down()
    seconds = stack.timed("up", "--detach", "--wait", *KIT_SERVICES, timeout=600)
    stack.compose("up", "--detach", "--no-deps", "bench-client")
    return {"up_s": round(seconds, 1)}


def restart(stack: Stack, sizes: Sizes, service: str = "worker-high", queue: str = "high_priority") -> dict:
    """Stop a pool (warm shutdown), start it, and time until it runs a task that waited for it."""
    rounds = []
    for _ in range(sizes.repeats):
        stop_s = stack.timed("stop", service)
        task = stack.client("enqueue-probe", "--queue", queue)["id"]
        started = time.time()
        stack.compose("start", service)
        answer = stack.client("wait", "--id", task, "--timeout", "180", timeout=240)
        if not answer["done"]:
            raise StackError(f"{service} did not consume {queue} within 180 s of its start")
        consuming_s = float(answer["result"]) - started
        rounds.append({"stop_s": round(stop_s, 2), "start_to_consuming_s": round(consuming_s, 2)})
        print(f"  restart {service}: stop {stop_s:.1f} s, start to consuming {consuming_s:.1f} s", flush=True)
    return {
        "service": service,
        "rounds": rounds,
        "stop_s": median([r["stop_s"] for r in rounds]),
        "start_to_consuming_s": median([r["start_to_consuming_s"] for r in rounds]),
        "restart_s": median([r["stop_s"] + r["start_to_consuming_s"] for r in rounds]),
    }


def render(result: dict) -> list[str]:
    build_label = (
        "cold image build (`build --no-cache`, 3 images)" if result["build"]["cold"] else "image build (cached)"
    )
    restart_result = result.get("restart")
    lines = [
        "| step | seconds |",
        "| --- | ---: |",
        f"| {build_label} | {result['build']['build_s']:.0f} |",
        f"| `up --wait` from nothing to all services healthy | {result['up']['up_s']:.0f} |",
    ]
    if restart_result:
        name = restart_result["service"]
        lines += [
            f"| {name}: stop (warm shutdown, idle) | {restart_result['stop_s']:.1f} |",
            f"| {name}: start to consuming again | {restart_result['start_to_consuming_s']:.1f} |",
            f"| {name}: restart total | {restart_result['restart_s']:.1f} |",
        ]
    return lines
