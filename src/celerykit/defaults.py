"""The kit's defaults, written once: compose's services, the roles' defaults (through the
collection's `celerykit.platform.kit` lookup), the Celery settings and the README all read them here.
"""

from __future__ import annotations

from typing import Any

# Every key a pool may set, with its default: hard/soft time limits from the field, one message
# reserved per process (no hoarding by a busy process). Leak guards: a process is replaced once its
# resident memory passes max_memory_per_child MiB (0: no limit), checked after each task, and after
# max_tasks_per_child tasks whatever its memory (leaks that are not memory: descriptors, threads).
# Chosen by measurement (docs/benchmarks.md, "Recycling"): a replacement costs about 15 ms, but each
# new process starts cold, so the count guard every 100 tasks cost a fifth of a no-op pool's
# throughput and every 1,000 a few percent. max_concurrency above concurrency lets the pool grow to
# it under load and shrink back to concurrency when idle (Celery's autoscaler); 0 keeps its size.
POOL: dict[str, Any] = {
    "concurrency": 1,
    "max_concurrency": 0,
    "prefetch_multiplier": 1,
    "max_tasks_per_child": 1000,
    "max_memory_per_child": 512,
    "time_limit": 3600,
    "soft_time_limit": 3300,
}

# The default pools, most urgent first: name -> the keys that differ from POOL.
POOLS: list[dict[str, Any]] = [
    {"name": "high", "queues": ["high_priority"], "concurrency": 2},
    {"name": "medium", "queues": ["medium_priority", "default"], "concurrency": 2},
    # Prefetch 1 here too: 4 gave a one-process pool of no-op tasks no more throughput (1.01x, five
    # quiet rounds, docs/benchmarks.md), and a reserved message waits behind its busy process, or,
    # if the worker dies, for the visibility timeout. A pool of many short tasks gains from 2
    # (celerykit.handoff; docs/benchmarks.md, "Prefetch per pool: 1").
    {"name": "low", "queues": ["low_priority"], "concurrency": 1},
]

# Compose only: containers per pool, each a worker of its own (hosts run one worker per pool each).
REPLICAS = 1

# Above the hard limit plus queue wait: Redis never redelivers a task that is still running.
VISIBILITY_TIMEOUT = 7200
# How often each worker looks for unacknowledged messages whose visibility timeout has passed and
# puts them back in their queue (kombu sweeps every 10 s but scans only every 10th time: 100 s).
# A task whose worker died, or that was stopped at a broker loss, runs again within
# visibility_timeout + this.
REDELIVERY_SWEEP_SECONDS = 10
# The lock that keeps two workers from sweeping at once outlives a worker killed mid-sweep by this
# (kombu: 300 s, which would hold back every redelivery for five minutes); a sweep takes well under
# a second, and two overlapping sweeps cannot requeue a message twice (each restore WATCHes).
REDELIVERY_LOCK_SECONDS = 30
# A dead broker that did not close the connection (host lost, failover, NAT) fails a command
# after this many seconds instead of never; keepalive finds it on idle connections.
REDIS_SOCKET_TIMEOUT = 10
REDIS_CONNECT_TIMEOUT = 5
# A pool process whose task finished while Redis was away retries storing the result this often
# (10 ms doubling to 10 s, with jitter: about two minutes) instead of reporting the task FAILED
# with a ConnectionError; the worker's main process never waits like this.
RESULT_STORE_RETRIES = 30
# Celery's own default: with kombu's backoff (2 s more per try, at most 30 s) about 45 minutes of
# broker outage before a worker gives up and exits, and its service manager starts it again.
BROKER_CONNECTION_MAX_RETRIES = 100
LOG_LEVEL = "INFO"
# One JSON object per line (time, level, logger, message, pool, hostname, task id and name), for
# log search; "text" for Celery's own lines.
LOG_FORMAT = "json"

REDIS_HOST = "127.0.0.1"
REDIS_PORT = 6379
REDIS_USER = "celery"
# Redis refuses writes beyond this (noeviction: no queued task is ever evicted); 0 is no limit.
REDIS_MAXMEMORY = "0"
# Sentinel (a primary, replicas, three Sentinels or more): the name they watch the primary under.
REDIS_SENTINEL_PORT = 26379
REDIS_SENTINEL_MASTER = "celerykit"
# The ACL user replicas and Sentinels log in to Redis as (replication, failover; no data commands).
REDIS_REPLICATION_USER = "celerykit-replication"

# Flower listens on loopback: the proxy is the way in.
FLOWER_ADDRESS = "127.0.0.1"
FLOWER_USER = "admin"
FLOWER_PORT = 5555
FLOWER_URL_PREFIX = "flower"
# Flower's own default (100000) grows its memory without need (docs/benchmarks.md).
FLOWER_MAX_TASKS = 10000
FLOWER_STATE_SAVE_INTERVAL_MS = 15000
FLOWER_PURGE_OFFLINE_WORKERS = 600

# Beat's schedule (the dbm files it names start with this path).
BEAT_SCHEDULE = "/var/lib/celerykit/beat/celerybeat-schedule"

# Monitoring. The kit's exporter (queues, pools, Redis, Beat) listens here; Prometheus scrapes it.
EXPORTER_ADDRESS = "127.0.0.1"
EXPORTER_PORT = 9817
# Backlog alert thresholds, per queue unless set for a queue of its own (messages waiting).
BACKLOG_WARNING = 50
BACKLOG_CRITICAL = 1000
PROMETHEUS_PORT = 9090
PROMETHEUS_RETENTION = "15d"
PROMETHEUS_URL_PREFIX = "prometheus"
ALERTMANAGER_PORT = 9093
ALERTMANAGER_URL_PREFIX = "alertmanager"
NODE_EXPORTER_PORT = 9100
# One scrape every 15 s: a pool's "no worker" alert (2 min) is seen within one or two scrapes.
SCRAPE_INTERVAL = "15s"

# Long-lived WebSocket connections of apps behind the proxy are not cut before this (nginx's own
# proxy_read_timeout is 60 s).
PROXY_READ_TIMEOUT = "1h"

# The self-signed certificate a proxy starts with when given none (celerykit.tls): NIST P-256
# ECDSA, which every client accepts, valid for the longest span browsers accept.
TLS_KEY_CURVE = "secp256r1"
TLS_VALID_DAYS = 825


def pool(name: str) -> dict[str, Any]:
    """A default pool with all its keys."""
    (found,) = (p for p in POOLS if p["name"] == name)
    return {**POOL, **found}


def as_dict() -> dict[str, Any]:
    """Every default by its lower-case name (what the Ansible lookup hands to the roles)."""
    return {name.lower(): value for name, value in globals().items() if name.isupper()}
