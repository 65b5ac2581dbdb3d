"""Faults that need other settings than the defaults, on a stack of their own.

The drills are written once (celerykit_testing.reconfigured_drills and .beat_drills) and run here
on this module's stack; the Molecule verifier runs the same functions on systemd hosts.

- A worker's *main* process SIGKILLed: its unacknowledged tasks stay in Redis's `unacked` set
  and come back after `visibility_timeout`. This stack uses the smallest visibility timeout the
  kit accepts (60 s, time limits below it) to show the mechanism end to end in a minute.
- A broker outage longer than the retry budget (CELERYKIT_BROKER_CONNECTION_MAX_RETRIES, here 2
  instead of Celery's 100): the workers exit, the restart policy starts them again, they consume.
- Beat killed right after it sent a periodic task: with a heartbeat of 20 s, a duplicate run
  after the restart would show as two runs a few seconds apart.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celerykit_testing.beat_drills import *  # noqa: F403 - the drills, collected as this module's tests
from celerykit_testing.compose import ComposeDeployment
from celerykit_testing.reconfigured_drills import *  # noqa: F403
from celerykit_testing.reconfigured_drills import MAX_RETRIES, VISIBILITY_TIMEOUT
from conftest import POOLS, PROJECT, Compose, compose_env

from celerykit.verify.target import Target

pytestmark = pytest.mark.faults

HEARTBEAT = 20
SETTINGS = {
    "CELERYKIT_VISIBILITY_TIMEOUT": str(VISIBILITY_TIMEOUT),
    "CELERYKIT_TIME_LIMIT": "50",
    "CELERYKIT_SOFT_TIME_LIMIT": "45",
    "CELERYKIT_BROKER_CONNECTION_MAX_RETRIES": str(MAX_RETRIES),
    "CELERYKIT_DEMO_HEARTBEAT_SECONDS": str(HEARTBEAT),
    "CELERYKIT_LOW_CONCURRENCY": "2",
}


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ComposeDeployment]:
    tmp = tmp_path_factory.mktemp("fault-stack")
    compose = Compose(f"{PROJECT}-faults-{uuid.uuid4().hex[:8]}", compose_env(tmp, **SETTINGS))
    result = compose.run("up", "--build", "--detach", "--wait", check=False)
    try:
        if result.returncode:
            logs = compose.run("logs", "--no-color", "--tail", "40", check=False).stdout
            pytest.fail(f"fault stack did not come up:\n{result.stderr[-3000:]}\n{logs[-6000:]}")
        target = Target(
            url=f"https://127.0.0.1:{compose.env['CELERYKIT_HTTPS_PORT']}",
            user="admin",
            password=(tmp / "secrets" / "flower_password").read_text().strip(),
            ca_file=str(Path(compose.env["CELERYKIT_TLS_DIR"]) / "tls.crt"),
        )
        yield ComposeDeployment(compose, target, POOLS)
    finally:
        compose.down()


@pytest.fixture(scope="module")
def reconfigured_deployment(fault_stack: ComposeDeployment) -> ComposeDeployment:
    return fault_stack


@pytest.fixture(scope="module")
def beat_deployment(fault_stack: ComposeDeployment) -> ComposeDeployment:
    """The heartbeat every HEARTBEAT s (the session stack's 4 s is too short to tell a duplicate)."""
    return fault_stack
