"""The Ansible inventory's variables, checked by the kit's rules (celerykit.rules).

The collection's `celerykit.platform.validate` action hands its arguments here: each is named
like the variable it checks (`celerykit_worker_pools`) and holds its value. Messages name the
variable as the user wrote it: `celerykit_worker_pools[1] (reports): concurrency must be between
1 and 256, got 0`. Files are looked up on the controller, where the action runs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from celerykit import defaults
from celerykit.rules import (
    LOG_FORMATS,
    LOG_LEVELS,
    MIN_STATE_SAVE_INTERVAL_MS,
    MIN_VISIBILITY_TIMEOUT,
    REDIS_USER,
    SENTINEL_MASTER,
    Checker,
    PoolSettings,
    whole_number,
)

Check = Callable[[Checker, str, Any, Mapping[str, Any]], None]


def _whole_at_least(minimum: int, maximum: int | None = None) -> Check:
    return lambda c, name, value, _: c.whole(name, value, minimum, maximum) and None


def _port(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.port(name, value)


def _redis_user(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.matches(name, value, REDIS_USER, "may hold letters, digits, '_', '.', '-' only")


def _password_of(user_variable: str, default_user: str) -> Check:
    def check(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
        c.password(name, value, str(args.get(user_variable, default_user)), user_variable)

    return check


def _controller_files(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    """A path (or a list of paths) of files on the controller; an empty string is none."""
    for index, path in enumerate(value if isinstance(value, list) else [value]):
        label = f"{name}[{index}]" if isinstance(value, list) else name
        if path and not Path(str(path)).is_file():
            c.refuse(label, "must be a file on the controller", path)


def _pools(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    visibility = whole_number(args.get("celerykit_app_visibility_timeout", defaults.VISIBILITY_TIMEOUT))
    if visibility is not None and visibility < MIN_VISIBILITY_TIMEOUT:
        visibility = None  # refused on its own; comparing the pools with it would say nothing new
    pools = []
    for index, pool in enumerate(value or []):
        label = f"{name}[{index}] ({pool.get('name')})"
        pools.append(
            PoolSettings(
                {**defaults.POOL, **pool},
                name=lambda key, label=label: f"{label}: {key}",
                reference=lambda key: key,
            )
        )
    c.pools(name, pools, "celerykit_app_visibility_timeout", visibility)


def _redis_bind(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    if not isinstance(value, list) or not value or not all(isinstance(a, str) and a.strip() for a in value):
        c.refuse(name, "must list at least one address", value)


def _beat_group(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    hosts = list(args.get("celerykit_beat_hosts") or [])
    if len(hosts) != 1:
        c.refuse(name, f"({value!r}) must hold exactly one host, or periodic tasks run twice", hosts)


def _flower_user(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.flower_user(name, value)


def _flower_password(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    c.flower_password(
        name, value, str(args.get("celerykit_flower_user", defaults.FLOWER_USER)), "celerykit_flower_user"
    )


def _cookie_secret(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.cookie_secret(name, value, generated_if_empty=True)


def _url_prefix(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.url_prefix(name, value)


def _public_https_port(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    if value != args.get("celerykit_proxy_https_port"):  # by default it is that port, checked on its own
        c.port(name, value)


def _http_port(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    port = c.port(name, value)
    https = whole_number(args.get("celerykit_proxy_https_port"))
    c.distinct_ports(name, port, "celerykit_proxy_https_port", https)


def _tls_pair(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    key_name = "celerykit_proxy_tls_certificate_key"
    key = args.get(key_name, "")
    if bool(value) != bool(key):
        c.refuse(name, f"and {key_name} go together: give both files, or neither for a self-signed pair", [value, key])
        return
    _controller_files(c, name, value, args)
    _controller_files(c, key_name, key, args)


def _home(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.home(name, value)


def _log_level(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.one_of(name, value, LOG_LEVELS)


def _log_format(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.one_of(name, value, LOG_FORMATS)


def _text(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.text(name, value)


def _backlog_critical(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    critical = c.whole(name, value)
    warning_name = "celerykit_exporter_backlog_warning"
    warning = whole_number(args.get(warning_name))
    c.backlog_thresholds(warning_name, warning, critical, name)


def _backlog_thresholds(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    if not isinstance(value, Mapping):
        c.refuse(name, "must map queues to {warning: N, critical: M}", value)
        return
    queues = [q for pool in args.get("celerykit_exporter_pools") or [] for q in pool.get("queues", [])]
    for queue, limits in value.items():
        label = f"{name}[{queue}]"
        if queues and queue not in queues:
            c.refuse(label, f"must name a queue the pools consume ({', '.join(queues)})", queue)
            continue
        limits = limits if isinstance(limits, Mapping) else {}
        warning = c.whole(f"{label}.warning", limits.get("warning"))
        critical = c.whole(f"{label}.critical", limits.get("critical"))
        c.backlog_thresholds(f"{label}.warning", warning, critical, f"{label}.critical")


def _duration(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    c.duration(name, value)


def _smarthost(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    if value:
        c.host_port(name, value)
        c.mail_addresses("celerykit_alertmanager_mail_to", args.get("celerykit_alertmanager_mail_to"))
        c.mail_addresses("celerykit_alertmanager_mail_from", [args.get("celerykit_alertmanager_mail_from")])


def _webhook_url(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    if value:
        c.http_url(name, value)


def _host_ports(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    for index, target in enumerate(value if isinstance(value, list) else [value]):
        c.host_port(f"{name}[{index}]", target)


TLS_CHOICES = ("AUTO", "TRUE", "FALSE")


CLIENT_GROUPS = ("celery_workers", "celery_beat", "flower")  # the groups whose hosts use Redis
# Replication and failover: the hosts of Redis's replicas, and of the Sentinels watching them all.
REPLICA_GROUP, SENTINEL_GROUP = "redis_replicas", "redis_sentinels"


def redis_clients(groups: Mapping[str, Sequence[str]]) -> list[str]:
    """The hosts of Redis's clients (the Celery services), from the inventory's `groups`."""
    return [host for group in CLIENT_GROUPS for host in groups.get(group, [])]


def redis_tls(setting: Any, groups: Mapping[str, Sequence[str]]) -> bool:
    """Whether Redis's clients reach it over TLS: `auto` when a client runs on a host other than
    Redis's (its traffic crosses a network; with no Redis host, a managed Redis: always), else as set."""
    if isinstance(setting, bool):
        return setting
    choice = str(setting).strip().lower()
    if choice == "auto":
        # Replicas and Sentinels are clients too: they reach the primary, and each other.
        clients = [*redis_clients(groups), *groups.get(REPLICA_GROUP, []), *groups.get(SENTINEL_GROUP, [])]
        return bool(set(clients) - set(groups.get("redis", [])))
    return choice == "true"


