"""`celerykit exporter`: what Flower's /metrics cannot tell, for Prometheus.

- each queue's waiting messages, counted the way kombu counts them (every priority sub-queue:
  a plain LLEN of the queue's key misses the messages sent with a priority), and the messages
  workers have reserved but not acknowledged (kombu's `unacked` hash), by queue;
- each pool's workers answering a ping, 0 for a pool with none (an absent series alerts nobody);
- each pool's longest-running task, against its soft time limit;
- Redis: up, memory against maxmemory, clients, persistence;
- Beat: when it last sent a periodic task, and its schedule's shortest interval (`app.py` records
  both in Redis from Beat's process);
- the backlog thresholds of the settings, so the one rules file compares against them.

Every value is read at scrape time; nothing is cached, so a scrape never shows a stale pool.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from celerykit import defaults
from celerykit.monitoring import Watch
from celerykit.settings import Env

BEAT_KEY = "celerykit:beat"  # hash: last_sent (unix time), interval (seconds)
UNACKED_KEY = "unacked"  # kombu's Redis transport default
PING_TIMEOUT = 1.0  # seconds a worker has to answer; a scrape takes about this long


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _gauge(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Any:
    from prometheus_client.core import GaugeMetricFamily

    return GaugeMetricFamily(name, documentation, labels=list(labels))


class Collector:
    def __init__(self, app: Any, watch: Watch) -> None:
        self.app, self.watch = app, watch

    def collect(self) -> Iterator[Any]:
        started = time.monotonic()
        up = _gauge("celerykit_redis_up", "1 when Redis answered this scrape")
        try:
            with self.app.connection_for_read() as connection:
                channel = connection.default_channel
                client = channel.client
                yield from self._queues(channel, client)
                yield from self._redis(client)
                yield from self._beat(client)
            up.add_metric([], 1)
        except Exception as error:  # Redis away: say so, and still report the settings
            print(f"exporter: Redis: {error!r}", file=sys.stderr)
            up.add_metric([], 0)
        yield up
        yield from self._pools()
        yield from self._thresholds()
        took = _gauge("celerykit_exporter_scrape_duration_seconds", "how long this scrape took")
        took.add_metric([], time.monotonic() - started)
        yield took

    def _queues(self, channel: Any, client: Any) -> Iterator[Any]:
        waiting = _gauge("celerykit_queue_messages", "messages waiting in the queue, every priority", ("queue",))
        for queue in self.watch.queues:
            waiting.add_metric([queue], channel._size(queue))  # kombu's count: all priority steps
        yield waiting
        reserved: Counter[str] = Counter()
        for raw in client.hvals(UNACKED_KEY):
            try:
                _, _, routing_key = json.loads(raw)
            except ValueError:
                continue
            reserved[routing_key] += 1
        unacked = _gauge(
            "celerykit_queue_unacked_messages", "messages reserved by workers, not yet acknowledged", ("queue",)
        )
        for queue in self.watch.queues:
            unacked.add_metric([queue], reserved.get(queue, 0))
        yield unacked

    def _redis(self, client: Any) -> Iterator[Any]:
        info = client.info()
        for name, key, documentation in (
            ("celerykit_redis_memory_used_bytes", "used_memory", "memory Redis uses"),
            ("celerykit_redis_memory_max_bytes", "maxmemory", "Redis's maxmemory, 0 when unset"),
            ("celerykit_redis_connected_clients", "connected_clients", "client connections"),
        ):
            gauge = _gauge(name, documentation)
            gauge.add_metric([], float(info.get(key, 0)))
            yield gauge
        persistence = _gauge("celerykit_redis_persistence_ok", "1 when its last write succeeded", ("kind",))
        persistence.add_metric(["rdb"], 1 if info.get("rdb_last_bgsave_status", "ok") == "ok" else 0)
        if info.get("aof_enabled"):
            persistence.add_metric(["aof"], 1 if info.get("aof_last_write_status", "ok") == "ok" else 0)
        yield persistence

    def _beat(self, client: Any) -> Iterator[Any]:
        beat = {_text(key): float(value) for key, value in client.hgetall(BEAT_KEY).items()}
        if "last_sent" in beat:
            last = _gauge("celerykit_beat_last_sent_timestamp_seconds", "when Beat last sent a periodic task")
            last.add_metric([], beat["last_sent"])
            yield last
        if "interval" in beat:
            interval = _gauge("celerykit_beat_interval_seconds", "the shortest interval of Beat's schedule")
            interval.add_metric([], beat["interval"])
            yield interval

    def _pools(self) -> Iterator[Any]:
        online: Counter[str] = Counter()
        oldest: dict[str, float] = {}
        try:
            # One broadcast: a worker that lists its active tasks is online.
            replies = self.app.control.inspect(timeout=PING_TIMEOUT).active() or {}
            now = time.time()
            for worker, tasks in replies.items():
                pool = worker.partition("@")[0]
                online[pool] += 1
                for task in tasks:
                    runtime = now - float(task.get("time_start") or now)
                    oldest[pool] = max(oldest.get(pool, 0.0), runtime)
        except Exception as error:  # no broker: no worker can be seen either
            print(f"exporter: inspect: {error!r}", file=sys.stderr)
        workers = _gauge("celerykit_pool_workers_online", "workers of the pool answering a ping", ("pool",))
        soft = _gauge("celerykit_pool_soft_time_limit_seconds", "the pool's soft time limit", ("pool",))
        runtime = _gauge(
            "celerykit_pool_oldest_task_runtime_seconds", "longest runtime of a task running in the pool", ("pool",)
        )
        for pool in self.watch.pools:
            workers.add_metric([pool.name], online.get(pool.name, 0))
            soft.add_metric([pool.name], pool.soft_time_limit)
            runtime.add_metric([pool.name], round(oldest.get(pool.name, 0.0), 3))
        yield from (workers, soft, runtime)

    def _thresholds(self) -> Iterator[Any]:
        warning = _gauge("celerykit_queue_backlog_warning", "backlog above which a warning fires", ("queue",))
        critical = _gauge("celerykit_queue_backlog_critical", "backlog above which a critical alert fires", ("queue",))
        for queue, (warn, crit) in self.watch.thresholds.items():
            warning.add_metric([queue], warn)
            critical.add_metric([queue], crit)
        yield from (warning, critical)


def serve(env: Env) -> None:
    """Serve /metrics until stopped (settings from CELERYKIT_* variables)."""
    from wsgiref.simple_server import WSGIRequestHandler, make_server

    from prometheus_client import CollectorRegistry, make_wsgi_app

    watch = Watch.from_env(env)
    from celerykit.app import app

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(app, watch))
    address = env.get("CELERYKIT_EXPORTER_ADDRESS", defaults.EXPORTER_ADDRESS)
    port = int(env.get("CELERYKIT_EXPORTER_PORT", defaults.EXPORTER_PORT))

    class Quiet(WSGIRequestHandler):
        def log_message(self, *_: Any) -> None:  # one line per scrape is noise
            pass

    server = make_server(address, port, make_wsgi_app(registry), handler_class=Quiet)
    queues = ", ".join(watch.queues)
    print(f"exporter: serving /metrics on {address}:{port} for {queues}", file=sys.stderr, flush=True)
    server.serve_forever()
