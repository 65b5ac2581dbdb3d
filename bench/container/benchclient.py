"""The benchmarks' Celery client, run in a container on the stack's backend network.

`python -m benchclient COMMAND ...` talks to Redis directly (no HTTP in the way of 20,000 messages) and
prints one JSON object on its last line of output. `--app kit` is the kit's configuration
(`celerykit.app` with CELERYKIT_APP=benchtasks:app); `--app baseline` is `baseline.py`. Every wait is
bounded by a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from celery import Celery

QUEUES = ("high_priority", "medium_priority", "default", "low_priority")
EVENT_HOSTNAME = "bench-events@bench"


def load_app(name: str) -> Celery:
    if name == "kit":
        from celerykit.app import app
    else:
        os.environ.setdefault("BENCH_REDIS_PASSWORD_FILE", os.environ["CELERYKIT_REDIS_PASSWORD_FILE"])
        from baseline import app
    return app


def queue_sizes(app: Celery, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return {queue: int(channel._size(queue)) for queue in queues}


def purge(app: Celery, queues: Iterable[str] = QUEUES) -> dict[str, int]:
    with app.connection_for_write() as conn:
        channel = conn.default_channel
        return {queue: int(channel.queue_purge(queue) or 0) for queue in queues}


def send(app: Celery, name: str, queue: str, args_list: Iterable[Sequence[Any]]) -> list[str]:
    ids = []
    with app.producer_or_acquire() as producer:
        for args in args_list:
            ids.append(app.send_task(name, args=list(args), queue=queue, producer=producer).id)
    return ids


def fetch(app: Celery, ids: Sequence[str]) -> list[dict | None]:
    """Stored results of `ids` (None while not stored), read straight from the Redis result backend."""
    backend = app.backend
    metas: list[dict | None] = []
    for start in range(0, len(ids), 1000):
        keys = [backend.get_key_for_task(task_id) for task_id in ids[start : start + 1000]]
        metas.extend(json.loads(raw) if raw else None for raw in backend.client.mget(keys))
    return metas


def done(meta: dict | None) -> bool:
    return bool(meta) and meta.get("status") in ("SUCCESS", "FAILURE")


def wait_all(app: Celery, ids: Sequence[str], timeout: float, poll: float = 0.25) -> list[dict | None]:
    """Wait until every task has a final state (or the deadline passes); return all stored results."""
    deadline = time.monotonic() + timeout
    cursor = 0
    while cursor < len(ids) and time.monotonic() < deadline:
        chunk = fetch(app, ids[cursor : cursor + 500])
        finished = 0
        for meta in chunk:
            if not done(meta):
                break
            finished += 1
        cursor += finished
        if finished < len(chunk):
            time.sleep(poll)
    return fetch(app, ids)


def timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def cmd_purge(app: Celery, _: argparse.Namespace) -> dict:
    return {"purged": purge(app)}


def cmd_backlog(app: Celery, args: argparse.Namespace) -> dict:
    """Leave N no-op tasks waiting in a queue (its consumers stopped), a quarter of them per priority."""
    purge(app)
    started = time.monotonic()
    with app.producer_or_acquire() as producer:
        for i in range(args.tasks):
            app.send_task("bench.noop", queue=args.queue, priority=(None, 0, 3, 9)[i % 4], producer=producer)
    return {"queued": queue_sizes(app, [args.queue])[args.queue], "seconds": round(time.monotonic() - started, 1)}


def cmd_ready(app: Celery, args: argparse.Namespace) -> dict:
    """Send a probe to each queue and wait until all ran: the consumers are there and consuming."""
    sent = time.time()
    ids = [send(app, "bench.probe", queue, [[sent]])[0] for queue in args.queues.split(",")]
    metas = wait_all(app, ids, args.timeout)
    return {"ready": all(done(m) for m in metas), "seconds": round(time.time() - sent, 3)}


def cmd_priority(app: Celery, args: argparse.Namespace) -> dict:
    """Probes to high_priority while a backlog of one-second tasks waits in low_priority."""
    purge(app)
    started = time.monotonic()
    send(app, "bench.sleep", "low_priority", ([args.sleep] for _ in range(args.backlog)))
    enqueue_s = time.monotonic() - started
    time.sleep(args.settle)  # every process busy, every prefetch slot taken
    backlog_before = queue_sizes(app)["low_priority"]
    sent_at: list[float] = []
    ids: list[str] = []
    with app.producer_or_acquire() as producer:
        for i in range(args.probes):
            next_slot = started + enqueue_s + args.settle + i * args.interval
            time.sleep(max(0.0, next_slot - time.monotonic()))
            now = time.time()
            sent_at.append(now)
            ids.append(app.send_task("bench.probe", args=[now], queue="high_priority", producer=producer).id)
    metas = wait_all(app, ids, args.timeout)
    backlog_after = queue_sizes(app)["low_priority"]
    purge(app)
    latencies = [
        round((float(m["result"]) - s) * 1000, 3) for m, s in zip(metas, sent_at, strict=True) if m and done(m)
    ]
    return {
        "backlog": args.backlog,
        "probes": args.probes,
        "completed": len(latencies),
        "enqueue_backlog_s": round(enqueue_s, 3),
        "low_queue_before_probes": backlog_before,
        "low_queue_after_probes": backlog_after,
        "latencies_ms": latencies,
    }


def cmd_throughput(app: Celery, args: argparse.Namespace) -> dict:
    """Enqueue N no-op tasks (or tasks sleeping --seconds) as fast as one client can and time the last
    SUCCESS.

    At the deadline the rest is purged and the rate is that of the tasks that finished.
    """
    purge(app)
    start = time.time()
    if args.seconds:
        ids = send(app, "bench.sleep", args.queue, ([args.seconds] for _ in range(args.tasks)))
    else:
        ids = send(app, "bench.noop", args.queue, ([] for _ in range(args.tasks)))
    enqueued = time.time()
    metas = wait_all(app, ids, args.timeout)
    purge(app)  # what the deadline left behind
    finished = [m for m in metas if m and m.get("status") == "SUCCESS"]
    last = max((timestamp(m["date_done"]) for m in finished), default=time.time())
    elapsed = last - start
    return {
        "tasks": args.tasks,
        "succeeded": len(finished),
        "enqueue_s": round(enqueued - start, 3),
        "elapsed_s": round(elapsed, 3),
        "tasks_per_s": round(len(finished) / elapsed, 1) if elapsed > 0 else 0.0,
    }


def cmd_recycling(app: Celery, args: argparse.Namespace) -> dict:
    """N no-op tasks to a one-process pool that replaces its process every few tasks, its processes
    recording when each took its first task and when it exited (benchtasks, BENCH_TIMELINE): the gap
    each replacement cost, from the old process's exit to the new one's first task."""
    purge(app)
    client = app.backend.client
    client.delete("bench:timeline")
    start = time.time()
    ids = send(app, "bench.noop", args.queue, ([] for _ in range(args.tasks)))
    metas = wait_all(app, ids, args.timeout)
    purge(app)
    finished = [m for m in metas if m and m.get("status") == "SUCCESS"]
    last = max((timestamp(m["date_done"]) for m in finished), default=time.time())
    events = sorted(
        (float(at), kind, pid)
        for kind, pid, at in (item.decode().split() for item in client.lrange("bench:timeline", 0, -1))
    )
    gaps, exited = [], None
    for at, kind, _ in events:  # one process at a time: each exit is followed by its successor's first task
        if kind == "exit":
            exited = at
        elif exited is not None:
            gaps.append(round((at - exited) * 1000, 2))
            exited = None
    return {
        "tasks": args.tasks,
        "succeeded": len(finished),
        "tasks_per_s": round(len(finished) / (last - start), 1) if last > start else 0.0,
        "replacements": len(gaps),
        "gaps_ms": gaps,
    }


def flower_task_events(url: str) -> int:
    """Task events Flower counted from the bench's event publisher (its Prometheus counter)."""
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - the stack's own Flower
        text = response.read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith("flower_events_total{") and f'worker="{EVENT_HOSTNAME}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return int(total)


