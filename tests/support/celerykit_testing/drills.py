"""Fault drills any deployment can run: send counted tasks, inject a fault, count what was lost.

Everything here talks to the deployment through Flower's API (a `celerykit.verify.Target`), so the
same drill runs against the compose stack and against systemd hosts; only the fault itself (kill
this process, restart that service) comes from the deployment (see `deployment.Deployment`).

The drills send `celerykit.demo.tally`, which counts its own starts and completions per task id
in the result backend (Redis) and returns both, so a task that ran twice says so in its result:

- lost: sent, but not finished with SUCCESS within the drill's time;
- restarted: started more than once (its first run was killed, then it was delivered again);
- executed twice: ran to the end more than once (a real duplicate).
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from celerykit.demo import COUNTED
from celerykit.verify import checks
from celerykit.verify.target import Target

TALLY = "celerykit.demo.tally"
HEARTBEAT = "celerykit.demo.heartbeat"
FINISHED = ("SUCCESS", "FAILURE", "REVOKED")


def send_tally(target: Target, queue: str, seconds: float = 0.0) -> str:
    """Send one counted task to `queue` through Flower; return its id."""
    response = target.request(
        "POST", target.flower(f"api/task/send-task/{TALLY}"), body={"kwargs": {"seconds": seconds}, "queue": queue}
    )
    if response.status != 200:
        raise ValueError(f"send-task answered {response.status}: {response.body[:200]!r}")
    return response.json()["task-id"]


def send_tallies(target: Target, count: int, queue: str, seconds: float = 0.0) -> list[str]:
    return [send_tally(target, queue, seconds) for _ in range(count)]


def task_info(target: Target, task_id: str) -> dict:
    """Flower's record of a task, or {} when Flower has not seen it (yet)."""
    try:
        response = target.request("GET", target.flower(f"api/task/info/{task_id}"))
    except OSError:  # Flower restarting
        return {}
    return response.json() if response.status == 200 else {}


def tally_of(info: dict) -> dict:
    """The tally task's result ({'runs': n, 'completions': m, ...}) from Flower's task record."""
    result = info.get("result")
    if isinstance(result, str):
        try:
            result = ast.literal_eval(result)
        except (ValueError, SyntaxError):
            return {}
    return result if isinstance(result, dict) else {}


@dataclass
class Outcome:
    """What became of the tasks a drill sent."""

    sent: int
    succeeded: int
    lost: list[str] = field(default_factory=list)
    restarted: list[str] = field(default_factory=list)
    executed_twice: list[str] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    workers: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        figures = asdict(self)
        for key in ("lost", "restarted", "executed_twice"):
            figures[key] = len(figures[key])
        figures["seconds"] = round(self.seconds, 1)
        return figures


def settle(target: Target, task_ids: Sequence[str], timeout: float, since: float | None = None) -> Outcome:
    """Wait (at most `timeout` s) until every task finished; count lost, restarted, duplicated."""
    start = time.monotonic() if since is None else since
    deadline = time.monotonic() + timeout
    infos: dict[str, dict] = {}
    pending = list(task_ids)
    while pending and time.monotonic() < deadline:
        for task_id in list(pending):
            info = task_info(target, task_id)
            if info:
                infos[task_id] = info
            if info.get("state") in FINISHED:
                pending.remove(task_id)
        if pending:
            time.sleep(1)
    elapsed = time.monotonic() - start
    outcome = Outcome(sent=len(task_ids), succeeded=0, seconds=elapsed)
    for task_id in task_ids:
        info = infos.get(task_id, {})
        state = info.get("state", "UNSEEN")
        outcome.states[state] = outcome.states.get(state, 0) + 1
        if state != "SUCCESS":
            outcome.lost.append(task_id)
            continue
        outcome.succeeded += 1
        tally = tally_of(info)
        pool = (info.get("worker") or "?").split("@", 1)[0]
        outcome.workers[pool] = outcome.workers.get(pool, 0) + 1
        if tally.get("runs", 1) > 1:
            outcome.restarted.append(task_id)
        if tally.get("completions", 1) > 1:
            outcome.executed_twice.append(task_id)
    return outcome


def _wait_for_state(
    state_of: Callable[[str], str | None], task_ids: Iterable[str], states: tuple, what: str, timeout: float
) -> None:
    pending = set(task_ids)
    deadline = time.monotonic() + timeout
    while pending := {t for t in pending if state_of(t) not in (*states, *FINISHED)}:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(pending)} task(s) not {what} after {timeout:.0f}s")
        time.sleep(0.5)


