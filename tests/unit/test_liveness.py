"""A worker's liveness file (celerykit.liveness) and the health check that reads it, on a real prefork
worker against a Redis of the test's own, which the test stops and starts again."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from celerykit_testing.local_redis import start_redis, stop_redis
from celerykit_testing.local_worker import app_module, start_worker, stop_workers

from celerykit import liveness

APP = """
from celery import Celery

from celerykit import liveness, patches

patches.apply()
app = Celery("liveapp", broker={url!r})
liveness.install(app)
"""


def check(**environ: str) -> subprocess.CompletedProcess[str]:
    """The container's health check, `python3 -m celerykit.health worker`, in this environment."""
    env = {k: v for k, v in os.environ.items() if k != liveness.VARIABLE} | environ
    command = [sys.executable, "-m", "celerykit.health", "worker"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)


def healthy(path: Path) -> bool:
    """What the health check answers in a container that names this file."""
    return check(**{liveness.VARIABLE: str(path)}).returncode == 0


def wait_until(what: str, condition, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def test_the_file_is_fresh_while_the_worker_consumes_and_gone_while_its_broker_is(tmp_path):
    alive = tmp_path / "alive"
    server = start_redis(tmp_path, notifications=True)
    workers: list[subprocess.Popen] = []
    try:
        with app_module(tmp_path, "liveapp", APP.format(url=server.url)) as liveapp:
            assert not healthy(alive)  # no worker yet
            workers.append(start_worker(liveapp, "live", env={liveness.VARIABLE: str(alive)}))
            wait_until("the worker consumes", lambda: healthy(alive), 60)
            touched = alive.stat().st_mtime
            again = 3 * liveness.TOUCH_SECONDS
            wait_until("the worker touches it again", lambda: alive.stat().st_mtime > touched, again)

            stop_redis(server)  # the broker is gone: the consumer stops, and so does its file
            wait_until("the file is removed", lambda: not alive.exists(), 30)
            assert not healthy(alive)
            assert workers[0].poll() is None  # the worker itself runs on, reconnecting

            server = start_redis(tmp_path, notifications=True, port=server.port)
            wait_until("the worker consumes again", lambda: healthy(alive), 60)

            stop_workers(workers)  # a warm shutdown leaves no file behind
            assert not alive.exists()
    finally:
        stop_workers(workers)
        stop_redis(server)


def test_a_file_older_than_the_limit_is_not_alive(tmp_path):
    """A worker whose event loop is stuck, or that was killed, leaves an old file: unhealthy."""
    alive = tmp_path / "alive"
    alive.touch()
    assert healthy(alive)
    old = time.time() - liveness.MAX_AGE_SECONDS - 1
    os.utime(alive, (old, old))
    assert not healthy(alive)


def test_without_the_variable_the_check_names_it_and_fails():
    """Hosts keep no file (systemd watches their workers): asked there, the check says what it needs."""
    result = check()
    assert result.returncode == 78  # EX_CONFIG
    assert f"configuration error: {liveness.VARIABLE} must name the file" in result.stderr
