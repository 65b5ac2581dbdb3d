"""Every rule about a celerykit setting, written once.

Compose's `init` (celerykit.settings reads CELERYKIT_* variables) and the Ansible preflight (the
collection's `celerykit.platform.validate` action, given the inventory's variables) run these same
checks. A rule never knows where a value came from: each check takes the setting's name in the
user's own terms (`CELERYKIT_LOW_CONCURRENCY`, `celerykit_worker_pools[1] (reports): concurrency`)
and a `Checker` collects every problem found, one line each: "<setting> <rule>, got <value>".
Secrets are never echoed; their problems say what is wrong with them instead.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from celerykit import defaults

QUEUE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$")
POOL_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
URL_PREFIX = re.compile(r"^[A-Za-z0-9_-]+$")
REDIS_USER = re.compile(r"^[A-Za-z0-9_.-]+$")
SENTINEL_MASTER = re.compile(r"^[A-Za-z0-9_.-]+$")
# A majority of Sentinels must agree the primary is down and pick one of them to fail it over: with
# two, losing either stops every failover; three survive the loss of one.
MIN_SENTINELS = 3
HOME_BELOW_VAR_LIB = re.compile(r"^/var/lib/[^/]+")
MIN_PASSWORD_LENGTH = 12
MIN_COOKIE_SECRET_LENGTH = 32
MAX_CONCURRENCY = 256
# Replicas of one pool on one Docker host: beyond this, raise its concurrency or add hosts.
MAX_REPLICAS = 16
MIN_VISIBILITY_TIMEOUT = 60
MIN_STATE_SAVE_INTERVAL_MS = 1000
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("JSON", "TEXT")
# Prometheus durations as --storage.tsdb.retention.time takes them: 15d, 12h, 1w2d.
PROMETHEUS_DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
REDIS_MEMORY = re.compile(r"^[0-9]+([kmg]b?|b)?$", re.IGNORECASE)
HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([0-9]{1,5})$")
MAIL_ADDRESS = re.compile(r"^[^@\s,]+@[^@\s,]+$")
# Passwords that appear in tutorials and default configs: never accepted, whatever their length.
WELL_KNOWN_PASSWORDS = frozenset((Path(__file__).parent / "well_known_passwords.txt").read_text().split())
POOL_KEYS = ("name", "queues", *defaults.POOL)


class ConfigError(ValueError):
    """Settings are missing or invalid. The message names each setting at fault, one per line."""


@dataclass
class Checker:
    """Collects problems; each check returns the parsed value, or None when it was refused."""

    problems: list[str] = field(default_factory=list)

    def refuse(self, name: str, rule: str, value: Any = None, *, show: bool = True) -> None:
        line = f"{name} {rule}, got {value!r}" if show else f"{name} {rule}"
        if line not in self.problems:  # a stack-wide setting shared by several pools: said once
            self.problems.append(line)

    def raise_if_any(self) -> None:
        if self.problems:
            raise ConfigError("\n".join(self.problems))

    # Values -----------------------------------------------------------------------------------

    def whole(self, name: str, value: Any, minimum: int = 1, maximum: int | None = None) -> int | None:
        """A whole number within bounds (YAML ints, or strings of digits as environments give them)."""
        number = whole_number(value)
        if number is None:
            self.refuse(name, "must be a whole number", value)
            return None
        if number < minimum or (maximum is not None and number > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            self.refuse(name, f"must be {bounds}", number)
            return None
        return number

    def port(self, name: str, value: Any) -> int | None:
        return self.whole(name, value, 1, 65535)

    def text(self, name: str, value: Any) -> str | None:
        if not isinstance(value, str) or not value.strip():
            self.refuse(name, "must be set", value)
            return None
        return value.strip()

    def matches(self, name: str, value: Any, pattern: re.Pattern[str], rule: str) -> str | None:
        if not isinstance(value, str) or not pattern.match(value):
            self.refuse(name, rule, value)
            return None
        return value

    def one_of(self, name: str, value: Any, choices: Sequence[str]) -> str | None:
        if not isinstance(value, str) or value.upper() not in choices:
            self.refuse(name, f"must be one of {', '.join(choices)}", value)
            return None
        return value.upper()

    def flag(self, name: str, value: Any) -> bool | None:
        """true or false (any case); a bool as Ansible gives it."""
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        self.refuse(name, "must be true or false", value)
        return None

    def readable_file(self, name: str, value: Any) -> Path | None:
        """The path of a file this process can read (a certificate, a key, a CA bundle)."""
        if not isinstance(value, str) or not value.strip():
            self.refuse(name, "must be set to a file's path", value)
            return None
        path = Path(value.strip())
        try:
            with path.open("rb"):
                pass
        except FileNotFoundError:
            self.refuse(name, "must name an existing file", str(path))
            return None
        except OSError:
            self.refuse(name, "must name a file this user may read", str(path))
            return None
        return path

    def below(self, name: str, value: int | None, other: str, limit: int | None) -> None:
        if value is not None and limit is not None and value >= limit:
            self.refuse(name, f"must be below {other} ({limit})", value)

    # Secrets: never shown ----------------------------------------------------------------------

    def password(self, name: str, value: Any, user: str = "", user_name: str = "") -> str | None:
        password = value.strip() if isinstance(value, str) else ""
        if not password:
            self.refuse(name, "must not be empty", show=False)
        elif len(password) < MIN_PASSWORD_LENGTH:
            self.refuse(
                name, f"must be at least {MIN_PASSWORD_LENGTH} characters long, got {len(password)}", show=False
            )
        elif password.lower() in WELL_KNOWN_PASSWORDS:
            self.refuse(name, "is a well-known default password: choose or generate another", show=False)
        elif user and password.lower() == user.lower():
            self.refuse(name, f"must not be the user name ({user_name or 'the user'})", show=False)
        else:
            return password
        return None

    def cookie_secret(self, name: str, value: Any, generated_if_empty: bool = False) -> None:
        secret = value.strip() if isinstance(value, str) else ""
        if not secret and generated_if_empty:
            return
        if len(secret) < MIN_COOKIE_SECRET_LENGTH:
            rule = f"must be at least {MIN_COOKIE_SECRET_LENGTH} characters long, got {len(secret)}"
            self.refuse(name, rule + (" (or empty, to have one generated)" if generated_if_empty else ""), show=False)

    # The kit's settings -----------------------------------------------------------------------

    def queues(self, name: str, queues: Sequence[Any], given: Any) -> tuple[str, ...] | None:
        if not queues:
            self.refuse(name, "must list at least one queue", given)
            return None
        if not all(isinstance(q, str) and QUEUE_NAME.match(q) for q in queues):
            self.refuse(name, "must be names of letters, digits, '_', '.', ':', '-'", given)
            return None
        if len(set(queues)) != len(queues):
            self.refuse(name, "must not list a queue twice", given)
            return None
        return tuple(queues)

    def pool(self, pool: PoolSettings, visibility_name: str, visibility: int | None) -> dict[str, Any] | None:
        """One pool's settings (defaults already applied); the time limits below the visibility timeout."""
        name = self.matches(pool.name("name"), pool.values.get("name"), POOL_NAME, f"must match {POOL_NAME.pattern}")
        queues_given = pool.values.get("queues")
        queues = self.queues(pool.name("queues"), list(queues_given or ()), pool.given("queues"))
        numbers = {
            "concurrency": self.whole(pool.name("concurrency"), pool.values.get("concurrency"), 1, MAX_CONCURRENCY),
            "max_concurrency": self.whole(
                pool.name("max_concurrency"), pool.values.get("max_concurrency"), 0, MAX_CONCURRENCY
            ),
            **{
                key: self.whole(pool.name(key), pool.values.get(key))
                for key in ("prefetch_multiplier", "max_tasks_per_child", "time_limit", "soft_time_limit")
            },
            "max_memory_per_child": self.whole(
                pool.name("max_memory_per_child"), pool.values.get("max_memory_per_child"), 0
            ),
        }
        least, most = numbers["concurrency"], numbers["max_concurrency"]
        if least is not None and most and most < least:
            rule = f"must be 0 (a fixed size) or at least {pool.reference('concurrency')} ({least})"
            self.refuse(pool.name("max_concurrency"), rule, most)
            numbers["max_concurrency"] = None
        hard, soft = numbers["time_limit"], numbers["soft_time_limit"]
        self.below(pool.name("soft_time_limit"), soft, pool.reference("time_limit"), hard)
        # Above it, Redis hands a task that is still running to another worker.
        self.below(pool.name("time_limit"), hard, visibility_name, visibility)
        if name is None or queues is None or None in numbers.values():
            return None
        return {"name": name, "queues": queues, **numbers}

    def replicas(self, name: str, value: Any) -> int | None:
        """How many containers run a pool in a compose stack."""
        return self.whole(name, value, 1, MAX_REPLICAS)

    def pools(self, name: str, pools: Sequence[PoolSettings], visibility_name: str, visibility: int | None) -> list:
        """Several pools of one host or stack: distinct names, each queue consumed by one pool."""
        if not pools:
            self.refuse(name, "must list at least one pool", [])
            return []
        names = [pool.values.get("name") for pool in pools]
        if len(set(map(str, names))) != len(names):
            self.refuse(name, "must not name a pool twice", names)
        checked = [self.pool(pool, visibility_name, visibility) for pool in pools]
        owner: dict[str, str] = {}
        for pool, result in zip(pools, checked, strict=True):
            for queue in (result or {}).get("queues", ()):
                if queue in owner:
                    rule = f"must not list {queue!r}: pool {owner[queue]!r} consumes it (a queue belongs to one pool)"
                    self.refuse(pool.name("queues"), rule, pool.given("queues"))
                else:
                    owner[queue] = result["name"]
        return [result for result in checked if result]

    def flower_user(self, name: str, value: Any) -> str | None:
        user = self.text(name, value)
        if user is not None and (":" in user or "," in user):
            self.refuse(name, "must not contain ':' or ','", user)
            return None
        return user

    def flower_password(self, name: str, value: Any, user: str | None, user_name: str) -> None:
        password = self.password(name, value, user or "", user_name)
        if password is not None and "," in password:
            self.refuse(name, "must not contain ',' (Flower separates users with it)", show=False)

    def url_prefix(self, name: str, value: Any) -> None:
        self.matches(name, value, URL_PREFIX, "must be one path segment of letters, digits, '_', '-'")

    def distinct_ports(self, name: str, value: int | None, other: str, other_value: int | None) -> None:
        if value is not None and value == other_value:
            self.refuse(name, f"must differ from {other} ({other_value})", value)

    # Monitoring ---------------------------------------------------------------------------------

    def backlog_thresholds(self, name: str, warning: int | None, critical: int | None, critical_name: str) -> None:
        if warning is not None and critical is not None and warning >= critical:
            self.refuse(name, f"must be below {critical_name} ({critical})", warning)

    def redis_memory(self, name: str, value: Any) -> str | None:
        text = str(value) if isinstance(value, int | str) and not isinstance(value, bool) else value
        return self.matches(name, text, REDIS_MEMORY, "must be a Redis memory size such as 0, 512mb or 2gb")

    def duration(self, name: str, value: Any) -> str | None:
        return self.matches(name, value, PROMETHEUS_DURATION, "must be a Prometheus duration such as 15d, 12h or 2w")

    def host_port(self, name: str, value: Any) -> str | None:
        found = HOST_PORT.match(value) if isinstance(value, str) else None
        if found is None or not 1 <= int(found.group(2)) <= 65535:
            self.refuse(name, "must be host:port (a port between 1 and 65535)", value)
            return None
        return value

    def sentinels(self, name: str, value: Any) -> tuple[tuple[str, int], ...] | None:
        """Sentinels as host:port (or a host, on the default port): three or more, each once."""
        if not isinstance(value, list | tuple):
            self.refuse(name, f"must list at least {MIN_SENTINELS} Sentinels as host:port", value)
            return None
        found = []
        for entry in value:
            text = str(entry).strip()
            address = text if HOST_PORT.match(text) else f"{text}:{defaults.REDIS_SENTINEL_PORT}"
            matched = HOST_PORT.match(address)
            if matched is None or not 1 <= int(matched.group(2)) <= 65535:
                self.refuse(name, "must list Sentinels as host:port (a port between 1 and 65535)", value)
                return None
            found.append((matched.group(1).strip("[]"), int(matched.group(2))))
        if len(set(found)) != len(found):
            self.refuse(name, "must name each Sentinel once", value)
            return None
        if len(found) < MIN_SENTINELS:
            rule = f"must list at least {MIN_SENTINELS} Sentinels (a majority must survive the loss of one)"
            self.refuse(name, rule, value)
            return None
        return tuple(found)

    def mail_addresses(self, name: str, value: Any) -> tuple[str, ...] | None:
        addresses = [a.strip() for a in value] if isinstance(value, list | tuple) else None
        if not addresses:
            self.refuse(name, "must list at least one mail address", value)
            return None
        if not all(MAIL_ADDRESS.match(a) for a in addresses):
            self.refuse(name, "must be mail addresses (user@domain)", value)
            return None
        return tuple(addresses)

    def http_url(self, name: str, value: Any) -> str | None:
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(value) if isinstance(value, str) else None
            port = parts.port if parts else None  # raises on a port out of range
        except ValueError:
            parts = port = None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname or " " in value:
            self.refuse(name, "must be an http:// or https:// URL", value)
            return None
        del port
        return value

    def home(self, name: str, value: Any) -> None:
        self.matches(name, value, HOME_BELOW_VAR_LIB, "must be below /var/lib (systemd keeps state there)")


@dataclass(frozen=True)
class PoolSettings:
    """A pool's values and how its user names each of them.

    `name(key)` is the setting as the user writes it (`CELERYKIT_LOW_CONCURRENCY`,
    `celerykit_worker_pools[2] (low): concurrency`); `reference(key)` names another key of the
    same pool inside a message; `given(key)` is the value as the user wrote it.
    """

    values: Mapping[str, Any]
    name: Callable[[str], str]
    reference: Callable[[str], str]
    raw: Mapping[str, Any] = field(default_factory=dict)

    def given(self, key: str) -> Any:
        return self.raw.get(key, self.values.get(key))


def whole_number(value: Any) -> int | None:
    """A YAML int or a string of digits (as environments give them) as an int; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None
