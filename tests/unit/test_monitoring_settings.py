"""The monitoring settings, and the Prometheus and Alertmanager configurations the kit renders,
checked by the tools Prometheus and Alertmanager ship (promtool, amtool)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from celerykit import inventory, monitoring, proxy
from celerykit.rules import ConfigError
from celerykit.settings import Env

MAIL = {
    "CELERYKIT_ALERT_SMARTHOST": "mail.example.com:587",
    "CELERYKIT_ALERT_MAIL_TO": "ops@example.com,oncall@example.com",
}
WEBHOOK = {"CELERYKIT_ALERT_WEBHOOK_URL": "https://chat.example.com/hooks/celerykit"}


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: scripts/bootstrap-host.sh --test-tools unpacks it from Debian's packages"
    return path


@pytest.mark.parametrize("receivers", [{}, MAIL, WEBHOOK, {**MAIL, **WEBHOOK}], ids=["none", "mail", "webhook", "both"])
def test_alertmanager_configuration_passes_amtool(tmp_path: Path, receivers: dict[str, str]):
    password = tmp_path / "smtp_password"
    password.write_text("relay-password-1234\n")
    env = {**receivers, "CELERYKIT_ALERT_SMTP_USER": "relay", "CELERYKIT_ALERT_SMTP_PASSWORD_FILE": str(password)}
    config = tmp_path / "alertmanager.yml"
    config.write_text(monitoring.alertmanager_config(monitoring.Alerting.from_env(Env(env)).values()))
    result = subprocess.run([tool("amtool"), "check-config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = config.read_text()
    assert "relay-password-1234" not in text  # the password stays in its file
    assert ("email_configs" in text) == ("CELERYKIT_ALERT_SMARTHOST" in receivers)
    assert ("webhook_configs" in text) == ("CELERYKIT_ALERT_WEBHOOK_URL" in receivers)


def test_prometheus_configuration_passes_promtool(tmp_path: Path):
    config = tmp_path / "prometheus.yml"
    config.write_text(
        monitoring.prometheus_config(
            exporter=["127.0.0.1:9817"],
            flower=["127.0.0.1:5555"],
            flower_url_prefix="flower",
            alertmanager=["127.0.0.1:9093"],
            rules_file=str(monitoring.RULES),
            nodes=["10.0.0.5:9100", "10.0.0.6:9100"],
        )
    )
    result = subprocess.run([tool("promtool"), "check", "config", str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "/flower/metrics" in config.read_text()


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CELERYKIT_ALERT_SMARTHOST": "mail.example.com", "CELERYKIT_ALERT_MAIL_TO": "a@example.com"},
         "CELERYKIT_ALERT_SMARTHOST must be host:port (a port between 1 and 65535), got 'mail.example.com'"),
        ({"CELERYKIT_ALERT_SMARTHOST": "mail.example.com:25"},
         "CELERYKIT_ALERT_MAIL_TO must list at least one mail address, got []"),
        ({"CELERYKIT_ALERT_WEBHOOK_URL": "chat.example.com/hook"},
         "CELERYKIT_ALERT_WEBHOOK_URL must be an http:// or https:// URL, got 'chat.example.com/hook'"),
        ({"CELERYKIT_ALERT_SMTP_REQUIRE_TLS": "maybe"},
         "CELERYKIT_ALERT_SMTP_REQUIRE_TLS must be one of TRUE, FALSE, got 'maybe'"),
    ],
)  # fmt: skip
def test_bad_alerting_settings_are_named(env: dict[str, str], message: str):
    with pytest.raises(ConfigError) as error:
        monitoring.Alerting.from_env(Env(env))
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CELERYKIT_BACKLOG_WARNING": "lots"}, "CELERYKIT_BACKLOG_WARNING must be a whole number, got 'lots'"),
        ({"CELERYKIT_BACKLOG_WARNING": "2000"},
         "CELERYKIT_BACKLOG_WARNING must be below CELERYKIT_BACKLOG_CRITICAL (1000), got 2000"),
        ({"CELERYKIT_BACKLOG_THRESHOLDS": "reports=1/2"},
         "CELERYKIT_BACKLOG_THRESHOLDS must name queues the pools consume "
         "(high_priority, medium_priority, default, low_priority), got 'reports=1/2'"),
        ({"CELERYKIT_BACKLOG_THRESHOLDS": "low_priority=900/90"},
         "CELERYKIT_BACKLOG_THRESHOLDS (low_priority): warning must be below its critical threshold (90), got 900"),
    ],
)  # fmt: skip
def test_bad_thresholds_are_named(env: dict[str, str], message: str):
    with pytest.raises(ConfigError) as error:
        monitoring.Watch.from_env(Env(env))
    assert str(error.value) == message


def test_thresholds_default_and_per_queue():
    watch = monitoring.Watch.from_env(Env({"CELERYKIT_BACKLOG_THRESHOLDS": "low_priority=5000/20000"}))
    assert watch.thresholds["high_priority"] == (50, 1000)
    assert watch.thresholds["low_priority"] == (5000, 20000)
    assert [p.name for p in watch.pools] == ["high", "medium", "low"]


def test_a_pools_own_soft_time_limit_wins_over_the_stack_wide_one():
    watch = monitoring.Watch.from_env(Env({"CELERYKIT_SOFT_TIME_LIMIT": "600", "CELERYKIT_LOW_SOFT_TIME_LIMIT": "60"}))
    assert {p.name: p.soft_time_limit for p in watch.pools} == {"high": 600, "medium": 600, "low": 60}


def test_the_inventory_names_each_bad_monitoring_setting():
    problems = inventory.check(
        {
            "celerykit_prometheus_retention": "15x",
            "celerykit_alertmanager_smarthost": "mail.example.com",
            "celerykit_alertmanager_mail_to": [],
            "celerykit_alertmanager_mail_from": "celerykit@example.com",
            "celerykit_alertmanager_webhook_url": "not a url",
            "celerykit_exporter_backlog_warning": 10,
            "celerykit_exporter_backlog_critical": 0,
        }
    )
    assert problems == [
        "celerykit_prometheus_retention must be a Prometheus duration such as 15d, 12h or 2w, got '15x'",
        "celerykit_alertmanager_smarthost must be host:port (a port between 1 and 65535), got 'mail.example.com'",
        "celerykit_alertmanager_mail_to must list at least one mail address, got []",
        "celerykit_alertmanager_webhook_url must be an http:// or https:// URL, got 'not a url'",
        "celerykit_exporter_backlog_critical must be at least 1, got 0",
    ]


def test_the_htpasswd_line_is_a_salted_hash_and_stable():
    line = proxy.htpasswd_line("admin", "a-long-password-1")
    assert line.startswith("admin:{SSHA}") and "a-long-password-1" not in line
    assert line == proxy.htpasswd_line("admin", "a-long-password-1")  # a second converge changes nothing
    assert line != proxy.htpasswd_line("admin", "a-long-password-2")


def test_the_pools_of_every_worker_host_are_watched_once_each_with_their_own_limits():
    """What the exporter role writes (and a host's purge is given) is what the exporter reads."""
    hosts = [
        {},  # a worker host with the kit's pools
        {
            "celerykit_worker_pools": [
                {"name": "high", "queues": ["high_priority"], "concurrency": 1, "max_concurrency": 3},
                {"name": "reports", "queues": ["reports"], "time_limit": 600, "soft_time_limit": 500},
            ]
        },
    ]
    pools = inventory.deployment_pools(hosts)
    assert [pool["name"] for pool in pools] == ["high", "medium", "low", "reports"]
    watch = monitoring.Watch.from_env(Env(monitoring.watch_environment(pools)))
    assert watch.queues == ("high_priority", "medium_priority", "default", "low_priority", "reports")
    assert {pool.name: pool.soft_time_limit for pool in watch.pools} == {
        "high": 3300, "medium": 3300, "low": 3300, "reports": 500,
    }  # fmt: skip
