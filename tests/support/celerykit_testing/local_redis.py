"""A throw-away `redis-server` on a free loopback port, for the unit tests that need Redis's own
behaviour (kombu's transport, a Celery worker's pool): no persistence, its files in a temporary
directory. `scripts/bootstrap-host.sh --test-tools` installs the binary (CI does): no test skips
without it.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import redis


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


def broker_notifications() -> str:
    """The keyspace events the kit's broker configuration turns on."""
    conf = resources.files("celerykit") / "share" / "redis" / "celerykit-broker.conf"
    (line,) = [line for line in conf.read_text().splitlines() if line.startswith("notify-keyspace-events ")]
    return line.split()[1]


def start_redis(directory: Path, notifications: bool) -> Server:
    """`notifications`: the keyspace events the kit's broker configuration turns on."""
    assert shutil.which("redis-server"), "redis-server is not on PATH: scripts/bootstrap-host.sh --test-tools"
    with socket.socket() as probe:  # a port that was free a moment ago
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = directory / "redis.log"
    argv = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    argv += ["--dir", str(directory), "--logfile", str(log)]
    if notifications:
        argv += ["--notify-keyspace-events", broker_notifications()]
    server = Server(port, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), log)
    deadline = time.monotonic() + 10
    while True:
        try:
            server.client().ping()
            return server
        except redis.ConnectionError as error:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"redis-server did not start: {log.read_text() if log.exists() else ''}"
                ) from error
            time.sleep(0.02)


def stop_redis(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=10)
