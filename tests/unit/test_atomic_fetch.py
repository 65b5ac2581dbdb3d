"""The fetch window and its fix (celerykit.atomic_fetch), on kombu's real Redis transport and a real Redis.

Each test runs against a throw-away `redis-server` on a free loopback port (no persistence); the
fallback tests use a second one without keyspace notifications. `scripts/bootstrap-host.sh
--test-tools` installs the binary (CI does): no test skips without it.

The "without the fix" halves run kombu's own code (its BRPOP, or a fresh interpreter without the
fix) and show the message lost; the same steps with the fix show it in `unacked`, restorable.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid
from collections.abc import Callable, Iterator

import kombu
import pytest
import redis
from celerykit_testing.local_redis import Server
from kombu import Connection, Consumer, Producer, Queue
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis

from celerykit import atomic_fetch, patches


@pytest.fixture
def broker(redis_el) -> Server:
    """The notifying Redis, empty, its command counts reset."""
    redis_el.client().flushall()
    redis_el.client().config_resetstat()
    return redis_el


@pytest.fixture
def plain_broker(redis_plain) -> Server:
    redis_plain.client().flushall()
    redis_plain.client().config_resetstat()
    return redis_plain


@pytest.fixture(autouse=True, scope="module")
def fixed():
    """Applied once for the module, as the kit does per process: it changes nothing for a connection
    without an event loop, and the unfixed end-to-end case runs in a fresh interpreter."""
    assert atomic_fetch.apply() == ["a fetched task is recorded unacknowledged in the same step"]


def publish(url: str, queue: str, body, priority: int | None = None) -> str:
    """Send one message as kombu does: one LPUSH, with a delivery tag of kombu's format; return the tag."""
    tag = str(uuid.uuid4())
    with Connection(url) as connection:
        channel = connection.channel()
        channel._next_delivery_tag = lambda: tag  # kombu's own is uuid(): this one is known here
        Producer(channel).publish(body, routing_key=queue, priority=priority)
    return tag


