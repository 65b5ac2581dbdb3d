"""Fixes the kit carries for the Celery versions it runs, each with its upstream reference.

**A task cancelled at a broker loss must stay unacknowledged** (celery#7185; celery#10382 in 5.7.0
only stops the worker from crashing). With `worker_cancel_long_running_tasks_on_connection_loss`,
a worker that loses the broker kills each running late-ack task (`Request.cancel`) so that it is
redelivered instead of finishing twice. `cancel` kills the child first and then announces the
cancellation: it stores a RETRY state in the result backend and only then sets `_already_cancelled`.
With Redis as broker *and* result backend, that store fails exactly when the broker is gone, so
the flag is never set. The killed child is reported next, and `on_failure` takes its path for a
task terminated *without* a cancellation: a revoke. Its store retries until Redis is back, then
the message is acknowledged, so the task ends REVOKED ("terminated") and is never run again,
though nothing revoked it.

The fix records the cancellation before anything can fail, and a failed announcement is logged,
not raised: the message stays in Redis's unacked set and is redelivered after
`visibility_timeout`, as for every other task running at a broker loss.

**A recycled pool process is replaced within milliseconds**: `celerykit.recycling`.

**Task events are sent in batches, a few dozen times a second**: `celerykit.task_events`.

**A pool process gets its next task before the finished one is acknowledged**: `celerykit.handoff`.

**Flower parses a task's keyword arguments once** (Flower 2.2's search index): `celerykit.flower_index`.

**A fetched task is recorded unacknowledged in the same step** (kombu's Redis transport, kombu#305):
`celerykit.atomic_fetch`.

**A worker survives closing the connection it lost** (Celery 5.7's
`Consumer.on_connection_error_after_connected`). After a broker loss the consumer collects the
connection, then closes it with `ignore_errors`, which ignores connection errors only. With
Redis the close restores the unacknowledged messages through the channel, whose connection the
collect already cleared: `AttributeError: 'NoneType' object has no attribute 'hostname'`, and the
worker stops with "Unrecoverable error" (seen at 4 of 12 Redis kills in one soak) before it
cancels its running tasks. Their messages stay unacknowledged in Redis either way; the fix
logs the failed close and lets the consumer reconnect as it would have.

**A worker whose broker is gone still stops when told to** (Celery 5.7's `Heart`). The worker
publishes its heartbeat every 2 s with `retry=True` and no retry policy, so kombu retries the broker
connection without limit, inside the event loop. If the heartbeat comes before the consumer notices the
loss, the loop stays there while the broker is gone: a SIGTERM's warm shutdown never runs, and a
`systemctl restart` waits for the unit's stop timeout (3,360 s) before it kills the worker (seen when a
deployment moved to another Redis: the converge hung on the handler's restart). A heartbeat is worth
sending only now; the kit sends it once, and a failure is logged, not retried: the consumer's own
reconnection (with its retry budget) handles the loss, and Flower sees the worker offline meanwhile.

**A pool process lets go of the main process's Redis connections** (any Celery). A child forked
after the worker connected (every replacement of a recycled child) inherits the file descriptors
of the main process's Redis connections, the one waiting in `BRPOP` among them. When the main
process then closes that connection (a reconnect after an error while Redis is up, kombu dropping
a BRPOP it thinks stale), the child keeps it open: Redis still sees a client waiting and hands it
the next message, which nobody reads, and the task is lost. Each child points the inherited
descriptors of connections to Redis's port at /dev/null the moment it starts (the objects that
hold them close /dev/null later); the main process's connections are untouched.

**A message Redis handed to a cancelled consumer goes back at once** (kombu 5.x's Redis channel;
kombu#1733 only reads it at close, celery#7950 and #4354 report the loss). At a warm shutdown
Celery cancels the consumer while a BRPOP with its queues is still waiting in Redis. A message
sent then is popped by that BRPOP and sits unread in the socket for the whole drain (until the
running tasks finish: up to the soft time limit). kombu reads it only when the channel closes,
and only if nothing went wrong before: a worker killed during the drain (a stop timeout, the
OOM killer, a second fault) or a dropped connection loses it, and it was never in the unacked
set, so nothing brings it back. The fix reads the reply as soon as the last queue is cancelled
(at most `brpop_timeout`, 1 s) and pushes its message back onto the list it came from, the tail
BRPOP pops, so it is next as before; `close` does the same. What is left is a Redis loss within
that second.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import stat
import sys
from urllib.parse import urlsplit

import billiard
import celery
import kombu
from celery import signals
from celery.worker import heartbeat
from celery.worker.consumer import consumer as consumer_module
from celery.worker.request import Request
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str

from celerykit import flower_index, handoff, recycling, task_events

logger = logging.getLogger(__name__)

# Versions read and found affected (major, minor). A newer one is patched only once someone has read
# it: tests/unit/test_patches.py fails on a version outside these.
CELERY_AFFECTED = ((5, 0), (5, 7))  # the cancel, close and pool fixes: read on 5.7.0
BILLIARD_AFFECTED = ((4, 0), (4, 3))  # the pool fix: read on 4.3.2
KOMBU_AFFECTED = ((5, 0), (5, 7))  # the outstanding-BRPOP fix: read on 5.7.0
FLOWER_AFFECTED = ((2, 2), (2, 2))  # the search index's parse: read on 2.2.0 (2.0 has no index)

# The warning a kept cancellation logs (the chaos soak counts these lines).
KEPT_AT_BROKER_LOSS = "was cancelled at a broker connection loss"


def version(module) -> tuple[int, int]:
    major, minor = module.__version__.split(".")[:2]
    return int(major), int(minor)


def affected(found: tuple[int, int], bounds: tuple[tuple[int, int], tuple[int, int]]) -> bool:
    return bounds[0] <= found <= bounds[1]


def cancel_keeps_the_message(announce_cancelled):
    @functools.wraps(announce_cancelled)
    def announce(self, *args, **kwargs):
        self._already_cancelled = True  # first: on_failure must not turn this into a revoke
        try:
            announce_cancelled(self, *args, **kwargs)
        except Exception as error:  # the broker is gone; the task must stay unacked
            logger.warning(
                "Task %s[%s] %s; its RETRY state could not be stored (%r). The message stays "
                "unacknowledged and is redelivered after the visibility timeout.",
                self.task_name,
                self.id,
                KEPT_AT_BROKER_LOSS,
                error,
            )

    announce.celerykit_patched = True
    return announce


# The main process's Redis connections at the moment it forks a child: descriptor -> (device, inode).
_parents_connections: dict[int, tuple[int, int]] = {}


def redis_connections(ports: set[int]) -> dict[int, tuple[int, int]]:
    """This process's TCP connections to a peer on one of `ports`."""
    found = {}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            st = os.fstat(fd)
        except OSError:  # the listing's own descriptor, closed by now
            continue
        if fd <= 2 or not stat.S_ISSOCK(st.st_mode):
            continue
        with socket.socket(fileno=os.dup(fd)) as sock:
            if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
                continue
            try:
                peer_port = sock.getpeername()[1]
            except OSError:  # not connected
                continue
        if peer_port in ports:
            found[fd] = (st.st_dev, st.st_ino)
    return found


