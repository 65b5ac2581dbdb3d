"""Each compose service's health check: `python3 -m celerykit.health SERVICE` exits 0 when it does its job.

Docker runs a check every 5-20 s in every container, for as long as the stack runs: this module
imports only `socket` and the kit's defaults, and asks with one HTTP/1.0 request of its own. The
settings module, argparse and urllib's client cost 55-80 ms of CPU per check before the request was
sent (docs/benchmarks.md, "What the test run costs"); the services check their settings
themselves when they start.
"""

from __future__ import annotations

import os
import socket
import sys
import time

from celerykit import defaults, liveness


class Misconfigured(Exception):
    """A setting the check needs is missing or wrong: the container's configuration, not the service."""


def get(address: str, port: int | str, path: str, *, tls: bool = False, timeout: float = 5.0) -> tuple[int, bytes]:
    """GET path from the service listening on address:port: the status and the body (HTTP/1.0: the
    server closes the connection after the body)."""
    host = "127.0.0.1" if address in ("", "0.0.0.0") else address  # noqa: S104 - listening everywhere
    with socket.create_connection((host, int(port)), timeout=timeout) as connection:
        sock = connection
        if tls:
            import ssl

            # The container's own nginx: its certificate may be self-signed.
            sock = ssl._create_unverified_context().wrap_socket(connection)  # noqa: S323
        with sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            response = b"".join(iter(lambda: sock.recv(65536), b""))
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split(maxsplit=2)[1]), body


def _env(name: str, default: object) -> str:
    """The variable, stripped; empty is unset (as the services read it, celerykit.settings.Env)."""
    return os.environ.get(name, "").strip() or str(default)


def worker() -> bool:
    """The worker consumes: it touched its liveness file lately (celerykit.liveness)."""
    path = _env(liveness.VARIABLE, "")
    if not path:
        raise Misconfigured(f"{liveness.VARIABLE} must name the file the worker touches while it consumes")
    return liveness.is_alive(path)


def beat(max_age: float = 600.0) -> bool:
    """Beat keeps its schedule file (or its dbm files) fresh: it syncs every few minutes."""
    directory, name = os.path.split(_env("CELERYKIT_BEAT_SCHEDULE", defaults.BEAT_SCHEDULE))
    with os.scandir(directory) as entries:
        return any(
            e.name.startswith(name) and e.is_file() and time.time() - e.stat().st_mtime < max_age for e in entries
        )


def flower() -> bool:
    prefix = _env("CELERYKIT_FLOWER_URL_PREFIX", defaults.FLOWER_URL_PREFIX).strip("/")
    status, body = get(
        _env("CELERYKIT_FLOWER_ADDRESS", defaults.FLOWER_ADDRESS),
        _env("CELERYKIT_FLOWER_PORT", defaults.FLOWER_PORT),
        f"/{prefix}/healthcheck" if prefix else "/healthcheck",
    )
    return status == 200 and body.strip() == b"OK"


def exporter() -> bool:
    """The exporter serves metrics and could reach Redis for them."""
    status, body = get(
        _env("CELERYKIT_EXPORTER_ADDRESS", defaults.EXPORTER_ADDRESS),
        _env("CELERYKIT_EXPORTER_PORT", defaults.EXPORTER_PORT),
        "/metrics",
        timeout=10.0,
    )
    return status == 200 and b"celerykit_redis_up 1.0" in body


def prometheus() -> bool:
    return get("127.0.0.1", defaults.PROMETHEUS_PORT, f"/{defaults.PROMETHEUS_URL_PREFIX}/-/ready")[0] == 200


def alertmanager() -> bool:
    return get("127.0.0.1", defaults.ALERTMANAGER_PORT, f"/{defaults.ALERTMANAGER_URL_PREFIX}/-/ready")[0] == 200


def nginx() -> bool:
    """nginx answers over TLS on 443 (/ redirects to Flower, so no credentials are involved)."""
    return get("127.0.0.1", 443, "/", tls=True)[0] == 302


CHECKS = {check.__name__: check for check in (worker, beat, flower, exporter, prometheus, alertmanager, nginx)}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in CHECKS:
        print(f"usage: python3 -m celerykit.health {'|'.join(CHECKS)}", file=sys.stderr)
        return 64
    try:
        return 0 if CHECKS[argv[0]]() else 1
    except Misconfigured as error:
        print(f"celerykit health: configuration error: {error}", file=sys.stderr)
        return 78
    except (OSError, ValueError, IndexError) as error:  # refused, timed out, not HTTP: unhealthy
        print(f"celerykit health: {argv[0]}: {error!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
