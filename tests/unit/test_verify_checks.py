"""The checks themselves can fail: each is run against a server that breaks its promise."""

import http.server
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import ws_echo  # tests/support (pyproject's pythonpath): the echo server the compose tests put behind nginx
from websockets.sync.server import ServerConnection
from websockets.sync.server import serve as serve_websocket

from celerykit.verify import checks
from celerykit.verify.target import Target


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[str, str]:
    tmp = tmp_path_factory.mktemp("tls")
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(tmp / "k"),
            "-out",
            str(tmp / "c"),
        ],
        check=True,
        capture_output=True,
    )
    return str(tmp / "c"), str(tmp / "k")


def serve(context: ssl.SSLContext | None, handler=http.server.BaseHTTPRequestHandler) -> int:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if context:
        server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server.server_address[1]


def test_tls_check_fails_against_a_server_that_accepts_tls_1_0(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    context.set_ciphers("ALL:@SECLEVEL=0")
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    port = serve(context)
    result = checks.tls_versions(Target(f"https://127.0.0.1:{port}", "u", "p", insecure=True))
    assert not result
    assert "TLSv1 accepted" in result.detail


class OpenFlower(http.server.BaseHTTPRequestHandler):
    """A Flower with no auth, no HSTS, and metrics for everyone."""

    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")

    do_POST = do_GET

    def log_message(self, *args):
        pass


def test_http_level_checks_fail_against_an_open_flower(certificate):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    port = serve(context, OpenFlower)
    http_port = serve(None, OpenFlower)
    target = Target(
        f"https://127.0.0.1:{port}", "u", "p", http_url=f"http://127.0.0.1:{http_port}", ca_file=certificate[0]
    )
    for check in (
        checks.auth_required,
        checks.auth_accepted,
        checks.hsts,
        checks.metrics_hidden,
        checks.https_redirect,
    ):
        result = check(target)
        assert not result, (check.__name__, result.detail)
    assert not checks.workers(target, {"high": ["high_priority"]}, timeout=0)


def websocket_tls(certificate) -> ssl.SSLContext:
    """A WebSocket test server's TLS: no session tickets after the handshake, as the kit's nginx
    (`ssl_session_tickets off`). The `websockets` client reads in a thread of its own while it writes
    its upgrade request; a ticket read meanwhile once left the request unsent on a loaded machine, and
    the check waited for an answer that never came."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    context.num_tickets = 0
    return context


@pytest.fixture
def websocket_server(certificate):
    """Start a TLS WebSocket server (the `websockets` library) with a given handler; yield its port."""
    servers = []

    def start(handler) -> int:
        server = serve_websocket(handler, "127.0.0.1", 0, ssl=websocket_tls(certificate))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.socket.getsockname()[1]

    yield start
    for server in servers:
        server.shutdown()


def test_websocket_check_passes_against_a_real_echo_server(certificate, websocket_server):
    port = websocket_server(ws_echo.echo)
    result = checks.websocket(Target(f"https://127.0.0.1:{port}", "u", "p", ca_file=certificate[0]), "/ws-echo/")
    assert result, result.detail
    assert result.detail == "HTTP/1.1 101 Switching Protocols; sent 'celerykit ping', got 'celerykit ping'"


def test_websocket_check_verifies_the_certificate(websocket_server):
    port = websocket_server(ws_echo.echo)
    result = checks.websocket(Target(f"https://127.0.0.1:{port}", "u", "p"), "/")  # system CAs only
    assert not result and "CERTIFICATE_VERIFY_FAILED" in result.detail
    assert checks.websocket(Target(f"https://127.0.0.1:{port}", "u", "p", insecure=True), "/")


def test_websocket_check_fails_when_the_echo_differs(certificate, websocket_server):
    def wrong(connection: ServerConnection) -> None:
        for message in connection:
            connection.send(message.upper())

    port = websocket_server(wrong)
    result = checks.websocket(Target(f"https://127.0.0.1:{port}", "u", "p", ca_file=certificate[0]), "/")
    assert not result and "got 'CELERYKIT PING'" in result.detail


class NoUpgrade(http.server.BaseHTTPRequestHandler):
    """A proxy that does not pass the upgrade on: a plain HTTP/1.1 answer."""

    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.send_response(426)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_websocket_check_fails_when_the_upgrade_is_refused(certificate):
    port = serve(websocket_tls(certificate), NoUpgrade)
    result = checks.websocket(Target(f"https://127.0.0.1:{port}", "u", "p", ca_file=certificate[0]), "/")
    assert not result and "InvalidStatus" in result.detail and "426" in result.detail


def test_unreachable_deployment_is_a_failed_check_not_a_crash():
    result = checks.auth_required(Target(f"https://127.0.0.1:{_closed_port()}", "u", "p", timeout=2))
    assert not result and "Error" in result.detail


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_verify_command_reports_and_fails(tmp_path: Path):
    (tmp_path / "pw").write_text("x")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "celerykit",
            "verify",
            f"https://127.0.0.1:{_closed_port()}",
            "--password-file",
            str(tmp_path / "pw"),
            "--insecure",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "FAIL  flower requires credentials" in result.stdout
    assert result.stdout.strip().endswith("0 passed, 7 failed")
