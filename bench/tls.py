"""Benchmark 8, TLS to Redis: what `CELERYKIT_REDIS_TLS=true` costs the throughput of the kit's bulk pool.

Every round measures the stack twice, once in plain text and once with TLS between Redis and every
client (the pools, Beat, Flower, the exporter and the sending client), each time the whole stack
switched over as a user would (`docker compose up` with the setting; Redis restarts with TLS only),
the order alternating from round to round. The measurement is throughput's own (`kit`, no-op and
10 ms tasks on the low pool); the ratio TLS ÷ plain is taken within each round.
"""

from __future__ import annotations

from bench import modes, quiet, throughput
from bench.sizes import Sizes
from bench.stack import KIT_SERVICES, Stack
from bench.stats import median, ratio, shown, spread

MODES = ("plain", "tls")
MEASURED = ("kit", "kit-10ms")


def switch(stack: Stack, mode: str) -> None:
    """The whole stack (and the sending client) on TLS to Redis or not: what changes is recreated."""
    stack.env["CELERYKIT_REDIS_TLS"] = "true" if mode == "tls" else "false"
    stack.compose("up", "--detach", "--wait", *KIT_SERVICES, timeout=600)
    stack.compose("up", "--detach", "--no-deps", "bench-client")
    modes.kit(stack)


def run(stack: Stack, sizes: Sizes) -> dict:
    done: list[dict] = []

    def one_round() -> dict:
        figures: dict[str, dict] = {}
        for mode in MODES if len(done) % 2 == 0 else MODES[::-1]:
            switch(stack, mode)
            for name in MEASURED:
                figures[f"{name}/{mode}"] = throughput._measure(stack, name, sizes)
        done.append(figures)
        print("  tls round: " + ", ".join(f"{k} {v['tasks_per_s']}/s" for k, v in sorted(figures.items())), flush=True)
        return figures

    try:
        rounds = quiet.rounds(stack.project, sizes.tls_repeats, one_round, "tls")
    finally:
        switch(stack, "plain")  # the stack as the other benchmarks know it

    return {
        "tasks": sizes.throughput_tasks,
        "short_tasks": sizes.throughput_short_tasks,
        "quiet": quiet.summary(rounds),
        "rounds": rounds,
        "tasks_per_s": {
            f"{name}/{mode}": median([r[f"{name}/{mode}"]["tasks_per_s"] for r in rounds])
            for name in MEASURED
            for mode in MODES
        },
        "tls_over_plain": {
            name: spread([ratio(r[f"{name}/tls"]["tasks_per_s"], r[f"{name}/plain"]["tasks_per_s"]) for r in rounds])
            for name in MEASURED
        },
    }


def render(result: dict) -> list[str]:
    rates, ratios = result["tasks_per_s"], result["tls_over_plain"]
    lines = [
        "| kit low pool, concurrency 1 | plain tasks/s | TLS tasks/s | TLS ÷ plain (same round) |",
        "| --- | ---: | ---: | ---: |",
    ]
    labels = {"kit": f"{result['tasks']:,} no-op tasks", "kit-10ms": f"{result['short_tasks']:,} of 10 ms"}
    for name, label in labels.items():
        lines.append(f"| {label} | {rates[f'{name}/plain']:.0f} | {rates[f'{name}/tls']:.0f} | {shown(ratios[name])} |")
    lines += ["", "Ratios: median (min-max) of the ratios within each round. " + quiet.describe(result["quiet"])]
    return lines
