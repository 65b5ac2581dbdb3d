"""The Celery fix the kit carries (celerykit.patches), on Celery's own Request and result backends.

A worker that loses Redis cancels its running late-ack tasks; the cancellation's RETRY store fails
because Redis is gone; when the killed child is reported, Redis is back. Here the first store goes
to a Redis port nobody listens on (it fails as a lost Redis does), the second to Celery's
in-memory backend (it works, as a Redis that came back does).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import billiard
import celery
import flower
import flower.utils.search  # as in every `celery` command: Flower's command is a plugin of its command line
from billiard.einfo import ExceptionInfo
from billiard.exceptions import Terminated
from celery import Celery
from celery.backends.redis import RedisBackend
from celery.concurrency.asynpool import AsynPool
from celery.worker.request import Request
from celerykit_testing.local_redis import start_redis, stop_redis
from kombu import Message

from celerykit import patches


def unreachable_redis(app: Celery) -> RedisBackend:
    with socket.socket() as probe:  # a port that was free a moment ago: nothing listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 0}}
    return RedisBackend(app=app, url=f"redis://127.0.0.1:{port}/0")


ORIGINAL = getattr(Request._announce_cancelled, "__wrapped__", Request._announce_cancelled)


def cancelled_then_reported(announce_cancelled) -> tuple[list[str], str]:
    """Cancel a running task while the backend is down, then report its killed child once the
    backend works again. Returns the acknowledgements made and the state the backend holds."""
    app = Celery("patch-test", broker="memory://", backend="cache+memory://", set_as_current=False)

    @app.task(name="patch-test.long", acks_late=True)
    def long():
        pass  # pragma: no cover - never executed: the test plays the worker's part

    task_id = str(uuid.uuid4())  # the in-memory backend is one per process
    headers, _, body, _ = app.amqp.as_task_v2(task_id, long.name)
    acks: list[str] = []
    request = Request(
        Message(body=body, headers=headers, delivery_tag=1),
        app=app,
        task=long,
        decoded=True,
        body=body,
        on_ack=lambda *_: acks.append("ack"),
    )
    working = long.backend
    long.backend = unreachable_redis(app)
    try:
        announce_cancelled(request)
    except Exception as error:  # the unpatched Celery raises here, as in the worker's log
        print(f"announcing the cancellation raised {error!r}")
    long.backend = working
    try:  # the pool reports the killed child
        raise Terminated(15)
    except Terminated:
        request.on_failure(ExceptionInfo())
    return acks, working.get_state(task_id)


def test_unpatched_celery_revokes_and_acknowledges_a_task_it_cancelled():
    """The bug, on the installed Celery: nothing revoked the task, yet it ends REVOKED and its
    message is acknowledged (gone from Redis: never run again)."""
    assert cancelled_then_reported(ORIGINAL) == (["ack"], "REVOKED")


def test_the_kit_keeps_a_cancelled_task_unacknowledged(caplog):
    """Patched: no acknowledgement, no REVOKED state: the message is redelivered; the warning says so."""
    acks, state = cancelled_then_reported(patches.cancel_keeps_the_message(ORIGINAL))
    assert patches.KEPT_AT_BROKER_LOSS in caplog.text
    assert acks == []
    assert state == "PENDING"  # the RETRY store failed; nothing else was stored


def test_the_installed_versions_are_ones_the_fixes_were_checked_against():
    assert patches.affected(patches.version(celery), patches.CELERY_AFFECTED), (
        f"Celery {celery.__version__}: read celery/worker/request.py (cancel, _announce_cancelled, on_failure) "
        "and celery/concurrency/asynpool.py (_event_process_exit, process_flush_queues, _create_worker_process), "
        "then widen or drop CELERY_AFFECTED"
    )
    assert patches.affected(patches.version(billiard), patches.BILLIARD_AFFECTED), (
        f"billiard {billiard.__version__}: read billiard/pool.py (_join_exited_workers) and widen or drop "
        "BILLIARD_AFFECTED"
    )
    assert patches.affected(patches.version(flower), patches.FLOWER_AFFECTED), (
        f"Flower {flower.__version__}: read flower/utils/search.py (_kwargs_pairs, SearchDocument.from_task) "
        "and widen or drop FLOWER_AFFECTED"
    )
    applied = [
        "cancel keeps the message",
        "a lost connection's close cannot stop the worker",
        "a heartbeat never waits for the broker",
        "task events are sent in batches",
        "a recycled process is replaced within milliseconds",
        "a freed process gets its next task before the acknowledgement",
        "a cancelled consumer's last message goes back",
        "a fetched task is recorded unacknowledged in the same step",
        "Flower parses a task's keyword arguments once",
        "children let go of the main process's Redis connections",
    ]
    assert patches.apply() == applied
    assert patches.apply() == applied  # twice: still one wrapper each
    assert Request._announce_cancelled.__wrapped__ is ORIGINAL
    assert AsynPool._event_process_exit.celerykit_patched
    assert not patches.affected((5, 8), patches.CELERY_AFFECTED)


def closed_by_the_parent_while_a_child_lives(fix: bool) -> bool:
    """A parent holding a TCP connection to a server on Redis's port forks a child (as a worker
    replacing a recycled pool process does), then closes its end. Returns whether the server saw
    the connection close while the child was still running."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.settimeout(2)
        if fix:
            patches._parents_connections.clear()
            patches._parents_connections.update(patches.redis_connections({port}))
        ready_r, ready_w = os.pipe()
        child = os.fork()
        if child == 0:  # the pool process: let go (or not), say so, then live on for a while
            try:
                if fix:
                    patches.drop_inherited_connections()
                os.write(ready_w, b"x")
                time.sleep(5)
            finally:
                os._exit(0)
        try:
            os.read(ready_r, 1)
            client.close()  # the main process closes its connection (a reconnect)
            try:
                return accepted.recv(1) == b""  # EOF: the connection is gone
            except TimeoutError:  # still open: the child holds it
                return False
        finally:
            os.kill(child, signal.SIGKILL)
            os.waitpid(child, 0)
            accepted.close()
            os.close(ready_r)
            os.close(ready_w)


