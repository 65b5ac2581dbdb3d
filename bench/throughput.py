"""Benchmark 2, throughput: tasks per second, enqueue to SUCCESS, on the bulk pool vs the baseline.

The bulk pool is the kit's low pool (low_priority, one process); the baseline (one Celery worker with
Celery's defaults) runs with the same concurrency. Every variant runs in every round, one after the
other (the order rotated from round to round), and each ratio is taken within a round:
  kit            the kit as it ships: late ack, requeue on a lost worker, task events for Flower, its
                 recycling leak guards, its fetch, INFO logs
  kit-<choice>   the kit with one of its choices taken back (the ablation: what that choice costs)
  baseline       Celery's defaults (early ack, prefetch 4, no events, no recycling, WARNING logs)
  baseline+rel   the baseline plus only late ack, requeue on a lost worker and prefetch 1
  baseline+rel+events  and task events, on the kit's Redis database, read by the kit's Flower: what
                 Celery itself does with the settings the kit may not give up, no kit code involved
on no-op tasks, and kit (as it ships, and reserving 2 messages per process) against baseline on 10 ms
tasks. Each variant stops at its time cap; the rate is then that of the tasks that finished (the table
says so).
"""

from __future__ import annotations

import json

from bench import modes, quiet
from bench.sizes import Sizes
from bench.stack import Stack
from bench.stats import median, ratio, shown, spread

CONCURRENCY = 1  # the kit's low (bulk) pool
SHORT_TASK_S = 0.01
NO_EVENTS = {"worker_send_task_events": False, "task_send_sent_event": False}
EVENTS = {"worker_send_task_events": True, "task_send_sent_event": True}

# name -> (label, how it runs): `pool_env` (the kit's pool, bench/compose.bench.yaml's switches), or
# `reliable` (the baseline), `conf` more Celery settings for it, `database` its Redis database (also the
# client's) instead of its own; `client` Celery settings for the sending client; `seconds` per task.
VARIANTS: dict[str, dict] = {
    "kit": {"label": "kit low pool, as it ships", "pool_env": {}},
    "kit-no-events": {
        "label": "kit without task events (Flower sees no task)",
        "pool_env": {"BENCH_KIT_CONF": json.dumps(NO_EVENTS)},
        "client": NO_EVENTS,
    },
    "kit-early-ack": {
        "label": "kit with early ack (a task running when its process dies is lost)",
        "pool_env": {"BENCH_KIT_CONF": json.dumps({"task_acks_late": False, "task_reject_on_worker_lost": False})},
    },
    "kit-no-recycling": {
        "label": "kit without recycling (no leak guard)",
        "pool_env": {"BENCH_MAX_TASKS_PER_CHILD": "1000000000", "BENCH_MAX_MEMORY_PER_CHILD": "0"},
    },
    "kit-prefetch-4": {
        "label": "kit reserving 4 messages per process (prefetch multiplier 4)",
        "pool_env": {"BENCH_PREFETCH_MULTIPLIER": "4"},
    },
    "kit-warning-logs": {
        "label": "kit logging warnings only (no line per task)",
        "pool_env": {"BENCH_LOG_LEVEL": "WARNING"},
    },
    "kit-brpop": {
        "label": "kit fetching with kombu's BRPOP (the fetch window open)",
        "pool_env": {"BENCH_FETCH": "brpop"},
    },
    "baseline": {"label": "baseline, Celery defaults (early ack, prefetch 4, no events)", "reliable": False},
    "baseline+rel": {"label": "baseline + late ack + requeue on lost worker + prefetch 1", "reliable": True},
    "baseline+rel+events": {
        "label": "baseline + late ack + requeue + prefetch 1 + task events read by Flower (Celery's own code)",
        "reliable": True,
        "conf": EVENTS,
        "database": 0,  # the kit's, where its Flower reads the events
        "client": EVENTS,
    },
    "kit-10ms": {"label": "kit low pool, as it ships, 10 ms tasks", "pool_env": {}, "seconds": SHORT_TASK_S},
    # Prefetch 2: the next task waits in the worker while one runs, and celerykit.handoff hands it over
    # before the finished one's acknowledgement; the second variant in Celery's order (after it).
    "kit-10ms-prefetch-2": {
        "label": "kit reserving 2 messages per process, 10 ms tasks",
        "pool_env": {"BENCH_PREFETCH_MULTIPLIER": "2"},
        "seconds": SHORT_TASK_S,
    },
    "kit-10ms-prefetch-2-celery-order": {
        "label": "the same, next task handed over after the acknowledgement (Celery's order), 10 ms tasks",
        "pool_env": {"BENCH_PREFETCH_MULTIPLIER": "2", "BENCH_HANDOFF": "celery"},
        "seconds": SHORT_TASK_S,
    },
    "baseline+rel-10ms": {
        "label": "baseline + late ack + requeue on lost worker + prefetch 1, 10 ms tasks",
        "reliable": True,
        "seconds": SHORT_TASK_S,
    },
    "baseline-10ms": {"label": "baseline, 10 ms tasks", "reliable": False, "seconds": SHORT_TASK_S},
}
ABLATION = [name for name, spec in VARIANTS.items() if name.startswith("kit-") and "seconds" not in spec]


