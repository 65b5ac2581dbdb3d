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


@dataclass(frozen=True)
class ServerTLS:
    """Redis's TLS: its certificate and key, the CA it checks client certificates against, and
    whether it asks clients for one."""

    cert: Path
    key: Path
    ca: Path
    client_certificates: bool = False


@dataclass
class Server:
    port: int
    process: subprocess.Popen
    log: Path
    tls: ServerTLS | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port)


def broker_notifications() -> str:
    """The keyspace events the kit's broker configuration turns on."""
    conf = resources.files("celerykit") / "share" / "redis" / "celerykit-broker.conf"
    (line,) = [line for line in conf.read_text().splitlines() if line.startswith("notify-keyspace-events ")]
    return line.split()[1]


def start_redis(
    directory: Path,
    notifications: bool,
    tls: ServerTLS | None = None,
    password: str | None = None,
    port: int | None = None,
) -> Server:
    """`notifications`: the keyspace events the kit's broker configuration turns on; `tls`: TLS only,
    the plain port closed (as the kit's Redis with TLS); `password`: the default user's (in a file);
    `port`: a stopped server's, to start it again (else a free one)."""
    assert shutil.which("redis-server"), "redis-server is not on PATH: scripts/bootstrap-host.sh --test-tools"
    if port is None:
        with socket.socket() as probe:  # a port that was free a moment ago
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
    log = directory / "redis.log"
    conf = directory / "redis.conf"
    conf.touch(mode=0o600)
    conf.write_text(f"requirepass {password}\n" if password else "")
    argv = ["redis-server", str(conf), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if tls:
        argv += ["--port", "0", "--tls-port", str(port), "--tls-cert-file", str(tls.cert)]
        argv += ["--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca)]
        argv += ["--tls-auth-clients", "yes" if tls.client_certificates else "no"]
    else:
        argv += ["--port", str(port)]
    argv += ["--dir", str(directory), "--logfile", str(log)]
    if notifications:
        argv += ["--notify-keyspace-events", broker_notifications()]
    server = Server(port, subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT), log, tls)
    deadline = time.monotonic() + 10
    while True:
        try:
            if tls:  # up once it accepts connections; the tests speak TLS to it themselves
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
            else:
                server.client().ping()
            return server
        except (redis.ConnectionError, OSError) as error:
            if server.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"redis-server did not start: {log.read_text() if log.exists() else ''}"
                ) from error
            time.sleep(0.02)


def stop_redis(server: Server) -> None:
    server.process.terminate()
    server.process.wait(timeout=10)
