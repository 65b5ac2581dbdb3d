"""Both deployments implement the whole drill interface, and the systemd one says to each host
what an operator would (the Molecule verifier runs it for real; here its commands are read)."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import pytest
from celerykit_testing.compose import ComposeDeployment
from celerykit_testing.deployment import BEAT, FLOWER, REDIS, Deployment, worker
from celerykit_testing.systemd import SystemdDeployment

METHODS = {name: m for name, m in vars(Deployment).items() if inspect.isfunction(m) and not name.startswith("_")}


@pytest.mark.parametrize("implementation", [ComposeDeployment, SystemdDeployment])
def test_each_deployment_implements_the_whole_interface(implementation):
    assert {"kind", "target"} <= set(inspect.get_annotations(implementation))
    for name, protocol in METHODS.items():
        method = getattr(implementation, name, None)
        assert method is not None, f"{implementation.__name__} lacks {name}"
        assert list(inspect.signature(method).parameters) == list(inspect.signature(protocol).parameters), name


class FakeHost:
    """A testinfra host that records commands and answers like a converged one."""

    def __init__(self, name: str, after_kill: str = "active"):
        self.backend = SimpleNamespace(host=name)
        self.commands: list[str] = []
        self.kills, self.after_kill = 0, after_kill  # what the unit is after a kill: restarted, or failed

    def check_output(self, command: str) -> str:
        self.commands.append(command)
        if command.startswith("systemctl show"):
            if self.kills and self.after_kill == "failed":
                return "MainPID=0\nNRestarts=0\nActiveState=failed\nSubState=failed"
            return f"MainPID=42\nNRestarts={3 + self.kills}\nActiveState=active\nSubState=running"
        if command.startswith("systemctl kill"):
            self.kills += 1
        return {"sed": "20", "find": "1700000000.5", "ls": "flower.db flower.db.corrupt"}.get(command.split()[0], "")

    def run(self, command: str) -> SimpleNamespace:
        self.commands.append(command)
        return SimpleNamespace(stdout="11\n12\n" if command.startswith("pgrep -P") else "0\n")


@pytest.fixture
def inventory() -> tuple[SystemdDeployment, FakeHost, FakeHost, FakeHost]:
    redis, workers, flower = FakeHost("redis-host"), FakeHost("worker-host"), FakeHost("flower-host")
    groups = {
        "redis": [redis],
        "celery_workers": [workers],
        "celery_beat": [workers],
        "flower": [flower],
        "all": [redis, workers, flower],
    }
    pools = {"high": ["high_priority"], "low": ["low_priority", "default"]}
    return SystemdDeployment(None, groups.__getitem__, lambda host: pools), redis, workers, flower


def test_systemd_services_are_the_units_on_their_groups_hosts(inventory):
    deployment, redis, workers, flower = inventory
    assert deployment.pools() == {"high": ("high_priority",), "low": ("low_priority", "default")}
    assert deployment.pool_of("default") == "low"
    assert [deployment.where(s) for s in (REDIS, worker("low"), BEAT, FLOWER)] == [
        "redis-host",
        "worker-host",
        "worker-host",
        "flower-host",
    ]
    deployment.crash_redis()
    deployment.kill_pool("low")
    deployment.restart_pool("high")
    deployment.kill_beat()
    deployment.kill_flower()
    assert actions(redis) == ["systemctl kill --signal=SIGKILL --kill-whom=main redis-server"]  # systemd restarts it
    assert actions(workers) == [
        "systemctl kill --signal=SIGKILL --kill-whom=main celery-worker@low",
        "systemctl restart celery-worker@high",
        "systemctl kill --signal=SIGKILL --kill-whom=main celery-beat",
    ]
    assert actions(flower) == ["systemctl kill --signal=SIGKILL --kill-whom=main flower"]


def actions(host: FakeHost) -> list[str]:
    """The commands that change something (not the state reads)."""
    return [command for command in host.commands if not command.startswith("systemctl show")]


def test_a_redis_that_systemd_gave_up_on_is_started_again(inventory):
    """Kills in quick succession hit systemd's start limit: the unit stays failed, so the drill
    starts it itself."""
    deployment, _, workers, flower = inventory
    redis = FakeHost("redis-host", after_kill="failed")
    groups = {"redis": [redis], "celery_workers": [workers], "flower": [flower]}
    deployment = SystemdDeployment(None, groups.__getitem__, lambda host: {})
    deployment.crash_redis()
    assert actions(redis) == [
        "systemctl kill --signal=SIGKILL --kill-whom=main redis-server",
        "systemctl reset-failed redis-server",
        "systemctl start redis-server",
    ]


def test_systemd_reads_processes_restarts_and_state_from_the_hosts(inventory):
    deployment, _, workers, flower = inventory
    assert deployment.pool_processes("high") == (42, [11, 12])
    assert deployment.kill_pool_processes("high") == [11, 12]
    assert workers.commands[-1] == "kill -KILL 11 12"
    assert deployment.restarts(worker("high")) == 3
    assert deployment.heartbeat_seconds() == 20
    assert deployment.flower_saved_at() == 1700000000.5
    assert "! -name '*.corrupt*'" in flower.commands[-1]
    assert deployment.flower_files() == ["flower.db", "flower.db.corrupt"]
    assert deployment.beat_schedulers() == {"worker-host": 0}  # the Beat host is listed even when it runs none
    assert deployment.logs(worker("low"), 1700000000.7) == ""
    assert workers.commands[-1] == "journalctl -u celery-worker@low --since @1700000000 --no-pager -o cat"
