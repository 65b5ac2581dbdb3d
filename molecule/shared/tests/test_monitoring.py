"""Monitoring on the Molecule hosts: Prometheus (on the Flower host, behind nginx's login)
scrapes every host, the alert path reaches the test's mail and webhook sink, and a stopped pool
alerts and recovers. The drills are shared with the compose tests (celerykit_testing)."""

from __future__ import annotations

from celerykit_testing import monitoring_drills
from celerykit_testing.monitoring_drills import Monitoring
from conftest import hosts

from celerykit.verify.target import Target

GROUPS = ("redis", "celery_workers", "celery_beat", "flower")


def test_prometheus_asks_for_flowers_login(proxy: Target):
    assert proxy.request("GET", "/prometheus/api/v1/alerts", auth=False).status == 401
    assert proxy.request("GET", "/alertmanager/api/v2/status", auth=False).status == 401
    assert proxy.request("GET", "/alertmanager/api/v2/status").status == 200


def test_prometheus_scrapes_every_host(monitoring: Monitoring):
    every = {host for group in GROUPS for host in hosts(group)}
    addresses = {
        host.ansible("setup", "filter=ansible_default_ipv4")["ansible_facts"]["ansible_default_ipv4"]["address"]
        for host in every
    }
    monitoring_drills.every_target_is_up(monitoring, {"celerykit", "flower", "prometheus", "alertmanager", "node"})
    nodes = {r["metric"]["instance"].rsplit(":", 1)[0] for r in monitoring.query('up{job="node"} == 1')}
    assert nodes == addresses


def test_the_watchdog_reaches_the_webhook(monitoring: Monitoring):
    monitoring_drills.watchdog_reaches_the_webhook(monitoring)