def _redis_ports(app) -> set[int]:
    urls = (app.conf.broker_url, app.conf.result_backend)
    return {urlsplit(url).port or 6379 for url in urls if url and url.startswith("redis")}


def remember_parents_connections(**_) -> None:
    """In the main process, just before it forks a child (worker_before_create_process)."""
    _parents_connections.clear()
    _parents_connections.update(redis_connections(_redis_ports(celery.current_app)))


def drop_inherited_connections(**_) -> list[int]:
    """In a child just forked (worker_process_init): point each Redis connection inherited from the
    main process at /dev/null; return the descriptors. redis-py and kombu open the child's own
    connections when it first needs them (they notice the fork), so nothing in the child used these."""
    dropped = []
    for fd, identity in _parents_connections.items():
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) != identity:  # not the inherited one any more
            continue
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, fd)
        os.close(devnull)
        dropped.append(fd)
    return dropped


def close_ignoring_any_error(ignore_errors):
    @functools.wraps(ignore_errors)
    def close(conn, fun=None, *args, **kwargs):
        try:
            return ignore_errors(conn, fun, *args, **kwargs)
        except Exception as error:  # the connection is lost already: reconnect regardless
            logger.warning("Closing the lost broker connection failed (%r); reconnecting.", error)
            return None

    close.celerykit_patched = True
    return close


