"""One benchmark stack: the kit's compose file plus bench/compose.bench.yaml under its own project.

Like the stack tests: its own project name, secrets and certificate in a temporary directory, free
loopback ports, its own image tags (`:bench`), and `down --volumes` at the end.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = [ROOT / "compose" / "compose.yaml", ROOT / "bench" / "compose.bench.yaml"]
# BENCH_PROJECT: another name, so a development run (`--quick`) never meets the stack of a full run.
PROJECT = os.environ.get("BENCH_PROJECT") or "celerykit-bench"
KIT_SERVICES = (
    "init", "redis", "worker-high", "worker-medium", "worker-low", "beat", "flower",
    "exporter", "prometheus", "alertmanager", "nginx",
)  # fmt: skip
KIT_POOLS = ("worker-high", "worker-medium", "worker-low")
IMAGES = {
    "CELERYKIT_IMAGE": "celerykit/celery:bench",
    "CELERYKIT_REDIS_IMAGE": "celerykit/redis:bench",
    "CELERYKIT_NGINX_IMAGE": "celerykit/nginx:bench",
    "CELERYKIT_MONITORING_IMAGE": "celerykit/monitoring:bench",
}


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    tmp: Path
    env: dict[str, str]
    project: str = PROJECT
    # Overlays a benchmark generates at run time (bench/scaling.py's worker containers), after FILES.
    extra_files: list[Path] = field(default_factory=list)

    @classmethod
    def create(cls) -> Stack:
        tmp = Path(tempfile.mkdtemp(prefix="celerykit-bench-"))
        env = dict(os.environ)
        ca_bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if "CELERYKIT_PIP_CA_BUNDLE" not in env and ca_bundle.exists():
            env["CELERYKIT_PIP_CA_BUNDLE"] = str(ca_bundle)
        env.update(IMAGES)
        env.update(
            CELERYKIT_PROJECT=PROJECT,
            CELERYKIT_APP="benchtasks:app",
            CELERYKIT_SECRETS_DIR=str(tmp / "secrets"),
            CELERYKIT_TLS_DIR=str(tmp / "tls"),
            CELERYKIT_HTTPS_PORT=str(free_port()),
            CELERYKIT_HTTP_PORT=str(free_port()),
            BENCH_FLOWER_PORT=str(free_port()),
            BENCH_FLOWER_DEFAULT_PORT=str(free_port()),
            # Pools are stopped and started between phases with empty queues; a stuck stop must not hang a run.
            CELERYKIT_WORKER_STOP_GRACE_PERIOD="60s",
        )
        return cls(tmp, env)

    def compose(
        self, *args: str, check: bool = True, timeout: float = 900, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        command = ["docker", "compose", "-p", self.project, "--profile", "bench"]
        for file in [*FILES, *self.extra_files]:
            command += ["-f", str(file)]
        result = subprocess.run(
            [*command, *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode:
            raise StackError(
                f"docker compose {' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
            )
        return result

    def timed(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> float:
        started = time.monotonic()
        self.compose(*args, timeout=timeout, env=env)
        return time.monotonic() - started

    def client(self, *args: str, timeout: float = 900, env: dict[str, str] | None = None) -> dict:
        """Run benchclient in the bench-client container (with `env` in its environment); return the
        JSON it printed last."""
        variables = [f"--env={name}={value}" for name, value in (env or {}).items()]
        result = self.compose(
            "exec", "-T", *variables, "bench-client", "python", "-m", "benchclient", *args, timeout=timeout
        )
        lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
        if not lines:
            raise StackError(f"benchclient {' '.join(args)} printed no result:\n{result.stdout}\n{result.stderr}")
        return json.loads(lines[-1])

    def rss_kib(self, service: str) -> int:
        """Resident memory of the service's main process (the largest VmRSS in its container)."""
        out = self.compose("exec", "-T", service, "sh", "-c", "cat /proc/[0-9]*/status 2>/dev/null").stdout
        values = [int(line.split()[1]) for line in out.splitlines() if line.startswith("VmRSS:")]
        return max(values, default=0)

    @property
    def flower_password(self) -> str:
        return (self.tmp / "secrets" / "flower_password").read_text().strip()

    @property
    def https_url(self) -> str:
        return f"https://127.0.0.1:{self.env['CELERYKIT_HTTPS_PORT']}"

    def direct_url(self, service: str = "flower") -> str:
        variable = "BENCH_FLOWER_PORT" if service == "flower" else "BENCH_FLOWER_DEFAULT_PORT"
        return f"http://127.0.0.1:{self.env[variable]}"

    def down(self) -> None:
        self.compose("down", "--volumes", "--remove-orphans", "--timeout", "30", check=False)

    def cleanup(self) -> None:
        self.down()
        # Secrets are written by the init container as root: remove them the same way they came.
        subprocess.run(["rm", "-rf", str(self.tmp)], check=False)
