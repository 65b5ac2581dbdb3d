"""Systemd hosts (testinfra) as a `Deployment`: systemctl, journalctl and pkill over the inventory.

Services map to units on the hosts of their inventory group: `redis` -> redis-server (group
redis), `flower` -> flower (group flower), `beat` -> celery-beat (group celery_beat) and
`worker-<pool>` -> celery-worker@<pool> on the worker host that runs the pool (pool names are
unique in an inventory: Flower and the checks tell workers apart by pool).
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from testinfra.host import Host

from celerykit.verify.target import Target
from celerykit_testing.deployment import BEAT, FLOWER, REDIS

FLOWER_DIR = "/var/lib/celerykit/flower"
CELERY_ENV = "/etc/celerykit/celery.env"
VENV = "/opt/celerykit"  # celerykit_app_venv's default
DEFAULT_HEARTBEAT = 30.0  # celerykit.demo's default when the env file does not set one
UNITS = {REDIS: ("redis", "redis-server"), FLOWER: ("flower", "flower"), BEAT: ("celery_beat", "celery-beat")}


@dataclass
class SystemdDeployment:
    """The drills' view of an inventory converged with playbooks/site.yml."""

    target: Target
    hosts: Callable[[str], Sequence[Host]]  # inventory group -> its hosts
    pools_of: Callable[[Host], Mapping[str, Sequence[str]]]  # worker host -> pool -> queues
    kind: str = "systemd"
    _found: dict[str, tuple[Host, str]] = field(default_factory=dict, init=False, repr=False)

    # Where each service runs (the inventory does not change while a deployment is in use).
    def _workers(self) -> dict[str, tuple[Host, tuple[str, ...]]]:
        return {
            pool: (host, tuple(queues))
            for host in self.hosts("celery_workers")
            for pool, queues in self.pools_of(host).items()
        }

    def _unit(self, service: str) -> tuple[Host, str]:
        if service not in self._found:
            if service in UNITS:
                group, unit = UNITS[service]
                (host,) = self.hosts(group)
            else:
                pool = service.removeprefix("worker-")
                host, _ = self._workers()[pool]
                unit = f"celery-worker@{pool}"
            self._found[service] = (host, unit)
        return self._found[service]

    def _state(self, service: str) -> dict[str, str]:
        host, unit = self._unit(service)
        out = host.check_output(f"systemctl show {unit} -p MainPID -p NRestarts -p ActiveState -p SubState")
        return dict(line.split("=", 1) for line in out.splitlines())

    def _systemctl(self, service: str, command: str) -> None:
        host, unit = self._unit(service)
        host.check_output(f"systemctl {command} {unit}")

    def _kill_main(self, service: str) -> None:
        self._systemctl(service, "kill --signal=SIGKILL --kill-whom=main")

    def pools(self) -> dict[str, tuple[str, ...]]:
        return {pool: queues for pool, (_, queues) in self._workers().items()}

    def run_python(self, script: str, *args: str, timeout: float) -> str:
        # On the first worker host, with the settings every unit reads, as an app's process would.
        host = self.hosts("celery_workers")[0]
        command = f'set -a; . {CELERY_ENV}; set +a; exec timeout {int(timeout)} {VENV}/bin/python3 -c "$0" "$@"'
        result = host.run(shlex.join(["sh", "-c", command, script, *args]))
        assert result.rc == 0, f"script failed on {host}: {result.stdout[-2000:]}{result.stderr[-4000:]}"
        return result.stdout

    def pool_of(self, queue: str) -> str:
        return next(pool for pool, (_, queues) in self._workers().items() if queue in queues)

    def where(self, service: str) -> str:
        return self._unit(service)[0].backend.host

    # Any service.
    def restarts(self, service: str) -> int:
        return int(self._state(service)["NRestarts"])

    def logs(self, service: str, since: float) -> str:
        host, unit = self._unit(service)
        return host.check_output(f"journalctl -u {unit} --since @{int(since)} --no-pager -o cat")

    def wait_running(self, service: str, timeout: float = 120, healthy: bool = True) -> None:
        # systemd knows no health check beyond "running": `healthy` changes nothing here.
        deadline = time.monotonic() + timeout
        while True:
            state = self._state(service)
            if state["SubState"] == "running" and state["MainPID"] != "0":
                return
            assert time.monotonic() < deadline, f"{self._unit(service)[1]}: {state}"
            time.sleep(0.5)

    # Worker pools.
    def pool_processes(self, pool: str) -> tuple[int, list[int]]:
        host, _ = self._unit(f"worker-{pool}")
        main = int(self._state(f"worker-{pool}")["MainPID"])
        # 0 while the unit restarts: `pgrep -P 0` would list what `docker exec` started (ansible's
        # commands, a soak's sender), and kill_pool_processes would kill those
        assert main, f"worker-{pool} has no main process (restarting)"
        children = host.run(f"pgrep -P {main}").stdout.split()  # exit 1 when there is none
        return main, [int(pid) for pid in children]

    def kill_pool_processes(self, pool: str) -> list[int]:
        host, _ = self._unit(f"worker-{pool}")
        _, children = self.pool_processes(pool)
        if children:
            host.check_output(f"kill -KILL {' '.join(map(str, children))}")
        return children

    def kill_pool(self, pool: str) -> None:
        self._kill_main(f"worker-{pool}")

    def restart_pool(self, pool: str) -> None:
        self._systemctl(f"worker-{pool}", "restart")

    def stop_pool(self, pool: str) -> None:
        self._systemctl(f"worker-{pool}", "stop")

    def start_pool(self, pool: str) -> None:
        self._systemctl(f"worker-{pool}", "start")

    # Redis.
    def crash_redis(self) -> None:
        restarts = int(self._state(REDIS)["NRestarts"])
        self._kill_main(REDIS)
        # systemd starts it again (Restart=always). A `systemctl restart` on top raced that start
        # and once left the unit failed ("a fatal signal was delivered to the control process"):
        # start it only where systemd did not.
        deadline = time.monotonic() + 30
        while True:
            state = self._state(REDIS)
            if state["SubState"] == "running" and state["MainPID"] != "0" and int(state["NRestarts"]) > restarts:
                return
            if state["ActiveState"] in ("failed", "inactive") or time.monotonic() > deadline:
                self._systemctl(REDIS, "reset-failed")
                self._systemctl(REDIS, "start")
                return
            time.sleep(0.2)

    def stop_redis(self) -> None:
        self._systemctl(REDIS, "stop")

    def start_redis(self) -> None:
        self._systemctl(REDIS, "start")

    # Flower.
    def kill_flower(self) -> None:
        self._kill_main(FLOWER)

    def restart_flower(self) -> None:
        self._systemctl(FLOWER, "restart")

    def damage_flower_db(self) -> None:
        host, unit = self._unit(FLOWER)
        host.check_output(
            f"for f in {FLOWER_DIR}/flower.db*; do"
            ' head -c 2000 /dev/urandom > "$f"; done;'
            f" systemctl kill --signal=SIGKILL --kill-whom=main {unit}"
        )

    def flower_saved_at(self) -> float:
        host, _ = self._unit(FLOWER)
        out = host.check_output(
            f"find {FLOWER_DIR} -maxdepth 1 -name 'flower.db*' ! -name '*.tmp*' ! -name '*.corrupt*'"
            " -printf '%T@\\n' | sort -n | tail -1"
        )
        return float(out or 0)

    def flower_files(self) -> list[str]:
        host, _ = self._unit(FLOWER)
        return host.check_output(f"ls {FLOWER_DIR}").split()

    # Beat.
    def restart_beat(self) -> None:
        self._systemctl(BEAT, "restart")

    def kill_beat(self) -> None:
        self._kill_main(BEAT)

    def beat_schedulers(self) -> dict[str, int]:
        """Beat processes (user celerykit, ` beat` in the command line) on every host of the
        inventory: the Beat host's count, and any other host that runs one."""
        beat_host = self.where(BEAT)
        counts = {}
        for host in self.hosts("all"):
            count = int(host.run("pgrep -c -u celerykit -f ' beat'").stdout.strip() or 0)
            if count or host.backend.host == beat_host:
                counts[host.backend.host] = count
        return counts

    def heartbeat_seconds(self) -> float:
        host, _ = self._unit(BEAT)
        setting = host.check_output(f"sed -n 's/^CELERYKIT_DEMO_HEARTBEAT_SECONDS=//p' {CELERY_ENV}")
        return float(setting or DEFAULT_HEARTBEAT)
