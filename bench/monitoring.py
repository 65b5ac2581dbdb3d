"""Benchmark 6, what monitoring costs: pool throughput with the exporter, Prometheus and
Alertmanager running ÷ stopped (alternating, in the same run), the scrape duration of every target
while 100,000 tasks wait in a queue, and the memory each monitoring service holds.

Throughput runs on the high pool (high_priority, 2 processes) with the kit's defaults. Each round
measures both orders' halves (on/off, then off/on in the next round) so drift cancels; the ratio is
taken within a round. The load average before and after each round is recorded.
"""

from __future__ import annotations

import json
import os
import ssl
import time
import urllib.parse
import urllib.request
from base64 import b64encode

from bench.sizes import Sizes
from bench.stack import Stack
from bench.stats import median, ratio

SERVICES = ("exporter", "prometheus", "alertmanager")
QUEUE = "high_priority"
SCRAPES = 4  # scrapes (15 s apart) the backlog is held for


def _throughput(stack: Stack, sizes: Sizes) -> float:
    answer = stack.client("throughput", "--queue", QUEUE, "--tasks", str(sizes.monitoring_tasks), "--timeout", "300")
    return answer["tasks_per_s"]


def _monitoring(stack: Stack, on: bool) -> None:
    if on:
        stack.compose("up", "--detach", "--wait", "--no-deps", *SERVICES)
    else:
        stack.compose("stop", *SERVICES)
    time.sleep(3)


def _query(stack: Stack, expr: str) -> list[dict]:
    url = f"{stack.https_url}/prometheus/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    request = urllib.request.Request(url)  # noqa: S310 - https to the bench stack on loopback
    request.add_header("Authorization", "Basic " + b64encode(f"admin:{stack.flower_password}".encode()).decode())
    context = ssl._create_unverified_context()  # noqa: S323 - the bench stack's own self-signed proxy on loopback
    with urllib.request.urlopen(request, timeout=30, context=context) as response:  # noqa: S310
        return json.loads(response.read())["data"]["result"]


def _memory(stack: Stack) -> dict[str, int]:
    return {service: stack.rss_kib(service) for service in SERVICES}


def run(stack: Stack, sizes: Sizes) -> dict:
    rounds = []
    for index in range(sizes.monitoring_repeats):
        load_before = os.getloadavg()[0]
        figures = {}
        for on in (True, False) if index % 2 == 0 else (False, True):
            _monitoring(stack, on)
            figures["on" if on else "off"] = _throughput(stack, sizes)
        _monitoring(stack, True)
        rounds.append(
            {
                **figures,
                "ratio": ratio(figures["on"], figures["off"]),
                "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
            }
        )
        print(f"  monitoring round {index + 1}: {rounds[-1]}", flush=True)
    idle_memory = _memory(stack)

    stack.compose("stop", "worker-low")
    try:
        queued = stack.client("backlog", "--queue", "low_priority", "--tasks", str(sizes.scrape_backlog), timeout=1800)
        time.sleep(15 * SCRAPES + 5)
        window = f"{15 * SCRAPES}s"
        durations = {
            r["metric"]["job"]: float(r["value"][1])
            for r in _query(stack, f"max by (job) (max_over_time(scrape_duration_seconds[{window}]))")
        }
        counted = _query(stack, 'celerykit_queue_messages{queue="low_priority"}')
        backlog_memory = _memory(stack)
    finally:
        stack.client("purge")
        stack.compose("up", "--detach", "--wait", "--no-deps", "worker-low")
    ratios = [r["ratio"] for r in rounds]
    return {
        "tasks": sizes.monitoring_tasks,
        "rounds": rounds,
        "ratio": {"min": min(ratios), "median": median(ratios), "max": max(ratios)},
        "backlog": queued["queued"],
        "backlog_counted": int(float(counted[0]["value"][1])) if counted else None,
        "scrape_max_s": durations,
        "rss_kib": {"idle": idle_memory, "backlog": backlog_memory},
    }


def render(result: dict) -> list[str]:
    r = result["ratio"]
    lines = [
        f"| {result['tasks']:,} no-op tasks, high pool | tasks/s, monitoring on | off | on ÷ off | "
        "load average before/after |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for index, round_ in enumerate(result["rounds"], 1):
        lines.append(
            f"| round {index} | {round_['on']:.0f} | {round_['off']:.0f} | {round_['ratio']:.2f} | "
            f"{round_['load_before']} / {round_['load_after']} |"
        )
    lines += [
        "",
        f"On ÷ off: min {r['min']:.2f}, median **{r['median']:.2f}**, max {r['max']:.2f}.",
        "",
        f"| target | longest scrape with {result['backlog']:,} tasks waiting (exporter counted "
        f"{result['backlog_counted']:,}) |",
        "| --- | ---: |",
        *[f"| {job} | {seconds * 1000:.0f} ms |" for job, seconds in sorted(result["scrape_max_s"].items())],
        "",
        "| service | RSS idle | RSS with the backlog |",
        "| --- | ---: | ---: |",
        *[
            f"| {service} | {result['rss_kib']['idle'][service] / 1024:.0f} MiB | "
            f"{result['rss_kib']['backlog'][service] / 1024:.0f} MiB |"
            for service in SERVICES
        ],
    ]
    return lines
