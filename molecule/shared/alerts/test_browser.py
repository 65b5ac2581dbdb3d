"""What a person sees in a real browser (headless Chromium) through the Flower host's nginx, after
answering the login prompt: every worker of every host online in Flower, the kit's rules with the
Watchdog firing in Prometheus, the Watchdog in Alertmanager (celerykit_testing.browser_drills)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celerykit_testing import browser_drills
from conftest import expected_workers

from celerykit.verify.target import Target


def test_flower_lists_every_hosts_workers_online(proxy: Target, tmp_path: Path):
    browser_drills.flower_lists_every_worker_online(proxy, sorted(expected_workers()), tmp_path)


def test_prometheus_alerts_page_lists_the_rules_and_the_firing_watchdog(proxy: Target, tmp_path: Path):
    browser_drills.prometheus_lists_the_rules_and_the_firing_watchdog(proxy, tmp_path)


def test_alertmanager_holds_the_firing_watchdog(proxy: Target, tmp_path: Path):
    browser_drills.alertmanager_holds_the_firing_watchdog(proxy, tmp_path)


@pytest.mark.parametrize(
    ("path", "shown", "hidden"), browser_drills.CANCELLED, ids=["flower", "prometheus", "alertmanager"]
)
def test_cancelling_the_login_prompt_shows_nothing(proxy: Target, tmp_path: Path, path, shown, hidden):
    browser_drills.cancelled_login_shows_nothing(proxy, tmp_path, path, shown, hidden, sorted(expected_workers()))