def put_back_outstanding_brpop(channel) -> bool:
    """Read the reply of a BRPOP still in flight and push its message back where it came from."""
    if not channel._in_poll:
        return False
    client = channel.client
    try:
        reply = client.parse_response(client.connection, "BRPOP")
    except channel.connection_errors:
        client.connection.disconnect()
        raise
    finally:
        channel._in_poll = None
    if not reply:
        return False
    key, item = reply
    with channel.conn_or_acquire() as pooled:  # not the BRPOP connection
        pooled.rpush(bytes_to_str(key), item)
    logger.warning("Put back a message Redis handed to a cancelled consumer (%s).", bytes_to_str(key))
    return True


def cancel_reads_the_outstanding_brpop(basic_cancel):
    @functools.wraps(basic_cancel)
    def cancel(channel, consumer_tag):
        result = basic_cancel(channel, consumer_tag)
        if channel._in_poll and not channel.active_queues:
            try:
                put_back_outstanding_brpop(channel)
            except channel.connection_errors as error:  # the socket is gone: nothing left to read
                logger.warning("Could not read the cancelled consumer's last BRPOP: %r", error)
        return result

    cancel.celerykit_patched = True
    return cancel


def close_reads_the_outstanding_brpop(close):
    @functools.wraps(close)
    def closing(channel):
        if channel._in_poll:
            try:
                put_back_outstanding_brpop(channel)
            except channel.connection_errors as error:
                logger.warning("Could not read the closing channel's last BRPOP: %r", error)
        return close(channel)  # _in_poll is cleared: kombu's close reads nothing more

    closing.celerykit_patched = True
    return closing


def heartbeat_sent_once(send):
    """Heart._send: one attempt; a broker that is gone costs this heartbeat, not the event loop."""

    @functools.wraps(send)
    def sending(heart, event, retry=True):
        try:
            return send(heart, event, retry=False)
        except Exception as exc:  # whatever the transport raises for a lost broker
            logger.warning("%s not sent (the broker connection is down?): %r", event, exc)
            return None

    sending.celerykit_patched = True
    return sending


def _patch(owner, name: str, fix) -> None:
    if not getattr(getattr(owner, name), "celerykit_patched", False):  # once per process
        setattr(owner, name, fix(getattr(owner, name)))


def apply() -> list[str]:
    """Apply the fixes the installed Celery, billiard and kombu need, and the fork fix any needs;
    return their names."""
    applied = []
    if affected(version(celery), CELERY_AFFECTED):
        _patch(Request, "_announce_cancelled", cancel_keeps_the_message)
        applied.append("cancel keeps the message")
        _patch(consumer_module, "ignore_errors", close_ignoring_any_error)
        applied.append("a lost connection's close cannot stop the worker")
        _patch(heartbeat.Heart, "_send", heartbeat_sent_once)
        applied.append("a heartbeat never waits for the broker")
        task_events.apply()
        applied.append("task events are sent in batches")
        if affected(version(billiard), BILLIARD_AFFECTED):
            recycling.apply()
            applied.append("a recycled process is replaced within milliseconds")
            handoff.apply()
            applied.append("a freed process gets its next task before the acknowledgement")
    if affected(version(kombu), KOMBU_AFFECTED):
        _patch(kombu_redis.Channel, "_basic_cancel", cancel_reads_the_outstanding_brpop)
        _patch(kombu_redis.Channel, "close", close_reads_the_outstanding_brpop)
        applied.append("a cancelled consumer's last message goes back")
    from celerykit import atomic_fetch  # here: it imports this module's version checks

    applied += atomic_fetch.apply()  # kombu 5.7 only
    # Where Celery's command line loaded Flower's modules (its `flower` command is a plugin, so any
    # `celery` command has them); nothing is imported for this.
    flower, search = sys.modules.get("flower"), sys.modules.get("flower.utils.search")
    if flower is not None and search is not None and affected(version(flower), FLOWER_AFFECTED):
        flower_index.apply(search)
        applied.append("Flower parses a task's keyword arguments once")
    # dispatch_uid: connected once per process however often apply() runs
    parent, child = signals.worker_before_create_process, signals.worker_process_init
    parent.connect(remember_parents_connections, dispatch_uid="celerykit-parent", weak=False)
    child.connect(drop_inherited_connections, dispatch_uid="celerykit-child", weak=False)
    applied.append("children let go of the main process's Redis connections")
    return applied
