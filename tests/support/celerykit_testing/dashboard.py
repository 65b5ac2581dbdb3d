"""The Grafana dashboard's queries as Prometheus would get them, with Grafana's variables substituted.

`dashboard_queries({"pool": "high|low"})` gives every (panel title, PromQL expression) of the kit's
dashboard (share/grafana/dashboards/celerykit.json); a test can send each to a live Prometheus and
check it returns series. A variable not given takes the dashboard's value for "All" (`.*`); Grafana's
own interval variables take fixed values (`$__rate_interval` is `1m`). A variable the dashboard does
not define fails loudly: a typo in a panel is a broken panel.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from importlib.resources import files
from typing import Any

# Grafana's built-in variables, at values any Prometheus with a 15 s scrape interval answers.
BUILTINS = {
    "__rate_interval": "1m",
    "__interval": "1m",
    "__interval_ms": "60000",
    "__range": "1h",
    "__range_s": "3600",
    "__range_ms": "3600000",
}
# $name, ${name}, ${name:format}, [[name]] and [[name:format]]: Grafana's variable syntaxes.
VARIABLE = re.compile(r"\$\{(?P<braced>\w+)(?::[^}]*)?\}|\[\[(?P<bracketed>\w+)(?::[^\]]*)?\]\]|\$(?P<plain>\w+)")


# Flower 2.2's series (flower/events.py), each with the `pool` label Prometheus adds from the worker name.
FLOWER_SERIES = frozenset(
    {
        "flower_events_total",
        "flower_task_runtime_seconds_bucket",
        "flower_task_runtime_seconds_sum",
        "flower_task_runtime_seconds_count",
        "flower_task_prefetch_time_seconds",
        "flower_worker_online",
        "flower_worker_number_of_currently_executing_tasks",
        "flower_worker_prefetched_tasks",
    }
)
SERIES_NAME = re.compile(r"\b((?:celerykit|flower)_[a-z_]+)\b")


def known_series() -> frozenset[str]:
    """The kit's and Flower's series Prometheus has: the kit's exporter's (read from its source) and
    Flower's. The alert rules and the panels may read these and no others."""
    exporter = (files("celerykit") / "exporter.py").read_text(encoding="utf-8")
    return frozenset(re.findall(r'"(celerykit_[a-z_]+)"', exporter)) | FLOWER_SERIES


def series_in(expr: str) -> set[str]:
    """The kit's and Flower's series an expression reads."""
    return set(SERIES_NAME.findall(expr))


def load_dashboard() -> dict[str, Any]:
    """The kit's dashboard, from the installed celerykit package."""
    path = files("celerykit") / "share" / "grafana" / "dashboards" / "celerykit.json"
    return json.loads(path.read_text(encoding="utf-8"))


def regex(values: Iterable[str]) -> str:
    """Several values of a multi-value variable as Grafana puts them into a Prometheus regex."""
    return "|".join(re.escape(value) for value in values)


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included; rows themselves are not panels."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def all_values(dashboard: Mapping[str, Any]) -> dict[str, str]:
    """Each template variable's value when "All" is selected (only variables that offer "All")."""
    return {
        variable["name"]: variable.get("allValue") or ".*"
        for variable in dashboard.get("templating", {}).get("list", [])
        if variable.get("includeAll")
    }


def substitute(expr: str, values: Mapping[str, str]) -> str:
    def value(match: re.Match[str]) -> str:
        name = match["braced"] or match["bracketed"] or match["plain"]
        if name not in values:
            raise KeyError(f"the dashboard has no value for variable {name!r} in: {expr}")
        return values[name]

    return VARIABLE.sub(value, expr)


def dashboard_queries(
    substitutions: Mapping[str, str] | None = None, dashboard: Mapping[str, Any] | None = None
) -> list[tuple[str, str]]:
    """(panel title, expression) for every target of every panel, variables substituted:
    `substitutions` first, then each variable's "All" value, then Grafana's interval variables."""
    board = load_dashboard() if dashboard is None else dashboard
    values = {**BUILTINS, **all_values(board), **(substitutions or {})}
    return [
        (panel["title"], substitute(target["expr"], values))
        for panel in panels(board)
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