def _sentinels(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    if value:  # none: one Redis, reached by its host name
        c.sentinels(name, value)


def _sentinel_master(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    """The name a client asks the Sentinels for must be the one they watch the primary under."""
    if not c.matches(name, value, SENTINEL_MASTER, "may hold letters, digits, '_', '.', '-' only"):
        return
    watched = sorted(set(args.get("celerykit_app_redis_sentinel_masters") or []))
    if args.get("celerykit_app_redis_sentinels") and watched and watched != [value]:
        c.refuse(name, f"must be the name the Sentinels watch the primary under ({', '.join(watched)})", value)


def _sentinel_password(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    if args.get("celerykit_app_redis_sentinels") or args.get("celerykit_redis_sentinel_hosts"):
        c.password(name, value)


def _sentinel_hosts(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    """Sentinels watch a primary with replicas: three of them or more, and group redis one host."""
    if not value:
        return
    if c.sentinels(f"group {SENTINEL_GROUP}", list(value)) is None:
        return
    if not args.get("celerykit_redis_replica_hosts"):
        c.refuse(f"group {SENTINEL_GROUP}", f"needs a replica to fail over to (group {REPLICA_GROUP} is empty)", value)


def _primary_hosts(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    """With replicas, group redis holds the one primary they replicate (at first: Sentinels move it)."""
    if args.get("celerykit_redis_replica_hosts") and len(value or []) != 1:
        rule = f"must hold exactly one host, the primary, when group {REPLICA_GROUP} has replicas"
        c.refuse("group redis", rule, value)


def _replication_password(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    if args.get("celerykit_redis_replica_hosts") or args.get("celerykit_redis_sentinel_hosts"):
        c.password(name, value)


def _tls_choice(c: Checker, name: str, value: Any, _: Mapping[str, Any]) -> None:
    if not isinstance(value, bool):
        c.one_of(name, str(value), TLS_CHOICES)


def _files_together(*others: str) -> Check:
    """This variable's controller file goes with the others' (a certificate with its key and CA):
    all of them, or none."""

    def check(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
        group = {name: value, **{other: args.get(other, "") for other in others}}
        if len({bool(v) for v in group.values()}) > 1:
            names = " and ".join(group)
            c.refuse(name, f"goes with {', '.join(others)}: give {names}, or none", [group[n] or "" for n in group])
            return
        for each, path in group.items():
            _controller_files(c, each, path, args)

    return check


def _redis_ca(c: Checker, name: str, value: Any, args: Mapping[str, Any]) -> None:
    """The CA a TLS client checks Redis against: the kit's own when it deploys Redis, else given."""
    if value:
        _controller_files(c, name, value, args)
    elif args.get("celerykit_app_redis_tls_on") and not args.get("celerykit_app_redis_hosts"):
        rule = "must name the CA of your Redis's certificate (no host in group redis: the kit makes no CA)"
        c.refuse(name, rule, value)


def _checked_with(_: Checker, __: str, ___: Any, ____: Mapping[str, Any]) -> None:
    """Context for another variable's check (e.g. the user a password must differ from)."""


CHECKS: dict[str, Check] = {
    # redis role
    "celerykit_redis_bind": _redis_bind,
    "celerykit_redis_port": _port,
    "celerykit_redis_user": _redis_user,
    "celerykit_redis_password": _password_of("celerykit_redis_user", defaults.REDIS_USER),
    "celerykit_redis_maxmemory": lambda c, name, value, _: c.redis_memory(name, value) and None,
    "celerykit_redis_tls": _tls_choice,
    "celerykit_redis_tls_cert": _files_together("celerykit_redis_tls_key", "celerykit_redis_tls_ca"),
    "celerykit_redis_tls_key": _checked_with,
    "celerykit_redis_tls_ca": _checked_with,
    "celerykit_redis_tls_client_certificates": lambda c, name, value, _: c.flag(name, value) and None,
    "celerykit_redis_primary_hosts": _primary_hosts,
    "celerykit_redis_replica_hosts": _checked_with,
    "celerykit_redis_sentinel_hosts": _sentinel_hosts,
    "celerykit_redis_replication_password": _replication_password,
    "celerykit_redis_min_replicas_to_write": _whole_at_least(0),
    "celerykit_redis_min_replicas_max_lag": _whole_at_least(1),
    "celerykit_redis_sentinel_password": _sentinel_password,
    "celerykit_redis_sentinel_master": lambda c, name, value, _: (
        c.matches(name, value, SENTINEL_MASTER, "may hold letters, digits, '_', '.', '-' only") and None
    ),
    # app role
    "celerykit_app_home": _home,
    "celerykit_app_redis_host": _text,
    "celerykit_app_redis_port": _port,
    "celerykit_app_redis_db": _whole_at_least(0, 15),
    "celerykit_app_redis_user": _redis_user,
    "celerykit_app_redis_password": _password_of("celerykit_app_redis_user", defaults.REDIS_USER),
    "celerykit_app_redis_tls": _tls_choice,
    "celerykit_app_redis_ca": _redis_ca,
    "celerykit_app_redis_tls_on": _checked_with,
    "celerykit_app_redis_hosts": _checked_with,
    "celerykit_app_redis_tls_cert": _files_together("celerykit_app_redis_tls_key"),
    "celerykit_app_redis_tls_key": _checked_with,
    "celerykit_app_redis_tls_client_certificates": lambda c, name, value, _: c.flag(name, value) and None,
    "celerykit_app_redis_sentinels": _sentinels,
    "celerykit_app_redis_sentinel_master": _sentinel_master,
    "celerykit_app_redis_sentinel_masters": _checked_with,
    "celerykit_app_redis_sentinel_password": _sentinel_password,
    "celerykit_app_visibility_timeout": _whole_at_least(MIN_VISIBILITY_TIMEOUT),
    "celerykit_app_broker_connection_max_retries": _whole_at_least(1),
    "celerykit_app_log_level": _log_level,
    "celerykit_app_log_format": _log_format,
    "celerykit_app_wheels": _controller_files,
    "celerykit_app_requirements_file": _controller_files,
    "celerykit_app_pip_ca_bundle": _controller_files,
    # worker role (its pools' limits against celerykit_app_visibility_timeout)
    "celerykit_worker_pools": _pools,
    "celerykit_worker_drain_timeout": _whole_at_least(0),  # 0: restart at once, warmly all the same
    "celerykit_worker_ready_timeout": _whole_at_least(1),
    # beat role
    "celerykit_beat_group": _beat_group,
    "celerykit_beat_hosts": _checked_with,
    # flower role
    "celerykit_flower_user": _flower_user,
    "celerykit_flower_password": _flower_password,
    "celerykit_flower_cookie_secret": _cookie_secret,
    "celerykit_flower_port": _port,
    "celerykit_flower_url_prefix": _url_prefix,
    "celerykit_flower_max_tasks": _whole_at_least(1),
    "celerykit_flower_state_save_interval_ms": _whole_at_least(MIN_STATE_SAVE_INTERVAL_MS),
    "celerykit_flower_purge_offline_workers": _whole_at_least(0),
    # proxy role
    "celerykit_proxy_http_port": _http_port,
    "celerykit_proxy_https_port": _port,
    "celerykit_proxy_public_https_port": _public_https_port,
    "celerykit_proxy_flower_url_prefix": _url_prefix,
    "celerykit_proxy_tls_certificate": _tls_pair,
    "celerykit_proxy_tls_certificate_key": _checked_with,
    # monitoring roles
    "celerykit_exporter_port": _port,
    # Every worker host's pools, each checked on its own host: here only what the thresholds name.
    "celerykit_exporter_pools": _checked_with,
    "celerykit_exporter_backlog_warning": _whole_at_least(1),
    "celerykit_exporter_backlog_critical": _backlog_critical,
    "celerykit_exporter_backlog_thresholds": _backlog_thresholds,
    "celerykit_prometheus_port": _port,
    "celerykit_prometheus_retention": _duration,
    "celerykit_prometheus_scrape_interval": _duration,
    "celerykit_prometheus_node_targets": _host_ports,
    "celerykit_alertmanager_port": _port,
    "celerykit_alertmanager_smarthost": _smarthost,
    "celerykit_alertmanager_mail_from": _checked_with,
    "celerykit_alertmanager_mail_to": _checked_with,
    "celerykit_alertmanager_webhook_url": _webhook_url,
    "celerykit_node_exporter_port": _port,
}


def deployment_pools(workers: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """Every pool of the worker hosts whose variables are given, once by name: a pool that runs on
    several hosts is one pool of the deployment (its keys as its first host has them)."""
    found: dict[str, Mapping[str, Any]] = {}
    for host in workers:
        for pool in host.get("celerykit_worker_pools") or defaults.POOLS:
            found.setdefault(pool["name"], pool)
    return list(found.values())


def check(args: Mapping[str, Any]) -> list[str]:
    """Every problem with the given variables, one line each (unknown names are the caller's)."""
    checker = Checker()
    for name, value in args.items():
        if name in CHECKS:
            CHECKS[name](checker, name, value, args)
    return checker.problems
