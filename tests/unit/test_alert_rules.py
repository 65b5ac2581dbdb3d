"""The one alert rules file: promtool accepts it, its unit tests pass, and every alert is tested both ways."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from celerykit_testing.dashboard import known_series, series_in

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "src" / "celerykit" / "share" / "prometheus"
RULES_FILE = PROMETHEUS / "rules.yml"
TESTS_FILE = PROMETHEUS / "rules.test.yml"
RULES = yaml.safe_load(RULES_FILE.read_text())
ALERTS = [rule for group in RULES["groups"] for rule in group["rules"] if "alert" in rule]
CASES = [case for test in yaml.safe_load(TESTS_FILE.read_text())["tests"] for case in test.get("alert_rule_test", [])]
SEVERITIES = {"critical", "warning", "none"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if shutil.which("promtool") is None:
        pytest.fail("promtool is not installed: apt-get install --no-install-recommends prometheus (Debian's package)")
    return subprocess.run(["promtool", *args], capture_output=True, text=True, cwd=PROMETHEUS, timeout=120)


def test_promtool_accepts_the_rules():
    result = promtool("check", "rules", RULES_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_rules_pass_their_promtool_unit_tests():
    result = promtool("test", "rules", TESTS_FILE.name)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_names_are_unique():
    names = [alert["alert"] for alert in ALERTS]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_every_alert_has_a_severity_a_summary_and_a_description(alert):
    assert alert.get("labels", {}).get("severity") in SEVERITIES
    assert alert.get("annotations", {}).get("summary")
    assert alert.get("annotations", {}).get("description")


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_every_alert_has_a_case_where_it_fires_and_one_where_it_does_not(alert):
    cases = [case for case in CASES if case["alertname"] == alert["alert"]]
    firing = [case for case in cases if case.get("exp_alerts")]
    silent = [case for case in cases if not case.get("exp_alerts")]
    assert firing, f"no case in {TESTS_FILE.name} where {alert['alert']} fires"
    if alert["labels"]["severity"] == "none":  # the Watchdog: never silent, and tested so
        assert not silent, f"{alert['alert']} always fires: a case expecting silence is wrong"
        assert len({case["eval_time"] for case in firing}) > 1, f"{alert['alert']}: show it firing at several times"
    else:
        assert silent, f"no case in {TESTS_FILE.name} where {alert['alert']} stays silent"


def test_every_rule_says_why_in_a_comment():
    lines = RULES_FILE.read_text().splitlines()
    starts = [number for number, line in enumerate(lines) if line.strip().startswith("- alert:")]
    assert len(starts) == len(ALERTS)
    for number in starts:
        assert lines[number - 1].strip().startswith("#"), f"no comment above: {lines[number].strip()}"


@pytest.mark.parametrize("alert", ALERTS, ids=lambda alert: alert["alert"])
def test_rules_read_only_series_that_exist(alert):
    assert series_in(alert["expr"]) <= known_series()


def test_backlog_rules_compare_against_the_threshold_series_not_numbers():
    backlog = [alert for alert in ALERTS if "celerykit_queue_messages" in alert["expr"]]
    assert {alert["labels"]["severity"] for alert in backlog} == {"warning", "critical"}
    for alert in backlog:
        assert f"celerykit_queue_backlog_{alert['labels']['severity']}" in alert["expr"]
        assert not re.search(r"\b\d+\b", alert["expr"]), alert["expr"]