def wait_started(target: Target, task_ids: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until Flower reports every task as started (running on a worker)."""
    _wait_for_state(lambda t: task_info(target, t).get("state"), task_ids, ("STARTED",), "started", timeout)


def wait_counted(target: Target, task_ids: Iterable[str], timeout: float = 60.0) -> None:
    """Wait until every long tally task counted its run (celerykit.demo.COUNTED in the result
    backend): a drill that kills it then finds it started twice once it ran again."""
    _wait_for_state(lambda t: backend_info(target, t).get("state"), task_ids, (COUNTED,), "counted", timeout)


def resume_seconds(target: Target, queues: Sequence[str], since: float, timeout: float = 120.0) -> dict[str, float]:
    """Seconds from `since` (a time.time() stamp) until a task sent to each queue was started.

    Keeps sending probes (Flower may still be reconnecting itself) and takes, per queue, the
    earliest start any probe reports. Raises when a queue has no consumer after `timeout`.
    """
    deadline = time.monotonic() + timeout
    probes: dict[str, list[str]] = {queue: [] for queue in queues}
    resumed: dict[str, float] = {}
    last_sent = 0.0
    while len(resumed) < len(queues):
        if time.monotonic() > deadline:
            missing = sorted(set(queues) - set(resumed))
            raise AssertionError(f"no worker consumed {missing} within {timeout:.0f}s")
        if time.monotonic() - last_sent >= 2:
            for queue in queues:
                if queue not in resumed:
                    with contextlib.suppress(OSError, ValueError):  # Flower not reconnected to the broker yet
                        probes[queue].append(checks.send_probe(target, queue))
            last_sent = time.monotonic()
        for queue, ids in probes.items():
            if queue in resumed:
                continue
            starts = [info.get("started") or info.get("succeeded") for info in map(lambda t: task_info(target, t), ids)]
            starts = [s for s in starts if s]
            if starts:
                resumed[queue] = round(max(0.0, min(starts) - since), 1)
        time.sleep(0.5)
    return resumed


def kill_drill(
    target: Target,
    *,
    queue: str,
    running: int,
    queued: int = 0,
    seconds: float,
    inject: Callable[[], None],
    timeout: float,
) -> Outcome:
    """Start `running` long tasks on `queue` (plus `queued` waiting behind them), inject the fault
    while they run, and settle: every task must end with SUCCESS."""
    running_ids = send_tallies(target, running, queue, seconds)
    wait_counted(target, running_ids)
    queued_ids = send_tallies(target, queued, queue, seconds)
    start = time.monotonic()
    inject()
    return settle(target, running_ids + queued_ids, timeout, since=start)


def backend_info(target: Target, task_id: str, attempts: int = 5) -> dict:
    """The result backend's (Redis's) record of a task, asked through Flower (state, result);
    retried while Flower restarts, {} when it never answered."""
    for attempt in range(attempts):
        try:
            response = target.request("GET", target.flower(f"api/task/result/{task_id}"))
            if response.status == 200:
                return response.json()
        except OSError:
            pass
        if attempt + 1 < attempts:
            time.sleep(1)
    return {}


def backend_result(target: Target, task_id: str) -> tuple[str, dict]:
    """A task's state and tally as the result backend (Redis) holds them, asked through Flower."""
    info = backend_info(target, task_id)
    return info.get("state", "?"), tally_of(info)


def worker_name(target: Target, pool: str, timeout: float = 60) -> str:
    """The pool's worker name as Flower knows it (asking the workers, not Flower's cache)."""
    deadline = time.monotonic() + timeout
    while True:
        workers = target.request("GET", target.flower("api/workers?refresh=1")).json()
        names = [w for w in workers if w.startswith(f"{pool}@")]
        if len(names) == 1:
            return names[0]
        assert time.monotonic() < deadline, f"pool {pool}: workers {names}"
        time.sleep(1)


def wait_pools(target: Target, pools: Mapping[str, Sequence[str]], timeout: float = 120) -> None:
    """Every pool consumes exactly its queues (and no other pool is online)."""
    result = checks.workers(target, {pool: sorted(queues) for pool, queues in pools.items()}, timeout=timeout)
    assert result, result.detail


def flower_back(target: Target, timeout: float = 120) -> float:
    """Seconds until Flower answers its API again."""
    start = time.monotonic()
    while True:
        try:
            if target.request("GET", target.flower("api/workers")).status == 200:
                return time.monotonic() - start
        except OSError:
            pass
        assert time.monotonic() - start < timeout, "Flower did not come back"
        time.sleep(0.5)


def known(target: Target, task_ids: Sequence[str]) -> int:
    """How many of the tasks Flower lists as succeeded."""
    return sum(task_info(target, t).get("state") == "SUCCESS" for t in task_ids)


def heartbeats(target: Target) -> list[float]:
    """When Flower saw each heartbeat task Beat sent (received stamps, oldest first)."""
    tasks = target.request("GET", target.flower(f"api/tasks?taskname={HEARTBEAT}&limit=1000")).json()
    return sorted(t["received"] for t in tasks.values() if t.get("received"))


def next_heartbeat(target: Target, after: float, timeout: float) -> float:
    """The first heartbeat received after `after` (a time.time() stamp)."""
    deadline = time.monotonic() + timeout
    while True:
        newer = [t for t in heartbeats(target) if t > after]
        if newer:
            return min(newer)
        assert time.monotonic() < deadline, f"no heartbeat within {timeout}s"
        time.sleep(0.2)


def record(name: str, **figures) -> dict:
    """Print a drill's figures and append them to the JSON-lines file in CELERYKIT_DRILL_REPORT."""
    line = {"drill": name, **figures}
    print(f"\ndrill {name}: {json.dumps(figures, sort_keys=True)}")
    path = os.environ.get("CELERYKIT_DRILL_REPORT")
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps(line, sort_keys=True) + "\n")
    return line