def wait_for(condition: Callable[[], bool], timeout: float = 5.0, step: Callable[[], None] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        step() if step else time.sleep(0.005)


def stores(server: Server, queue: str = "w") -> dict[str, int]:
    client = server.client()
    return {"queue": client.llen(queue), "unacked": client.hlen("unacked"), "index": client.zcard("unacked_index")}


def restore_overdue(server: Server) -> None:
    """What any worker's sweep does once the visibility timeout has passed (here: at once)."""
    with Connection(server.url, transport_options={"visibility_timeout": 0}) as connection:
        connection.default_channel.qos.restore_visible(interval=1)


class Worker:
    """A consumer driven by kombu's event loop, as Celery's worker main process is."""

    def __init__(self, url: str, queues: list[str], prefetch: int = 10, **transport_options):
        self.connection = Connection(url, transport_options=transport_options)
        self.connection.connect()
        self.hub = Hub()
        self.connection.transport.register_with_event_loop(self.connection.connection, self.hub)
        self.channel = self.connection.channel()
        self.received: list[tuple[dict, kombu.Message, float]] = []
        self.consumer = Consumer(self.channel, [Queue(q) for q in queues], callbacks=[self.got], accept=["json"])
        self.consumer.qos(prefetch_count=prefetch)
        self.consumer.consume()
        self.loop = self.hub.create_loop()

    def got(self, body, message) -> None:
        self.received.append((body, message, time.monotonic()))

    def turn(self) -> None:
        next(self.loop)

    def until(self, condition: Callable[[], bool], timeout: float = 5.0) -> None:
        wait_for(condition, timeout, self.turn)

    @property
    def cycle(self):
        return self.connection.transport.cycle

    def close(self) -> None:
        self.channel.close()
        self.connection.release()
        self.hub.close()


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    made: list[Worker] = []
    yield made
    for worker in made:
        worker.close()


def test_the_installed_kombu_is_the_one_the_fix_was_read_on():
    assert patches.affected(patches.version(kombu), atomic_fetch.KOMBU_READ), (
        f"kombu {kombu.__version__}: read kombu/transport/redis.py (_brpop_start, _brpop_read, QoS.append, "
        "MultiChannelPoller, register_with_event_loop) and widen or drop atomic_fetch.KOMBU_READ"
    )
    once = kombu_redis.MultiChannelPoller._register_BRPOP
    assert atomic_fetch.apply() == atomic_fetch.apply()
    assert kombu_redis.MultiChannelPoller._register_BRPOP is once  # wrapped once per process
    assert not atomic_fetch.affected((5, 8), atomic_fetch.KOMBU_READ)


# -- the window ------------------------------------------------------------------------------------------


def test_without_the_fix_a_message_redis_handed_out_is_lost(broker):
    """kombu's BRPOP, sent as its poller sends it; Redis hands the message out; the worker dies before
    reading the reply. The message is in no queue and not in unacked: no sweep brings it back."""
    publish(broker.url, "w", {"n": 1})
    with Connection(broker.url) as connection:
        channel = connection.channel()
        Consumer(channel, [Queue("w")], callbacks=[lambda *_: None], accept=["json"]).consume()
        connection.transport.cycle._register_BRPOP(channel)  # no event loop: stock BRPOP
        assert channel._in_poll
        wait_for(lambda: stores(broker)["queue"] == 0)  # Redis ran it; the reply waits in the socket
        channel.client.connection.disconnect()  # the process dies here
    restore_overdue(broker)
    assert stores(broker) == {"queue": 0, "unacked": 0, "index": 0}


@pytest.mark.parametrize("prefix", ["", "kit:"])
def test_with_the_fix_the_message_is_in_unacked_the_moment_it_leaves_its_queue(broker, prefix):
    """The script pops and records; the worker dies before Python sees the message (kombu's _deliver
    raises): the record is there, in QoS.append's format, and a sweep puts the message back."""
    options = {"global_keyprefix": prefix} if prefix else {}
    with Connection(broker.url, transport_options=options) as connection:
        channel = connection.channel()
        Producer(channel).publish({"n": 1}, routing_key="w", declare=[Queue("w")])
        pushed = json.loads(broker.client().lindex(f"{prefix}w", 0))
        tag = pushed["properties"]["delivery_tag"]
        Consumer(channel, [Queue("w")], callbacks=[lambda *_: None], accept=["json"]).consume()

        def dies(*_):
            raise SystemExit("killed")

        connection.transport._deliver = dies
        with pytest.raises(SystemExit):
            atomic_fetch.pop_and_record(channel)
    client = broker.client()
    assert client.llen(f"{prefix}w") == 0
    assert client.hkeys(f"{prefix}unacked") == [tag.encode()]
    assert client.zrange(f"{prefix}unacked_index", 0, -1) == [tag.encode()]
    assert json.loads(client.hget(f"{prefix}unacked", tag)) == [pushed, "", "w"]  # as QoS.append writes it
    with Connection(broker.url, transport_options={**options, "visibility_timeout": 0}) as connection:
        connection.default_channel.qos.restore_visible(interval=1)
    back = json.loads(client.lindex(f"{prefix}w", 0))
    assert back["properties"]["delivery_tag"] == tag
    assert back["properties"]["delivery_info"]["redelivered"] is True
    assert client.hlen(f"{prefix}unacked") == 0


@pytest.mark.parametrize("fix", [False, True], ids=["kombu", "fixed"])
def test_a_full_redis_keeps_the_message_in_its_queue(broker, fix, caplog):
    """At maxmemory (noeviction) Redis refuses writes but still pops. kombu: BRPOP takes the message,
    then QoS.append's ZADD is refused: the message is gone. Fixed: the script's first write is refused
    before anything is popped; the worker logs it and tries again at the next run."""
    tag = publish(broker.url, "w", {"n": 1})
    client = broker.client()
    with Connection(broker.url) as connection:
        channel = connection.channel()
        Consumer(channel, [Queue("w")], callbacks=[lambda *_: None], accept=["json"]).consume()
        client.config_set("maxmemory", 1)
        try:
            if fix:
                assert not atomic_fetch.pop_and_record(channel)
            else:
                connection.transport.cycle._register_BRPOP(channel)  # no event loop: stock BRPOP
                with pytest.raises(redis.ResponseError, match="maxmemory"):
                    channel._brpop_read()
        finally:
            client.config_set("maxmemory", 0)
    if fix:
        assert "Could not fetch" in caplog.text
        assert json.loads(client.lindex("w", 0))["properties"]["delivery_tag"] == tag
        assert stores(broker) == {"queue": 1, "unacked": 0, "index": 0}
    else:
        assert stores(broker) == {"queue": 0, "unacked": 0, "index": 0}  # lost


KILLED_AT_DELIVERY = textwrap.dedent(
    """
    import os, signal, sys
    from kombu import Connection, Consumer, Queue
    from kombu.asynchronous import Hub
    from kombu.transport import virtual

    url, fix = sys.argv[1], sys.argv[2] == "fix"
    if fix:
        from celerykit import atomic_fetch
        atomic_fetch.apply()

    def killed(*_):  # the message has just reached Python: SIGKILL, as the OOM killer sends
        os.kill(os.getpid(), signal.SIGKILL)

    virtual.Transport._deliver = killed
    connection = Connection(url)
    connection.connect()
    hub = Hub()
    connection.transport.register_with_event_loop(connection.connection, hub)
    channel = connection.channel()
    consumer = Consumer(channel, [Queue("w")], callbacks=[lambda *_: None], accept=["json"])
    consumer.qos(prefetch_count=1)
    consumer.consume()
    connection.transport.cycle.on_poll_start()  # BRPOP sent, or the doorbell subscribed
    print("waiting", flush=True)
    loop = hub.create_loop()
    while True:
        next(loop)
    """
)


@pytest.mark.parametrize("fix", [False, True], ids=["kombu", "fixed"])
def test_a_worker_killed_the_instant_a_message_reaches_it(broker, fix):
    """A fresh interpreter (kombu alone, or with the fix) consumes from an event loop and is killed
    with SIGKILL when the message reaches Python. kombu: the message is gone. Fixed: it is in unacked
    and the sweep puts it back."""
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_AT_DELIVERY, broker.url, "fix" if fix else "kombu"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "waiting"
        publish(broker.url, "w", {"n": 1})
        assert child.wait(timeout=10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    left = stores(broker)
    restore_overdue(broker)
    if fix:
        assert left == {"queue": 0, "unacked": 1, "index": 1}
        assert stores(broker) == {"queue": 1, "unacked": 0, "index": 0}
    else:
        assert left == {"queue": 0, "unacked": 0, "index": 0}
        assert stores(broker) == {"queue": 0, "unacked": 0, "index": 0}  # lost


# -- same semantics as BRPOP --------------------------------------------------------------------------------


def fetch_order(server: Server, queues: list[str], sent: list[tuple[str, int, int]], atomic: bool) -> list[int]:
    """Fill the queues ((queue, priority, n) in sending order), consume them all with kombu's BRPOP or
    with the script, from one channel whose consumers were added in `queues` order; return the n's."""
    server.client().flushall()
    for queue, priority, n in sent:
        publish(server.url, queue, {"n": n}, priority=priority or None)
    got: list[int] = []

    def received(body, _message) -> None:
        got.append(body["n"])

    with Connection(server.url) as connection:
        channel = connection.channel()
        for queue in queues:
            Consumer(channel, [Queue(queue)], callbacks=[received], accept=["json"]).consume()
        for _ in sent:
            if atomic:
                assert atomic_fetch.pop_and_record(channel)
            else:
                connection.transport.cycle._register_BRPOP(channel)  # no event loop: stock BRPOP
                channel._brpop_read()
    return got


ORDERS = {
    "priorities": (["q"], [("q", 9, 1), ("q", 0, 2), ("q", 3, 3), ("q", 6, 4), ("q", 0, 5), ("q", 9, 6)]),
    "rotation": (["a", "b"], [("a", 0, 1), ("a", 0, 2), ("a", 0, 3), ("b", 0, 4), ("b", 0, 5), ("b", 0, 6)]),
    "priority across queues": (
        ["a", "b", "c"],
        [("a", 9, 1), ("b", 6, 2), ("c", 0, 3), ("a", 0, 4), ("b", 0, 5), ("c", 3, 6), ("a", 3, 7), ("b", 9, 8)],
    ),
}


@pytest.mark.parametrize("case", ORDERS)
def test_the_script_takes_messages_in_the_order_brpop_does(broker, case):
    queues, sent = ORDERS[case]
    kombu_order = fetch_order(broker, queues, sent, atomic=False)
    assert fetch_order(broker, queues, sent, atomic=True) == kombu_order
    if case == "rotation":
        assert kombu_order == [1, 4, 2, 5, 3, 6]  # the queues alternate: the comparison can tell
    if case == "priorities":
        assert kombu_order == [2, 5, 3, 4, 1, 6]


def test_a_queue_consumed_without_acknowledgement_is_not_recorded(broker):
    """Such as Celery's reply queues: kombu never records their messages, and neither does the script."""
    publish(broker.url, "noack", {"n": 1})
    publish(broker.url, "w", {"n": 2})
    got = []
    with Connection(broker.url) as connection:
        channel = connection.channel()
        Consumer(channel, [Queue("noack")], callbacks=[lambda b, _: got.append(b["n"])], no_ack=True).consume()
        Consumer(channel, [Queue("w")], callbacks=[lambda b, _: got.append(b["n"])], accept=["json"]).consume()
        assert atomic_fetch.pop_and_record(channel)
        assert got == [1]
        assert stores(broker, "noack") == {"queue": 0, "unacked": 0, "index": 0}
        assert atomic_fetch.pop_and_record(channel)
        assert got == [1, 2]
        assert stores(broker) == {"queue": 0, "unacked": 1, "index": 1}


def commands(server: Server) -> dict[str, int]:
    return {name[len("cmdstat_") :]: stat["calls"] for name, stat in server.client().info("commandstats").items()}


def test_the_worker_does_not_record_the_message_a_second_time(broker, workers, monkeypatch):
    """One HSET per message (the script's) and no MULTI/EXEC from QoS.append; kombu's own append,
    put back in the same flow, shows that the count would see a second write."""
    worker = Worker(broker.url, ["w"])
    workers.append(worker)
    worker.until(lambda: atomic_fetch._registered(worker.cycle, worker.channel))
    before = commands(broker)
    publish(broker.url, "w", {"n": 1})
    worker.until(lambda: len(worker.received) == 1)
    after = commands(broker)
    assert after["hset"] - before.get("hset", 0) == 1
    assert after["zadd"] - before.get("zadd", 0) == 1
    assert after.get("exec", 0) == before.get("exec", 0)  # QoS.append's MULTI/EXEC did not run
    assert stores(broker) == {"queue": 0, "unacked": 1, "index": 1}

    monkeypatch.setattr(kombu_redis.QoS, "append", kombu_redis.QoS.append.__wrapped__)
    before = commands(broker)
    publish(broker.url, "w", {"n": 2})
    worker.until(lambda: len(worker.received) == 2)
    after = commands(broker)
    assert after["hset"] - before["hset"] == 2
    assert after["exec"] - before.get("exec", 0) == 1


def test_ack_leaves_nothing_and_a_requeue_puts_the_message_back(broker, workers):
    worker = Worker(broker.url, ["w"], prefetch=2)
    workers.append(worker)
    first = publish(broker.url, "w", {"n": 1})
    second = publish(broker.url, "w", {"n": 2})
    worker.until(lambda: len(worker.received) == 2)
    assert stores(broker) == {"queue": 0, "unacked": 2, "index": 2}
    (_, one, _), (_, two, _) = worker.received
    assert (one.delivery_tag, two.delivery_tag) == (first, second)
    one.ack()
    assert stores(broker) == {"queue": 0, "unacked": 1, "index": 1}
    assert broker.client().hkeys("unacked") == [second.encode()]
    two.reject(requeue=True)  # as task_reject_on_worker_lost does
    assert stores(broker)["unacked"] == 0 and stores(broker)["index"] == 0
    worker.until(lambda: len(worker.received) == 3)  # its push rang the doorbell: delivered again
    body, three, _ = worker.received[2]
    assert (body, three.delivery_tag, three.delivery_info["redelivered"]) == ({"n": 2}, second, True)
    three.ack()
    assert stores(broker) == {"queue": 0, "unacked": 0, "index": 0}


def test_prefetch_is_respected_and_a_message_waits_in_redis_meanwhile(broker, workers):
    worker = Worker(broker.url, ["w"], prefetch=1)
    workers.append(worker)
    publish(broker.url, "w", {"n": 1})
    publish(broker.url, "w", {"n": 2})
    worker.until(lambda: len(worker.received) == 1)
    for _ in range(2):  # each up to 1 s: the safety run comes, and finds no credit
        worker.turn()
    assert len(worker.received) == 1
    assert stores(broker) == {"queue": 1, "unacked": 1, "index": 1}  # the second one: still in its queue
    worker.received[0][1].ack()
    worker.until(lambda: len(worker.received) == 2)
    assert [body["n"] for body, _, _ in worker.received] == [1, 2]


def test_a_turn_fetches_a_few_and_the_doorbell_brings_the_loop_back_for_the_rest(broker, workers):
    """Without a prefetch limit a turn stops after MAX_PER_TURN messages, so the event loop serves its
    other work, and PINGs the doorbell: its reply wakes the poll at once, as a BRPOP's reply would
    (without it the rest would wait for the next timer, up to a second per turn)."""
    waiting = atomic_fetch.MAX_PER_TURN + 5
    for n in range(waiting):  # before the doorbell exists: no keyspace event will make it readable
        publish(broker.url, "w", {"n": n})
    worker = Worker(broker.url, ["w"], prefetch=0)
    workers.append(worker)
    worker.cycle.on_poll_start()  # one turn's start: subscribe, then fetch
    assert len(worker.received) == atomic_fetch.MAX_PER_TURN
    assert worker.channel._celerykit_doorbell.connection.can_read(timeout=5)  # the PING's reply
    worker.until(lambda: len(worker.received) == waiting)
    assert [body["n"] for body, _, _ in worker.received] == list(range(waiting))


def test_a_dropped_doorbell_subscribes_again(broker, workers, caplog):
    """Redis closes the doorbell's connection (as at its pub/sub output-buffer limit): the worker
    subscribes again and goes on fetching. Database 3: the doorbell listens to that database's events."""
    url = broker.url[: -len("0")] + "3"
    worker = Worker(url, ["w"])
    workers.append(worker)
    worker.until(lambda: atomic_fetch._registered(worker.cycle, worker.channel))
    first = worker.channel._celerykit_doorbell.connection._sock
    publish(url, "w", {"n": 1})
    worker.until(lambda: len(worker.received) == 1)
    assert broker.client().client_kill_filter(_type="pubsub") == 1
    publish(url, "w", {"n": 2})
    worker.until(lambda: len(worker.received) == 2)
    worker.until(lambda: atomic_fetch._registered(worker.cycle, worker.channel))
    assert worker.channel._celerykit_doorbell.connection._sock is not first
    assert "subscribing again" in caplog.text
    publish(url, "w", {"n": 3})
    worker.until(lambda: len(worker.received) == 3)
    assert [body["n"] for body, _, _ in worker.received] == [1, 2, 3]
    assert redis.Redis.from_url(url).hlen("unacked") == 3


def rings(worker: Worker) -> int:
    """Doorbell messages the worker's event loop has read so far (pushes, pops, confirmations)."""
    return worker.channel.__dict__.get("_test_rings", 0)


def counting_rings(monkeypatch) -> None:
    read = atomic_fetch.wake_read

    def counted(channel):
        channel._test_rings = channel.__dict__.get("_test_rings", 0) + 1
        return read(channel)

    monkeypatch.setattr(atomic_fetch, "wake_read", counted)


def test_a_push_wakes_only_the_workers_of_its_queue(broker, workers, monkeypatch):
    """Each doorbell listens to its own queues' lists: a busy queue next door wakes nobody else."""
    counting_rings(monkeypatch)
    busy, idle = Worker(broker.url, ["busy"], prefetch=100), Worker(broker.url, ["idle"])
    workers += [busy, idle]
    for worker in workers:
        worker.until(lambda w=worker: atomic_fetch._registered(w.cycle, w.channel))
    for worker in workers:
        worker.turn()
    before = rings(idle)
    for n in range(20):
        publish(broker.url, "busy", {"n": n})
    busy.until(lambda: len(busy.received) == 20)
    for _ in range(5):
        idle.turn()
    assert rings(busy) >= 1
    assert rings(idle) == before  # nothing read: the 20 pushes never reached it
    publish(broker.url, "idle", {"n": 1})
    idle.until(lambda: len(idle.received) == 1)
    assert rings(idle) > before


def test_a_queue_consumed_later_is_watched_too(broker, workers):
    """Celery's add_consumer: the doorbell subscribes to the new queue's lists, every priority."""
    worker = Worker(broker.url, ["w"])
    workers.append(worker)
    worker.until(lambda: atomic_fetch._registered(worker.cycle, worker.channel))
    worker.consumer.add_queue(Queue("later"))
    worker.consumer.consume()
    worker.turn()
    assert {"__keyspace@0__:later", "__keyspace@0__:later\x06\x169"} <= worker.channel._celerykit_watching
    publish(broker.url, "later", {"n": 1}, priority=9)
    worker.until(lambda: len(worker.received) == 1)
    assert worker.received[0][0] == {"n": 1}


# -- without notifications ----------------------------------------------------------------------------------


def test_without_notifications_the_worker_logs_the_setting_and_keeps_brpop(plain_broker, workers, caplog):
    patches.apply()  # the kit's put-back fixes still serve a channel that stays on BRPOP
    worker = Worker(plain_broker.url, ["w"])
    workers.append(worker)
    with caplog.at_level(logging.ERROR, logger="celerykit.atomic_fetch"):
        worker.turn()
    assert "notify-keyspace-events Kl" in caplog.text
    assert worker.cycle._celerykit_atomic is False
    assert worker.channel._in_poll  # a BRPOP waits
    assert list(worker.cycle._fd_to_chan.values()) == [(worker.channel, "BRPOP")]
    publish(plain_broker.url, "w", {"n": 1})
    worker.until(lambda: len(worker.received) == 1)
    assert stores(plain_broker) == {"queue": 0, "unacked": 1, "index": 1}  # recorded by QoS.append
    assert commands(plain_broker)["brpop"] >= 1

    worker.cycle.on_poll_start()  # a BRPOP waits again; a message sent now is handed to it
    assert worker.channel._in_poll
    publish(plain_broker.url, "w", {"n": 2})
    wait_for(lambda: stores(plain_broker)["queue"] == 0)
    worker.consumer.cancel()  # the kit's fix reads the reply and puts the message back
    assert stores(plain_broker)["queue"] == 1


# -- a real Celery worker -----------------------------------------------------------------------------------

N_BACK_TO_BACK = 100  # tasks sent at once to a one-process pool
CELERY_APP = """
from celery import Celery

from celerykit import patches

patches.apply()
app = Celery("fetchapp", broker={url!r}, backend={url!r})
app.conf.update(
    task_acks_late=True, worker_prefetch_multiplier=1, broker_transport_options={{"visibility_timeout": 60}}
)


@app.task(name="fetchapp.add")
def add(x, y):
    return x + y
"""


@pytest.mark.parametrize("pool", [["-P", "solo"], ["-P", "prefork", "-c", "1"]], ids=["solo", "prefork"])
def test_a_celery_worker_fetches_through_the_doorbell(broker, tmp_path, pool):
    """Celery's own consumer (its event loop; with the prefork pool, the pool's writes to its process
    come from that loop's next turn) takes tasks with the script, never with BRPOP, one after the other
    without waiting for a timer between them, and leaves nothing unacknowledged."""
    (tmp_path / "fetchapp.py").write_text(CELERY_APP.format(url=broker.url))
    argv = [sys.executable, "-m", "celery", "-A", "fetchapp", "worker", *pool, "-Q", "fetchq"]
    argv += ["--without-gossip", "--without-mingle", "--without-heartbeat", "-l", "INFO"]
    env = {**os.environ, "PYTHONPATH": str(tmp_path)}
    log = tmp_path / "worker.log"
    with log.open("w") as out:
        worker = subprocess.Popen(argv, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        sys.path.insert(0, str(tmp_path))
        try:
            import fetchapp
        finally:
            sys.path.remove(str(tmp_path))
        fetchapp.add.apply_async((0, 0), queue="fetchq").get(timeout=30)  # the worker is up
        # A task waiting for the loop's next timer (up to a second each, as the first version of the
        # fix made prefork pools do) would take minutes here; the loop runs them in well under one.
        results = [fetchapp.add.apply_async((n, n), queue="fetchq") for n in range(N_BACK_TO_BACK)]
        deadline = time.monotonic() + N_BACK_TO_BACK / 10
        done = [result.get(timeout=max(0.1, deadline - time.monotonic())) for result in results]
        assert done == [2 * n for n in range(N_BACK_TO_BACK)], log.read_text()
    finally:
        worker.terminate()
        worker.wait(timeout=15)
        sys.modules.pop("fetchapp", None)
    counted = commands(broker)
    assert "brpop" not in counted, log.read_text()
    assert counted["evalsha"] >= N_BACK_TO_BACK
    assert stores(broker, "fetchq") == {"queue": 0, "unacked": 0, "index": 0}
    assert "notify-keyspace-events" not in log.read_text()
