"""The compose stack as a `Deployment`: `docker compose` and `docker exec` for one project.

A service may run several containers (a pool's replicas, CELERYKIT_<POOL>_REPLICAS). What acts on
one process (exec, kill, inspect) acts on the service's first replica, the running one with the
lowest number; `replicas` lists them all, and a service is healthy when every replica is.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from celerykit.verify.target import Target
from celerykit_testing.deployment import BEAT, FLOWER, REDIS, worker

ROOT = Path(__file__).resolve().parents[3]
COMPOSE_FILE = ROOT / "compose" / "compose.yaml"
FLOWER_DIR = "/var/lib/celerykit/flower"


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
print(*targets, flush=True)  # first: killing the main process ends the container, and this process with it
for pid in targets:
    os.kill(pid, int(sys.argv[2]))
"""


def _first(replicas: list[dict]) -> dict:
    """The running replica with the lowest number (else the lowest): what `exec` and `kill` act on."""
    return next((r for r in replicas if r["State"] == "running"), replicas[0])


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

    def records(self, *services: str) -> list[dict]:
        """`docker compose ps` records (state, health, exit code), by service and replica number."""
        out = self.run("ps", "--all", "--format", "json", *services).stdout.strip()
        records = json.loads(out) if out.startswith("[") else [json.loads(line) for line in out.splitlines() if line]
        # Compose names a service's containers <project>-<service>-<number>.
        return sorted(records, key=lambda r: (r["Service"], int(r["Name"].rsplit("-", 1)[1])))

    def services(self) -> dict[str, dict]:
        """Service name -> `docker compose ps` record of its first replica (see `container`)."""
        by_service: dict[str, list[dict]] = {}
        for record in self.records():
            by_service.setdefault(record["Service"], []).append(record)
        return {service: _first(replicas) for service, replicas in by_service.items()}

    def replicas(self, service: str) -> list[dict]:
        """`docker compose ps` records of every container of the service, lowest number first."""
        return self.records(service)

    def wait_healthy(self, service: str, timeout: float = 120) -> None:
        """Wait until every replica of the service is healthy."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replicas = self.replicas(service)
            if replicas and all(r.get("Health") == "healthy" for r in replicas):
                return
            time.sleep(1)
        raise AssertionError(f"{service} not healthy after {timeout:.0f}s:\n{self.run('logs', service).stdout[-3000:]}")

    def containers(self, service: str) -> list[str]:
        """Ids of the service's containers, lowest replica number first."""
        return [r["ID"] for r in self.replicas(service)]

    def container(self, service: str) -> str:
        """Id of the service's first replica: the running one with the lowest number."""
        replicas = self.replicas(service)
        assert replicas, f"{service}: no container"
        return _first(replicas)["ID"]

    def exec(
        self, service: str, *args: str, user: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess:
        """Run a command in the service's container (docker exec: no compose TTY handling)."""
        command = ["docker", "exec"] + (["--user", user] if user else []) + [self.container(service), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode:
            raise AssertionError(f"{' '.join(args)} in {service} failed: {result.stdout}{result.stderr}")
        return result

    def kill(self, service: str, which: str = "main", signal: int = 9, first: str = "") -> list[int]:
        """Send `signal` from inside the container to the service's main process (the child of
        the container's init) or to that process's children (a worker's pool processes). `first`:
        Python run in the same process just before, so that nothing happens in between.

        Unlike `docker kill`, this is a crash the container did not ask for: the restart policy
        applies, as it would to any process dying on its own.
        """
        result = self.exec(service, "python3", "-c", first + KILL_SNIPPET, which, str(signal), check=False)
        # Killing the main process ends the container, and with it this exec, after it printed.
        if result.returncode and not (which == "main" and result.stdout.strip()):
            raise AssertionError(f"kill {which} {signal} in {service} failed: {result.stdout}{result.stderr}")
        return [int(pid) for pid in result.stdout.split()]

    def restart_count(self, service: str) -> int:
        """Restarts by the restart policy, summed over the service's replicas."""
        return sum(int(self.inspect_container(container)["RestartCount"]) for container in self.containers(service))

    def hostnames(self, service: str) -> list[str]:
        """Each replica's host name (its container id: compose sets none), lowest number first."""
        return [self.inspect_container(container)["Config"]["Hostname"] for container in self.containers(service)]

    def inspect(self, service: str) -> dict:
        return self.inspect_container(self.container(service))

    @staticmethod
    def inspect_container(container: str) -> dict:
        out = subprocess.run(["docker", "inspect", container], capture_output=True, text=True, check=True).stdout
        return json.loads(out)[0]

    def logs(self, service: str) -> str:
        result = self.run("logs", "--no-color", service, check=False)
        return result.stdout + result.stderr

    def down(self) -> None:
        self.run("down", "--volumes", "--remove-orphans", "--timeout", "10", check=False)


@dataclass
class ComposeDeployment:
    """The drills' view of a compose stack (services named as in compose.yaml)."""

    compose: Compose
    target: Target
    expected_pools: Mapping[str, tuple[str, ...]]
    kind: str = "compose"

    def pools(self) -> dict[str, tuple[str, ...]]:
        return {pool: tuple(queues) for pool, queues in self.expected_pools.items()}

    def pool_of(self, queue: str) -> str:
        return next(pool for pool, queues in self.expected_pools.items() if queue in queues)

    def worker_names(self, pool: str) -> list[str]:
        """The Celery node names of the pool's replicas (<pool>@<container id>), lowest number first."""
        return [f"{pool}@{hostname}" for hostname in self.compose.hostnames(worker(pool))]

    def where(self, service: str) -> str:
        return self.compose.inspect(service)["Name"].lstrip("/")

    def run_python(self, script: str, *args: str, timeout: float) -> str:
        # A container of its own, made like the first pool's worker: image, user, environment,
        # secrets and network.
        model = self.compose.inspect(worker(next(iter(self.expected_pools))))
        command = ["docker", "run", "--rm", "--read-only", "--tmpfs", "/tmp"]  # noqa: S108 - the container's own
        command += ["--user", model["Config"]["User"]] if model["Config"]["User"] else []
        command += [f"--env={variable}" for variable in model["Config"]["Env"]]
        command += [f"--volume={m['Source']}:{m['Destination']}:ro" for m in model["Mounts"] if m["Type"] == "bind"]
        command += [f"--network={name}" for name in model["NetworkSettings"]["Networks"]]
        command += [model["Config"]["Image"], "python3", "-c", script, *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        assert result.returncode == 0, f"script failed: {result.stdout[-2000:]}{result.stderr[-4000:]}"
        return result.stdout

    def restarts(self, service: str) -> int:
        return self.compose.restart_count(service)

    def logs(self, service: str, since: float) -> str:
        result = self.compose.run("logs", "--no-color", "--since", str(int(since)), service)
        return result.stdout + result.stderr

    def wait_running(self, service: str, timeout: float = 120, healthy: bool = True) -> None:
        if healthy:
            self.compose.wait_healthy(service, timeout)
            return
        deadline = time.monotonic() + timeout
        while True:
            replicas = self.compose.replicas(service)
            if replicas and all(r["State"] == "running" for r in replicas):
                return
            assert time.monotonic() < deadline, f"{service} not running after {timeout:.0f}s"
            time.sleep(0.5)

    def pool_processes(self, pool: str) -> tuple[int, list[int]]:
        (main,) = self.compose.kill(worker(pool), "main", signal=0)  # signal 0: only look them up
        return main, self.compose.kill(worker(pool), "children", signal=0)

    def kill_pool_processes(self, pool: str) -> list[int]:
        return self.compose.kill(worker(pool), "children")

    def kill_pool(self, pool: str) -> None:
        self.compose.kill(worker(pool))

    def restart_pool(self, pool: str) -> None:
        self.compose.run("restart", worker(pool))

    def stop_pool(self, pool: str) -> None:
        self.compose.run("stop", worker(pool))

    def start_pool(self, pool: str) -> None:
        self.compose.run("start", worker(pool))

    def crash_redis(self) -> None:
        self.compose.run("kill", "--signal", "SIGKILL", REDIS)
        self.compose.run("start", REDIS)

    def stop_redis(self) -> None:
        self.compose.run("stop", REDIS)

    def start_redis(self) -> None:
        self.compose.run("start", REDIS)

    def kill_flower(self) -> None:
        self.compose.kill(FLOWER)

    def restart_flower(self) -> None:
        self.compose.run("restart", FLOWER)

    def damage_flower_db(self) -> None:
        self.compose.kill(FLOWER, first=DAMAGE_FLOWER_DB)  # before Flower's next save could mend it

    def flower_saved_at(self) -> float:
        return float(self.compose.exec(FLOWER, "python3", "-c", FLOWER_DB_MTIME).stdout.strip() or 0)

    def flower_files(self) -> list[str]:
        return self.compose.exec(FLOWER, "ls", FLOWER_DIR).stdout.split()

    def restart_beat(self) -> None:
        self.compose.run("restart", BEAT)

    def kill_beat(self) -> None:
        self.compose.kill(BEAT)

    def beat_schedulers(self) -> dict[str, int]:
        containers = self.compose.run("ps", "--quiet", BEAT).stdout.split()  # the running ones
        counts = {}
        for container in containers:
            out = subprocess.run(
                ["docker", "exec", container, "python3", "-c", COUNT_BEATS],
                capture_output=True,
                text=True,
                timeout=120,
                check=True,
            ).stdout
            counts[container] = int(out.strip())
        return counts

    def heartbeat_seconds(self) -> float:
        return float(self.compose.env["CELERYKIT_DEMO_HEARTBEAT_SECONDS"])


FLOWER_DB_MTIME = f"""
import glob, os
files = [f for f in glob.glob("{FLOWER_DIR}/flower.db*") if ".tmp" not in f and ".corrupt" not in f]
print(max((os.stat(f).st_mtime for f in files), default=0))
"""

DAMAGE_FLOWER_DB = f"""
import glob
for name in glob.glob("{FLOWER_DIR}/flower.db*"):
    with open(name, "wb") as f:
        f.write(b"this is not a dbm file" * 100)
"""

COUNT_BEATS = """
import os
count = 0
for pid in [p for p in os.listdir("/proc") if p.isdigit() and p != "1"]:  # 1: the container init
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            args = f.read().split(b"\\0")
    except FileNotFoundError:
        continue
    count += b"celery" in b" ".join(args) and b"beat" in args
print(count)
"""
