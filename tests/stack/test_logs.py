"""With CELERYKIT_LOG_FORMAT=json (the default) every line the Celery services write is one JSON
record (celerykit.logs): the workers' main and pool processes, Beat, Flower and the exporter, since
the stack started, banners and shutdown messages included; a failing task's lines carry its id
and its traceback."""

from __future__ import annotations

import subprocess

import pytest
from celerykit_testing import log_drills
from celerykit_testing.log_drills import FAILING, FAILING_ARGS
from conftest import POOLS, Stack

from celerykit import logs
from celerykit.verify import checks

WORKERS = {f"worker-{pool}": pool for pool in POOLS}
SERVICES = [*WORKERS, "beat", "flower", "exporter"]


def service_records(stack: Stack, service: str) -> list[dict]:
    """Every line of the service's log (stdout and stderr, every run of its container) as a record.

    `docker logs` rather than `docker compose logs`, which starts lines with terminal escapes."""
    result = subprocess.run(
        ["docker", "logs", stack.compose.container(service)], capture_output=True, text=True, timeout=60, check=True
    )
    found, other = logs.records(result.stdout + result.stderr)
    assert not other, f"{service}: {len(other)} of {len(other) + len(found)} lines are no JSON record: {other[:5]}"
    assert found, f"{service} logged nothing"
    return found


def test_a_failing_task_logs_its_id_its_name_and_its_traceback(stack: Stack):
    response = stack.target.request(
        "POST", stack.target.flower(f"api/task/send-task/{FAILING}"), body={"args": FAILING_ARGS}
    )
    assert response.status == 200, response.body
    task_id = response.json()["task-id"]
    info = checks.wait_for_task(stack.target, task_id)
    assert info["state"] == "FAILURE", info
    pool = info["worker"].split("@")[0]
    log_drills.failing_task_logged(lambda: service_records(stack, f"worker-{pool}"), task_id, pool, info["worker"])


@pytest.mark.parametrize("service", SERVICES)
def test_every_line_of_the_service_is_a_json_record(stack: Stack, service: str):
    records = service_records(stack, service)
    for record in records:
        assert record["level"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), record
    pool = WORKERS.get(service)
    assert {r["pool"] for r in records} == {pool}
    if pool is None:
        container = stack.compose.inspect(service)["Config"]["Hostname"]
        assert {r["hostname"] for r in records} == {container}
        return
    host = stack.compose.inspect(service)["Config"]["Hostname"]  # the container id: compose sets none
    node = f"{pool}@{host}"
    assert {r["hostname"] for r in records} <= {node, host}  # the host's name only before Celery named it
    assert any(r["message"] == f"{node} ready." and r["hostname"] == node for r in records)
    assert any(r["message"].startswith(f"{node} v") for r in records), "the banner's gist is missing"