def _measure(stack: Stack, name: str, sizes: Sizes) -> dict:
    spec = VARIANTS[name]
    app = "baseline" if "reliable" in spec else "kit"
    if app == "kit":
        modes.kit(stack, spec["pool_env"])
    else:
        modes.baseline(stack, CONCURRENCY, spec["reliable"], conf=spec.get("conf"), database=spec.get("database"))
    seconds = spec.get("seconds", 0.0)
    tasks = sizes.throughput_short_tasks if seconds else sizes.throughput_tasks
    argv = ["--app", app, "--conf", json.dumps(spec.get("client", {})), "throughput", "--queue", "low_priority"]
    argv += ["--tasks", str(tasks), "--seconds", str(seconds), "--timeout", str(sizes.throughput_cap_s)]
    env = modes.client_env(spec.get("database"))
    return stack.client(*argv, timeout=sizes.throughput_cap_s + 300, env=env)


def order(index: int) -> list[str]:
    """The variants of round `index`: the list rotated by one each round, and reversed every other
    round, so that no variant always runs first (after the stack started or the baseline ran) or right
    after the same other one. (Rotation alone kept each variant's predecessor; in the run of
    2026-12-07 two variants with the same settings, each always after the same other variant,
    differed by 7%.)"""
    names = list(VARIANTS) if index % 2 == 0 else list(reversed(VARIANTS))
    shift = index % len(names)
    return names[shift:] + names[:shift]


def run(stack: Stack, sizes: Sizes) -> dict:
    done = []

    def one_round() -> dict:
        figures = {name: _measure(stack, name, sizes) for name in order(len(done))}
        done.append(figures)
        print("  throughput round: " + ", ".join(f"{n} {figures[n]['tasks_per_s']}/s" for n in VARIANTS), flush=True)
        return figures

    rounds = quiet.rounds(stack.project, sizes.throughput_repeats, one_round, "throughput")
    modes.kit(stack)  # back to the kit's defaults

    def ratios(a: str, b: str) -> dict:
        return spread([ratio(r[a]["tasks_per_s"], r[b]["tasks_per_s"]) for r in rounds])

    return {
        "tasks": sizes.throughput_tasks,
        "short_tasks": sizes.throughput_short_tasks,
        "cap_s": sizes.throughput_cap_s,
        "concurrency": CONCURRENCY,
        "quiet": quiet.summary(rounds),
        "rounds": rounds,
        "tasks_per_s": {name: median([r[name]["tasks_per_s"] for r in rounds]) for name in VARIANTS},
        "succeeded": {name: min(r[name]["succeeded"] for r in rounds) for name in VARIANTS},
        "over_baseline": {
            name: ratios(name, "baseline-10ms" if "seconds" in VARIANTS[name] else "baseline") for name in VARIANTS
        },
        # What each choice costs: the kit ÷ the kit without it (below 1: the choice costs throughput).
        "ablation": {name: ratios("kit", name) for name in ABLATION},
        "reliability_cost": ratios("baseline+rel", "baseline"),
        "reliability_and_events_cost": ratios("baseline+rel+events", "baseline"),
        "reliability_cost_10ms": ratios("baseline+rel-10ms", "baseline-10ms"),
    }


def render(result: dict) -> list[str]:
    rates, done, ratios = result["tasks_per_s"], result["succeeded"], result["over_baseline"]
    lines = [
        f"| {result['tasks']:,} no-op tasks ({result['short_tasks']:,} of 10 ms), concurrency "
        f"{result['concurrency']} | tasks/s | finished (worst round) | ÷ baseline of the same task size |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, spec in VARIANTS.items():
        tasks = result["short_tasks"] if spec.get("seconds") else result["tasks"]
        capped = f" (stopped at the {result['cap_s']} s cap)" if done[name] < tasks else ""
        lines.append(f"| {spec['label']} | {rates[name]:.0f} | {done[name]:,}{capped} | {shown(ratios[name])} |")
    lines += [
        "",
        "| the kit's choice (ablation: the kit ÷ the kit without that one choice, same round) | ratio |",
        "| --- | ---: |",
    ]
    for name in ABLATION:
        lines.append(f"| {VARIANTS[name]['label'].removeprefix('kit ')} | {shown(result['ablation'][name])} |")
    lines += [
        "",
        "Reliability settings alone on the baseline (late ack, requeue, prefetch 1 ÷ Celery's defaults): "
        f"**{shown(result['reliability_cost'])}** on no-op tasks, **{shown(result['reliability_cost_10ms'])}** "
        "on 10 ms tasks; with task events read by Flower as well (Celery's own code, no kit code): "
        f"**{shown(result['reliability_and_events_cost'])}** on no-op tasks.",
        "",
        "Ratios: median (min-max) of the ratios within each round. " + quiet.describe(result["quiet"]),
    ]
    return lines
