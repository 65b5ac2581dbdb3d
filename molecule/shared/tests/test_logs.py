"""With celerykit_app_log_format json (the default) every line the kit's units write to the journal
is one JSON record (celerykit.logs), since the host booted: workers (main and pool processes),
Beat, Flower and the exporter, through the restarts and kills of the drills before; a failing
task's lines carry its id and its traceback.

Only what the units' processes wrote is read (`_SYSTEMD_UNIT=`, `_TRANSPORT=stdout`): the journal's
own lines about a unit ("Started ...", "Deactivated successfully") are systemd's, not the kit's.
"""

import time

import pytest
import testinfra
from celerykit_testing import log_drills
from celerykit_testing.log_drills import FAILING, FAILING_ARGS
from conftest import hosts, pools_of, unit_names

from celerykit import logs
from celerykit.verify import checks
from celerykit.verify.target import Target

UNITS = [(h, u) for h in hosts("all") for u in unit_names(h) if u.startswith(("celery-", "flower"))]
EXPORTER = "celerykit-exporter"


def journal(node: testinfra.host.Host, unit: str, since: float | None = None) -> str:
    command = f"journalctl _SYSTEMD_UNIT={unit}.service _TRANSPORT=stdout --boot --quiet --no-pager -o cat"
    if since is not None:
        command += f" --since @{int(since)}"
    return node.check_output(command)


def unit_records(node: testinfra.host.Host, unit: str, since: float | None = None) -> list[dict]:
    found, other = logs.records(journal(node, unit, since))
    total = len(found) + len(other)
    assert not other, f"{node.backend.host}:{unit}: {len(other)} of {total} lines are no JSON record: {other[:5]}"
    return found


@pytest.mark.parametrize(("node", "unit"), UNITS, ids=[f"{h.backend.host}:{u}" for h, u in UNITS])
def test_every_journal_line_of_the_unit_is_a_json_record(node: testinfra.host.Host, unit: str):
    records = unit_records(node, unit)
    assert records, f"{unit} wrote nothing to the journal"
    hostname = node.check_output("hostname")
    if not unit.startswith("celery-worker@"):
        assert {r["pool"] for r in records} == {None}
        assert {r["hostname"] for r in records} == {hostname}
        return
    pool = unit.split("@", 1)[1]
    node_name = f"{pool}@{hostname}"
    assert {r["pool"] for r in records} == {pool}
    assert {r["hostname"] for r in records} <= {node_name, hostname}  # the host's name only before Celery named it
    assert any(r["message"] == f"{node_name} ready." and r["hostname"] == node_name for r in records)


@pytest.mark.parametrize("node", hosts("flower"), ids=lambda h: h.backend.host)
def test_every_journal_line_of_the_exporter_is_a_json_record(node: testinfra.host.Host):
    records = unit_records(node, EXPORTER)
    assert records, f"{EXPORTER} wrote nothing to the journal"
    assert {r["pool"] for r in records} == {None}


def test_a_failing_task_logs_its_id_its_name_and_its_traceback(proxy: Target):
    node = hosts("celery_workers")[0]
    pool, queues = next(iter(pools_of(node).items()))
    since = time.time() - 1
    body = {"args": FAILING_ARGS, "queue": queues[0]}
    response = proxy.request("POST", proxy.flower(f"api/task/send-task/{FAILING}"), body=body)
    assert response.status == 200, response.body
    task_id = response.json()["task-id"]
    info = checks.wait_for_task(proxy, task_id)
    assert info["state"] == "FAILURE", info
    node_name = f"{pool}@{node.check_output('hostname')}"
    assert info["worker"] == node_name
    log_drills.failing_task_logged(lambda: unit_records(node, f"celery-worker@{pool}", since), task_id, pool, node_name)
