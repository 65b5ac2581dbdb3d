"""Bring the compose stack up from a clean state, once per test session, and hand tests a Target.

The stack runs under its own project name, with fresh secrets, a fresh certificate and free
loopback ports, so it never touches a developer's own `celerykit` stack.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from celerykit.settings import DEFAULT_POOLS
from celerykit.verify.target import Target

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
TEST_OVERRIDE = ROOT / "tests" / "support" / "compose.test.yaml"
HEARTBEAT_SECONDS = 4
POOLS = {name: queues for name, (queues, _) in DEFAULT_POOLS.items()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Compose:
    """`docker compose` for one project, with its own environment."""

    project: str
    env: dict[str, str]
    files: list[Path] = field(default_factory=lambda: [COMPOSE_FILE])

    def run(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project]
        for file in self.files:
            command += ["-f", str(file)]
        result = subprocess.run(
            [*command, *args], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode:
            raise AssertionError(f"docker compose {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result

    def services(self) -> dict[str, dict]:
        """Service name -> `docker compose ps` record (state, health, exit code)."""
        out = self.run("ps", "--all", "--format", "json").stdout.strip()
        records = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
        return {r["Service"]: r for r in records}

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.services().get(service, {}).get("Health") == "healthy":
                return
            time.sleep(1)
        raise AssertionError(f"{service} not healthy after {timeout:.0f}s:\n{self.run('logs', service).stdout[-3000:]}")

    def logs(self, service: str) -> str:
        result = self.run("logs", "--no-color", service, check=False)
        return result.stdout + result.stderr

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


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
    )
    env.update(overrides)
    return env


@dataclass
class Stack:
    compose: Compose
    target: Target
    secrets: Path


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("stack")
    compose = Compose("celerykit-test", compose_env(tmp), [COMPOSE_FILE, TEST_OVERRIDE])
    compose.down()
    result = compose.run("up", "--build", "--detach", "--wait", check=False)
    if result.returncode:
        logs = compose.run("logs", "--no-color", "--tail", "40", check=False).stdout
        compose.down()
        pytest.fail(f"stack did not come up:\n{result.stderr[-3000:]}\n{logs[-6000:]}")
    env = compose.env
    target = Target(
        url=f"https://127.0.0.1:{env['CELERYKIT_HTTPS_PORT']}",
        http_url=f"http://127.0.0.1:{env['CELERYKIT_HTTP_PORT']}",
        user="admin",
        password=(tmp / "secrets" / "flower_password").read_text().strip(),
        ca_file=str(tmp / "tls" / "tls.crt"),
    )
    yield Stack(compose, target, tmp / "secrets")
    compose.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.stack)