def test_a_pool_process_does_not_keep_the_main_process_redis_connections_open():
    assert not closed_by_the_parent_while_a_child_lives(fix=False)  # the hazard, as forked
    assert closed_by_the_parent_while_a_child_lives(fix=True)


def test_only_connections_to_redis_are_let_go():
    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        port = server.getsockname()[1]
        assert client.fileno() in patches.redis_connections({port})
        assert client.fileno() not in patches.redis_connections({port + 1})
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as unix:
            assert unix.fileno() not in patches.redis_connections({port})


def test_closing_a_lost_connection_cannot_stop_the_worker(caplog):
    """What Celery 5.7's consumer meets closing a Redis connection it lost (the channel's
    connection was cleared by collect()): the error must not end the worker."""
    from celery.worker.consumer import consumer
    from kombu import Connection

    patches.apply()

    def close_after_collect():
        raise AttributeError("'NoneType' object has no attribute 'hostname'")

    connection = Connection("redis://127.0.0.1:1/0")
    consumer.ignore_errors(connection, close_after_collect)  # does not raise
    assert "Closing the lost broker connection failed" in caplog.text
    unpatched = consumer.ignore_errors.__wrapped__
    try:
        unpatched(connection, close_after_collect)
    except AttributeError:
        pass
    else:
        raise AssertionError("kombu's ignore_errors ignores this now: drop the fix")


HEARTBEAT_AFTER_THE_BROKER_WENT = """
import sys
from celery import Celery
from celery.worker.heartbeat import Heart
from kombu.asynchronous.timer import Timer
from celerykit import patches

if sys.argv[2] == "fixed":
    patches.apply()
app = Celery("heartbeat-test", broker=sys.argv[1], set_as_current=False)
with app.connection_for_write() as connection:
    heart = Heart(Timer(), app.events.Dispatcher(connection, enabled=True), interval=2)
    heart._send("worker-heartbeat")  # the broker is up: sent
    print("sent", flush=True)
    sys.stdin.readline()  # the test stops the broker
    heart._send("worker-heartbeat")
    print("returned", flush=True)
"""


def heartbeat_returns_after_the_broker_went(tmp_path, fixed: bool, wait: float) -> bool:
    """A worker's heartbeat (Celery's own Heart and event dispatcher) sent while its Redis is up, then
    again once it is gone. Returns whether the second send came back within `wait` seconds (kombu
    retries once a second)."""
    tmp_path.mkdir()
    server = start_redis(tmp_path, notifications=False)
    script = tmp_path / "heartbeat.py"
    script.write_text(HEARTBEAT_AFTER_THE_BROKER_WENT)
    command = [sys.executable, str(script), server.url, "fixed" if fixed else "as-is"]
    with subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) as worker:
        try:
            assert worker.stdout.readline().strip() == "sent"
            stop_redis(server)
            worker.stdin.write("\n")
            worker.stdin.flush()
            try:
                worker.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                return False
            return worker.stdout.read().strip() == "returned"
        finally:
            worker.kill()
            if server.process.poll() is None:
                stop_redis(server)


def test_a_heartbeat_never_waits_for_a_broker_that_is_gone(tmp_path):
    """Celery 5.7 retries a heartbeat's broker connection without limit, in the event loop, so a
    SIGTERM is never acted on; with the fix the send gives up at once (and the consumer reconnects)."""
    assert heartbeat_returns_after_the_broker_went(tmp_path / "fixed", fixed=True, wait=30)
    assert not heartbeat_returns_after_the_broker_went(tmp_path / "as-is", fixed=False, wait=8), (
        "Celery's heartbeat no longer waits for the broker: drop the fix"
    )
