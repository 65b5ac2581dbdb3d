"""What a person sees in a real browser (headless Chromium) through the deployment's nginx, after
answering the browser's login prompt, written once for both deployments: Flower lists every
pool's worker online, Prometheus's alerts page lists the kit's rules with the Watchdog firing,
Alertmanager holds that alert; and with the prompt cancelled, none of it."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from celerykit.monitoring import RULES
from celerykit.verify.target import Target
from celerykit_testing.browser import CHROMIUM, Browser

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
# (path, what the page says, what it must not show) with the login prompt cancelled.
CANCELLED = [
    ("/flower/workers", "Access denied", None),  # Flower's own login; None: the workers
    (PROMETHEUS_ALERTS, "401 Authorization Required", ALERTS),  # nginx's auth_basic
    (ALERTMANAGER_ALERTS, "401 Authorization Required", ["Watchdog"]),
]


def browser(target: Target, tmp_path: Path, *, login: bool = True) -> Browser:
    """Chromium that answers the login prompt with the deployment's user and password (or cancels it)."""
    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed: run scripts/bootstrap-host.sh --test-tools")
    credentials = (target.user, target.password) if login else None
    return Browser(credentials, screenshots=tmp_path, hosts={urlsplit(target.url).hostname or ""})


def shows(*texts: str) -> str:
    """A JS condition: the page's text holds every one of `texts`."""
    return " && ".join(f"document.body.innerText.includes({json.dumps(text)})" for text in texts)


def flower_lists_every_worker_online(target: Target, workers: list[str], tmp_path: Path) -> None:
    online = (
        f"{json.dumps(workers)}.every(w => {FLOWER_ROWS}.some(([name, status]) => name === w && status === 'Online'))"
    )
    with browser(target, tmp_path) as chromium:
        # The badge "Online" comes from the page's own poll of /flower/workers?json=1, which asks every
        # worker (Celery's inspect): on a loaded two-core host its first answer took over 30 s.
        page = chromium.open(
            f"{target.url}/flower/workers", until=online, read=FLOWER_ROWS, name="flower-workers", timeout=90
        )
    assert page.status == 200, page.text
    statuses = {row[0]: row[1] for row in page.data}
    assert statuses.items() >= dict.fromkeys(workers, "Online").items(), page.text


def prometheus_lists_the_rules_and_the_firing_watchdog(target: Target, tmp_path: Path) -> None:
    # The classic page does not refresh itself: reload it, as a person would, until the first
    # rule evaluation has put the Watchdog in the firing state.
    with browser(target, tmp_path) as chromium:
        page = chromium.open(
            target.url + PROMETHEUS_ALERTS, until=shows("Watchdog (1 active)"), reload_every=2, name="prometheus"
        )
    assert page.status == 200, page.text
    missing = [alert for alert in ALERTS if alert not in page.text]
    assert not missing, f"rules not on the page: {missing}\n{page.text}"
    assert re.search(r"Firing \([1-9]\d*\)", page.text), page.text


def alertmanager_holds_the_firing_watchdog(target: Target, tmp_path: Path) -> None:
    with browser(target, tmp_path) as chromium:
        page = chromium.open(
            target.url + ALERTMANAGER_ALERTS, until=shows('"Watchdog"'), reload_every=2, name="alertmanager"
        )
    assert page.status == 200, page.text
    watchdog = [alert for alert in json.loads(page.text) if alert["labels"]["alertname"] == "Watchdog"]
    assert watchdog, page.text
    assert watchdog[0]["status"]["state"] == "active", page.text


def cancelled_login_shows_nothing(
    target: Target, tmp_path: Path, path: str, shown: str, hidden: list[str] | None, workers: list[str]
) -> None:
    with browser(target, tmp_path, login=False) as chromium:
        page = chromium.open(target.url + path, name="cancelled")
    assert page.status == 401, page.text
    assert shown in page.text, page.text
    assert not [text for text in (hidden or workers) if text in page.text], page.text
