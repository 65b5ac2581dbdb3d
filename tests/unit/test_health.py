"""The services' health checks (`python3 -m celerykit.health SERVICE`, compose's healthcheck), run as
Docker runs them, against real HTTP servers on loopback and real files. The worker's check is in
test_liveness.py; every check against the real services: tests/stack/test_services.py."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


def check(service: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERYKIT_")} | environ
    command = [sys.executable, "-m", "celerykit.health", service]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=30, check=False)


@contextmanager
def server(routes: dict[str, tuple[int, bytes]]) -> Iterator[int]:
    """An HTTP server on a free loopback port answering each path with (status, body); 404 elsewhere."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, body = routes.get(self.path, (404, b"not found"))
            self.send_response(status)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield httpd.server_address[1]
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_flower_is_asked_on_its_port_and_prefix():
    with server({"/dashboard/healthcheck": (200, b"OK")}) as port:
        assert (
            check("flower", CELERYKIT_FLOWER_PORT=str(port), CELERYKIT_FLOWER_URL_PREFIX="/dashboard/").returncode == 0
        )
        # the kit's prefix (flower) is not where this Flower answers
        assert check("flower", CELERYKIT_FLOWER_PORT=str(port)).returncode == 1


@pytest.mark.parametrize(("status", "body"), [(200, b"NOT OK"), (401, b"OK"), (500, b"")])
def test_flower_answering_anything_but_ok_is_unhealthy(status: int, body: bytes):
    with server({"/flower/healthcheck": (status, body)}) as port:
        assert check("flower", CELERYKIT_FLOWER_PORT=str(port)).returncode == 1


def test_nothing_listening_is_unhealthy_and_says_why():
    with server({}) as port:
        pass  # closed again: the port is free
    result = check("flower", CELERYKIT_FLOWER_PORT=str(port))
    assert result.returncode == 1
    assert "flower: ConnectionRefusedError" in result.stderr


def test_the_exporter_is_healthy_while_it_reaches_redis():
    metrics = b"# HELP celerykit_redis_up Redis answered\n# TYPE celerykit_redis_up gauge\ncelerykit_redis_up %s\n"
    for up, returncode in ((b"1.0", 0), (b"0.0", 1)):
        with server({"/metrics": (200, metrics % up)}) as port:
            assert check("exporter", CELERYKIT_EXPORTER_PORT=str(port)).returncode == returncode


def test_beat_is_healthy_while_it_keeps_its_schedule_fresh(tmp_path):
    schedule = tmp_path / "celerybeat-schedule"
    env = {"CELERYKIT_BEAT_SCHEDULE": str(schedule)}
    assert check("beat", **env).returncode == 1  # not written yet
    (tmp_path / "celerybeat-schedule.db").write_bytes(b"")  # dbm adds a suffix
    assert check("beat", **env).returncode == 0
    old = time.time() - 601
    os.utime(tmp_path / "celerybeat-schedule.db", (old, old))
    assert check("beat", **env).returncode == 1
    assert check("beat", CELERYKIT_BEAT_SCHEDULE=str(tmp_path / "missing" / "schedule")).returncode == 1


def test_an_unknown_service_gets_the_usage():
    result = check("redis")
    assert result.returncode == 64
    assert (
        "usage: python3 -m celerykit.health worker|beat|flower|exporter|prometheus|alertmanager|nginx" in result.stderr
    )


def test_a_check_imports_neither_the_settings_nor_an_http_client():
    """Docker runs a check every few seconds in every container: what it imports is its cost."""
    code = "import sys, celerykit.health; print(' '.join(sorted(sys.modules)))"
    modules = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert [m for m in modules if m.startswith("celerykit")] == [
        "celerykit",
        "celerykit.defaults",
        "celerykit.health",
        "celerykit.liveness",
    ]
    assert not {"argparse", "celery", "http.client", "logging", "ssl", "urllib.request"} & set(modules)
