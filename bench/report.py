"""Write the results table into docs/benchmarks.md, between markers; the prose around it is kept."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from bench import flower_memory, lifecycle, monitoring, priority, proxy, recycling, scaling, throughput, tls

START = "<!-- results:start (written by bench/run; edit the text around it, not inside) -->"
END = "<!-- results:end -->"
FIGURES_END = "<!-- /figures -->"

SECTIONS: list[tuple[str, str, Callable[[dict], list[str]]]] = [
    ("priority", "1. Priority isolation", priority.render),
    ("throughput", "2. Throughput and the cost of reliability", throughput.render),
    ("recycling", "2b. Replacing a pool process", recycling.render),
    ("flower", "3. Flower memory and API speed", flower_memory.render),
    ("proxy", "4. Proxy overhead", proxy.render),
    ("lifecycle", "5. Stack lifecycle", lifecycle.render),
    ("monitoring", "6. What monitoring costs", monitoring.render),
]

# Benchmarks whose tables go into a document of their own, between `<!-- figures: NAME -->` and FIGURES_END.
DOCUMENTS: dict[str, tuple[str, Callable[[dict], list[str]]]] = {
    "scaling": ("docs/scaling.md", scaling.render),
    "tls": ("docs/benchmarks.md", tls.render),
}


def machine_lines(run: dict) -> list[str]:
    m = run["machine"]
    return [
        f"Run of {run['started']} (sizes: {run['sizes']}, {run['repeats']} rounds each, medians; "
        f"whole run {run['duration_s'] / 60:.1f} min).",
        "",
        "| machine | |",
        "| --- | --- |",
        f"| CPU | {m['cores']} cores, {m['cpu']} (a VM; each round's load average is given with the figures) |",
        f"| memory | {m['memory_gib']} GiB |",
        f"| OS | {m['os']}, kernel {m['kernel']} |",
        f"| Docker / compose | {m['docker']} / {m['compose']} |",
        f"| images | Python {m['python']}, Celery {m['celery']}, kombu {m['kombu']}, Flower {m['flower']}, "
        f"redis-py {m['redis']}; Redis {m['redis_server']}; nginx {m['nginx']} |",
        f"| client | {m['wrk']} |",
    ]


def render(run: dict, results: dict[str, dict]) -> str:
    lines = [START, "", *machine_lines(run)]
    for key, title, renderer in SECTIONS:
        lines += ["", f"### {title}", ""]
        if key in results and "error" not in results[key]:
            lines += renderer(results[key])
        else:
            lines.append(f"Not measured in this run: {results.get(key, {}).get('error', 'not selected')}")
    lines += ["", END]
    return "\n".join(lines)


def update(doc: Path, run: dict, results: dict[str, dict]) -> None:
    block = render(run, results)
    text = doc.read_text() if doc.exists() else f"# Benchmarks\n\n{START}\n{END}\n"
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    doc.write_text(head + block + tail)


def update_figures(doc: Path, name: str, run: dict, lines: list[str]) -> None:
    """One benchmark's tables, with the run and machine they come from, into the document's marker
    (`<!-- figures: NAME -->` ... FIGURES_END); the prose around it is kept."""
    start = f"<!-- figures: {name} -->"
    head, found, rest = doc.read_text().partition(start)
    if not found:
        raise ValueError(f"{doc.name} has no {start} marker")
    _, _, tail = rest.partition(FIGURES_END)
    doc.write_text(head + "\n".join([start, "", *machine_lines(run), "", *lines, "", FIGURES_END]) + tail)
