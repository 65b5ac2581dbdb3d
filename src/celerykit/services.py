"""Start the kit's services: settings from the environment in, a validated `celery` command out.

Compose services and systemd units both run `celerykit worker|beat|flower`, so the command
lines, and the checks that guard them, exist once. Secrets travel in files and the
environment of the exec'd process, never on its command line.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence

from celerykit.logs import SERVICE_VARIABLE
from celerykit.settings import Env, Flower, Pool, Redis, beat_schedule_file, log_format, log_level

CELERY_APP = "celerykit.app"
TASK_RUNTIME_BUCKETS = "0.01,0.05,0.1,0.25,0.5,1,2.5,5,10,30,60,300,900,1800,3600"


def _celery(*args: str, quiet: bool = False) -> list[str]:
    # --quiet: no banner, which Celery prints around logging (celerykit.logs logs it instead).
    return [sys.executable, "-m", "celery", "-A", CELERY_APP, *(["--quiet"] if quiet else []), *args]


def _json(env: Env) -> bool:
    return log_format(env) == "json"


def worker_command(env: Env) -> list[str]:
    pool = Pool.from_env(env)
    Redis.from_env(env)  # fail here, with the variable's name, rather than deep inside kombu
    command = _celery(
        "worker",
        f"--hostname={pool.name}@%h",
        f"--queues={','.join(pool.queues)}",
        f"--concurrency={pool.concurrency}",
        # Celery's autoscaler: starts with `concurrency` processes, grows to the maximum under load.
        *([f"--autoscale={pool.max_concurrency},{pool.concurrency}"] if pool.max_concurrency else []),
        f"--prefetch-multiplier={pool.prefetch_multiplier}",
        f"--max-tasks-per-child={pool.max_tasks_per_child}",
        *([f"--max-memory-per-child={pool.max_memory_per_child * 1024}"] if pool.max_memory_per_child else []),
        f"--time-limit={pool.time_limit}",
        f"--soft-time-limit={pool.soft_time_limit}",
        f"--loglevel={log_level(env)}",
        quiet=_json(env),
    )
    return command + shlex.split(env.environ.get("CELERYKIT_POOL_EXTRA_ARGS", ""))


def beat_command(env: Env) -> list[str]:
    Redis.from_env(env)
    schedule = beat_schedule_file(env)
    return _celery(
        "beat",
        f"--schedule={schedule}",
        f"--pidfile={schedule.parent / 'beat.pid'}",
        f"--loglevel={log_level(env)}",
        quiet=_json(env),
    )


def flower_environment(env: Env) -> dict[str, str]:
    """Flower reads FLOWER_* variables; credentials go there, not into argv."""
    Redis.from_env(env)
    flower = Flower.from_env(env)
    flower.db.parent.mkdir(parents=True, exist_ok=True)
    return {
        "FLOWER_ADDRESS": flower.address,
        "FLOWER_PORT": str(flower.port),
        "FLOWER_URL_PREFIX": flower.url_prefix,
        "FLOWER_BASIC_AUTH": f"{flower.user}:{flower.password}",
        "FLOWER_COOKIE_SECRET": flower.cookie_secret,
        "FLOWER_PERSISTENT": "true",
        "FLOWER_DB": str(flower.db),
        "FLOWER_STATE_SAVE_INTERVAL": str(flower.state_save_interval_ms),
        "FLOWER_MAX_TASKS": str(flower.max_tasks),
        "FLOWER_PURGE_OFFLINE_WORKERS": str(flower.purge_offline_workers),
        # Task runtime histogram up to the hard time limit (Flower's default buckets end at 10 s).
        "FLOWER_TASK_RUNTIME_METRIC_BUCKETS": TASK_RUNTIME_BUCKETS,
        # Behind nginx: trust X-Forwarded-* / X-Real-IP from the proxy for scheme and client address.
        "FLOWER_XHEADERS": "true",
    }


def flower_command(env: Env) -> list[str]:
    log_format(env)  # refused here, with the variable's name, rather than at the app's import
    return _celery("flower", f"--logging={log_level(env).lower()}")


def exec_service(name: str, env: Env, argv: Sequence[str] = ()) -> None:
    """Replace this process with the named service (so signals reach Celery directly)."""
    environ = dict(os.environ, **{SERVICE_VARIABLE: name})  # its stdout and stderr are its log
    if name == "worker":
        command = worker_command(env)
    elif name == "beat":
        command = beat_command(env)
    elif name == "flower":
        environ.update(flower_environment(env))
        command = flower_command(env)
    else:  # pragma: no cover - argparse restricts the choices
        raise ValueError(name)
    os.execve(command[0], [*command, *argv], environ)
