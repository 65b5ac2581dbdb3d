"""Benchmark 2, throughput: no-op tasks per second, enqueue to SUCCESS, on the bulk pool vs the baseline.

The bulk pool is the kit's low pool (low_priority, concurrency 1); the baseline runs with the same
concurrency. Variants price the kit's settings one at a time:
  kit           the kit's defaults (late ack, requeue on lost worker, prefetch 1, events, 100 tasks per child)
  kit-mtpc      the same with 10000 tasks per child (the recommended default)
  kit-mtpc-p4   the same with prefetch multiplier 4 on this pool
  baseline      Celery's defaults (early ack, prefetch 4, no events, no child recycling)
  baseline+rel  the baseline plus only late ack, requeue on a lost worker and prefetch 1
Each variant stops at its time cap; the rate is then that of the tasks that finished (the table says so).
"""

from __future__ import annotations

from bench import modes, quiet
from bench.sizes import Sizes
from bench.stack import Stack
from bench.stats import median, ratio, shown, spread

CONCURRENCY = 1  # the kit's low (bulk) pool

VARIANTS: dict[str, dict] = {
    "kit": {"pool_env": {}, "cap_s": 60},
    "kit-mtpc": {"pool_env": modes.RECOMMENDED, "cap_s": 240},
    "kit-mtpc-p4": {"pool_env": {**modes.RECOMMENDED, "CELERYKIT_LOW_PREFETCH_MULTIPLIER": "4"}, "cap_s": 240},
    "baseline": {"reliable": False, "cap_s": 240},
    "baseline+rel": {"reliable": True, "cap_s": 240},
}
LABELS = {
    "kit": "kit low pool, current defaults (late ack, prefetch 1, events, 100 tasks/child)",
    "kit-mtpc": "kit low pool, 10000 tasks/child (recommended)",
    "kit-mtpc-p4": "kit low pool, 10000 tasks/child, prefetch 4",
    "baseline": "baseline, Celery defaults (early ack, prefetch 4, no events)",
    "baseline+rel": "baseline + late ack + requeue on lost worker + prefetch 1",
}


def _measure(stack: Stack, name: str, sizes: Sizes) -> dict:
    spec = VARIANTS[name]
    app = "kit" if name.startswith("kit") else "baseline"
    if app == "kit":
        modes.kit(stack, spec["pool_env"])
    else:
        modes.baseline(stack, CONCURRENCY, reliable=spec["reliable"])
    tasks, cap = str(sizes.throughput_tasks), str(spec["cap_s"])
    return stack.client("--app", app, "throughput", "--queue", "low_priority", "--tasks", tasks, "--timeout", cap)


def run(stack: Stack, sizes: Sizes) -> dict:
    def one_round() -> dict:
        figures = {name: _measure(stack, name, sizes) for name in VARIANTS}
        print("  throughput round: " + ", ".join(f"{n} {figures[n]['tasks_per_s']}/s" for n in VARIANTS), flush=True)
        return figures

    rounds = quiet.rounds(stack.project, sizes.throughput_repeats, one_round, "throughput")
    modes.kit(stack)  # back to the kit's defaults
    rates = {name: median([r[name]["tasks_per_s"] for r in rounds]) for name in VARIANTS}

    def per_round(a: str, b: str) -> float:
        return median([ratio(r[a]["tasks_per_s"], r[b]["tasks_per_s"]) for r in rounds])

    return {
        "tasks": sizes.throughput_tasks,
        "concurrency": CONCURRENCY,
        "quiet": quiet.summary(rounds),
        "rounds": rounds,
        "tasks_per_s": rates,
        "succeeded": {name: min(r[name]["succeeded"] for r in rounds) for name in VARIANTS},
        "elapsed_s": {name: median([r[name]["elapsed_s"] for r in rounds]) for name in VARIANTS},
        "over_baseline": {name: per_round(name, "baseline") for name in VARIANTS},
        "over_baseline_spread": {
            name: spread([ratio(r[name]["tasks_per_s"], r["baseline"]["tasks_per_s"]) for r in rounds])
            for name in VARIANTS
        },
        "prefetch4_over_prefetch1": per_round("kit-mtpc-p4", "kit-mtpc"),
        "reliability_cost": per_round("baseline+rel", "baseline"),
        "mtpc_gain": per_round("kit-mtpc", "kit"),
    }


def render(result: dict) -> list[str]:
    rates, done, ratios = result["tasks_per_s"], result["succeeded"], result["over_baseline"]
    lines = [
        f"| {result['tasks']:,} no-op tasks, concurrency {result['concurrency']} | tasks/s | finished | "
        "÷ baseline (same round) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, label in LABELS.items():
        capped = f" (stopped at the {VARIANTS[name]['cap_s']} s cap)" if done[name] < result["tasks"] else ""
        ranged = result.get("over_baseline_spread", {}).get(name)
        ratio_cell = shown(ranged) if ranged else f"{ratios[name]:.2f}"
        lines.append(f"| {label} | {rates[name]:.0f} | {done[name]:,}{capped} | {ratio_cell} |")
    lines += [
        "",
        f"Reliability settings alone (baseline + late ack/requeue/prefetch 1 ÷ baseline): "
        f"**{result['reliability_cost']:.2f}**. Prefetch 4 ÷ prefetch 1 on the kit's pool: "
        f"**{result['prefetch4_over_prefetch1']:.2f}**. 10000 ÷ 100 tasks per child: **{result['mtpc_gain']:.1f}x**.",
    ]
    if "quiet" in result:
        lines += ["", "Ratios: median (min-max) of the ratios within each round. " + quiet.describe(result["quiet"])]
    return lines
