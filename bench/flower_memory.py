"""Benchmark 3, Flower memory and API speed: the kit's max_tasks (10000) against Flower's default (100000).

Both Flowers consume the same event stream at once. The events are published with Celery's event
dispatcher (sent, received, started, succeeded per task, as a worker sends them) in batches, each batch
waiting until both Flowers have counted it: 100,000 tasks through a real pool would take many minutes
on this machine and measure the workers, not Flower. RSS is the Flower process's VmRSS.
"""

from __future__ import annotations

import time
import urllib.request

from bench import wrk
from bench.sizes import Sizes
from bench.stack import Stack, StackError

FLOWERS = {"kit": "flower", "default": "flower-default"}
API = "/flower/api/tasks?limit=50"


def _wait_healthy(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url + "/flower/healthcheck", timeout=5) as response:  # noqa: S310
                if response.read().strip() == b"OK":
                    return
        except OSError:
            pass
        time.sleep(1)
    raise StackError(f"{url} did not answer its health check within {timeout:.0f} s")


def _api_p95(stack: Stack, url: str, seconds: int) -> dict:
    return wrk.run(url + API, "admin", stack.flower_password, seconds)


def run(stack: Stack, sizes: Sizes) -> dict:
    # Runs first after `up`: the kit's Flower holds (almost) nothing yet, the default one starts empty.
    stack.compose("up", "--detach", "--no-deps", "flower-default")
    for service in FLOWERS.values():
        _wait_healthy(stack.direct_url(service))
    time.sleep(3)
    checkpoints = [{"tasks": 0, "rss_kib": {k: stack.rss_kib(s) for k, s in FLOWERS.items()}}]
    published = 0
    for target in sizes.flower_checkpoints:
        answer = stack.client("events", "--tasks", str(target - published), "--timeout", "900", timeout=1000)
        published += answer["tasks"]
        time.sleep(2)
        point: dict = {
            "tasks": published,
            "events": 4 * published,
            "publish_s": round(answer["seconds"], 1),
            "counted": answer["counted"],
            "rss_kib": {k: stack.rss_kib(s) for k, s in FLOWERS.items()},
        }
        if wrk.available():
            point["api_direct"] = {
                k: _api_p95(stack, stack.direct_url(s), sizes.api_seconds) for k, s in FLOWERS.items()
            }
            point["api_nginx_kit"] = _api_p95(stack, stack.https_url, sizes.api_seconds)
        checkpoints.append(point)
        print(
            f"  flower at {published} tasks: kit {point['rss_kib']['kit'] / 1024:.0f} MiB, "
            f"default {point['rss_kib']['default'] / 1024:.0f} MiB",
            flush=True,
        )
    stack.compose("stop", "flower-default")  # it would only take CPU from the next benchmarks
    return {"checkpoints": checkpoints, "max_tasks": {"kit": 10000, "default": 100000}}


def render(result: dict) -> list[str]:
    lines = [
        "| tasks seen (4 events each) | kit Flower RSS (max_tasks 10000) | default Flower RSS (max_tasks 100000) | "
        "default ÷ kit | /api/tasks?limit=50 p95, kit via nginx | same, direct: kit / default |",
        "| ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for point in result["checkpoints"]:
        kit, default = point["rss_kib"]["kit"] / 1024, point["rss_kib"]["default"] / 1024
        nginx = point.get("api_nginx_kit")
        direct = point.get("api_direct")
        nginx_cell = f"{nginx['p95_ms']:.1f} ms" if nginx else "-"
        direct_cell = f"{direct['kit']['p95_ms']:.1f} / {direct['default']['p95_ms']:.1f} ms" if direct else "-"
        lines.append(
            f"| {point['tasks']:,} | {kit:.0f} MiB | {default:.0f} MiB | {default / kit:.2f} | {nginx_cell} | "
            f"{direct_cell} |"
        )
    return lines
