"""Monitoring settings, and the Prometheus and Alertmanager configurations, written once.

The exporter (`celerykit exporter`) watches the pools and queues of `Watch`; Alertmanager sends
where `Alerting` says. Compose's monitoring image renders both configurations at start
(`python3 -m celerykit.monitoring prometheus|alertmanager`); the roles render the same templates
(share/prometheus, share/alertmanager) through the collection's filters. The alert rules
(share/prometheus/rules.yml) are one file both deployments load as it is.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from celerykit import defaults
from celerykit.rules import Checker, ConfigError
from celerykit.settings import DEFAULT_POOLS, STACK_WIDE, Env, comma_list, pool_settings, visibility_timeout

SHARE = Path(__file__).parent / "share"
RULES = SHARE / "prometheus" / "rules.yml"


@dataclass(frozen=True)
class WatchedPool:
    name: str
    queues: tuple[str, ...]
    soft_time_limit: int


@dataclass(frozen=True)
class Watch:
    """What the exporter reports on: the deployment's pools, and each queue's backlog thresholds."""

    pools: tuple[WatchedPool, ...]
    thresholds: Mapping[str, tuple[int, int]]  # queue -> (warning, critical)

    @property
    def queues(self) -> tuple[str, ...]:
        return tuple(queue for pool in self.pools for queue in pool.queues)

    @classmethod
    def from_env(cls, env: Env, checker: Checker | None = None) -> Watch:
        """CELERYKIT_POOLS and each pool's variables (as compose's `init` reads them), and
        CELERYKIT_BACKLOG_WARNING / _CRITICAL, overridden per queue by
        CELERYKIT_BACKLOG_THRESHOLDS=queue=warning/critical,..."""
        check = checker or Checker()
        names = comma_list(env.get("CELERYKIT_POOLS", ",".join(DEFAULT_POOLS)))
        settings = [pool_settings(env, name, f"CELERYKIT_{name.upper()}_{{}}", STACK_WIDE) for name in names]
        visibility = visibility_timeout(env, check)
        pools = check.pools("CELERYKIT_POOLS", settings, "CELERYKIT_VISIBILITY_TIMEOUT", visibility)
        watched = tuple(WatchedPool(p["name"], p["queues"], p["soft_time_limit"]) for p in pools)
        thresholds = cls.thresholds_from_env(env, check, [queue for pool in watched for queue in pool.queues])
        if checker is None:
            check.raise_if_any()
        return cls(pools=watched, thresholds=thresholds)

    @staticmethod
    def thresholds_from_env(env: Env, check: Checker, queues: Sequence[str]) -> dict[str, tuple[int, int]]:
        warning = check.whole(
            "CELERYKIT_BACKLOG_WARNING", env.get("CELERYKIT_BACKLOG_WARNING", defaults.BACKLOG_WARNING)
        )
        critical = check.whole(
            "CELERYKIT_BACKLOG_CRITICAL", env.get("CELERYKIT_BACKLOG_CRITICAL", defaults.BACKLOG_CRITICAL)
        )
        check.backlog_thresholds("CELERYKIT_BACKLOG_WARNING", warning, critical, "CELERYKIT_BACKLOG_CRITICAL")
        thresholds = {queue: (warning, critical) for queue in queues}
        thresholds.update(_queue_thresholds(check, env.get("CELERYKIT_BACKLOG_THRESHOLDS"), queues))
        return thresholds


def watch_environment(pools: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """The variables `Watch.from_env` reads for these pools (the inventory's, any keys left out):
    what the exporter role writes for the exporter, and what a host's purge is given."""
    env = {"CELERYKIT_POOLS": ",".join(pool["name"] for pool in pools)}
    for pool in pools:
        full = {**defaults.POOL, **pool}
        prefix = f"CELERYKIT_{pool['name'].upper()}_"
        env[f"{prefix}QUEUES"] = ",".join(pool["queues"])
        env[f"{prefix}TIME_LIMIT"] = str(full["time_limit"])
        env[f"{prefix}SOFT_TIME_LIMIT"] = str(full["soft_time_limit"])
    return env


def _queue_thresholds(check: Checker, raw: str | None, queues: Sequence[str]) -> dict[str, tuple[int, int]]:
    name = "CELERYKIT_BACKLOG_THRESHOLDS"
    found: dict[str, tuple[int, int]] = {}
    for item in comma_list(raw):
        queue, _, pair = item.partition("=")
        warning_text, _, critical_text = pair.partition("/")
        if queue not in queues:
            check.refuse(name, f"must name queues the pools consume ({', '.join(queues)})", item)
            continue
        warning = check.whole(f"{name} ({queue}): warning", warning_text)
        critical = check.whole(f"{name} ({queue}): critical", critical_text)
        check.backlog_thresholds(f"{name} ({queue}): warning", warning, critical, "its critical threshold")
        if warning is not None and critical is not None:
            found[queue] = (warning, critical)
    return found


@dataclass(frozen=True)
class Alerting:
    """Where Alertmanager sends: mail through a smarthost, a webhook, both, or (neither set) nowhere
    but its own page."""

    smarthost: str | None
    mail_from: str | None
    mail_to: tuple[str, ...]
    smtp_user: str | None
    smtp_password_file: str | None
    smtp_require_tls: bool
    webhook_url: str | None

    @classmethod
    def from_env(cls, env: Env, checker: Checker | None = None) -> Alerting:
        check = checker or Checker()
        smarthost = env.get("CELERYKIT_ALERT_SMARTHOST")
        mail_from = mail_to = None
        if smarthost is not None:
            smarthost = check.host_port("CELERYKIT_ALERT_SMARTHOST", smarthost)
            mail_to = check.mail_addresses("CELERYKIT_ALERT_MAIL_TO", comma_list(env.get("CELERYKIT_ALERT_MAIL_TO")))
            (mail_from,) = check.mail_addresses(
                "CELERYKIT_ALERT_MAIL_FROM", [env.get("CELERYKIT_ALERT_MAIL_FROM", "celerykit@localhost")]
            ) or (None,)
        require_tls = check.one_of(
            "CELERYKIT_ALERT_SMTP_REQUIRE_TLS", env.get("CELERYKIT_ALERT_SMTP_REQUIRE_TLS", "true"), ("TRUE", "FALSE")
        )
        webhook = env.get("CELERYKIT_ALERT_WEBHOOK_URL")
        if webhook is not None:
            webhook = check.http_url("CELERYKIT_ALERT_WEBHOOK_URL", webhook)
        password_file = env.get("CELERYKIT_ALERT_SMTP_PASSWORD_FILE")
        if password_file is not None and not Path(password_file).is_file():
            check.refuse("CELERYKIT_ALERT_SMTP_PASSWORD_FILE", "must name an existing secret file", password_file)
        if checker is None:
            check.raise_if_any()
        return cls(
            smarthost=smarthost,
            mail_from=mail_from,
            mail_to=mail_to or (),
            smtp_user=env.get("CELERYKIT_ALERT_SMTP_USER"),
            smtp_password_file=password_file,
            smtp_require_tls=require_tls != "FALSE",
            webhook_url=webhook,
        )

    def values(self) -> dict[str, Any]:
        """What share/alertmanager/alertmanager.yml.j2 takes."""
        return {
            "smarthost": self.smarthost,
            "mail_from": self.mail_from,
            "mail_to": list(self.mail_to),
            "smtp_user": self.smtp_user,
            "smtp_password_file": self.smtp_password_file,
            "smtp_require_tls": self.smtp_require_tls,
            "webhook_url": self.webhook_url,
        }


def _render(template: str, **values: Any) -> str:
    import json

    import jinja2

    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(SHARE), undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True
    )
    environment.filters["to_json"] = json.dumps  # JSON is YAML: every value quoted right
    return environment.get_template(template).render(**values).rstrip("\n") + "\n"


