"""What a fault drill needs from a deployment: the `Deployment` protocol.

A drill sends and reads tasks through Flower's API behind the proxy (`target`) and asks the
deployment for the fault itself: kill this process, restart that service, read its logs. Two
implementations: `compose.ComposeDeployment` (docker compose, docker exec) and
`systemd.SystemdDeployment` (testinfra hosts: systemctl, journalctl, pkill).

Services are named as in the compose stack: `REDIS`, `FLOWER`, `BEAT` and `worker(pool)`.
"""

from __future__ import annotations

from typing import Protocol

from celerykit.verify.target import Target

REDIS, FLOWER, BEAT = "redis", "flower", "beat"


def worker(pool: str) -> str:
    """The service that runs a pool's worker."""
    return f"worker-{pool}"


class Deployment(Protocol):
    kind: str  # "compose" or "systemd": recorded with each drill's figures
    target: Target  # Flower's API through the proxy: send tasks, read their outcome

    # What the deployment was asked to run.
    def pools(self) -> dict[str, tuple[str, ...]]:
        """Pool name -> the queues it must consume (every pool of every worker host)."""
        ...

    def pool_of(self, queue: str) -> str:
        """The pool consuming `queue`."""
        ...

    def where(self, service: str) -> str:
        """The host (or container) the service runs on, for the record."""
        ...

    def run_python(self, script: str, *args: str, timeout: float) -> str:
        """Run a Python script where the app runs, as the app would (the kit's package and
        settings, the broker on the deployment's own network), in a process of its own that no
        fault touches; return what it printed."""
        ...

    # Any service.
    def restarts(self, service: str) -> int:
        """How often the supervisor (restart policy, systemd) restarted the service on its own."""
        ...

    def logs(self, service: str, since: float) -> str:
        """The service's log lines since `since` (a time.time() stamp)."""
        ...

    def wait_running(self, service: str, timeout: float = 120, healthy: bool = True) -> None:
        """Return once the service runs again (and passes its health check, unless `healthy` is
        False); fail after `timeout` s."""
        ...

    # Worker pools.
    def pool_processes(self, pool: str) -> tuple[int, list[int]]:
        """The pool's main process id and its child (prefork) process ids."""
        ...

    def kill_pool_processes(self, pool: str) -> list[int]:
        """SIGKILL the pool's child processes (not its main process); return their ids."""
        ...

    def kill_pool(self, pool: str) -> None:
        """SIGKILL the pool's main process (a crash the supervisor did not ask for)."""
        ...

    def restart_pool(self, pool: str) -> None:
        """Restart the pool gracefully (TERM: warm shutdown); return once the restart is done."""
        ...

    def stop_pool(self, pool: str) -> None:
        """Stop the pool's workers (warm: running tasks finish) and leave them stopped."""

    def start_pool(self, pool: str) -> None:
        """Start a stopped pool's workers again."""

    # Redis.
    def crash_redis(self) -> None:
        """SIGKILL Redis's process, then start it again."""
        ...

    def stop_redis(self) -> None: ...

    def start_redis(self) -> None: ...

    # Flower.
    def kill_flower(self) -> None:
        """SIGKILL Flower's process (no save at exit); the supervisor brings it back."""
        ...

    def restart_flower(self) -> None:
        """Restart Flower gracefully (it saves its state at exit)."""
        ...

    def damage_flower_db(self) -> None:
        """Write garbage over Flower's state db files, then SIGKILL Flower (no save at exit)."""
        ...

    def flower_saved_at(self) -> float:
        """When Flower last saved its state db (mtime, time.time() scale; 0 when none)."""
        ...

    def flower_files(self) -> list[str]:
        """The names in Flower's state directory."""
        ...

    # Beat.
    def restart_beat(self) -> None: ...

    def kill_beat(self) -> None:
        """SIGKILL Beat's process; the supervisor brings it back."""
        ...

    def beat_schedulers(self) -> dict[str, int]:
        """Beat scheduler processes per place a Beat runs (container or host)."""
        ...

    def heartbeat_seconds(self) -> float:
        """The interval of Beat's demo heartbeat task."""
        ...
