"""The kit's knobs, read from the environment: names, defaults and limits live here once.

Compose passes these variables to the containers; the Ansible roles write them into the
environment files of the systemd units. Every error names the variable at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

# Defaults from the field (see README, "Configuration").
TIME_LIMIT = 3600
SOFT_TIME_LIMIT = 3300
VISIBILITY_TIMEOUT = 7200  # above the hard limit plus queue wait: a running task is never redelivered
MAX_TASKS_PER_CHILD = 100
PREFETCH_MULTIPLIER = 1
FLOWER_MAX_TASKS = 10000
# Celery's own default: with kombu's backoff (2 s more per try, at most 30 s) about 45 minutes of
# broker outage before a worker gives up and exits, and its service manager starts it again.
BROKER_CONNECTION_MAX_RETRIES = 100
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
POOL_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
MIN_PASSWORD_LENGTH = 12
# Passwords that appear in tutorials and default configs: never accepted, whatever their length.
# One list for the services and the Ansible roles, which read the same file.
WELL_KNOWN_PASSWORDS = frozenset((Path(__file__).parent / "well_known_passwords.txt").read_text().split())


class ConfigError(ValueError):
    """A setting is missing or invalid. The message names the variable."""


@dataclass(frozen=True)
class Env:
    """Typed access to an environment mapping, failing with the variable's name."""

    environ: Mapping[str, str]

    @classmethod
    def current(cls) -> Env:
        return cls(os.environ)

    def str(self, name: str, default: str | None = None) -> str:
        value = self.environ.get(name, "").strip()
        if value:
            return value
        if default is None:
            raise ConfigError(f"{name} must be set")
        return default

    def int(self, name: str, default: int, minimum: int = 1, maximum: int | None = None) -> int:
        raw = self.environ.get(name, "").strip()
        if not raw:
            return default
        try:
            value = int(raw)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {raw!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise ConfigError(f"{name} must be {bounds}, got {value}")
        return value

    def port(self, name: str, default: int) -> int:
        return self.int(name, default, minimum=1, maximum=65535)

    def queues(self, name: str, default: str | None = None) -> tuple[str, ...]:
        raw = self.str(name, default)
        queues = tuple(q.strip() for q in raw.split(","))
        for queue in queues:
            if not QUEUE_NAME.match(queue):
                raise ConfigError(
                    f"{name}: {queue!r} is not a valid queue name "
                    "(letters, digits, '_', '.', ':', '-'; comma-separated, no spaces)"
                )
        if len(set(queues)) != len(queues):
            raise ConfigError(f"{name} lists a queue twice: {raw!r}")
        return queues

    def secret_file(self, name: str) -> str:
        """Read the secret whose path is in NAME (a *_FILE variable); it must exist and be non-empty."""
        path = Path(self.str(name))
        try:
            value = path.read_text().strip()
        except FileNotFoundError:
            raise ConfigError(f"{name}: secret file {path} does not exist") from None
        except PermissionError:
            raise ConfigError(f"{name}: secret file {path} is not readable by this user") from None
        if not value:
            raise ConfigError(f"{name}: secret file {path} is empty")
        return value


def check_password(name: str, password: str, username: str = "") -> None:
    """Refuse passwords that are short, well known or equal to the user name."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(f"{name}: password is shorter than {MIN_PASSWORD_LENGTH} characters")
    if password.lower() in WELL_KNOWN_PASSWORDS or (username and password.lower() == username.lower()):
        raise ConfigError(f"{name}: password is a well-known default; choose or generate another")


@dataclass(frozen=True)
class Redis:
    host: str
    port: int
    db: int
    user: str
    password: str

    @classmethod
    def from_env(cls, env: Env) -> Redis:
        user = env.str("CELERYKIT_REDIS_USER", "celery")
        password = env.secret_file("CELERYKIT_REDIS_PASSWORD_FILE")
        check_password("CELERYKIT_REDIS_PASSWORD_FILE", password, user)
        return cls(
            host=env.str("CELERYKIT_REDIS_HOST", "127.0.0.1"),
            port=env.port("CELERYKIT_REDIS_PORT", 6379),
            db=env.int("CELERYKIT_REDIS_DB", 0, minimum=0, maximum=15),
            user=user,
            password=password,
        )

    @property
    def url(self) -> str:
        credentials = f"{quote(self.user, safe='')}:{quote(self.password, safe='')}"
        return f"redis://{credentials}@{self.host}:{self.port}/{self.db}"


@dataclass(frozen=True)
class Pool:
    """One worker pool: a named group of processes consuming a fixed set of queues."""

    name: str
    queues: tuple[str, ...]
    concurrency: int
    prefetch_multiplier: int
    max_tasks_per_child: int
    time_limit: int
    soft_time_limit: int

    @classmethod
    def from_env(cls, env: Env) -> Pool:
        name = env.str("CELERYKIT_POOL_NAME")
        try:
            return cls._from_env(name, env)
        except ConfigError as error:
            raise ConfigError(f"pool {name!r}: {error}") from None

    @classmethod
    def _from_env(cls, name: str, env: Env) -> Pool:
        if not POOL_NAME.match(name):
            raise ConfigError(f"CELERYKIT_POOL_NAME: {name!r} must match {POOL_NAME.pattern}")
        pool = cls(
            name=name,
            queues=env.queues("CELERYKIT_POOL_QUEUES"),
            concurrency=env.int("CELERYKIT_POOL_CONCURRENCY", 1, minimum=1, maximum=256),
            prefetch_multiplier=env.int("CELERYKIT_POOL_PREFETCH_MULTIPLIER", PREFETCH_MULTIPLIER),
            max_tasks_per_child=env.int("CELERYKIT_POOL_MAX_TASKS_PER_CHILD", MAX_TASKS_PER_CHILD),
            time_limit=env.int("CELERYKIT_POOL_TIME_LIMIT", TIME_LIMIT),
            soft_time_limit=env.int("CELERYKIT_POOL_SOFT_TIME_LIMIT", SOFT_TIME_LIMIT),
        )
        if pool.soft_time_limit >= pool.time_limit:
            raise ConfigError(
                f"CELERYKIT_POOL_SOFT_TIME_LIMIT ({pool.soft_time_limit}) must be below "
                f"CELERYKIT_POOL_TIME_LIMIT ({pool.time_limit})"
            )
        visibility = visibility_timeout(env)
        if pool.time_limit >= visibility:
            raise ConfigError(
                f"CELERYKIT_POOL_TIME_LIMIT ({pool.time_limit}) must be below CELERYKIT_VISIBILITY_TIMEOUT "
                f"({visibility}), or Redis redelivers tasks that are still running"
            )
        return pool


def visibility_timeout(env: Env) -> int:
    return env.int("CELERYKIT_VISIBILITY_TIMEOUT", VISIBILITY_TIMEOUT, minimum=60)


def broker_connection_max_retries(env: Env) -> int:
    """Reconnection attempts before a worker gives up and exits (its service manager restarts it)."""
    return env.int("CELERYKIT_BROKER_CONNECTION_MAX_RETRIES", BROKER_CONNECTION_MAX_RETRIES, minimum=1)


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
    def from_env(cls, env: Env) -> Flower:
        user = env.str("CELERYKIT_FLOWER_USER", "admin")
        if ":" in user or "," in user:
            raise ConfigError("CELERYKIT_FLOWER_USER must not contain ':' or ','")
        password = env.secret_file("CELERYKIT_FLOWER_PASSWORD_FILE")
        check_password("CELERYKIT_FLOWER_PASSWORD_FILE", password, user)
        if "," in password:
            raise ConfigError("CELERYKIT_FLOWER_PASSWORD_FILE: password must not contain ','")
        cookie_secret = env.secret_file("CELERYKIT_FLOWER_COOKIE_SECRET_FILE")
        if len(cookie_secret) < 32:
            raise ConfigError("CELERYKIT_FLOWER_COOKIE_SECRET_FILE: cookie secret is shorter than 32 characters")
        return cls(
            address=env.str("CELERYKIT_FLOWER_ADDRESS", "127.0.0.1"),
            port=env.port("CELERYKIT_FLOWER_PORT", 5555),
            url_prefix=env.str("CELERYKIT_FLOWER_URL_PREFIX", "flower").strip("/"),
            user=user,
            password=password,
            cookie_secret=cookie_secret,
            db=Path(env.str("CELERYKIT_FLOWER_DB", "/var/lib/celerykit/flower/flower.db")),
            max_tasks=env.int("CELERYKIT_FLOWER_MAX_TASKS", FLOWER_MAX_TASKS),
            state_save_interval_ms=env.int("CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS", 15000, minimum=1000),
            purge_offline_workers=env.int("CELERYKIT_FLOWER_PURGE_OFFLINE_WORKERS", 600, minimum=0),
        )


def beat_schedule_file(env: Env) -> Path:
    return Path(env.str("CELERYKIT_BEAT_SCHEDULE", "/var/lib/celerykit/beat/celerybeat-schedule"))


# The kit's default pools: name -> (queues, concurrency). Compose services and the Ansible role
# defaults spell these out for readability; a test keeps them equal to this table.
DEFAULT_POOLS: dict[str, tuple[tuple[str, ...], int]] = {
    "high": (("high_priority",), 2),
    "medium": (("medium_priority", "default"), 2),
    "low": (("low_priority",), 1),
}


# Per-pool variables of a whole deployment (compose: CELERYKIT_HIGH_QUEUES...) and the variable
# each one becomes in that pool's own environment (CELERYKIT_POOL_QUEUES...).
POOL_VARIABLES = {
    "QUEUES": "CELERYKIT_POOL_QUEUES",
    "CONCURRENCY": "CELERYKIT_POOL_CONCURRENCY",
    "PREFETCH_MULTIPLIER": "CELERYKIT_POOL_PREFETCH_MULTIPLIER",
}
SHARED_POOL_VARIABLES = {
    "CELERYKIT_TIME_LIMIT": "CELERYKIT_POOL_TIME_LIMIT",
    "CELERYKIT_SOFT_TIME_LIMIT": "CELERYKIT_POOL_SOFT_TIME_LIMIT",
    "CELERYKIT_VISIBILITY_TIMEOUT": "CELERYKIT_VISIBILITY_TIMEOUT",
}


def check_deployment(env: Env) -> list[Pool]:
    """Validate a whole deployment's settings at once, before any service starts.

    The pools are listed in CELERYKIT_POOLS; pool NAME's settings are CELERYKIT_<NAME>_QUEUES,
    _CONCURRENCY and _PREFETCH_MULTIPLIER, its time limits the shared CELERYKIT_TIME_LIMIT and
    CELERYKIT_SOFT_TIME_LIMIT. Errors name the variable the user sets. Secrets are checked
    separately (`celerykit init-secrets`).
    """
    names = env.str("CELERYKIT_POOLS", ",".join(DEFAULT_POOLS)).split(",")
    pools: list[Pool] = []
    owner: dict[str, str] = {}
    for raw_name in names:
        name = raw_name.strip()
        renames = {pool_var: f"CELERYKIT_{name.upper()}_{suffix}" for suffix, pool_var in POOL_VARIABLES.items()}
        renames.update({pool_var: var for var, pool_var in SHARED_POOL_VARIABLES.items()})
        pool_env = {pool_var: env.environ.get(var, "") for pool_var, var in renames.items()}
        if name in DEFAULT_POOLS:  # unset: the kit's default for this pool
            queues, concurrency = DEFAULT_POOLS[name]
            pool_env["CELERYKIT_POOL_QUEUES"] = pool_env["CELERYKIT_POOL_QUEUES"].strip() or ",".join(queues)
            pool_env["CELERYKIT_POOL_CONCURRENCY"] = pool_env["CELERYKIT_POOL_CONCURRENCY"].strip() or str(concurrency)
        try:
            pool = Pool.from_env(Env({**pool_env, "CELERYKIT_POOL_NAME": name}))
        except ConfigError as error:
            message = str(error)
            for pool_var, var in sorted(renames.items(), key=lambda item: -len(item[0])):
                message = message.replace(pool_var, var)
            raise ConfigError(message) from None
        for queue in pool.queues:
            if queue in owner:
                raise ConfigError(
                    f"CELERYKIT_{name.upper()}_QUEUES: queue {queue!r} is already consumed by pool "
                    f"{owner[queue]!r} (CELERYKIT_{owner[queue].upper()}_QUEUES); a queue belongs to one pool"
                )
            owner[queue] = name
        pools.append(pool)
    broker_connection_max_retries(env)
    level = env.str("CELERYKIT_LOG_LEVEL", "INFO")
    if level.upper() not in LOG_LEVELS:
        raise ConfigError(f"CELERYKIT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    ports = {
        name: env.port(name, default)
        for name, default in (("CELERYKIT_HTTPS_PORT", 8443), ("CELERYKIT_HTTP_PORT", 8080))
    }
    if len(set(ports.values())) != len(ports):
        raise ConfigError(
            f"CELERYKIT_HTTPS_PORT and CELERYKIT_HTTP_PORT must differ, both are {ports['CELERYKIT_HTTPS_PORT']}"
        )
    user = env.str("CELERYKIT_FLOWER_USER", "admin")
    if ":" in user or "," in user:
        raise ConfigError("CELERYKIT_FLOWER_USER must not contain ':' or ','")
    env.int("CELERYKIT_FLOWER_MAX_TASKS", FLOWER_MAX_TASKS)
    env.int("CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS", 15000, minimum=1000)
    env.int("CELERYKIT_FLOWER_PURGE_OFFLINE_WORKERS", 600, minimum=0)
    return pools


def main() -> int:
    """`python -m celerykit.settings`: check the deployment's settings (exit 78 with the reason)."""
    import sys

    try:
        pools = check_deployment(Env.current())
    except ConfigError as error:
        print(f"celerykit: configuration error: {error}", file=sys.stderr)
        return 78
    described = "; ".join(f"{p.name}: {','.join(p.queues)} c={p.concurrency}" for p in pools)
    print(f"celerykit: settings are valid ({described})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