def prometheus_config(
    *,
    exporter: Sequence[str],
    flower: Sequence[str],
    flower_url_prefix: str,
    alertmanager: Sequence[str],
    rules_file: str,
    nodes: Sequence[str] = (),
    self_target: str = f"127.0.0.1:{defaults.PROMETHEUS_PORT}",
    scrape_interval: str = defaults.SCRAPE_INTERVAL,
    header: str = "# Managed by celerykit.",
) -> str:
    """Prometheus's configuration: the kit's exporter, Flower (a `pool` label from the worker
    name), Prometheus and Alertmanager themselves, and the hosts' node exporters."""
    return _render(
        "prometheus/prometheus.yml.j2",
        header=header.rstrip("\n"),
        exporter=list(exporter),
        flower=list(flower),
        flower_metrics_path=f"/{flower_url_prefix.strip('/')}/metrics".replace("//", "/"),
        alertmanager=list(alertmanager),
        alertmanager_url_prefix=defaults.ALERTMANAGER_URL_PREFIX,
        prometheus_url_prefix=defaults.PROMETHEUS_URL_PREFIX,
        self_target=self_target,
        nodes=list(nodes),
        rules_file=rules_file,
        scrape_interval=scrape_interval,
    )


def alertmanager_config(alerting: Mapping[str, Any], header: str = "# Managed by celerykit.") -> str:
    """Alertmanager's configuration: by severity to mail and webhook (`Alerting.values()`)."""
    return _render("alertmanager/alertmanager.yml.j2", header=header.rstrip("\n"), alerting=dict(alerting))


