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

QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
POOL_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
MIN_PASSWORD_LENGTH = 12
# Passwords that appear in tutorials and default configs: never accepted, whatever their length.
WELL_KNOWN_PASSWORDS = frozenset(
    {
        "admin",
        "password",
        "changeme",
        "change-me",
        "secret",
        "celery",
        "flower",
        "redis",
        "guest",
        "123456",
        "12345678",
        "123456789",
        "1234567890",
        "qwerty",
        "letmein",
        "default",
        "example",
        "password123",
        "adminadmin",
        "administrator",
    }
)


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
