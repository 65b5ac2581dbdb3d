"""`celerykit admin` against the running stack, run as an operator runs it: from this machine through
the proxy (and `purge` through `scripts/stack`, inside the stack's network). Each command is proven
by what it changes in the stack; each failure is one line on stderr and a non-zero exit.

The stack is left as found: every pool running, with its processes and its queues.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from celerykit_testing import drills
from celerykit_testing.compose import ComposeDeployment
from celerykit_testing.deployment import worker
from celerykit_testing.monitoring_drills import wait_for
from conftest import POOLS, PROJECT, ROOT, Stack, free_port

from celerykit.settings import DEFAULT_POOLS
from celerykit.verify import checks

SLEEP, TALLY = "celerykit.demo.sleep", drills.TALLY
PRIORITIES = [None, 0, 3, 9, 9]  # kombu keeps each priority step in a Redis list of its own


def admin(stack: Stack, *args: str, password_file: Path | None = None, url: str | None = None, ca: bool = True):
    """`celerykit admin ARGS` on this machine, through the stack's proxy."""
    command = [sys.executable, "-m", "celerykit", "admin", *args, "--url", url or stack.target.url]
    command += ["--password-file", str(password_file or stack.secrets / "flower_password")]
    command += ["--ca-file", str(stack.ca_file)] if ca else []
    env = {k: v for k, v in os.environ.items() if not k.startswith("CELERYKIT_ADMIN_")}
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, env=env)


