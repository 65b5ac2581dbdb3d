"""The kit's settings as CELERYKIT_* environment variables: compose passes them to the containers,
the Ansible roles write them into the units' environment files.

Values are read here and checked by the rules in celerykit.rules, which name each variable at
fault; the defaults live in celerykit.defaults. A variable that is unset or empty takes its default.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

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
)
from celerykit.rules import ConfigError as ConfigError

# The kit's default pools: name -> (queues, concurrency).
DEFAULT_POOLS: dict[str, tuple[tuple[str, ...], int]] = {
    p["name"]: (tuple(p["queues"]), defaults.pool(p["name"])["concurrency"]) for p in defaults.POOLS
}
POOL_VARIABLE = "CELERYKIT_POOL_{}"  # a pool's own environment (one worker): CELERYKIT_POOL_QUEUES...
# In a compose stack every pool has the same time limits.
STACK_WIDE = {"time_limit": "CELERYKIT_TIME_LIMIT", "soft_time_limit": "CELERYKIT_SOFT_TIME_LIMIT"}


@dataclass(frozen=True)
class Env:
    """A mapping of environment variables; empty means unset."""

    environ: Mapping[str, str]

    @classmethod
    def current(cls) -> Env:
        return cls(os.environ)

    def get(self, name: str, default: Any = None) -> Any:
        value = self.environ.get(name, "").strip()
        return value if value else default

    def secret_file(self, checker: Checker, name: str) -> str | None:
        """The content of the file whose path is in NAME (a *_FILE variable)."""
        path = self.get(name)
        if path is None:
            checker.refuse(name, "must be set to the path of a secret file", show=False)
            return None
        try:
            return Path(path).read_text().strip()
        except FileNotFoundError:
            checker.refuse(name, "must name an existing secret file", path)
        except PermissionError:
            checker.refuse(name, "must name a secret file this user may read", path)
        return None


def comma_list(raw: str | None) -> list[str]:
    return [] if raw is None else [item.strip() for item in raw.split(",")]


@dataclass(frozen=True)
class RedisTLS:
    """How clients reach Redis over TLS: the CA that signed Redis's certificate (checked, with the
    host name), and a client certificate when Redis asks for one."""

    ca_file: Path
    cert_file: Path | None = None
    key_file: Path | None = None

    def ssl_options(self) -> dict[str, Any]:
        """Celery's broker_use_ssl / redis_backend_use_ssl (redis-py's SSLConnection arguments)."""
        options: dict[str, Any] = {
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
            "ssl_ca_certs": str(self.ca_file),
            "ssl_check_hostname": True,
        }
        if self.cert_file and self.key_file:
            options |= {"ssl_certfile": str(self.cert_file), "ssl_keyfile": str(self.key_file)}
        return options

    @classmethod
    def from_env(cls, env: Env, check: Checker) -> RedisTLS | None:
        if not check.flag("CELERYKIT_REDIS_TLS", env.get("CELERYKIT_REDIS_TLS", "false")):
            return None  # the files are not read (compose names the CA's whether TLS is on or not)
        ca = check.readable_file("CELERYKIT_REDIS_CA_FILE", env.get("CELERYKIT_REDIS_CA_FILE"))
        cert, key = env.get("CELERYKIT_REDIS_CERT_FILE"), env.get("CELERYKIT_REDIS_KEY_FILE")
        if (cert is None) != (key is None):
            given, missing = (
                ("CELERYKIT_REDIS_CERT_FILE", "CELERYKIT_REDIS_KEY_FILE")
                if key is None
                else ("CELERYKIT_REDIS_KEY_FILE", "CELERYKIT_REDIS_CERT_FILE")
            )
            check.refuse(given, f"needs {missing} too (a client certificate and its key)", cert or key)
            return None
        cert_file = check.readable_file("CELERYKIT_REDIS_CERT_FILE", cert) if cert is not None else None
        key_file = check.readable_file("CELERYKIT_REDIS_KEY_FILE", key) if key is not None else None
        return cls(ca, cert_file, key_file) if ca else None


@dataclass(frozen=True)
class Sentinel:
    """Redis behind Sentinels: clients ask them which Redis is the primary (kombu's and redis-py's
    Sentinel support), and ask again after a failover."""

    addresses: tuple[tuple[str, int], ...]
    master: str
    password: str

    @classmethod
    def from_env(cls, env: Env, check: Checker) -> Sentinel | None:
        listed = env.get("CELERYKIT_REDIS_SENTINELS")
        if listed is None:
            return None
        addresses = check.sentinels("CELERYKIT_REDIS_SENTINELS", comma_list(listed))
        master = check.matches(
            "CELERYKIT_REDIS_SENTINEL_MASTER",
            env.get("CELERYKIT_REDIS_SENTINEL_MASTER", defaults.REDIS_SENTINEL_MASTER),
            SENTINEL_MASTER,
            "may hold letters, digits, '_', '.', '-' only",
        )
        if not (addresses and master):
            return None  # the password is asked for once the Sentinels are right
        password = env.secret_file(check, "CELERYKIT_REDIS_SENTINEL_PASSWORD_FILE")
        if password is not None:
            password = check.password("CELERYKIT_REDIS_SENTINEL_PASSWORD_FILE", password)
        return cls(addresses, master, password) if password else None


@dataclass(frozen=True)
class Redis:
    host: str
    port: int
    db: int
    user: str
    password: str
    tls: RedisTLS | None = None
    sentinel: Sentinel | None = None

    @classmethod
    def from_env(cls, env: Env, checker: Checker | None = None) -> Redis:
        check = checker or Checker()
        user = check.matches(
            "CELERYKIT_REDIS_USER",
            env.get("CELERYKIT_REDIS_USER", defaults.REDIS_USER),
            REDIS_USER,
            "may hold letters, digits, '_', '.', '-' only",
        )
        password = env.secret_file(check, "CELERYKIT_REDIS_PASSWORD_FILE")
        if password is not None:
            password = check.password("CELERYKIT_REDIS_PASSWORD_FILE", password, user or "", "CELERYKIT_REDIS_USER")
        redis = cls(
            host=check.text("CELERYKIT_REDIS_HOST", env.get("CELERYKIT_REDIS_HOST", defaults.REDIS_HOST)),
            port=check.port("CELERYKIT_REDIS_PORT", env.get("CELERYKIT_REDIS_PORT", defaults.REDIS_PORT)),
            db=check.whole("CELERYKIT_REDIS_DB", env.get("CELERYKIT_REDIS_DB", 0), 0, 15),
            user=user,
            password=password,
            tls=RedisTLS.from_env(env, check),
            sentinel=Sentinel.from_env(env, check),
        )
        if checker is None:
            check.raise_if_any()
        return redis

    @property
    def url(self) -> str:
        """Celery's broker and result backend URL; behind Sentinels, one URL per Sentinel (the
        credentials are the Redis user's: Sentinels get their own password, see transport_options)."""
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        if self.sentinel:
            return ";".join(f"sentinel://{credentials}@{h}:{p}/{self.db}" for h, p in self.sentinel.addresses)
        return f"{'rediss' if self.tls else 'redis'}://{credentials}@{self.host}:{self.port}/{self.db}"

    def transport_options(self) -> dict[str, Any]:
        """What kombu, Celery's Sentinel result backend and Flower need beyond the URL: the name the
        Sentinels watch the primary under and how to talk to them (their password, TLS as to Redis)."""
        if not self.sentinel:
            return {}
        sentinel_kwargs: dict[str, Any] = {
            "password": self.sentinel.password,
            "socket_timeout": defaults.REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT,
        }
        if self.tls:
            sentinel_kwargs |= {"ssl": True, **self.tls.ssl_options()}
        return {"master_name": self.sentinel.master, "sentinel_kwargs": sentinel_kwargs}


