"""Bring the compose stack up from a clean state, once per test session, and hand tests a Target.

The stack runs under its own project name (CELERYKIT_TEST_PROJECT, "celerykit-test" unless set),
with fresh secrets, a fresh certificate and free loopback ports, so it never touches a developer's
own `celerykit` stack. The fault drills (celerykit_testing) run on it through `deployment`.
"""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from celerykit_testing.compose import COMPOSE_FILE, Compose, ComposeDeployment

from celerykit.settings import DEFAULT_POOLS
from celerykit.verify.target import Target

ROOT = Path(__file__).resolve().parents[2]
PROJECT = os.environ.get("CELERYKIT_TEST_PROJECT", "celerykit-test")
LOW_MAX_TASKS_PER_CHILD = 20
TEST_OVERRIDE = ROOT / "tests" / "support" / "compose.test.yaml"
HEARTBEAT_SECONDS = 4
ALERT_MAIL_TO = "operators@celerykit.test"
POOLS = {name: queues for name, (queues, _) in DEFAULT_POOLS.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_test_ca(directory: Path) -> Path:
    """A test CA and a certificate it signed for localhost/127.0.0.1 (tls.crt, tls.key); returns ca.crt.

    A CA-signed certificate lets TLS checkers grade the server rather than stop at "self-signed".
    """
    directory.mkdir(parents=True, exist_ok=True)
    ca_key, ca_crt = directory / "ca.key", directory / "ca.crt"
    key, csr, crt = directory / "tls.key", directory / "tls.csr", directory / "tls.crt"
    ext = directory / "tls.ext"
    ext.write_text(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n"
        # A revocation URI (never fetched) and a year's validity, as a real certificate has:
        # checkers flag a certificate without either, whatever the server does.
        "crlDistributionPoints=URI:http://127.0.0.1:9/celerykit-test-ca.crl\n"
    )
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run = lambda *args: subprocess.run(["openssl", *args], check=True, capture_output=True)  # noqa: E731
    run("req", "-x509", *ec, "-days", "398", "-subj", "/CN=celerykit test CA", "-keyout", ca_key, "-out", ca_crt,
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")  # fmt: skip
    run("req", *ec, "-subj", "/CN=localhost", "-keyout", key, "-out", csr)
    run("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-days", "398",
        "-extfile", ext, "-out", crt)  # fmt: skip
    for path in (ca_key, key):
        path.chmod(0o600)
    return ca_crt


def compose_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """The environment a test stack runs with: isolated secrets, certificate and ports."""
    env = dict(os.environ)
    ca_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if "CELERYKIT_PIP_CA_BUNDLE" not in env and ca_bundle.exists():
        env["CELERYKIT_PIP_CA_BUNDLE"] = str(ca_bundle)
    env.update(
        CELERYKIT_SECRETS_DIR=str(tmp / "secrets"),
        CELERYKIT_TLS_DIR=str(tmp / "tls"),
        CELERYKIT_HTTPS_PORT=str(free_port()),
        CELERYKIT_HTTP_PORT=str(free_port()),
        CELERYKIT_DEMO_HEARTBEAT_SECONDS=str(HEARTBEAT_SECONDS),
        CELERYKIT_DEMO_RETRY_DELAY_SECONDS="1",
        # Tests restart workers; a long grace period would only slow `down` when something hangs.
        CELERYKIT_WORKER_STOP_GRACE_PERIOD="60s",
        # Flower saves its state often, so a drill that kills it waits seconds, not the default 15.
        CELERYKIT_FLOWER_STATE_SAVE_INTERVAL_MS="3000",
        # The low pool replaces its process every 20 tasks, so the suite's tasks meet replacements.
        CELERYKIT_LOW_MAX_TASKS_PER_CHILD=str(LOW_MAX_TASKS_PER_CHILD),
        # A limit, so the dashboard's and the alert's "memory against maxmemory" have one.
        CELERYKIT_REDIS_MAXMEMORY="512mb",
        # Alerts go to the test's own sink (tests/support/alert-sink), read on a loopback port.
        CELERYKIT_ALERT_SMARTHOST="alert-sink:2525",
        CELERYKIT_ALERT_SMTP_REQUIRE_TLS="false",
        CELERYKIT_ALERT_MAIL_TO=ALERT_MAIL_TO,
        CELERYKIT_ALERT_WEBHOOK_URL="http://alert-sink:8080/hook",
        CELERYKIT_TEST_SINK_PORT=str(free_port()),
    )
    env.update(overrides)
    return env


def stack_target(env: dict[str, str], tmp: Path, ca_file: Path) -> Target:
    """The proxy of a test stack started with `compose_env(tmp)`, as a client on this machine sees it."""
    return Target(
        url=f"https://127.0.0.1:{env['CELERYKIT_HTTPS_PORT']}",
        http_url=f"http://127.0.0.1:{env['CELERYKIT_HTTP_PORT']}",
        user="admin",
        password=(tmp / "secrets" / "flower_password").read_text().strip(),
        ca_file=str(ca_file),
    )


@dataclass
class Stack:
    compose: Compose
    target: Target
    secrets: Path
    ca_file: Path | None = None


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    ca_file = make_test_ca(tmp / "tls")
    compose = Compose(PROJECT, compose_env(tmp), [COMPOSE_FILE, TEST_OVERRIDE])
    compose.down()
    result = compose.run("up", "--build", "--detach", "--wait", check=False)
    if result.returncode:
        logs = compose.run("logs", "--no-color", "--tail", "40", check=False).stdout
        compose.down()
        pytest.fail(f"stack did not come up:\n{result.stderr[-3000:]}\n{logs[-6000:]}")
    yield Stack(compose, stack_target(compose.env, tmp, ca_file), tmp / "secrets", ca_file)
    compose.down()


@pytest.fixture(scope="session")
def deployment(stack: Stack) -> ComposeDeployment:
    """The session's stack as the fault drills see it (celerykit_testing.fault_drills)."""
    return ComposeDeployment(stack.compose, stack.target, POOLS)
