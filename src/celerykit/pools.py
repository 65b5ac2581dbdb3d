"""`celerykit pools drain|ready|status`: restarting pools without losing or stalling work, and a
report on them.

    celerykit pools drain --timeout 300 high@host=high_priority medium@host=medium_priority,default
    celerykit pools ready --timeout 120 high@host=high_priority medium@host=medium_priority,default
    celerykit pools status high@host=high_priority

`drain` makes each named worker stop consuming its queues (`cancel_consumer`), so the other hosts'
pools take the new messages, then waits until it runs nothing and holds nothing reserved, or the
timeout passes. What it still holds is safe either way: a warm shutdown finishes the running tasks,
and the reserved ones (late ack) go back to Redis when the worker closes its channel.
`ready` waits until each named worker answers and consumes every one of its queues again.

`status` reports the queues each consumes, its processes (and autoscale bounds), each queue's waiting
and reserved messages, Redis and Beat.

Each prints one JSON object (what was waited for, how long it took) for the rolling playbooks, and
exit 1 when `ready` times out, so a host that does not come back stops the run before the next host.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any

REPLY_TIMEOUT = 2.0  # seconds a worker has to answer one broadcast
POLL_SECONDS = 1.0


def format_nodes(pools: Sequence[Mapping[str, Any]], hostname: str) -> list[str]:
    """One host's pools as the commands name them: its workers are named <pool>@<hostname>
    (`--hostname=<pool>@%h`). The roles and the status playbook build them with this (a filter)."""
    return [f"{pool['name']}@{hostname}={','.join(pool['queues'])}" for pool in pools]


def parse_node(text: str) -> tuple[str, tuple[str, ...]]:
    """`high@host=high_priority,default` → ("high@host", ("high_priority", "default"))."""
    node, _, queues = text.partition("=")
    names = tuple(q for q in queues.split(",") if q)
    if "@" not in node or not names:
        raise argparse.ArgumentTypeError(f"expected <pool>@<host>=<queue>[,<queue>...], got {text!r}")
    return node, names


def replies(app: Any, method: str, nodes: Sequence[str]) -> dict[str, Any]:
    return getattr(app.control.inspect(destination=list(nodes), timeout=REPLY_TIMEOUT), method)() or {}


def consumed_queues(app: Any, nodes: Sequence[str]) -> dict[str, list[str]]:
    """The queues each worker named consumes now ([] for one that does not answer)."""
    answers = replies(app, "active_queues", nodes)
    return {n: sorted(q["name"] for q in answers.get(n) or []) for n in nodes}


def pool_sizes(app: Any, nodes: Sequence[str]) -> dict[str, dict | None]:
    """Each worker's processes now and, when it autoscales, the bounds it moves between (None for
    a worker that does not answer)."""
    answers = replies(app, "stats", nodes)
    sizes: dict[str, dict | None] = {}
    for node in nodes:
        stats = answers.get(node)
        if not stats:
            sizes[node] = None
            continue
        bounds = stats.get("autoscaler") or {}
        sizes[node] = {
            "now": len(stats.get("pool", {}).get("processes", [])),
            "autoscale": {"min": bounds["min"], "max": bounds["max"]} if bounds else None,
        }
    return sizes


def drain(app: Any, nodes: dict[str, tuple[str, ...]], timeout: float) -> dict:
    started = time.monotonic()
    cancelled = {}
    for node, queues in nodes.items():
        answers = [
            app.control.cancel_consumer(q, destination=[node], reply=True, timeout=REPLY_TIMEOUT) for q in queues
        ]
        cancelled[node] = all(answers)  # a worker that does not answer is restarted all the same
    while True:
        active, reserved = replies(app, "active", nodes), replies(app, "reserved", nodes)
        holding = {n: len(active.get(n) or []) + len(reserved.get(n) or []) for n in nodes if n in active}
        drained = not any(holding.values())
        if drained or time.monotonic() - started > timeout:
            break
        time.sleep(POLL_SECONDS)
    return {
        "drained": drained,
        "seconds": round(time.monotonic() - started, 1),
        "consumers_cancelled": cancelled,
        "still_holding": {n: count for n, count in holding.items() if count},
    }


def ready(app: Any, nodes: dict[str, tuple[str, ...]], timeout: float) -> dict:
    started = time.monotonic()
    while True:
        consuming = consumed_queues(app, nodes)
        missing = {n: sorted(set(queues) - set(consuming[n])) for n, queues in nodes.items()}
        missing = {n: queues for n, queues in missing.items() if queues}
        if not missing or time.monotonic() - started > timeout:
            break
        time.sleep(POLL_SECONDS)
    return {"ready": not missing, "seconds": round(time.monotonic() - started, 1), "not_consuming": missing}


def status(app: Any, nodes: dict[str, tuple[str, ...]]) -> dict:
    """What the status playbook reports for one host's pools: the queues each consumes, each
    queue's waiting and reserved messages, Redis and Beat as the exporter sees them."""
    from celerykit.exporter import Collector
    from celerykit.monitoring import Watch, WatchedPool

    pools = tuple(WatchedPool(node.partition("@")[0], queues, 0) for node, queues in nodes.items())
    samples = {}
    for family in Collector(app, Watch(pools=pools, thresholds={})).collect():
        for sample in family.samples:
            samples[(sample.name, tuple(sample.labels.values()))] = sample.value
    queues = sorted({q for qs in nodes.values() for q in qs})
    last_sent = samples.get(("celerykit_beat_last_sent_timestamp_seconds", ()))
    return {
        "consuming": consumed_queues(app, list(nodes)) if nodes else {},
        "processes": pool_sizes(app, list(nodes)) if nodes else {},
        "queues": {
            q: {
                "waiting": int(samples.get(("celerykit_queue_messages", (q,)), -1)),
                "reserved": int(samples.get(("celerykit_queue_unacked_messages", (q,)), -1)),
            }
            for q in queues
        },
        "redis_up": bool(samples.get(("celerykit_redis_up", ()))),
        "beat_last_sent_seconds_ago": None if last_sent is None else round(time.time() - last_sent, 1),
    }


def build_parser(parser: argparse.ArgumentParser) -> None:
    steps = parser.add_subparsers(dest="step", required=True)
    for name, help_text in (
        ("drain", "stop consuming, then wait until nothing runs or is reserved (or the timeout)"),
        ("ready", "wait until every worker named consumes all of its queues; exit 1 at the timeout"),
        ("status", "the queues each worker consumes, their backlog, Redis and Beat"),
    ):
        step = steps.add_parser(name, help=help_text)
        step.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
        # status without a worker still reports Redis and Beat (a Flower or Beat host)
        many = "*" if name == "status" else "+"
        step.add_argument("nodes", nargs=many, type=parse_node, metavar="POOL@HOST=QUEUE[,QUEUE]")


def main(args: argparse.Namespace) -> int:
    from celerykit.app import app

    nodes = dict(args.nodes)
    if args.step == "status":
        print(json.dumps(status(app, nodes), sort_keys=True))
        return 0
    result = (drain if args.step == "drain" else ready)(app, nodes, args.timeout)
    print(json.dumps(result, sort_keys=True))
    if args.step == "ready" and not result["ready"]:
        for node, queues in result["not_consuming"].items():
            print(f"celerykit: {node} does not consume {', '.join(queues)} after {args.timeout:.0f} s", file=sys.stderr)
        return 1
    return 0