def redis_tls_names(env: Env) -> list[str]:
    """The names Redis's certificate must carry when its clients use TLS: the host they connect to
    (CELERYKIT_REDIS_HOST); none when they do not."""
    check = Checker()
    tls = check.flag("CELERYKIT_REDIS_TLS", env.get("CELERYKIT_REDIS_TLS", "false"))
    check.raise_if_any()
    return [env.get("CELERYKIT_REDIS_HOST", defaults.REDIS_HOST)] if tls else []


def visibility_timeout(env: Env, checker: Checker | None = None) -> int:
    check = checker or Checker()
    value = check.whole(
        "CELERYKIT_VISIBILITY_TIMEOUT",
        env.get("CELERYKIT_VISIBILITY_TIMEOUT", defaults.VISIBILITY_TIMEOUT),
        MIN_VISIBILITY_TIMEOUT,
    )
    if checker is None:
        check.raise_if_any()
    return value


def broker_connection_max_retries(env: Env, checker: Checker | None = None) -> int:
    """Reconnection attempts before a worker gives up and exits (its service manager restarts it)."""
    check = checker or Checker()
    name = "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES"
    value = check.whole(name, env.get(name, defaults.BROKER_CONNECTION_MAX_RETRIES))
    if checker is None:
        check.raise_if_any()
    return value


