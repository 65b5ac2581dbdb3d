"""Health checks for containers and units: exit 0 when the service does its job."""

from __future__ import annotations

import time
import urllib.request

from celerykit import defaults, liveness
from celerykit.rules import ConfigError
from celerykit.settings import Env, Flower, beat_schedule_file


def worker_is_healthy(env: Env) -> bool:
    """The worker is consuming: it touched its liveness file lately (celerykit.liveness)."""
    path = env.get(liveness.VARIABLE)
    if path is None:
        raise ConfigError(f"{liveness.VARIABLE} must name the file the worker touches while it consumes")
    return liveness.is_alive(path)


def beat_is_healthy(env: Env, max_age: float = 600.0) -> bool:
    """Beat keeps its schedule file fresh (it syncs every few minutes while it runs)."""
    schedule = beat_schedule_file(env)
    candidates = [p for p in schedule.parent.glob(schedule.name + "*") if p.is_file()]
    return any(time.time() - p.stat().st_mtime < max_age for p in candidates)


def flower_is_healthy(env: Env) -> bool:
    flower = Flower.from_env(env)
    host = "127.0.0.1" if flower.address in ("", "0.0.0.0") else flower.address  # noqa: S104
    prefix = f"/{flower.url_prefix}" if flower.url_prefix else ""
    url = f"http://{host}:{flower.port}{prefix}/healthcheck"
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status == 200 and response.read().strip() == b"OK"


def exporter_is_healthy(env: Env) -> bool:
    """The exporter serves metrics and could reach Redis for them."""
    address = env.get("CELERYKIT_EXPORTER_ADDRESS", defaults.EXPORTER_ADDRESS)
    host = "127.0.0.1" if address in ("", "0.0.0.0") else address  # noqa: S104
    port = env.get("CELERYKIT_EXPORTER_PORT", defaults.EXPORTER_PORT)
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        return response.status == 200 and b"celerykit_redis_up 1.0" in response.read()


CHECKS = {
    "worker": worker_is_healthy,
    "beat": beat_is_healthy,
    "flower": flower_is_healthy,
    "exporter": exporter_is_healthy,
}
