"""Faults and changes that need other settings than the converged ones, on the all-in-one host.

The module converges once with settings made for the drills; the next converge (the scenario's own
inventory, before a module that needs it: conftest.Converged) undoes them and checks that it
succeeds, prints no secret and every unit runs:

- the first pool is removed from the list: its unit must be stopped and disabled;
- the smallest visibility timeout the kit accepts (60 s, pool time limits below it): a worker's
  main process SIGKILLed leaves its running tasks unacknowledged in Redis; they come back after
  the visibility timeout (with the default 7200 s: two hours later, never lost but late);
- a retry budget of 2 broker reconnections (Celery's default is 100): a broker outage longer
  than that ends the workers, systemd starts them again and they consume once Redis is back;
- a user's app given as a wheel built on the controller plus a requirements file: both end up
  in the services' virtualenv.

The two fault drills are written once in celerykit_testing.reconfigured_drills (shared with the
compose tests) and run here on `reconfigured_deployment`: the reconfigured host with its pools.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import testinfra
from celerykit_testing import drills
from celerykit_testing.reconfigured_drills import *  # noqa: F403 - the drills, collected as this module's tests
from celerykit_testing.reconfigured_drills import MAX_RETRIES, VISIBILITY_TIMEOUT
from celerykit_testing.systemd import SystemdDeployment
from conftest import ROOT, Converged, hosts, pools_of, wait_flower, wait_units_running

from celerykit.verify import checks
from celerykit.verify.target import Target

SAMPLE_APP = ROOT / "tests" / "fixtures" / "sample_app"


class Reconfigured:
    def __init__(self, host: testinfra.host.Host, removed: str, removed_queues: tuple[str, ...], pools: dict):
        self.host = host
        self.removed = removed
        self.removed_queues = removed_queues
        self.pools = pools


OTHER_SETTINGS = True  # the drills' settings, undone by the next converge (conftest.Converged)


@pytest.fixture(scope="module")
def reconfigured(tmp_path_factory: pytest.TempPathFactory, proxy: Target, converged: Converged) -> Reconfigured:
    (host,) = hosts("celery_workers")
    current = pools_of(host)
    removed = next(iter(current))
    kept = {name: queues for name, queues in current.items() if name != removed}
    extra = {
        "celerykit_app_visibility_timeout": VISIBILITY_TIMEOUT,
        "celerykit_app_broker_connection_max_retries": MAX_RETRIES,
        "celerykit_worker_pools": [
            {"name": name, "queues": list(queues), "concurrency": 2, "time_limit": 50, "soft_time_limit": 45}
            for name, queues in kept.items()
        ],
    }
    tmp = tmp_path_factory.mktemp("reconfigure")
    wheels = tmp / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-cache-dir",
            "-w",
            str(wheels),
            str(SAMPLE_APP),
        ],
        check=True,
        cwd=tmp,
        capture_output=True,
    )
    extra["celerykit_app_wheels"] = [str(path) for path in wheels.glob("*.whl")]
    extra["celerykit_app_requirements_file"] = str(SAMPLE_APP / "requirements.txt")
    start = time.monotonic()
    # The drills stop Redis; whatever they leave, it runs again before the next converge.
    result = converged.other(extra, tmp, undo=lambda: host.run("systemctl start redis-server"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    drills.record("systemd-reconfigure", removed_pool=removed, converge_s=round(time.monotonic() - start, 1))
    wait_flower(proxy)
    return Reconfigured(host, removed, current[removed], kept)


@pytest.fixture(scope="module")
def reconfigured_deployment(reconfigured: Reconfigured, proxy: Target) -> SystemdDeployment:
    """The hosts with the drills' settings; the worker host runs only the pools the converge kept."""
    return SystemdDeployment(proxy, hosts, lambda host: reconfigured.pools)


def test_a_removed_pool_is_stopped_and_disabled(reconfigured: Reconfigured, proxy: Target):
    host, unit = reconfigured.host, f"celery-worker@{reconfigured.removed}"
    assert not host.service(unit).is_running
    assert host.run(f"systemctl is-enabled {unit}").stdout.strip() != "enabled"
    assert not host.file(f"/etc/celerykit/pools/{reconfigured.removed}.env").exists
    wait_units_running(host, [f"celery-worker@{name}" for name in reconfigured.pools])
    # Its queue has no consumer left: a task sent there waits (run by the pool once it is back).
    probe = checks.send_probe(proxy, reconfigured.removed_queues[0])
    assert drills.settle(proxy, [probe], timeout=10).lost == [probe]


def test_the_apps_wheel_and_requirements_are_in_the_virtualenv(reconfigured: Reconfigured):
    """The app as a wheel from the controller and its requirements file, installed where the services run."""
    host = reconfigured.host
    shown = host.check_output("/opt/celerykit/bin/pip show acme-tasks humanize")
    versions = dict(
        zip(
            [line.split(": ", 1)[1] for line in shown.splitlines() if line.startswith("Name: ")],
            [line.split(": ", 1)[1] for line in shown.splitlines() if line.startswith("Version: ")],
            strict=True,
        )
    )
    assert versions == {"acme-tasks": "1.0.0", "humanize": "4.12.3"}
    size = host.check_output(
        "/opt/celerykit/bin/python -c 'import acme_tasks, humanize; print(humanize.naturalsize(123456789))'"
    )
    assert size == "123.5 MB"
