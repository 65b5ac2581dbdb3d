"""The chaos soak: a bounded stream of counted tasks to every queue while a seeded random schedule
injects every fault the drills know, ten of each at least, two of them at once now and then.

The tasks are sent from inside the deployment, straight to Redis as an app's process sends them
(`SENDER`, in a process no fault touches), so Flower's faults do not thin the stream.

Every task is counted by id from the result backend (Flower's `api/task/result`, which asks
Redis): succeeded, failed, revoked, lost (never finished), redelivered (started more than once)
and executed twice (finished more than once: at-least-once allows it; it is reported). A loss is
allowed only in the window described at `REDIS_WINDOW` (a Redis SIGKILL); any other loss, any revoke
and any failure is the kit's fault.

The seed is printed with the figures: `CELERYKIT_SOAK_SEED=<seed>` replays the same schedule.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from celerykit import defaults
from celerykit.patches import KEPT_AT_BROKER_LOSS
from celerykit.verify.target import Target
from celerykit_testing import drills
from celerykit_testing.deployment import BEAT, FLOWER, REDIS, Deployment, worker

FAULTS_PER_KIND = int(os.environ.get("CELERYKIT_SOAK_FAULTS_PER_KIND", "10"))
COMPOUND_PER_KIND = 2
# A task may be lost (README, "Reliability") only when Redis is SIGKILLed within REDIS_WINDOW after it
# took the task: with AOF `everysec` Redis writes its buffer to the file once a second, and while a
# slow fsync is still running it postpones that write for up to two seconds ("Asynchronous AOF
# fsync is taking too long"), so a killed Redis loses up to two seconds on a busy disk. A worker's main
# process killed while it fetches loses nothing: the kit records a task unacknowledged in the step
# that takes it from its queue (celerykit.atomic_fetch), and the task comes back after the visibility
# timeout.
REDIS_WINDOW = 2.0
UNRECOVERABLE = "Unrecoverable error"  # what Celery logs when a worker stops on an error of its own
SLEEP_SHARE, SLEEP_SECONDS = 0.2, 0.5  # a fifth of the tasks sleep; the rest are no-ops
RATE = 16.0  # tasks sent per second at most: well within the pools' capacity when nothing fails
MIN_SENT = 1500  # "a few thousand": what the three minutes send even with Redis down a fifth of the time


class Kind(NamedTuple):
    services: Callable[[str], tuple[str, ...]]  # what it touches, given the pool drawn for the fault
    inject: Callable[[Deployment, str], object]
    supervised: bool = False  # the service dies; its supervisor (restart policy, systemd) restarts it


REDIS_KILLED, MAIN_KILLED = "redis killed", "pool main process killed"


def _pool(pool: str) -> tuple[str, ...]:
    return (worker(pool),)


KINDS: dict[str, Kind] = {
    "pool processes killed": Kind(_pool, lambda d, pool: d.kill_pool_processes(pool)),
    MAIN_KILLED: Kind(_pool, lambda d, pool: d.kill_pool(pool), supervised=True),
    "pool restarted": Kind(_pool, lambda d, pool: d.restart_pool(pool)),
    REDIS_KILLED: Kind(lambda _: (REDIS,), lambda d, _: d.crash_redis()),  # started again by the drill
    "flower killed": Kind(lambda _: (FLOWER,), lambda d, _: d.kill_flower(), supervised=True),
    "flower restarted": Kind(lambda _: (FLOWER,), lambda d, _: d.restart_flower()),
    "beat killed": Kind(lambda _: (BEAT,), lambda d, _: d.kill_beat(), supervised=True),
    "beat restarted": Kind(lambda _: (BEAT,), lambda d, _: d.restart_beat()),
}
# Two at once: the parts start together (Flower is killed first, the pool restarts while it is down).
COMPOUND = {
    f"{REDIS_KILLED} + {MAIN_KILLED}": (REDIS_KILLED, MAIN_KILLED),
    "flower killed + pool restarted": ("flower killed", "pool restarted"),
}


@dataclass
class Fault:
    at: float  # seconds after the stream started
    kind: str
    pool: str
    started: float = 0.0  # time.time() stamps: injection began, injection returned, all ran again
    injected: float = 0.0
    ended: float = 0.0
    error: str = ""

    @property
    def parts(self) -> tuple[str, ...]:
        return COMPOUND.get(self.kind, (self.kind,))

    @property
    def services(self) -> tuple[str, ...]:
        return tuple(sorted({s for part in self.parts for s in KINDS[part].services(self.pool)}))


def schedule(rng: random.Random, pools: list[str], seconds: float) -> list[Fault]:
    kinds = [k for k in KINDS for _ in range(FAULTS_PER_KIND)] + [k for k in COMPOUND for _ in range(COMPOUND_PER_KIND)]
    rng.shuffle(kinds)
    spacing = seconds / len(kinds)
    return [Fault(i * spacing + rng.uniform(0, spacing), kind, rng.choice(pools)) for i, kind in enumerate(kinds)]


@dataclass
class Sent:
    task_id: str
    queue: str
    acknowledged: float  # time.time() when Redis took the message (apply_async returned)


# Runs inside the deployment, as an app's process would: sends counted tasks to the queues in turn
# at a steady rate for a while (a fifth of them sleep), then prints what Redis took and what it refused.
# It stops early once the Redis key named by its last argument exists (`Stream.stop`).
SENDER = """
import json, random, sys, time
from celerykit.app import app
rate, seconds, seed, queues = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(",")
share, sleep_seconds, stop_key, min_sent = float(sys.argv[5]), float(sys.argv[6]), sys.argv[7], int(sys.argv[8])


