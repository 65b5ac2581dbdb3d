"""Benchmark 1, priority isolation: enqueue->start latency of high-priority probes under a low-priority backlog.

Same load on the kit (three pools, 2+2+1 processes, as it ships) and on the baseline (one worker,
Celery's defaults, concurrency 5, every queue), one after the other in each round.
"""

from __future__ import annotations

from bench import modes, quiet
from bench.sizes import Sizes
from bench.stack import Stack
from bench.stats import median, ratio, shown, spread, summary

BASELINE_CONCURRENCY = 5  # the kit's 2 + 2 + 1
SIDES = ("kit", "baseline")
PCTS = ("p50", "p95", "p99")


def _round(stack: Stack, app: str, sizes: Sizes) -> dict:
    raw = stack.client(
        *("--app", app, "priority", "--backlog", str(sizes.backlog), "--probes", str(sizes.probes)),
        *("--interval", str(sizes.probe_interval)),
        timeout=900,
    )
    return {**raw, **summary(raw["latencies_ms"])}  # every sample stays in the JSON result


def _measure(stack: Stack, sizes: Sizes) -> dict:
    modes.kit(stack)
    figures = {"kit": _round(stack, "kit", sizes)}
    modes.baseline(stack, BASELINE_CONCURRENCY)
    figures["baseline"] = _round(stack, "baseline", sizes)
    print("  priority round: " + ", ".join(f"{s} p95 {figures[s]['p95']:.1f} ms" for s in SIDES), flush=True)
    return figures


def run(stack: Stack, sizes: Sizes) -> dict:
    rounds = quiet.rounds(stack.project, sizes.repeats, lambda: _measure(stack, sizes), "priority")
    modes.kit(stack)
    result: dict = {"rounds": rounds, "backlog": sizes.backlog, "probes": sizes.probes, "quiet": quiet.summary(rounds)}
    for side in SIDES:
        result[side] = {p: median([r[side][p] for r in rounds]) for p in (*PCTS, "max")}
        result[side]["completed"] = min(r[side]["completed"] for r in rounds)
        result[side]["low_queue_after_probes"] = min(r[side]["low_queue_after_probes"] for r in rounds)
    # Ratios per round (same run), then their median.
    result["baseline_over_kit"] = {p: median([ratio(r["baseline"][p], r["kit"][p]) for r in rounds]) for p in PCTS}
    result["spread"] = {side: {p: spread([r[side][p] for r in rounds]) for p in (*PCTS, "max")} for side in SIDES}
    return result


def render(result: dict) -> list[str]:
    kit, base, ranges, ratios = result["kit"], result["baseline"], result["spread"], result["baseline_over_kit"]
    lines = [
        f"| enqueue→start, {result['probes']} probes under {result['backlog']:,} queued 1-s tasks | kit | "
        "baseline (1 worker, c=5) | baseline ÷ kit |",
        "| --- | ---: | ---: | ---: |",
    ]
    for p in PCTS:
        cells = [shown(ranges[side][p], 1) + " ms" for side in SIDES]
        lines.append(f"| {p} | {' | '.join(cells)} | {ratios[p]:,.0f}x |")
    lines += [
        f"| max | {shown(ranges['kit']['max'], 1)} ms | {shown(ranges['baseline']['max'], 1)} ms | |",
        f"| probes completed (worst round) | {kit['completed']} | {base['completed']} | |",
        f"| low_priority backlog left after the probes (worst round) | {kit['low_queue_after_probes']:,} | "
        f"{base['low_queue_after_probes']:,} | |",
        "",
        "Median (min-max) over the rounds. " + quiet.describe(result["quiet"]),
    ]
    return lines
