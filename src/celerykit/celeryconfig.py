"""The Celery settings the kit applies to every app it runs (demo or yours)."""

from __future__ import annotations

from typing import Any

from celerykit import defaults
from celerykit.settings import Env, Redis, broker_connection_max_retries, visibility_timeout


def kit_settings(env: Env) -> dict[str, Any]:
    redis = Redis.from_env(env)
    # One visibility timeout for broker and result backend: on a shared Redis the shortest wins.
    # Behind Sentinels, both also need the primary's name and the Sentinels' password.
    visibility = {"visibility_timeout": visibility_timeout(env), **redis.transport_options()}
    return {
        "broker_url": redis.url,
        "result_backend": redis.url,
        "broker_transport_options": {
            **visibility,
            "unacked_restore_interval": defaults.REDELIVERY_SWEEP_SECONDS,
            "unacked_restore_throttle": 1,  # scan at every sweep
            "unacked_mutex_expire": defaults.REDELIVERY_LOCK_SECONDS,
            "socket_timeout": defaults.REDIS_SOCKET_TIMEOUT,
            "socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT,
            "socket_keepalive": True,
        },
        "result_backend_transport_options": visibility,
        # TLS (rediss://): Redis's certificate checked against the CA and the host name, for the
        # broker and the result backend alike (CELERYKIT_REDIS_TLS).
        **(
            {"broker_use_ssl": redis.tls.ssl_options(), "redis_backend_use_ssl": redis.tls.ssl_options()}
            if redis.tls
            else {}
        ),
        "redis_socket_timeout": defaults.REDIS_SOCKET_TIMEOUT,
        "redis_socket_connect_timeout": defaults.REDIS_CONNECT_TIMEOUT,
        "redis_socket_keepalive": True,
        "broker_connection_retry_on_startup": True,
        # After this many failed reconnections a worker exits; its service manager (compose's
        # restart policy, systemd's Restart=) starts it again.
        "broker_connection_max_retries": broker_connection_max_retries(env),
        # A task that runs long when the broker connection drops would be redelivered and run twice.
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        # JSON only: pickle lets whoever can write to the broker run code on the workers.
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_serializer": "json",
        "result_serializer": "json",
        # Ack after the task ran, requeue it if the worker process dies: no task lost on a crash.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # Defaults; each pool passes its own on the worker command line.
        "task_time_limit": defaults.POOL["time_limit"],
        "task_soft_time_limit": defaults.POOL["soft_time_limit"],
        "worker_prefetch_multiplier": defaults.POOL["prefetch_multiplier"],
        "worker_max_tasks_per_child": defaults.POOL["max_tasks_per_child"],
        # No default memory limit here: each pool passes its own, and a pool's 0 (no limit) must not
        # fall back to one (Celery takes this setting whenever the command line's value is 0).
        # Flower builds its view from events, including tasks still waiting in a queue (and its
        # STARTED from task-started: the result backend's STARTED, task_track_started, would cost
        # each task one more write before it runs, a tenth of a no-op pool's throughput).
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        # Beat writes its schedule after every periodic task it sends (Celery's default: every
        # 3 minutes), so a Beat killed right after sending one does not send it again on restart.
        "beat_sync_every": 1,
        # Celery refuses the `pool_restart` control command unless this is set; `celerykit admin
        # pool restart` (Flower's /api/worker/pool/restart) uses it to replace a pool's processes
        # without restarting the worker. It reloads no code (Flower asks with reload=False).
        "worker_pool_restarts": True,
        "task_default_queue": "default",
        "result_expires": 86400,
    }
