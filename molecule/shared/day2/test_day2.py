"""Day-2 operations on many hosts, with tasks flowing: scale a pool onto a second host, a rolling
restart, an upgrade of the app from one version to the next, and a host that does not come back.

Every operation is the collection's own playbook, run as an operator would. While it runs, a
steady stream of counted tasks goes to every queue (celerykit_testing.operations): each must succeed
exactly once, with no WorkerLostError in any worker's journal. The urgent queue is spread over both
worker hosts first (`scale`), so a rolling restart always leaves one host taking urgent tasks: its
longest gap must stay below that of a queue whose only host is restarting.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import testinfra
from celerykit_testing import drills, operations
from celerykit_testing.soak import Tally
from celerykit_testing.systemd import SystemdDeployment
from conftest import ANSIBLES_OWN_STRATEGY, ROOT, hosts, playbook, pools_of

from celerykit.verify.target import Target

RELEASE_APP = ROOT / "tests" / "fixtures" / "release_app"
URGENT = "high_priority"
# One process kept, grown to three under load: `scale` sets autoscale bounds as it sets a size.
SPREAD_POOL = {"name": "high", "queues": [URGENT], "concurrency": 1, "max_concurrency": 3}


def name_of(host: testinfra.host.Host) -> str:
    return host.backend.host


def worker_units(host: testinfra.host.Host) -> list[str]:
    out = host.check_output("systemctl list-units --plain --no-legend --type=service 'celery-worker@*'")
    return sorted(line.split()[0] for line in out.splitlines() if line.strip())


def main_pids(host: testinfra.host.Host) -> dict[str, str]:
    return {unit: host.check_output(f"systemctl show -p MainPID --value {unit}") for unit in worker_units(host)}


def nodes(host: testinfra.host.Host, pools: dict[str, tuple[str, ...]]) -> list[str]:
    hostname = host.check_output("hostname")
    return [f"{pool}@{hostname}={','.join(queues)}" for pool, queues in pools.items()]


def output(result: subprocess.CompletedProcess) -> str:
    return (result.stdout + result.stderr)[-6000:]


def worker_lost_errors(since: float) -> int:
    return sum(
        int(
            host.run(f"journalctl -u 'celery-worker@*' --since @{int(since)} -o cat | grep -c WorkerLostError").stdout
            or 0
        )
        for host in hosts("celery_workers")
    )


def assert_nothing_lost(tally: Tally, figures: dict, since: float) -> None:
    assert tally.lost == [] and figures["refused"] == {}, figures
    assert tally.failed == {} and tally.revoked == [], figures
    assert tally.executed_twice == [], figures
    assert worker_lost_errors(since) == 0


def build_release(tmp: Path, version: str) -> Path:
    """The release app's wheel at `version` (its pyproject's version line rewritten in a copy)."""
    source = tmp / f"acme-release-{version}"
    source.mkdir(parents=True)
    for path in RELEASE_APP.iterdir():
        text = path.read_text()
        if path.name == "pyproject.toml":
            text = re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', text)
        (source / path.name).write_text(text)
    wheels = tmp / f"wheels-{version}"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-cache-dir", "-w", wheels, source],
        check=True, cwd=tmp, capture_output=True,
    )  # fmt: skip
    (wheel,) = wheels.glob("*.whl")
    return wheel


def release(tmp: Path, version: str) -> dict:
    """The settings that deploy the release app at `version`."""
    return {"celerykit_app_module": "acme_release:app", "celerykit_app_wheels": [str(build_release(tmp, version))]}


@dataclass
class Spread:
    first: testinfra.host.Host
    second: testinfra.host.Host
    inventory: tuple[str, ...]  # ansible-playbook arguments: the inventory with the second host's `high`
    app: dict  # the settings of the app release the hosts run


@pytest.fixture(scope="module")
def spread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spread]:
    """The second worker host also runs a `high` pool until the module ends, and every worker host
    runs the release app's first version: an operator adds the pool to the host's pools in the
    inventory (here a second inventory source) and runs `scale` with the app's settings. At the end
    `scale` for that host with the inventory as it was removes the pool again."""
    first, second = hosts("celery_workers")
    assert URGENT in {q for queues in pools_of(first).values() for q in queues}
    pools = [*second.ansible.get_variables()["celerykit_worker_pools"], SPREAD_POOL]
    tmp = tmp_path_factory.mktemp("spread")
    # A directory with host_vars: they rank with the scenario's own host_vars files, and the later
    # inventory source wins (inline host vars would rank below them and change nothing).
    extra = tmp / "inventory"
    (extra / "host_vars").mkdir(parents=True)
    (extra / "hosts.yml").write_text(json.dumps({"all": {"hosts": {name_of(second): {}}}}))
    (extra / "host_vars" / f"{name_of(second)}.yml").write_text(json.dumps({"celerykit_worker_pools": pools}))
    spread = Spread(first, second, ("-i", str(extra)), release(tmp, "1.0.0"))
    added = playbook(*spread.inventory, extra_vars=spread.app, tmp=tmp, name="scale")
    assert added.returncode == 0, output(added)
    status = second.check_output(f"celerykit pools status {nodes(second, {'high': (URGENT,)})[0]}")
    assert f'"high@{second.check_output("hostname")}": ["{URGENT}"]' in status
    try:
        yield spread
    finally:
        removed = playbook("--limit", name_of(second), extra_vars=spread.app, tmp=tmp, name="scale")
        assert removed.returncode == 0, output(removed)
        assert not second.service("celery-worker@high").is_running
        assert not second.file("/etc/celerykit/pools/high.env").exists


def test_a_host_that_does_not_come_back_stops_the_run_before_the_next_host(spread, tmp_path: Path):
    first, second = spread.first, spread.second
    pool = next(iter(pools_of(first)))
    dropin = f"/etc/systemd/system/celery-worker@{pool}.service.d/zz-drill-broken.conf"
    untouched = main_pids(second)
    # It starts (systemd is content) but never consumes: only the rolling run's wait can tell.
    broken = "[Service]\\nExecStart=\\nExecStart=/bin/sleep infinity\\n"
    first.check_output(f"mkdir -p $(dirname {dropin}) && printf '{broken}' > {dropin} && systemctl daemon-reload")
    try:
        result = playbook(
            *spread.inventory,
            extra_vars={"celerykit_worker_ready_timeout": 20, "celerykit_worker_drain_timeout": 30},
            tmp=tmp_path,
            name="rolling_restart",
        )
    finally:
        first.run(f"rm -f {dropin} && systemctl daemon-reload && systemctl reset-failed celery-worker@{pool}")
        first.run(f"systemctl restart celery-worker@{pool}")
    assert result.returncode != 0, output(result)
    assert f"{pool}@{first.check_output('hostname')} does not consume" in output(result)
    rolled = result.stdout.split("PLAY [Restart the worker pools, host by host]", 1)[-1].split("PLAY RECAP")[0]
    assert f"[{name_of(second)}]" not in rolled, rolled[-3000:]
    assert main_pids(second) == untouched  # the next host's pools were never stopped
    first.check_output(f"celerykit pools ready --timeout 120 {' '.join(nodes(first, pools_of(first)))}")


def test_a_rolling_restart_loses_nothing_and_urgent_tasks_keep_running(
    spread, deployment: SystemdDeployment, tmp_path: Path
):
    first, second = spread.first, spread.second
    before = {name_of(host): main_pids(host) for host in (first, second)}
    since = time.time()
    result, tally, figures = operations.under_stream(
        deployment,
        lambda: playbook(*spread.inventory, tmp=tmp_path, name="rolling_restart"),
        name="systemd-rolling-restart",
    )
    assert result.returncode == 0, output(result)
    assert_nothing_lost(tally, figures, since)
    for host in (first, second):  # every pool was restarted
        after = main_pids(host)
        assert after.keys() == before[name_of(host)].keys()
        assert not [unit for unit, pid in after.items() if pid == before[name_of(host)][unit]]
    # The first host's pools were all down at once while the second host's `high` kept consuming.
    only_first = sorted(
        {q for qs in pools_of(first).values() for q in qs}
        - {q for qs in pools_of(second).values() for q in qs}
        - {URGENT}
    )
    gaps = figures["longest_gap_seconds"]
    assert gaps[URGENT] < max(gaps[q] for q in only_first), gaps


def versions_running(proxy: Target, queues: set[str], per_queue: int = 4) -> dict[str, set[str]]:
    """Which version of the app each worker runs, asked with `acme.release` on every queue."""
    sent = []
    for queue in sorted(queues):
        for _ in range(per_queue):
            response = proxy.request("POST", proxy.flower("api/task/send-task/acme.release"), body={"queue": queue})
            assert response.status == 200, response.body[:200]
            sent.append(response.json()["task-id"])
    outcome = drills.settle(proxy, sent, timeout=120)
    assert outcome.lost == [], outcome.summary()
    found: dict[str, set[str]] = {}
    for task_id in sent:
        _, result = drills.backend_result(proxy, task_id)
        found.setdefault(result["version"], set()).add(result["worker"])
    return found


def test_an_upgrade_rolls_the_app_from_one_version_to_the_next(
    spread, deployment: SystemdDeployment, proxy: Target, tmp_path: Path
):
    queues = {q for qs in deployment.pools().values() for q in qs}
    assert set(versions_running(proxy, queues)) == {"1.0.0"}  # the setup's release
    upgraded = release(tmp_path, "2.0.0")

    since = time.time()
    result, tally, figures = operations.under_stream(
        deployment,
        lambda: playbook(*spread.inventory, extra_vars=upgraded, tmp=tmp_path, name="upgrade"),
        name="systemd-upgrade",
    )
    assert result.returncode == 0, output(result)
    spread.app = upgraded
    assert_nothing_lost(tally, figures, since)
    running = versions_running(proxy, queues)
    assert set(running) == {"2.0.0"}, running
    for host in hosts("celery_workers") + hosts("flower"):
        assert host.check_output("/opt/celerykit/bin/pip show acme-release | sed -n 's/^Version: //p'") == "2.0.0"


def test_the_status_playbook_reports_on_every_host(spread):
    result = playbook(
        *spread.inventory,
        "-e", "ansible_python_interpreter=auto_silent",
        name="status",
        ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json",
        **ANSIBLES_OWN_STRATEGY,  # the report as an operator reads it
    )  # fmt: skip
    assert result.returncode == 0, output(result)
    plays = json.loads(result.stdout)["plays"]
    (report,) = [task for task in plays[0]["tasks"] if task["task"]["name"] == "Report"]
    reports = {host: outcome["msg"] for host, outcome in report["hosts"].items()}
    assert sorted(reports) == sorted(name_of(host) for host in hosts("all"))
    (redis_host,) = hosts("redis")
    assert reports[name_of(redis_host)]["units"]["redis-server.service"] == "running"
    for host in (spread.first, spread.second):
        mine = reports[name_of(host)]
        hostname = host.check_output("hostname")
        for pool, queues in pools_of(host).items():
            assert mine["units"][f"celery-worker@{pool}.service"] == "running"
            assert mine["consuming"][f"{pool}@{hostname}"] == sorted(queues)
            assert all(mine["queues"][q]["waiting"] >= 0 for q in queues)
            assert mine["processes"][f"{pool}@{hostname}"]["autoscale"] is None  # the inventory's fixed sizes
        assert mine["redis_up"] is True
    # The pool `scale` added reports its own size and the bounds it was given.
    spread_node = f"high@{spread.second.check_output('hostname')}"
    assert reports[name_of(spread.second)]["consuming"][spread_node] == [URGENT]
    size = reports[name_of(spread.second)]["processes"][spread_node]
    assert size["autoscale"] == {"min": 1, "max": 3} and 1 <= size["now"] <= 3, size
    (beat_host,) = hosts("celery_beat")
    assert reports[name_of(beat_host)]["beat_last_sent_seconds_ago"] is not None
    (flower,) = hosts("flower")
    assert reports[name_of(flower)]["flower_answers"] is True


def test_purge_removes_exactly_the_waiting_messages_of_the_queue_it_names(
    spread, deployment: SystemdDeployment, proxy: Target, tmp_path: Path
):
    purged, kept = "low_priority", "reports"  # both consumed only by the second host's pools
    pools = [deployment.pool_of(purged), deployment.pool_of(kept)]
    for pool in pools:
        deployment.stop_pool(pool)
    try:
        doomed = drills.send_tallies(proxy, 5, purged)
        spared = drills.send_tallies(proxy, 3, kept)
        refused = playbook("-e", f"celerykit_purge_queue={purged}", "-e", "celerykit_purge_confirm=yes", name="purge")
        assert refused.returncode != 0 and "celerykit_purge_confirm must repeat" in output(refused)
        extra = {"celerykit_purge_queue": purged, "celerykit_purge_confirm": purged}
        result = playbook(extra_vars=extra, tmp=tmp_path, name="purge", ANSIBLE_STDOUT_CALLBACK="ansible.builtin.json")
        assert result.returncode == 0, output(result)
        (task,) = [t for t in json.loads(result.stdout)["plays"][0]["tasks"] if t["task"]["name"] == "Purge the queue"]
        (outcome,) = task["hosts"].values()
        assert json.loads(outcome["stdout"]) == {"queue": purged, "purged": 5}
    finally:
        for pool in pools:
            deployment.start_pool(pool)
    assert drills.settle(proxy, spared, timeout=120).lost == []  # the other queue kept its messages
    assert sorted(drills.settle(proxy, doomed, timeout=15).lost) == sorted(doomed)  # the purged ones never run
