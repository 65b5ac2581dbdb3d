"""Bring the compose stack up from a clean state, once per test session, and hand tests a Target.

The stack runs under its own project name, with fresh secrets, a fresh certificate and free
loopback ports, so it never touches a developer's own `celerykit` stack.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from celerykit.settings import DEFAULT_POOLS
from celerykit.verify.target import Target

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "support"))  # drills.py: fault drills shared with other suites
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
TEST_OVERRIDE = ROOT / "tests" / "support" / "compose.test.yaml"
HEARTBEAT_SECONDS = 4
POOLS = {name: queues for name, (queues, _) in DEFAULT_POOLS.items()}


# Runs inside a container: find the child of PID 1 (the container's init), or its children, and signal them.
KILL_SNIPPET = """
import os, sys
def ppid(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
main = [p for p in pids if p != 1 and ppid(p) == 1]
targets = main if sys.argv[1] == "main" else [p for p in pids if ppid(p) in main]
for pid in targets:
    os.kill(pid, int(sys.argv[2]))
print(*targets)
"""


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

    def container(self, service: str) -> str:
        """Id of the service's (single) container."""
        ids = self.run("ps", "--all", "--quiet", service).stdout.split()
        assert len(ids) == 1, f"{service}: expected one container, found {ids}"
        return ids[0]

    def exec(
        self, service: str, *args: str, user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a command in the service's container (docker exec: no compose TTY handling)."""
        command = ["docker", "exec"] + (["--user", user] if user else []) + [self.container(service), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(args)} in {service} failed: {result.stdout}{result.stderr}")
        return result

    def kill(self, service: str, which: str = "main", signal: int = 9) -> list[int]:
        """Send `signal` from inside the container to the service's main process (the child of
        the container's init) or to that process's children (a worker's pool processes).

        Unlike `docker kill`, this is a crash the container did not ask for: the restart policy
        applies, as it would to any process dying on its own.
        """
        result = self.exec(service, "python3", "-c", KILL_SNIPPET, which, str(signal))
        return [int(pid) for pid in result.stdout.split()]

    def restart_count(self, service: str) -> int:
        return int(self.inspect(service)["RestartCount"])

    def inspect(self, service: str) -> dict:
        out = subprocess.run(
            ["docker", "inspect", self.container(service)], capture_output=True, text=True, check=True
        ).stdout
        return json.loads(out)[0]

    def logs(self, service: str) -> str:
        result = self.run("logs", "--no-color", service, check=False)
        return result.stdout + result.stderr

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


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
    )
    env.update(overrides)
    return env


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
        ca_file=str(ca_file),
    )
    yield Stack(compose, target, tmp / "secrets", ca_file)
    compose.down()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.stack)


@pytest.fixture(scope="session", autouse=True)
def drill_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Drills append their figures here (JSON lines); the summary prints them after the run."""
    path = tmp_path_factory.getbasetemp() / "drills.jsonl"
    os.environ["CELERYKIT_DRILL_REPORT"] = str(path)
    yield path


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    path = os.environ.get("CELERYKIT_DRILL_REPORT")
    if not path or not Path(path).exists():
        return
    terminalreporter.section("fault drills and attack checks: measured figures")
    for line in Path(path).read_text().splitlines():
        terminalreporter.write_line(line)
    terminalreporter.write_line(f"(JSON lines in {path})")
