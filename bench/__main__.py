"""Run the benchmarks against a fresh compose stack and record the figures.

    bench/run [--quick] [--keep] [lifecycle flower proxy priority throughput recycling monitoring scaling tls]

Each benchmark prints the kit's figures next to the baseline's and writes bench/results/<name>.json
(quick runs: bench/results-quick/). A full run of all seven also rewrites the table in docs/benchmarks.md.
`scaling` runs only when named (it replaces the workers and empties Flower and Prometheus); a full run
of it rewrites its table in docs/scaling.md. So does `tls` (it restarts the whole stack with TLS to
Redis and back), in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from bench import (
    flower_memory,
    lifecycle,
    machine,
    monitoring,
    priority,
    proxy,
    recycling,
    report,
    scaling,
    throughput,
    tls,
)
from bench.sizes import FULL, QUICK, Sizes
from bench.stack import ROOT, Stack

NAMES = ("lifecycle", "proxy", "flower", "priority", "throughput", "recycling", "monitoring", "scaling", "tls")
DEFAULT = NAMES[:7]  # the ones docs/benchmarks.md's results table shows; scaling and tls only when named
RUNNERS: dict[str, Callable[[Stack, Sizes], dict]] = {
    "flower": flower_memory.run,
    "proxy": proxy.run,
    "priority": priority.run,
    "throughput": throughput.run,
    "recycling": recycling.run,
    "monitoring": monitoring.run,
    "scaling": scaling.run,
    "tls": tls.run,
}
RENDER = {key: renderer for key, _, renderer in report.SECTIONS} | {
    key: renderer for key, (_, renderer) in report.DOCUMENTS.items()
}


def _print_table(name: str, result: dict) -> None:
    if "error" in result:
        print(f"== {name}: FAILED: {result['error']}", flush=True)
        return
    print(f"== {name}", *RENDER[name](result), sep="\n", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="bench/run", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "names", nargs="*", metavar="NAME", help=f"benchmarks to run: {' '.join(NAMES)} (default: all but scaling)"
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, for development")
    parser.add_argument("--keep", action="store_true", help="leave the stack running at the end")
    parser.add_argument("--results", metavar="DIR", help="where to write the JSON results (default bench/results)")
    args = parser.parse_args()
    names = args.names or list(DEFAULT)
    if unknown := set(names) - set(NAMES):
        parser.error(f"unknown benchmark(s): {' '.join(sorted(unknown))}")
    sizes = QUICK if args.quick else FULL
    out = (
        Path(args.results).resolve()
        if args.results
        else ROOT / "bench" / ("results-quick" if args.quick else "results")
    )
    out.mkdir(parents=True, exist_ok=True)

    started = time.monotonic()
    run: dict = {"started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "sizes": sizes.name}
    run["repeats"] = sizes.repeats
    results: dict[str, dict] = {}
    stack = Stack.create()
    life: dict = {}
    try:
        # A cold build is lifecycle's figure; without lifecycle the cache saves minutes of the run.
        build_sizes = sizes if "lifecycle" in names else replace(sizes, cold_build=False)
        print(f"building images ({'cold' if build_sizes.cold_build else 'cached'}) and starting the stack", flush=True)
        life["build"] = lifecycle.build(stack, build_sizes)
        life["up"] = lifecycle.up(stack)
        print(f"  build {life['build']['build_s']} s, up to healthy {life['up']['up_s']} s", flush=True)
        run["machine"] = machine.describe(stack)
        for name in (n for n in NAMES if n in names and n in RUNNERS):
            print(f"running {name}", flush=True)
            try:
                results[name] = RUNNERS[name](stack, sizes)
            except Exception as error:
                traceback.print_exc()
                results[name] = {"error": f"{type(error).__name__}: {str(error)[:300]}"}
            _print_table(name, results[name])
        if "lifecycle" in names:
            print("running pool restart", flush=True)
            life["restart"] = lifecycle.restart(stack, sizes)
            results["lifecycle"] = life
            _print_table("lifecycle", life)
    finally:
        if not args.keep:
            stack.cleanup()
    run["duration_s"] = round(time.monotonic() - started, 1)
    run["sizes_detail"] = asdict(sizes)
    for name, result in results.items():
        (out / f"{name}.json").write_text(json.dumps({"run": run, name: result}, indent=2) + "\n")
    (out / "run.json").write_text(json.dumps(run, indent=2) + "\n")
    shown = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    print(f"whole run: {run['duration_s'] / 60:.1f} min; results in {shown}/", flush=True)
    if not args.quick and not args.results and set(DEFAULT) <= set(names):
        report.update(ROOT / "docs" / "benchmarks.md", run, results)
        print("docs/benchmarks.md updated", flush=True)
    for name, (doc, renderer) in report.DOCUMENTS.items():
        if not args.quick and not args.results and "error" not in results.get(name, {"error": "not run"}):
            rounds = results[name].get("quiet", {}).get("rounds", run["repeats"])  # its own, not the sizes'
            report.update_figures(ROOT / doc, name, run | {"repeats": rounds}, renderer(results[name]))
            print(f"{doc} updated", flush=True)
    return 1 if any("error" in r for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
