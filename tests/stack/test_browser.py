"""What a person sees in a real browser (headless Chromium) through nginx, after answering the
browser's login prompt: Flower lists every pool's worker, Prometheus's alerts page lists the kit's
rules with the Watchdog firing, Alertmanager holds that alert; and without the login, none of it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml
from celerykit_testing.browser import CHROMIUM, Browser
from conftest import POOLS, Stack

from celerykit.monitoring import RULES

WORKERS = [f"{pool}@worker-{pool}" for pool in POOLS]
ALERTS = [rule["alert"] for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]
# Debian's prometheus 2.42 package ships only the classic UI (the React one is not packaged).
PROMETHEUS_ALERTS = "/prometheus/classic/alerts"
# Debian's prometheus-alertmanager package ships no web UI (its page says so), so a person (or
# amtool) reads the alerts from the API; the browser shows that JSON as text.
ALERTMANAGER_ALERTS = "/alertmanager/api/v2/alerts"
# Flower's table shows each worker's name as one link made of two spans (for a middle ellipsis),
# which innerText breaks onto two lines: read the cells' text, as a person reads the table.
FLOWER_ROWS = (
    "Array.from(document.querySelectorAll('#workers-table tbody tr'),"
    " row => Array.from(row.cells, cell => cell.textContent.trim()))"
)


def browser(stack: Stack, tmp_path: Path, *, login: bool = True) -> Browser:
    """Chromium that answers the login prompt with the stack's user and password (or cancels it)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed: run scripts/bootstrap-host.sh --test-tools")
    credentials = (stack.target.user, stack.target.password) if login else None
    return Browser(credentials, screenshots=tmp_path)


def shows(*texts: str) -> str:
    """A JS condition: the page's text holds every one of `texts`."""
    return " && ".join(f"document.body.innerText.includes({json.dumps(text)})" for text in texts)


def test_flower_lists_every_pools_worker_online(stack: Stack, tmp_path: Path):
    online = (
        f"{json.dumps(WORKERS)}.every(w => {FLOWER_ROWS}.some(([name, status]) => name === w && status === 'Online'))"
    )
    with browser(stack, tmp_path) as chromium:
        # The badge "Online" comes from the page's own poll of /flower/workers?json=1.
        page = chromium.open(
            f"{stack.target.url}/flower/workers", until=online, read=FLOWER_ROWS, name="flower-workers"
        )
    assert page.status == 200, page.text
    statuses = {row[0]: row[1] for row in page.data}
    assert statuses.items() >= {worker: "Online" for worker in WORKERS}.items(), page.text


def test_prometheus_alerts_page_lists_the_rules_and_the_firing_watchdog(stack: Stack, tmp_path: Path):
    # The classic page does not refresh itself: reload it, as a person would, until the first
    # rule evaluation has put the Watchdog in the firing state.
    with browser(stack, tmp_path) as chromium:
        page = chromium.open(
            stack.target.url + PROMETHEUS_ALERTS, until=shows("Watchdog (1 active)"), reload_every=2, name="prometheus"
        )
    assert page.status == 200, page.text
    missing = [alert for alert in ALERTS if alert not in page.text]
    assert not missing, f"rules not on the page: {missing}\n{page.text}"
    assert re.search(r"Firing \([1-9]\d*\)", page.text), page.text


def test_alertmanager_holds_the_firing_watchdog(stack: Stack, tmp_path: Path):
    with browser(stack, tmp_path) as chromium:
        page = chromium.open(
            stack.target.url + ALERTMANAGER_ALERTS, until=shows('"Watchdog"'), reload_every=2, name="alertmanager"
        )
    assert page.status == 200, page.text
    alerts = json.loads(page.text)
    watchdog = [alert for alert in alerts if alert["labels"]["alertname"] == "Watchdog"]
    assert watchdog, page.text
    assert watchdog[0]["status"]["state"] == "active", page.text


@pytest.mark.parametrize(
    ("path", "shown", "hidden"),
    [
        ("/flower/workers", "Access denied", WORKERS),  # Flower's own login
        (PROMETHEUS_ALERTS, "401 Authorization Required", ALERTS),  # nginx's auth_basic
        (ALERTMANAGER_ALERTS, "401 Authorization Required", ["Watchdog"]),
    ],
    ids=["flower", "prometheus", "alertmanager"],
)
def test_cancelling_the_login_prompt_shows_nothing(
    stack: Stack, tmp_path: Path, path: str, shown: str, hidden: list[str]
):
    with browser(stack, tmp_path, login=False) as chromium:
        page = chromium.open(stack.target.url + path, name="cancelled")
    assert page.status == 401, page.text
    assert shown in page.text, page.text
    assert not [text for text in hidden if text in page.text], page.text
