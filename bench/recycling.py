"""Benchmark: what replacing a pool process costs (celerykit.recycling), per replacement.

The kit's low pool (one process) replaces its process every REPLACE_EVERY no-op tasks, so a round of
`recycling_tasks` tasks makes hundreds of replacements; each process records when it took its first
task and when it exited (benchtasks, BENCH_TIMELINE). The gap of a replacement runs from the old
process's exit to the new one's first task: the time the pool consumed nothing. Two variants, one
after the other in each round:
  kit      the kit as it ships (its recycling fixes)
  celery   Celery 5.7 and billiard 4.3 as they are (the fixes undone, BENCH_RECYCLING=celery), on
           fewer tasks: each of its replacements stalls for seconds
"""

from __future__ import annotations

from bench import modes, quiet
from bench.sizes import Sizes
from bench.stack import Stack
from bench.stats import median, percentile, shown, spread

REPLACE_EVERY = 25  # tasks per process: often enough for hundreds of replacements in a round
VARIANTS = {"kit": "", "celery": "celery"}
PCTS = ("p50", "p95", "max")


def _summary(gaps: list[float]) -> dict:
    return {"p50": round(percentile(gaps, 50), 2), "p95": round(percentile(gaps, 95), 2), "max": max(gaps, default=0.0)}


def _measure(stack: Stack, variant: str, tasks: int) -> dict:
    env = {
        "BENCH_MAX_TASKS_PER_CHILD": str(REPLACE_EVERY),
        "BENCH_TIMELINE": "1",
        "BENCH_RECYCLING": VARIANTS[variant],
    }
    modes.kit(stack, env)
    figures = stack.client("--app", "kit", "recycling", "--tasks", str(tasks), "--timeout", "1800", timeout=2000)
    return {**figures, **_summary(figures["gaps_ms"])}


def run(stack: Stack, sizes: Sizes) -> dict:
    def one_round() -> dict:
        figures = {
            "kit": _measure(stack, "kit", sizes.recycling_tasks),
            "celery": _measure(stack, "celery", sizes.recycling_reference_tasks),
        }
        print(
            "  recycling round: "
            + ", ".join(
                f"{v} p50 {f['p50']:.0f} ms p95 {f['p95']:.0f} ms ({f['replacements']})" for v, f in figures.items()
            ),
            flush=True,
        )
        return figures

    rounds = quiet.rounds(stack.project, sizes.repeats, one_round, "recycling")
    modes.kit(stack)
    result: dict = {"replace_every": REPLACE_EVERY, "rounds": rounds, "quiet": quiet.summary(rounds)}
    for variant in VARIANTS:
        every = [gap for r in rounds for gap in r[variant]["gaps_ms"]]
        result[variant] = {
            "replacements": len(every),
            **_summary(every),
            "spread": {p: spread([r[variant][p] for r in rounds]) for p in PCTS},
            "tasks_per_s": median([r[variant]["tasks_per_s"] for r in rounds]),
        }
    return result


def render(result: dict) -> list[str]:
    kit, celery = result["kit"], result["celery"]
    lines = [
        f"| gap per replacement (old process exits → new one takes a task), a process every {result['replace_every']} "
        "no-op tasks | kit | Celery 5.7 as it is |",
        "| --- | ---: | ---: |",
        f"| replacements measured | {kit['replacements']:,} | {celery['replacements']:,} |",
    ]
    for p in PCTS:
        lines.append(f"| {p}, all replacements | {kit[p]:.1f} ms | {celery[p]:,.1f} ms |")
    for p in PCTS:
        per_round = [shown(variant["spread"][p], 1) for variant in (kit, celery)]
        lines.append(f"| {p} per round: median (min-max) | {per_round[0]} ms | {per_round[1]} ms |")
    lines.append(f"| tasks/s, median over rounds | {kit['tasks_per_s']:.0f} | {celery['tasks_per_s']:.0f} |")
    return [*lines, "", quiet.describe(result["quiet"])]
