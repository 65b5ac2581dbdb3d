"""Monitoring drills, written once for both deployments: what Prometheus sees, and what reaches
the operator's mail and webhook when a pool stops.

A deployment's suite hands in `Monitoring`: a way to ask its Prometheus (through nginx, with
Flower's credentials, as an operator would) and to read its test mail/webhook sink.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from celerykit.verify.target import Target
from celerykit_testing.deployment import Deployment

POOL, QUEUE = "low", "low_priority"
BACKLOG = 60  # above the default warning threshold (50), below the critical one (1000)
PRIORITIES = (None, 0, 3, 9)  # kombu files each priority step under a key of its own
POOL_DOWN, BACKLOG_WARNING, WATCHDOG = "CeleryPoolNoWorkers", "CeleryQueueBacklogWarning", "Watchdog"

SEND = """
import sys
from celerykit.app import app
count, queue = int(sys.argv[1]), sys.argv[2]
priorities = [None, 0, 3, 9]
for i in range(count):
    app.send_task("celerykit.demo.bulk", args=[i], queue=queue, priority=priorities[i % 4])
print(count)
"""


@dataclass
class Monitoring:
    query: Callable[[str], list[dict[str, Any]]]  # PromQL -> Prometheus's `data.result`
    mails: Callable[[], list[dict[str, Any]]]  # what the SMTP sink received
    hooks: Callable[[], list[dict[str, Any]]]  # what the webhook sink received


def through_the_proxy(target: Target, sink: str) -> Monitoring:
    """Prometheus asked through the deployment's nginx with Flower's login, as an operator asks it;
    the test's sink (its HTTP side, `sink`) read directly."""

    def query(expr: str) -> list[dict[str, Any]]:
        response = target.request("GET", "/prometheus/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert response.status == 200, response.body[:300]
        return response.json()["data"]["result"]

    def listing(path: str) -> list[dict[str, Any]]:
        with urllib.request.urlopen(sink + path, timeout=10) as answer:  # noqa: S310 - the test's own sink
            return json.loads(answer.read())

    return Monitoring(query=query, mails=lambda: listing("/mails"), hooks=lambda: listing("/hooks"))


def wait_for(what: str, found: Callable[[], Any], timeout: float, every: float = 2.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = found()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.0f} s"
        time.sleep(every)


def value(monitoring: Monitoring, expr: str) -> float | None:
    result = monitoring.query(expr)
    return float(result[0]["value"][1]) if result else None


def notified(monitoring: Monitoring, alertname: str, status: str, since: float, **labels: str) -> dict | None:
    """The first webhook call and the first mail after `since` telling `status` of that alert."""
    hook = next(
        (
            h
            for h in monitoring.hooks()
            if h["received_at"] >= since
            and any(
                a["status"] == status
                and a["labels"].get("alertname") == alertname
                and all(a["labels"].get(k) == v for k, v in labels.items())
                for a in h["payload"]["alerts"]
            )
        ),
        None,
    )
    tag = "[FIRING" if status == "firing" else "[RESOLVED"
    mail = next(
        (
            m
            for m in monitoring.mails()
            if m["received_at"] >= since
            and m["subject"].startswith(tag)
            and alertname in m["subject"]
            and all(v in m["subject"] + m["body"] for v in labels.values())
        ),
        None,
    )
    return {"hook": hook, "mail": mail} if hook and mail else None


def watchdog_reaches_the_webhook(monitoring: Monitoring) -> None:
    """The always-firing Watchdog arrives at the webhook: the whole alert path is alive."""
    wait_for(
        "the Watchdog at the webhook",
        lambda: any(
            a["labels"].get("alertname") == WATCHDOG for h in monitoring.hooks() for a in h["payload"]["alerts"]
        ),
        timeout=120,
    )


def every_target_is_up(monitoring: Monitoring, jobs: set[str]) -> None:
    def up() -> bool:
        seen = {(r["metric"]["job"], r["value"][1]) for r in monitoring.query("up")}
        return {job for job, state in seen if state == "1"} >= jobs and all(s == "1" for _, s in seen)

    wait_for(f"every target of {sorted(jobs)} up", up, timeout=90)


def stopped_pool_alerts_and_recovers(deployment: Deployment, monitoring: Monitoring, report: Callable) -> None:
    """Stop a pool and queue work for it: the exporter counts every message (priority sub-queues
    too), the backlog warning and then the pool's "no worker" alert arrive by mail and webhook;
    start the pool again, and both are resolved."""
    waiting = f'celerykit_queue_messages{{queue="{QUEUE}"}}'
    online = f'celerykit_pool_workers_online{{pool="{POOL}"}}'
    wait_for(
        f"{POOL} online and {QUEUE} empty",
        lambda: value(monitoring, online) and value(monitoring, waiting) == 0,
        timeout=90,
    )
    deployment.stop_pool(POOL)
    stopped = time.time()
    try:
        deployment.run_python(SEND, str(BACKLOG), QUEUE, timeout=120)
        # Every priority sub-queue counted: exactly BACKLOG, or wait_for fails the drill.
        wait_for(f"{BACKLOG} waiting in {QUEUE}", lambda: value(monitoring, waiting) == BACKLOG, 60)
        warned = wait_for(
            "backlog warning by mail and webhook",
            lambda: notified(monitoring, BACKLOG_WARNING, "firing", stopped, queue=QUEUE),
            180,
        )
        down = wait_for(
            "pool-down alert by mail and webhook",
            lambda: notified(monitoring, POOL_DOWN, "firing", stopped, pool=POOL),
            300,
        )
    finally:
        deployment.start_pool(POOL)
    started = time.time()
    resolved = wait_for(
        "pool-down resolved by mail and webhook",
        lambda: notified(monitoring, POOL_DOWN, "resolved", started, pool=POOL),
        240,
    )
    cleared = wait_for(
        "backlog warning resolved by mail and webhook",
        lambda: notified(monitoring, BACKLOG_WARNING, "resolved", started, queue=QUEUE),
        240,
    )
    report(
        "pool stopped -> backlog warning mail {:.0f} s, pool-down mail {:.0f} s (its rule waits 120 s); "
        "pool started -> resolved mail {:.0f} s, backlog resolved {:.0f} s".format(
            warned["mail"]["received_at"] - stopped,
            down["mail"]["received_at"] - stopped,
            resolved["mail"]["received_at"] - started,
            cleared["mail"]["received_at"] - started,
        )
    )


WORKLOAD = """
from celerykit.app import app
app.send_task("celerykit.demo.flaky", args=[1])  # retried once (after the demo's retry delay)
results = [app.send_task(name, args=args) for name, args in [
    *[("celerykit.demo.urgent", []) for _ in range(20)],
    *[("celerykit.demo.report", []) for _ in range(10)],
    *[("celerykit.demo.sleep", [0.2]) for _ in range(5)],
    ("celerykit.demo.sleep", ["not a number"]),  # fails: a TypeError in the task
]]
for result in results:
    result.get(timeout=120, propagate=False)
print(len(results))
"""


def every_dashboard_panel_has_data(deployment: Deployment, monitoring: Monitoring) -> None:
    """After a workload with successes, a retry and a failure, every query of every panel of the
    Grafana dashboard (its variables at "All") returns series from the live Prometheus."""
    from celerykit_testing.dashboard import dashboard_queries

    deployment.run_python(WORKLOAD, timeout=240)
    queries = dashboard_queries({})

    missing: list[str] = []

    def filled() -> bool:
        missing[:] = [f"{title}: {expr}" for title, expr in queries if not monitoring.query(expr)]
        return not missing

    # Rates need two scrapes (15 s apart) of a counter after its first event.
    try:
        wait_for("data in every panel", filled, timeout=120, every=5)
    except AssertionError:
        raise AssertionError("panels without data:\n" + "\n".join(missing)) from None