def log_level(env: Env, checker: Checker | None = None) -> str:
    check = checker or Checker()
    value = check.one_of("CELERYKIT_LOG_LEVEL", env.get("CELERYKIT_LOG_LEVEL", defaults.LOG_LEVEL), LOG_LEVELS)
    if checker is None:
        check.raise_if_any()
    return value or defaults.LOG_LEVEL


def log_format(env: Env, checker: Checker | None = None) -> str:
    """How the services log: "json" (one object per line) or "text"."""
    check = checker or Checker()
    value = check.one_of("CELERYKIT_LOG_FORMAT", env.get("CELERYKIT_LOG_FORMAT", defaults.LOG_FORMAT), LOG_FORMATS)
    if checker is None:
        check.raise_if_any()
    return (value or defaults.LOG_FORMAT).lower()


def pool_settings(env: Env, pool: str, variable: str, stack_wide: Mapping[str, str] | None = None) -> PoolSettings:
    """Pool `pool` from variables named `variable.format(KEY)` (or the `stack_wide` variable of a key
    every pool shares); unset keys take the kit's defaults, a default pool's own first."""
    stack_wide = stack_wide or {}

    def name(key: str) -> str:
        if key == "name":
            return "CELERYKIT_POOLS" if stack_wide else "CELERYKIT_POOL_NAME"
        own = variable.format(key.upper())
        # A pool's own variable wins over the stack-wide one (hosts' monitoring sets each pool's).
        return own if key not in stack_wide or env.get(own) is not None else stack_wide[key]

    base = defaults.pool(pool) if pool in DEFAULT_POOLS else {"name": pool, "queues": [], **defaults.POOL}
    raw = {key: env.get(name(key)) for key in ("queues", *defaults.POOL)}
    values = {**base, **{key: value for key, value in raw.items() if value is not None}}
    if raw["queues"] is not None:
        values["queues"] = comma_list(raw["queues"])
    return PoolSettings(values, name, name, raw={key: value for key, value in raw.items() if value is not None})