def publish_task_events(dispatcher: Any, count: int) -> None:
    """The events one real task produces: sent, received, started, succeeded (as a worker sends them)."""
    for _ in range(count):
        task_id = str(uuid.uuid4())
        common = {"uuid": task_id, "name": "bench.noop", "args": "()", "kwargs": "{}", "retries": 0}
        dispatcher.send(
            "task-sent",
            **common,
            eta=None,
            expires=None,
            queue="low_priority",
            exchange="",
            routing_key="low_priority",
            root_id=task_id,
            parent_id=None,
        )
        dispatcher.send("task-received", **common, eta=None, expires=None, root_id=task_id, parent_id=None)
        dispatcher.send("task-started", uuid=task_id)
        dispatcher.send("task-succeeded", uuid=task_id, result="None", runtime=0.0004)


def cmd_events(app: Celery, args: argparse.Namespace) -> dict:
    """Publish the events of N tasks in batches, each time waiting until every Flower has counted them."""
    urls = [f"http://{flower}/flower/metrics" for flower in args.flowers.split(",")]
    base = {url: flower_task_events(url) for url in urls}
    started = time.monotonic()
    deadline = started + args.timeout
    published = 0
    with app.connection_for_write() as conn:
        dispatcher = app.events.Dispatcher(conn, hostname=EVENT_HOSTNAME, enabled=True)
        while published < args.tasks and time.monotonic() < deadline:
            batch = min(args.batch, args.tasks - published)
            dispatcher.send("worker-heartbeat", freq=2.0, active=0, processed=published)
            publish_task_events(dispatcher, batch)
            published += batch
            expected = 4 * published
            while time.monotonic() < deadline:
                if all(flower_task_events(url) - base[url] >= expected for url in urls):
                    break
                time.sleep(0.2)
    counted = {url.split("/")[2]: flower_task_events(url) - base[url] for url in urls}
    return {"tasks": published, "events": 4 * published, "counted": counted, "seconds": time.monotonic() - started}


