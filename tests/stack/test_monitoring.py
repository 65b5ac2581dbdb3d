"""Monitoring on the compose stack: Prometheus and Alertmanager behind nginx's login, every
target scraped, the exporter's counts, and alerts that arrive as mail and webhook calls."""

from __future__ import annotations

import pytest
from celerykit_testing import monitoring_drills
from celerykit_testing.compose import ComposeDeployment
from celerykit_testing.monitoring_drills import Monitoring
from conftest import ALERT_MAIL_TO, Stack

JOBS = {"celerykit", "flower", "prometheus", "alertmanager"}


@pytest.fixture(scope="module")
def monitoring(stack: Stack) -> Monitoring:
    return monitoring_drills.through_the_proxy(
        stack.target, f"http://127.0.0.1:{stack.compose.env['CELERYKIT_TEST_SINK_PORT']}"
    )


PATHS = [
    "/prometheus/api/v1/query?query=up",
    "/prometheus/api/v1/alerts",
    "/alertmanager/",
    "/alertmanager/api/v2/alerts",
]


@pytest.mark.parametrize("path", PATHS)
def test_prometheus_and_alertmanager_ask_for_flowers_login(stack: Stack, path: str):
    assert stack.target.request("GET", path, auth=False).status == 401
    assert stack.target.request("GET", path).status == 200


def test_every_target_is_scraped(monitoring: Monitoring):
    monitoring_drills.every_target_is_up(monitoring, JOBS)


def test_worker_series_carry_each_workers_name_and_its_pool(deployment: ComposeDeployment, monitoring: Monitoring):
    """Flower's worker series are named <pool>@<container id>, one per replica (Celery and Flower
    merge workers of one name), and labelled with their pool."""
    series = monitoring_drills.wait_for(
        "Flower's workers in Prometheus",
        lambda: [r["metric"] for r in monitoring.query("flower_worker_online == 1")] or None,
        timeout=90,
    )
    seen = {(s["worker"], s["pool"]) for s in series}
    assert seen >= {(name, pool) for pool in ("high", "medium", "low") for name in deployment.worker_names(pool)}


def test_every_dashboard_panel_has_data_after_a_workload(deployment: ComposeDeployment, monitoring: Monitoring):
    monitoring_drills.every_dashboard_panel_has_data(deployment, monitoring)


def test_the_watchdog_reaches_the_webhook(monitoring: Monitoring):
    monitoring_drills.watchdog_reaches_the_webhook(monitoring)


def test_a_stopped_pool_alerts_by_mail_and_webhook_and_recovers(
    deployment: ComposeDeployment, monitoring: Monitoring, capsys: pytest.CaptureFixture
):
    monitoring_drills.stopped_pool_alerts_and_recovers(deployment, monitoring, report=print)
    mails = monitoring.mails()
    assert all(m["to"] == [ALERT_MAIL_TO] for m in mails)
    with capsys.disabled():
        print("\n" + capsys.readouterr().out.strip())