def stopped():
    try:
        return bool(app.backend.client.exists(stop_key))
    except Exception:  # Redis down: keep sending (and counting what it refuses)
        return False


rng = random.Random(seed)
sent, refused = [], {}
start = due = time.monotonic()
checked = start
# `seconds`, or longer (at most twice) until `min_sent` went: a starved host sends slowly.
while (time.monotonic() - start < seconds or len(sent) < min_sent) and time.monotonic() - start < 2 * seconds:
    if time.monotonic() - checked >= 1.0:  # once a second: on a loaded host every round trip counts
        checked = time.monotonic()
        if stopped():
            break
    time.sleep(max(0.0, due - time.monotonic()))
    due = max(due + 1 / rate, time.monotonic())  # no burst to catch up after an outage
    queue = queues[len(sent) % len(queues)]
    kwargs = {"seconds": sleep_seconds if rng.random() < share else 0.0}
    try:
        task_id = app.send_task("celerykit.demo.tally", kwargs=kwargs, queue=queue, retry=False).id
    except Exception as error:  # Redis down: the app sees the error and may retry; this one counts it
        refused[type(error).__name__] = refused.get(type(error).__name__, 0) + 1
        time.sleep(0.2)
        continue
    sent.append((task_id, queue, time.time()))
print(json.dumps({"sent": sent, "refused": refused}))
"""


@dataclass
class Stream:
    """Counted tasks sent from inside the deployment (`SENDER`) for `seconds`, straight to Redis as
    an app does: Flower's faults do not stop it."""

    deployment: Deployment
    queues: list[str]
    seed: int
    seconds: float  # at most (or until `min_sent` went, at most twice as long): `stop` ends it sooner
    min_sent: int = 0
    sent: list[Sent] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    error: Exception | None = None  # raised again by the soak: a stream that did not run proves nothing

    def run(self) -> None:
        args = (RATE, self.seconds, self.seed, ",".join(self.queues), SLEEP_SHARE, SLEEP_SECONDS, self.stop_key)
        try:
            out = self.deployment.run_python(SENDER, *map(str, (*args, self.min_sent)), timeout=2 * self.seconds + 300)
            result = json.loads(out.strip().splitlines()[-1])
        except Exception as error:  # handed to the soak's thread
            self.error = error
            return
        self.sent = [Sent(*row) for row in result["sent"]]
        self.refused = Counter(result["refused"])

    @property
    def stop_key(self) -> str:
        return f"celerykit:test:stream-stop:{self.seed}"

    def stop(self) -> None:
        """End the stream now (it ends by itself after `seconds`)."""
        self.deployment.run_python(
            "import sys; from celerykit.app import app; app.backend.client.set(sys.argv[1], 1, ex=3600)",
            self.stop_key,
            timeout=60,
        )