def cmd_enqueue_probe(app: Celery, args: argparse.Namespace) -> dict:
    return {"id": send(app, "bench.probe", args.queue, [[time.time()]])[0]}


def cmd_wait(app: Celery, args: argparse.Namespace) -> dict:
    meta = wait_all(app, [args.id], args.timeout)[0]
    return {"done": done(meta), "result": meta.get("result") if meta else None}


def cmd_versions(_: Celery, __: argparse.Namespace) -> dict:
    import platform
    from importlib.metadata import version

    packages = ("celery", "kombu", "flower", "redis")
    return {"python": platform.python_version(), **{p: version(p) for p in packages}}


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="benchclient")
    main.add_argument("--app", choices=("kit", "baseline"), default="kit")
    main.add_argument("--conf", default="{}", help="a JSON object of Celery settings for this client")
    sub = main.add_subparsers(dest="command", required=True)
    sub.add_parser("purge")
    sub.add_parser("versions")
    backlog = sub.add_parser("backlog")
    backlog.add_argument("--queue", default="low_priority")
    backlog.add_argument("--tasks", type=int, default=100000)
    ready = sub.add_parser("ready")
    ready.add_argument("--queues", default=",".join(QUEUES))
    ready.add_argument("--timeout", type=float, default=120)
    priority = sub.add_parser("priority")
    priority.add_argument("--backlog", type=int, default=5000)
    priority.add_argument("--probes", type=int, default=500)
    priority.add_argument("--interval", type=float, default=0.02)
    priority.add_argument("--sleep", type=float, default=1.0)
    priority.add_argument("--settle", type=float, default=3.0)
    priority.add_argument("--timeout", type=float, default=300)
    throughput = sub.add_parser("throughput")
    throughput.add_argument("--queue", default="low_priority")
    throughput.add_argument("--tasks", type=int, default=20000)
    throughput.add_argument("--seconds", type=float, default=0.0)
    throughput.add_argument("--timeout", type=float, default=600)
    recycling = sub.add_parser("recycling")
    recycling.add_argument("--queue", default="low_priority")
    recycling.add_argument("--tasks", type=int, default=5000)
    recycling.add_argument("--timeout", type=float, default=900)
    events = sub.add_parser("events")
    events.add_argument("--tasks", type=int, required=True)
    events.add_argument("--batch", type=int, default=1000)
    events.add_argument("--flowers", default="flower:5555,flower-default:5555")
    events.add_argument("--timeout", type=float, default=600)
    enqueue = sub.add_parser("enqueue-probe")
    enqueue.add_argument("--queue", default="high_priority")
    wait = sub.add_parser("wait")
    wait.add_argument("--id", required=True)
    wait.add_argument("--timeout", type=float, default=120)
    return main


COMMANDS = {
    "purge": cmd_purge,
    "ready": cmd_ready,
    "backlog": cmd_backlog,
    "priority": cmd_priority,
    "throughput": cmd_throughput,
    "recycling": cmd_recycling,
    "events": cmd_events,
    "enqueue-probe": cmd_enqueue_probe,
    "wait": cmd_wait,
    "versions": cmd_versions,
}


def main(argv: Sequence[str] | None = None) -> None:
    args = parser().parse_args(argv)
    app = load_app(args.app) if args.command != "versions" else Celery()
    app.conf.update(json.loads(args.conf))
    print(json.dumps(COMMANDS[args.command](app, args)))


if __name__ == "__main__":
    main()