# The compose image ----------------------------------------------------------------------------

CONFIG_DIR = Path("/tmp/celerykit-monitoring")  # noqa: S108 - the container's own tmpfs, rendered at every start


def _check(command: Sequence[str], what: str) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise ConfigError(f"{what} failed:\n{result.stdout}{result.stderr}")


def external_url(server_name: str, https_port: int | str, prefix: str) -> str:
    """Where people reach the service through nginx: the links in alerts point there."""
    host = "localhost" if server_name in ("", "_") else server_name
    port = "" if int(https_port) == 443 else f":{https_port}"
    return f"https://{host}{port}/{prefix}/"


def _public(env: Env, prefix: str) -> str:
    return external_url(env.get("CELERYKIT_SERVER_NAME", "_"), env.get("CELERYKIT_HTTPS_PORT", "8443"), prefix)


def _serve_prometheus(env: Env) -> list[str]:
    retention = Checker()
    keep = retention.duration(
        "CELERYKIT_PROMETHEUS_RETENTION", env.get("CELERYKIT_PROMETHEUS_RETENTION", defaults.PROMETHEUS_RETENTION)
    )
    retention.raise_if_any()
    config = CONFIG_DIR / "prometheus.yml"
    config.write_text(
        prometheus_config(
            exporter=[f"exporter:{defaults.EXPORTER_PORT}"],
            flower=[env.get("CELERYKIT_FLOWER_UPSTREAM", f"flower-upstream:{defaults.FLOWER_PORT}")],
            flower_url_prefix=env.get("CELERYKIT_FLOWER_URL_PREFIX", defaults.FLOWER_URL_PREFIX),
            alertmanager=[f"alertmanager:{defaults.ALERTMANAGER_PORT}"],
            rules_file=str(RULES),
            header="# Rendered by the celerykit monitoring image at start (celerykit.monitoring).",
        )
    )
    _check(["promtool", "check", "config", "--syntax-only", str(config)], "promtool check config")
    _check(["promtool", "check", "rules", str(RULES)], "promtool check rules")
    prefix = f"/{defaults.PROMETHEUS_URL_PREFIX}"
    return [
        "prometheus",
        f"--config.file={config}",
        "--storage.tsdb.path=/var/lib/prometheus",
        f"--storage.tsdb.retention.time={keep}",
        f"--web.listen-address=:{defaults.PROMETHEUS_PORT}",
        f"--web.external-url={_public(env, defaults.PROMETHEUS_URL_PREFIX)}",
        f"--web.route-prefix={prefix}",
    ]


def _serve_alertmanager(env: Env) -> list[str]:
    alerting = Alerting.from_env(env)
    config = CONFIG_DIR / "alertmanager.yml"
    config.write_text(
        alertmanager_config(
            alerting.values(), header="# Rendered by the celerykit monitoring image at start (celerykit.monitoring)."
        )
    )
    _check(["amtool", "check-config", str(config)], "amtool check-config")
    if not (alerting.smarthost or alerting.webhook_url):
        print(
            "alertmanager: no CELERYKIT_ALERT_SMARTHOST or CELERYKIT_ALERT_WEBHOOK_URL: alerts show on its page only",
            file=sys.stderr,
        )
    prefix = f"/{defaults.ALERTMANAGER_URL_PREFIX}"
    return [
        "prometheus-alertmanager",
        f"--config.file={config}",
        "--storage.path=/var/lib/alertmanager",
        f"--web.listen-address=:{defaults.ALERTMANAGER_PORT}",
        f"--web.external-url={_public(env, defaults.ALERTMANAGER_URL_PREFIX)}",
        f"--web.route-prefix={prefix}",
        "--cluster.listen-address=",  # one instance: no gossip port
    ]


SERVICES = {"prometheus": _serve_prometheus, "alertmanager": _serve_alertmanager}


def main(argv: Sequence[str] = ()) -> int:
    """The monitoring image's entrypoint: render and check the named service's configuration, then exec it."""
    if len(argv) != 1 or argv[0] not in SERVICES:
        print(f"usage: python3 -m celerykit.monitoring {'|'.join(SERVICES)}", file=sys.stderr)
        return 64
    CONFIG_DIR.mkdir(parents=True, exist_ok=True)
    try:
        command = SERVICES[argv[0]](Env.current())
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"{argv[0]}: configuration error: {line}", file=sys.stderr)
        return 78
    os.execvp(command[0], command)
    return 0  # not reached


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