@dataclass(frozen=True)
class Pool:
    """One worker pool: a named group of processes consuming a fixed set of queues."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    max_concurrency: int
    prefetch_multiplier: int
    max_tasks_per_child: int
    max_memory_per_child: int  # MiB; 0: no limit
    time_limit: int
    soft_time_limit: int

    @classmethod
    def from_env(cls, env: Env) -> Pool:
        """The pool a worker runs (CELERYKIT_POOL_NAME, CELERYKIT_POOL_QUEUES...)."""
        check = Checker()
        name = env.get("CELERYKIT_POOL_NAME")
        if name is None:
            raise ConfigError("CELERYKIT_POOL_NAME must be set")
        visibility = visibility_timeout(env, check)
        pool = check.pool(pool_settings(env, name, POOL_VARIABLE), "CELERYKIT_VISIBILITY_TIMEOUT", visibility)
        check.raise_if_any()
        return cls(**pool)


@dataclass(frozen=True)
class Flower:
    address: str
    port: int
    url_prefix: str
    user: str
    password: str
    cookie_secret: str
    db: Path
    max_tasks: int
    state_save_interval_ms: int
    purge_offline_workers: int

    @classmethod
    def from_env(cls, env: Env, checker: Checker | None = None, secrets: bool = True) -> Flower:
        check = checker or Checker()
        user = check.flower_user("CELERYKIT_FLOWER_USER", env.get("CELERYKIT_FLOWER_USER", defaults.FLOWER_USER))
        password = cookie_secret = ""
        if secrets:
            password = env.secret_file(check, "CELERYKIT_FLOWER_PASSWORD_FILE")
            if password is not None:
                check.flower_password("CELERYKIT_FLOWER_PASSWORD_FILE", password, user, "CELERYKIT_FLOWER_USER")
            cookie_secret = env.secret_file(check, "CELERYKIT_FLOWER_COOKIE_SECRET_FILE")
            if cookie_secret is not None:
                check.cookie_secret("CELERYKIT_FLOWER_COOKIE_SECRET_FILE", cookie_secret)
        prefix = env.get("CELERYKIT_FLOWER_URL_PREFIX", defaults.FLOWER_URL_PREFIX).strip("/")
        check.url_prefix("CELERYKIT_FLOWER_URL_PREFIX", prefix)
        flower = cls(
            address=env.get("CELERYKIT_FLOWER_ADDRESS", defaults.FLOWER_ADDRESS),
            port=check.port("CELERYKIT_FLOWER_PORT", env.get("CELERYKIT_FLOWER_PORT", defaults.FLOWER_PORT)),
            url_prefix=prefix,
            user=user,
            password=password,
            cookie_secret=cookie_secret,
            db=Path(env.get("CELERYKIT_FLOWER_DB", "/var/lib/celerykit/flower/flower.db")),
            max_tasks=check.whole(
                "CELERYKIT_FLOWER_MAX_TASKS", env.get("CELERYKIT_FLOWER_MAX_TASKS", defaults.FLOWER_MAX_TASKS)
            ),
            state_save_interval_ms=check.whole(
                "CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS",
                env.get("CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS", defaults.FLOWER_STATE_SAVE_INTERVAL_MS),
                MIN_STATE_SAVE_INTERVAL_MS,
            ),
            purge_offline_workers=check.whole(
                "CELERYKIT_FLOWER_PURGE_OFFLINE_WORKERS",
                env.get("CELERYKIT_FLOWER_PURGE_OFFLINE_WORKERS", defaults.FLOWER_PURGE_OFFLINE_WORKERS),
                0,
            ),
        )
        if checker is None:
            check.raise_if_any()
        return flower


def beat_schedule_file(env: Env) -> Path:
    return Path(env.get("CELERYKIT_BEAT_SCHEDULE", defaults.BEAT_SCHEDULE))


def check_deployment(env: Env) -> list[Pool]:
    """Check a whole compose stack's settings at once, before any service starts.

    The pools are listed in CELERYKIT_POOLS; pool NAME's settings are CELERYKIT_<NAME>_QUEUES,
    _CONCURRENCY, _MAX_CONCURRENCY, _PREFETCH_MULTIPLIER, _MAX_TASKS_PER_CHILD, _MAX_MEMORY_PER_CHILD
    and _REPLICAS, the
    time limits the stack-wide CELERYKIT_TIME_LIMIT and CELERYKIT_SOFT_TIME_LIMIT. Every problem is
    reported, one line each. Secrets are checked separately (`celerykit init-secrets`).
    """
    check = Checker()
    names = comma_list(env.get("CELERYKIT_POOLS", ",".join(DEFAULT_POOLS)))
    visibility = visibility_timeout(env, check)
    pools = [pool_settings(env, name, f"CELERYKIT_{name.upper()}_{{}}", STACK_WIDE) for name in names]
    checked = check.pools("CELERYKIT_POOLS", pools, "CELERYKIT_VISIBILITY_TIMEOUT", visibility)
    for name in names:  # containers per pool: compose's own setting, no worker reads it
        replicas = f"CELERYKIT_{name.upper()}_REPLICAS"
        check.replicas(replicas, env.get(replicas, defaults.REPLICAS))
    broker_connection_max_retries(env, check)
    check.flag("CELERYKIT_REDIS_TLS", env.get("CELERYKIT_REDIS_TLS", "false"))  # its files: `init-secrets`
    log_level(env, check)
    log_format(env, check)
    check.redis_memory("CELERYKIT_REDIS_MAXMEMORY", env.get("CELERYKIT_REDIS_MAXMEMORY", defaults.REDIS_MAXMEMORY))
    https = check.port("CELERYKIT_HTTPS_PORT", env.get("CELERYKIT_HTTPS_PORT", 8443))
    http = check.port("CELERYKIT_HTTP_PORT", env.get("CELERYKIT_HTTP_PORT", 8080))
    check.distinct_ports("CELERYKIT_HTTP_PORT", http, "CELERYKIT_HTTPS_PORT", https)
    Flower.from_env(env, check, secrets=False)
    # Monitoring: checked here too, so a bad value stops `up` before any container is replaced.
    from celerykit.monitoring import Alerting, Watch

    Watch.thresholds_from_env(env, check, [queue for pool in checked for queue in pool["queues"]])
    Alerting.from_env(env, check)
    check.duration(
        "CELERYKIT_PROMETHEUS_RETENTION", env.get("CELERYKIT_PROMETHEUS_RETENTION", defaults.PROMETHEUS_RETENTION)
    )
    check.raise_if_any()
    return [Pool(**pool) for pool in checked]


def main() -> int:
    """`python -m celerykit.settings`: check the deployment's settings (exit 78 with the reasons)."""
    import sys

    try:
        pools = check_deployment(Env.current())
    except ConfigError as error:
        for line in str(error).splitlines():
            print(f"celerykit: configuration error: {line}", file=sys.stderr)
        return 78
    described = "; ".join(f"{p.name}: {','.join(p.queues)} c={p.concurrency}" for p in pools)
    print(f"celerykit: settings are valid ({described})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