def stack_script(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`scripts/stack ARGS` for the test stack (its project, secrets and certificate)."""
    env = {**stack.compose.env, "CELERYKIT_PROJECT": PROJECT, "COMPOSE_IGNORE_ORPHANS": "true"}
    return subprocess.run(
        [str(ROOT / "scripts" / "stack"), *args], capture_output=True, text=True, timeout=300, check=False, env=env
    )


def answer(result: subprocess.CompletedProcess[str]) -> Any:
    """What a command that succeeded printed with --json."""
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    return json.loads(result.stdout)


def ok(stack: Stack, *args: str) -> Any:
    return answer(admin(stack, *args, "--json"))


def failure(result: subprocess.CompletedProcess[str]) -> str:
    """The one line a failed command printed (on stderr, nothing on stdout, no traceback)."""
    assert result.returncode != 0, result.stdout
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def online(stack: Stack) -> dict[str, dict]:
    """Pool -> its worker's row from `admin workers`, once every pool is online consuming its queues."""

    def complete() -> dict[str, dict] | None:
        rows = {row["pool"]: row for row in ok(stack, "workers") if row["online"]}
        consuming = {pool: tuple(sorted(row["queues"])) for pool, row in rows.items()}
        return rows if consuming == {pool: tuple(sorted(queues)) for pool, queues in POOLS.items()} else None

    return wait_for("every pool online on its queues", complete, timeout=180)


def send(stack: Stack, task: str, **options: Any) -> str:
    response = stack.target.request("POST", stack.target.flower(f"api/task/send-task/{task}"), body=options)
    assert response.status == 200, response.body
    return response.json()["task-id"]


def wait_states(stack: Stack, ids: Iterable[str], wanted: Iterable[str], timeout: float = 120) -> dict[str, str]:
    """Each task's state once Flower shows every one in a state of `wanted`."""
    wanted = tuple(wanted)

    def reached() -> dict[str, str] | None:
        states = {task_id: drills.task_info(stack.target, task_id).get("state", "UNSEEN") for task_id in ids}
        return states if all(state in wanted for state in states.values()) else None

    return wait_for(f"tasks {wanted}", reached, timeout, every=1)


def queue_lengths(stack: Stack) -> dict[str, int]:
    return {queue["name"]: queue["messages"] for queue in ok(stack, "queues")}


@contextmanager
def low_pool_busy(stack: Stack) -> Iterator[str]:
    """The low pool's one process runs a long sleep, so what is sent to low_priority waits in Redis
    (prefetch 1 and late ack: the worker reserves nothing more). The sleeper is then stopped with
    `revoke --terminate`, and the pool takes the rest."""
    sleeper = send(stack, SLEEP, kwargs={"seconds": 900}, queue="low_priority")
    drills.wait_started(stack.target, [sleeper], timeout=120)
    try:
        yield sleeper
    finally:
        data = ok(stack, "revoke", sleeper, "--terminate")
        assert data["revoked"] == [sleeper] and data["signal"] == "SIGTERM"
        assert wait_states(stack, [sleeper], ["REVOKED"]) == {sleeper: "REVOKED"}


def test_workers_lists_every_pool_with_its_queues_and_processes(stack: Stack):
    rows = online(stack)
    assert sorted(rows) == sorted(POOLS)
    for pool, row in rows.items():
        assert row["name"].startswith(f"{pool}@")
        assert row["processes"] == row["concurrency"] == DEFAULT_POOLS[pool][1] == len(row["pids"])
    lines = admin(stack, "workers").stdout.splitlines()
    for pool, row in rows.items():
        (line,) = [line for line in lines if line.startswith(row["name"] + " ")]
        assert f"pool={pool}  online  queues={','.join(sorted(POOLS[pool]))}" in line


def test_queues_shows_the_backlog_of_a_stopped_pool_every_priority_counted(stack: Stack, deployment: ComposeDeployment):
    online(stack)
    deployment.stop_pool("low")
    try:
        before = queue_lengths(stack)["low_priority"]
        sent = [send(stack, TALLY, queue="low_priority", priority=p) for p in PRIORITIES]
        assert queue_lengths(stack)["low_priority"] == before + len(sent)
        assert f"low_priority  {before + len(sent)} waiting" in admin(stack, "queues").stdout.splitlines()
    finally:
        deployment.start_pool("low")
    assert set(wait_states(stack, sent, ["SUCCESS"]).values()) == {"SUCCESS"}
    online(stack)


def test_revoke_by_ids_skips_exactly_those_tasks(stack: Stack):
    with low_pool_busy(stack):
        batch = [send(stack, TALLY, queue="low_priority") for _ in range(6)]
        wait_states(stack, batch, ["PENDING"])  # Flower has seen them sent: ids it knows
        revoked = batch[::2]
        data = ok(stack, "revoke", *revoked)
        assert data["revoked"] == revoked and not data["terminate"]
    expected = {task_id: "REVOKED" if task_id in revoked else "SUCCESS" for task_id in batch}
    assert wait_states(stack, batch, drills.FINISHED) == expected


def test_revoke_by_name_and_state_pending_leaves_other_tasks_alone(stack: Stack):
    with low_pool_busy(stack):
        bulk = [send(stack, "celerykit.demo.bulk", args=[i]) for i in range(3)]  # routed to low_priority
        tallies = [send(stack, TALLY, queue="low_priority") for _ in range(2)]
        wait_states(stack, bulk + tallies, ["PENDING"])
        data = ok(stack, "revoke", "--task", "celerykit.demo.bulk", "--state", "PENDING")
        assert set(bulk) <= set(data["revoked"]) and not set(tallies) & set(data["revoked"])
    expected = {**dict.fromkeys(bulk, "REVOKED"), **dict.fromkeys(tallies, "SUCCESS")}
    assert wait_states(stack, bulk + tallies, drills.FINISHED) == expected


def test_revoke_by_name_and_state_received_stops_tasks_a_worker_holds(stack: Stack):
    # A task with a countdown is received at once by the idle high pool, which holds it until then.
    held = [send(stack, TALLY, queue="high_priority", countdown=30) for _ in range(2)]
    other = send(stack, "celerykit.demo.urgent", countdown=30)
    wait_states(stack, [*held, other], ["RECEIVED"])
    data = ok(stack, "revoke", "--task", TALLY, "--state", "RECEIVED")
    assert set(held) <= set(data["revoked"]) and other not in data["revoked"]
    expected = {**dict.fromkeys(held, "REVOKED"), other: "SUCCESS"}
    assert wait_states(stack, [*held, other], drills.FINISHED) == expected


def test_revoke_terminate_stops_a_running_task_and_the_pool_carries_on(stack: Stack):
    sleeper = send(stack, SLEEP, kwargs={"seconds": 900}, queue="low_priority")
    drills.wait_started(stack.target, [sleeper], timeout=120)
    data = ok(stack, "revoke", sleeper, "--terminate", "--signal", "kill")
    assert data == {"revoked": [sleeper], "states": {sleeper: "STARTED"}, "terminate": True, "signal": "SIGKILL"}
    assert wait_states(stack, [sleeper], drills.FINISHED) == {sleeper: "REVOKED"}
    after = send(stack, TALLY, queue="low_priority")
    assert wait_states(stack, [after], drills.FINISHED) == {after: "SUCCESS"}


def test_pool_grow_then_shrink_changes_the_process_count(stack: Stack):
    row = online(stack)["low"]
    name, before = row["name"], row["processes"]

    def processes() -> int:
        return next(r["processes"] for r in ok(stack, "workers") if r["name"] == name)

    try:
        assert ok(stack, "pool", "grow", name, "2")["n"] == 2
        wait_for(f"{name} runs {before + 2} processes", lambda: processes() == before + 2, timeout=60)
        assert ok(stack, "pool", "shrink", "low", "2") == {
            "worker": name,
            "action": "shrink",
            "n": 2,
            "message": f"Shrinking '{name}' worker's pool by 2",
        }
        wait_for(f"{name} back to {before} process(es)", lambda: processes() == before, timeout=60)
    finally:
        extra = processes() - before
        if extra > 0:
            admin(stack, "pool", "shrink", name, str(extra))
    # A shrink that would leave no process is refused, and nothing changes.
    line = failure(admin(stack, "pool", "shrink", name, str(before)))
    assert line.endswith(f"N must be below the {before} process(es) {name} runs, got {before}")
    assert processes() == before


def test_pool_restart_replaces_every_process_of_the_pool(stack: Stack):
    row = online(stack)["high"]
    name, pids = row["name"], set(row["pids"])
    assert ok(stack, "pool", "restart", name)["action"] == "restart"
    # Celery replaces each process once it has run its next task: give every process one.
    work = [send(stack, TALLY, queue="high_priority", kwargs={"seconds": 1}) for _ in range(2 * len(pids))]

    def replaced() -> bool:
        now = next(r for r in ok(stack, "workers") if r["name"] == name)
        return len(now["pids"]) == row["concurrency"] and not set(now["pids"]) & pids

    wait_for(f"every process of {name} replaced", replaced, timeout=120)
    assert set(wait_states(stack, work, drills.FINISHED).values()) == {"SUCCESS"}


def test_consumer_cancel_stops_a_queue_and_add_brings_it_back(stack: Stack):
    name = online(stack)["low"]["name"]

    def queues() -> list[str]:
        return next(r["queues"] for r in ok(stack, "workers") if r["name"] == name)

    try:
        data = ok(stack, "consumer", "cancel", "low", "low_priority")
        assert data["worker"] == name and data["action"] == "cancel"
        assert queues() == []
        waiting = send(stack, TALLY, queue="low_priority")
        assert ok(stack, "consumer", "add", name, "low_priority")["message"] == "add consumer low_priority"
    finally:
        if "low_priority" not in queues():
            admin(stack, "consumer", "add", name, "low_priority")
    assert queues() == ["low_priority"]
    assert wait_states(stack, [waiting], drills.FINISHED) == {waiting: "SUCCESS"}


def test_shutdown_stops_a_worker_and_its_restart_policy_brings_it_back(stack: Stack, deployment: ComposeDeployment):
    name = online(stack)["high"]["name"]
    restarts = deployment.restarts(worker("high"))
    assert ok(stack, "shutdown", name) == {"worker": name, "message": "Shutting down!"}
    wait_for("the restart policy at work", lambda: deployment.restarts(worker("high")) > restarts, timeout=120)
    deployment.wait_running(worker("high"), timeout=180)
    assert online(stack)["high"]["name"] == name
    result = checks.routing(stack.target, {"high": POOLS["high"]})
    assert result, result.detail


def test_purge_removes_exactly_the_waiting_messages_of_that_queue(stack: Stack, deployment: ComposeDeployment):
    online(stack)
    for pool in ("low", "medium"):
        deployment.stop_pool(pool)
    try:
        low = [send(stack, TALLY, queue="low_priority", priority=p) for p in PRIORITIES]
        medium = [send(stack, "celerykit.demo.report", args=[i], priority=p) for i, p in enumerate(PRIORITIES[:3])]
        backlog = queue_lengths(stack)
        assert backlog["low_priority"] >= len(low) and backlog["medium_priority"] >= len(medium)
        # Refused, one line each, and nothing purged.
        for args, error in [
            (["low_priority"], "the following arguments are required: --confirm"),
            (["low_priority", "--confirm", "low"], "--confirm must repeat the queue name exactly ('low_priority')"),
            (["nope", "--confirm", "nope"], "unknown queue 'nope': no pool of CELERYKIT_POOLS consumes it"),
        ]:
            assert error in failure(stack_script(stack, "admin", "purge", *args))
        assert queue_lengths(stack)["low_priority"] == backlog["low_priority"]
        purge = ["admin", "purge", "low_priority", "--confirm", "low_priority", "--json"]
        assert answer(stack_script(stack, *purge)) == {"queue": "low_priority", "purged": backlog["low_priority"]}
        after = queue_lengths(stack)
        assert after["low_priority"] == 0
        assert (
            after["medium_priority"] == backlog["medium_priority"]
            and after["high_priority"] == backlog["high_priority"]
        )
    finally:
        for pool in ("low", "medium"):
            deployment.start_pool(pool)
    assert set(wait_states(stack, medium, drills.FINISHED).values()) == {"SUCCESS"}
    online(stack)


def test_scripts_stack_admin_runs_the_command_from_the_stacks_image(stack: Stack):
    # The test stack's certificate is signed by a test CA (a real stack's tls.crt is self-signed).
    rows = answer(stack_script(stack, "admin", "workers", "--json", "--ca-file", "/run/celerykit/tls/ca.crt"))
    assert sorted(row["pool"] for row in rows if row["online"]) == sorted(POOLS)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["shutdown", "nobody@nowhere"], "unknown worker 'nobody@nowhere' (workers Flower knows: "),
        (["pool", "grow", "nobody@nowhere"], "unknown worker 'nobody@nowhere' (workers Flower knows: "),
        (["consumer", "add", "nobody", "low_priority"], "unknown worker 'nobody': no such worker or pool online"),
        (["revoke", "00000000-0000-4000-8000-000000000000"], "unknown task '00000000-0000-4000-8000-000000000000'"),
        (["revoke", "--task", "no.such.task", "--state", "PENDING"], "unknown task name 'no.such.task'"),
        (
            ["consumer", "cancel", "low", "no_such_queue"],
            "does not consume 'no_such_queue' (it consumes: low_priority)",
        ),
    ],
)
def test_unknown_names_are_one_line_and_a_failure(stack: Stack, args: list[str], expected: str):
    online(stack)
    result = admin(stack, *args)
    assert expected in failure(result)
    assert result.returncode == 1


def test_a_wrong_password_is_one_line_and_a_failure(stack: Stack, tmp_path: Path):
    wrong = tmp_path / "wrong"
    wrong.write_text(uuid.uuid4().hex)
    line = failure(admin(stack, "workers", password_file=wrong))
    assert (
        line
        == f"celerykit admin workers: {stack.target.url} refused user 'admin' (401): check --user and --password-file"
    )


def test_an_unreachable_proxy_is_one_line_and_a_failure(stack: Stack):
    url = f"https://127.0.0.1:{free_port()}"  # a closed loopback port
    assert failure(admin(stack, "queues", url=url)) == f"celerykit admin queues: cannot reach {url}: connection refused"


def test_an_untrusted_certificate_is_one_line_and_a_failure(stack: Stack):
    line = failure(admin(stack, "workers", ca=False))  # the system's CAs do not know the test CA
    assert "certificate not trusted" in line and "--ca-file" in line