def inject(deployment: Deployment, fault: Fault, locks: dict[str, threading.Lock]) -> None:
    """Inject one fault (its parts together), then wait until what it touched runs again."""
    with contextlib.ExitStack() as held:
        for service in fault.services:
            held.enter_context(locks[service])
        fault.started = time.time()
        errors: list[Exception] = []

        def attempt(part: str) -> None:
            kind = KINDS[part]
            services = kind.services(fault.pool)
            for tries in range(1, 4):
                restarts = {service: deployment.restarts(service) for service in services}
                try:
                    kind.inject(deployment, fault.pool)
                except Exception as error:  # e.g. its container was still restarting: try again
                    if tries == 3:
                        errors.append(error)  # reported with the figures
                        return
                    for service in services:
                        deployment.wait_running(service, timeout=180, healthy=False)
                    continue
                for service in services if kind.supervised else ():  # until the supervisor restarted it
                    deadline = time.monotonic() + 120
                    while deployment.restarts(service) == restarts[service]:
                        if time.monotonic() > deadline:
                            errors.append(AssertionError(f"{service} was not restarted after {part}"))
                            return
                        time.sleep(0.5)
                return

        try:
            threads = [threading.Thread(target=attempt, args=(part,)) for part in fault.parts]
            for number, thread in enumerate(threads):
                thread.start()
                if number == 0 and len(threads) > 1:
                    time.sleep(0.2)  # the second part hits a deployment the first one just broke
            for thread in threads:
                thread.join()
            fault.injected = time.time()
            fault.error = repr(errors[0]) if errors else ""
            for service in fault.services:
                deployment.wait_running(service, timeout=180, healthy=False)
        finally:
            fault.ended = time.time()


@dataclass
class Tally:
    states: Counter = field(default_factory=Counter)
    succeeded: int = 0
    redelivered: list[str] = field(default_factory=list)
    executed_twice: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    revoked: list[str] = field(default_factory=list)
    lost: list[Sent] = field(default_factory=list)
    results: dict[str, dict] = field(default_factory=dict)  # task id -> the tally task's result


def count(target: Target, sent: list[Sent], deadline: float) -> tuple[Tally, float]:
    """Ask the result backend for every task until all finished or `deadline`; return the tally and
    the seconds that took."""
    start = time.monotonic()
    results: dict[str, tuple[str, dict]] = {}
    pending = [s.task_id for s in sent]
    with ThreadPoolExecutor(max_workers=8) as pool:
        while True:
            infos = pool.map(lambda t: drills.backend_info(target, t), pending)
            answers = {t: (info.get("state", "UNANSWERED"), info) for t, info in zip(pending, infos, strict=True)}
            results.update(answers)
            pending = [t for t, (state, _) in answers.items() if state not in drills.FINISHED]
            if not pending or time.monotonic() > deadline:
                break
            time.sleep(3)
    tally = Tally()
    for s in sent:
        state, info = results[s.task_id]
        tally.states[state] += 1
        tally_of = drills.tally_of(info)
        tally.results[s.task_id] = tally_of
        if state == "SUCCESS":
            tally.succeeded += 1
            if tally_of.get("runs", 1) > 1:
                tally.redelivered.append(s.task_id)
            if tally_of.get("completions", 1) > 1:
                tally.executed_twice.append(s.task_id)
        elif state == "FAILURE":
            tally.failed[s.task_id] = str(info.get("result"))[:200]
        elif state == "REVOKED":
            tally.revoked.append(s.task_id)
        else:
            tally.lost.append(s)
    return tally, time.monotonic() - start


