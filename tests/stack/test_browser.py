"""What a person sees in a real browser (headless Chromium) through the stack's nginx, after
answering the browser's login prompt (the drills: celerykit_testing.browser_drills)."""

from __future__ import annotations

from pathlib import Path

import pytest
from celerykit_testing import browser_drills
from conftest import POOLS, Stack


def workers(stack: Stack) -> list[str]:
    """Every replica's worker name: <pool>@<its container id>."""
    return [f"{pool}@{host}" for pool in POOLS for host in stack.compose.hostnames(f"worker-{pool}")]


def test_flower_lists_every_pools_worker_online(stack: Stack, tmp_path: Path):
    browser_drills.flower_lists_every_worker_online(stack.target, workers(stack), tmp_path)


def test_prometheus_alerts_page_lists_the_rules_and_the_firing_watchdog(stack: Stack, tmp_path: Path):
    browser_drills.prometheus_lists_the_rules_and_the_firing_watchdog(stack.target, tmp_path)


def test_alertmanager_holds_the_firing_watchdog(stack: Stack, tmp_path: Path):
    browser_drills.alertmanager_holds_the_firing_watchdog(stack.target, tmp_path)


@pytest.mark.parametrize(
    ("path", "shown", "hidden"), browser_drills.CANCELLED, ids=["flower", "prometheus", "alertmanager"]
)
def test_cancelling_the_login_prompt_shows_nothing(stack: Stack, tmp_path: Path, path, shown, hidden):
    browser_drills.cancelled_login_shows_nothing(stack.target, tmp_path, path, shown, hidden, workers(stack))
