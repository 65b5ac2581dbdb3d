"""The chaos soak: a bounded stream of counted tasks to every queue while a seeded random schedule
injects every fault the drills know, ten of each at least, two of them at once now and then.

Every task is counted by id from the result backend (Flower's `api/task/result`, which asks
Redis): succeeded, failed, revoked, lost (never finished), redelivered (started more than once)
and executed twice (finished more than once: at-least-once allows it; it is reported). A loss is
allowed only in the two windows `WINDOW` describes (a Redis SIGKILL, a worker's main process
SIGKILLed); any other loss, any revoke and any failure is the kit's fault.

The seed is printed with the figures: `CELERYKIT_SOAK_SEED=<seed>` replays the same schedule.
"""

from __future__ import annotations

import contextlib
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

from celerykit.patches import KEPT_AT_BROKER_LOSS
from celerykit.verify.target import Target
from celerykit_testing import drills
from celerykit_testing.deployment import BEAT, FLOWER, REDIS, Deployment, worker

FAULTS_PER_KIND = int(os.environ.get("CELERYKIT_SOAK_FAULTS_PER_KIND", "10"))
COMPOUND_PER_KIND = 2
# A task may be lost (README, "Reliability") when (1) Redis is SIGKILLed within a second after it
# took the task (AOF `everysec` may lose the last second of writes), or (2) the main process of the
# worker consuming its queue is SIGKILLed from a second before the task was taken until the pool
# runs again: kombu's Redis transport pops a message (BRPOP) and records it as unacknowledged in two
# steps (kombu#305, celery#7950), and a killed worker's BRPOP connection, still held open by its pool
# processes for a moment, can be handed one more message that nobody reads.
WINDOW = 1.0
SLEEP_SHARE, SLEEP_SECONDS = 0.2, 0.5  # a fifth of the tasks sleep; the rest are no-ops
RATE = 16.0  # tasks sent per second at most: well within the pools' capacity when nothing fails
MIN_TASKS = 1500  # sent in all, streaming on after the faults if need be
SENDERS = 3  # clients sending side by side (one request takes up to a few hundred ms under faults)


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
    acknowledged: float  # time.time() when Flower answered 200 (the broker took the message)


@dataclass
class Stream:
    """Counted tasks sent through Flower until told to stop; refusals counted by what the client saw."""

    target: Target
    queues: list[str]
    rng: random.Random
    rate: float
    sent: list[Sent] = field(default_factory=list)
    refused: Counter = field(default_factory=Counter)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        index, due = 0, time.monotonic()
        while not self.stop.is_set():
            time.sleep(max(0.0, due - time.monotonic()))
            due = max(due + 1 / self.rate, time.monotonic())  # no burst to catch up after an outage
            queue = self.queues[index % len(self.queues)]
            index += 1
            seconds = SLEEP_SECONDS if self.rng.random() < SLEEP_SHARE else 0.0
            try:
                task_id = drills.send_tally(self.target, queue, seconds)
            except ValueError as error:  # Flower answered, but not 200 (broker down)
                self.refused[str(error).split(":", 1)[0]] += 1
                time.sleep(0.2)
                continue
            except OSError as error:  # Flower down, or restarting
                self.refused[type(error).__name__] += 1
                time.sleep(0.2)
                continue
            self.sent.append(Sent(task_id, queue, time.time()))


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

    streams = [
        Stream(deployment.target, queues, random.Random(seed + n), RATE / SENDERS)  # noqa: S311
        for n in range(1, SENDERS + 1)
    ]
    senders = [threading.Thread(target=stream.run, daemon=True) for stream in streams]
    started_at = time.time()
    start, threads = time.monotonic(), []
    for sender in senders:
        sender.start()
    for fault in faults:
        time.sleep(max(0.0, start + fault.at - time.monotonic()))
        thread = threading.Thread(target=inject, args=(deployment, fault, locks), daemon=True)
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join(timeout=600)
    time.sleep(max(0.0, start + seconds - time.monotonic()))
    faults_over = time.time()
    sent_under_faults = sum(len(stream.sent) for stream in streams)
    # Every refusal while Flower restarts costs a task (on a loaded machine Flower may be down for
    # most of the schedule): keep streaming, faults over, until the soak has sent enough.
    deadline = time.monotonic() + 120
    while sum(len(stream.sent) for stream in streams) < MIN_TASKS and time.monotonic() < deadline:
        time.sleep(1)
    for stream, sender in zip(streams, senders, strict=True):
        stream.stop.set()
        sender.join(timeout=120)
    sent = [s for stream in streams for s in stream.sent]
    refused = sum((stream.refused for stream in streams), Counter())
    stream_seconds = time.monotonic() - start
    for service in [REDIS, FLOWER, *(worker(pool) for pool in pools)]:
        deployment.wait_running(service, timeout=180)

    # A task whose worker's main process died returns after the visibility timeout (and kombu's
    # 10 s sweep); give the last of them that long and a margin.
    main_kills = [f for f in faults if MAIN_KILLED in f.parts]
    wait = max(0.0, max((f.ended for f in main_kills), default=0.0) + visibility_timeout - time.time()) + 120
    tally, drain_seconds = count(deployment.target, sent, time.monotonic() + wait)

    # The windows of WINDOW: a Redis kill until it was done; a main-process kill of the pool
    # consuming the task's queue until that pool ran again.
    in_redis_window = [
        s
        for s in tally.lost
        if any(f.started - WINDOW <= s.acknowledged <= f.injected for f in faults if REDIS_KILLED in f.parts)
    ]
    in_fetch_window = [
        s
        for s in tally.lost
        if s not in in_redis_window
        and any(f.started - WINDOW <= s.acknowledged <= f.ended and s.queue in queues_of[f.pool] for f in main_kills)
    ]
    figures = {
        "deployment": deployment.kind,
        "seed": seed,
        "stream_seconds": round(stream_seconds, 1),
        "faults": dict(Counter(f.kind for f in faults)),
        "faults_not_injected": {f"{f.kind} ({f.pool})": f.error for f in faults if f.error},
        "sent": len(sent),
        "sent_while_faults_ran": sent_under_faults,
        "sent_after_the_faults": sum(s.acknowledged > faults_over for s in sent),
        "refused": dict(refused),
        "succeeded": tally.succeeded,
        "states": dict(tally.states),
        "failed": tally.failed,
        "revoked": tally.revoked,
        "lost": [s.task_id for s in tally.lost],
        "lost_details": [_lost_detail(deployment.target, s, faults, started_at) for s in tally.lost[:10]],
        "lost_in_redis_window": [s.task_id for s in in_redis_window],
        "lost_in_fetch_window": [s.task_id for s in in_fetch_window],
        "redelivered": len(tally.redelivered),
        "executed_twice": len(tally.executed_twice),
        "drain_seconds": round(drain_seconds, 1),
        "kept_unacknowledged_at_broker_loss": sum(
            deployment.logs(worker(pool), since=started_at).count(KEPT_AT_BROKER_LOSS) for pool in pools
        ),
    }
    drills.record("chaos-soak", **figures)
    return figures


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