def soak(deployment: Deployment, *, visibility_timeout: float, seconds: float = 180.0) -> dict:
    """Run the soak; return its figures (recorded). Asserts nothing: the caller does."""
    seed = int(os.environ.get("CELERYKIT_SOAK_SEED") or random.SystemRandom().randrange(1_000_000))
    rng = random.Random(seed)  # noqa: S311 - a schedule to replay, not a secret
    queues_of = deployment.pools()
    pools = sorted(queues_of)
    queues = sorted({q for qs in queues_of.values() for q in qs})
    faults = schedule(rng, pools, seconds)
    services = sorted({s for f in faults for s in f.services})
    for service in services:  # looked up once, before threads share the deployment
        deployment.where(service)
    locks = {service: threading.Lock() for service in services}

    stream = Stream(deployment, queues, seed, seconds, min_sent=MIN_SENT)
    sender = threading.Thread(target=stream.run, daemon=True)
    started_at = time.time()
    start, threads = time.monotonic(), []
    sender.start()
    for fault in faults:
        time.sleep(max(0.0, start + fault.at - time.monotonic()))
        thread = threading.Thread(target=inject, args=(deployment, fault, locks), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=600)
    sender.join(timeout=2 * seconds + 300)
    sent, refused = stream.sent, stream.refused
    stream_seconds = time.monotonic() - start
    for service in [REDIS, FLOWER, *(worker(pool) for pool in pools)]:
        deployment.wait_running(service, timeout=180)
    if stream.error:  # after the wait: the tests that follow find the deployment running
        raise stream.error

    # A task whose worker's main process died, or that was stopped at a broker loss, runs again
    # within the visibility timeout and one redelivery sweep (README, "Reliability"): give the last
    # of them that long after the last fault, and the streamed backlog a minute to run.
    redelivered_by = max(f.ended for f in faults) + visibility_timeout + defaults.REDELIVERY_SWEEP_SECONDS
    drain_until = time.monotonic() + max(0.0, redelivered_by - time.time()) + 60
    tally, drain_seconds = count(deployment.target, sent, drain_until)

    # The window: REDIS_WINDOW before a Redis kill until it was done.
    in_redis_window = [
        s
        for s in tally.lost
        if any(f.started - REDIS_WINDOW <= s.acknowledged <= f.injected for f in faults if REDIS_KILLED in f.parts)
    ]
    logs = {pool: deployment.logs(worker(pool), since=started_at) for pool in pools}
    figures = {
        "deployment": deployment.kind,
        "seed": seed,
        "stream_seconds": round(stream_seconds, 1),
        "faults": dict(Counter(f.kind for f in faults)),
        "faults_not_injected": {f"{f.kind} ({f.pool})": f.error for f in faults if f.error},
        "sent": len(sent),
        "refused": dict(refused),
        "succeeded": tally.succeeded,
        "states": dict(tally.states),
        "failed": tally.failed,
        "revoked": tally.revoked,
        "lost": [s.task_id for s in tally.lost],
        "lost_details": [_lost_detail(deployment.target, s, faults, started_at) for s in tally.lost[:10]],
        "lost_in_redis_window": [s.task_id for s in in_redis_window],
        "redelivered": len(tally.redelivered),
        "executed_twice": len(tally.executed_twice),
        "drain_seconds": round(drain_seconds, 1),
        "kept_unacknowledged_at_broker_loss": sum(log.count(KEPT_AT_BROKER_LOSS) for log in logs.values()),
        # Workers that stopped on an error of their own (not a fault injected; their supervisor
        # restarted them): Celery's own robustness at a broker loss, reported, not failed
        "worker_crashes": {pool: _crashes(log) for pool, log in logs.items() if UNRECOVERABLE in log},
    }
    drills.record("chaos-soak", **figures)
    return figures


def _crashes(log: str) -> list[str]:
    """Each "Unrecoverable error" with the innermost frames of its traceback, in one line (a JSON
    log line holds its traceback as `exc_info`; a text log has it on the lines that follow)."""
    lines = log.splitlines()
    found = []
    for at, line in enumerate(lines):
        if UNRECOVERABLE in line:
            try:
                record = json.loads(line[line.index("{") :])
                message, trace = record["message"], str(record.get("exc_info") or "").splitlines()
            except (ValueError, KeyError, TypeError):
                message, trace = line, lines[at + 1 : at + 80]
            frames = [f.split("File ", 1)[1].strip() for f in trace if "File " in f][-3:]
            found.append(f"{message.split(UNRECOVERABLE, 1)[-1][:200]} at {' < '.join(reversed(frames))}")
    return found


def _lost_detail(target: Target, sent: Sent, faults: list[Fault], started_at: float) -> dict:
    """What Flower saw of a lost task, and the faults around it (seconds after the stream began)."""
    info = drills.task_info(target, sent.task_id)
    seen = {k: round(info[k] - started_at, 2) for k in ("received", "started", "succeeded") if info.get(k)}
    near = [
        f"{f.kind} ({f.pool}) {f.started - started_at:.1f}-{f.ended - started_at:.1f}"
        for f in faults
        if f.started - 10 <= sent.acknowledged <= f.ended + 30
    ]
    return {
        "id": sent.task_id,
        "queue": sent.queue,
        "acknowledged": round(sent.acknowledged - started_at, 2),
        "flower": {"state": info.get("state"), "worker": info.get("worker"), **seen},
        "faults_near": near,
    }
