"""Fault drills on a deployment with its own settings, each counted task by task: written once, run
by the compose tests (tests/stack/test_faults.py) and the Molecule verifier
(molecule/shared/faults/test_faults.py), which import them and give the `deployment` fixture.

Every drill leaves the deployment as it found it: what was killed or restarted runs again.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest

from celerykit.verify import checks
from celerykit_testing import drills
from celerykit_testing.deployment import FLOWER, REDIS, Deployment, worker

# In the order the drills run (a star import brings them in this order).
__all__ = [  # noqa: RUF022
    "test_killed_pool_processes_requeue_their_tasks_at_once",
    "test_a_graceful_pool_restart_lets_the_running_task_finish",
    "test_workers_resume_and_queued_tasks_survive_a_redis_crash",
    "test_flower_comes_back_with_its_task_history",
    "test_flower_survives_a_damaged_state_file",
]


def test_killed_pool_processes_requeue_their_tasks_at_once(deployment: Deployment):
    """Fault 1 (pool processes): SIGKILL the prefork children of the pool consuming high_priority
    while they run long tasks (4 more queued behind them). task_reject_on_worker_lost puts each
    back at once; all succeed on that pool, the interrupted ones are started twice and finished
    once, and the pool itself never went down."""
    target, pool = deployment.target, deployment.pool_of("high_priority")
    main, children = deployment.pool_processes(pool)
    restarts = deployment.restarts(worker(pool))
    killed: list[int] = []
    outcome = drills.kill_drill(
        target,
        queue="high_priority",
        running=len(children),  # one long task per prefork process
        queued=4,
        seconds=5,
        inject=lambda: killed.extend(deployment.kill_pool_processes(pool)),
        timeout=120,
    )
    drills.record(
        "fault1-kill-pool-processes",
        deployment=deployment.kind,
        host=deployment.where(worker(pool)),
        killed=len(killed),
        **outcome.summary(),
    )
    assert killed
    assert outcome.lost == [] and outcome.executed_twice == [], outcome.summary()
    assert len(outcome.restarted) == len(children), outcome.summary()  # exactly the ones that were running
    assert outcome.workers == {pool: len(children) + 4}
    assert deployment.pool_processes(pool)[0] == main and deployment.restarts(worker(pool)) == restarts
    deployment.wait_running(worker(pool))


def test_a_graceful_pool_restart_lets_the_running_task_finish(deployment: Deployment):
    """Fault 2: restart the pool consuming low_priority (TERM) while a task runs: warm shutdown
    (the restart waits for it), SUCCESS, no WorkerLostError in its log, the queued ones run after."""
    target, pool = deployment.target, deployment.pool_of("low_priority")
    since = time.time()
    running = drills.send_tally(target, "low_priority", seconds=6)
    drills.wait_started(target, [running])
    queued = drills.send_tallies(target, 3, "low_priority")
    start = time.monotonic()
    deployment.restart_pool(pool)
    restart_seconds = time.monotonic() - start
    deployment.wait_running(worker(pool))
    outcome = drills.settle(target, [running, *queued], timeout=120, since=start)
    logs = deployment.logs(worker(pool), since)
    drills.record(
        "fault2-graceful-restart",
        deployment=deployment.kind,
        restart_seconds=round(restart_seconds, 1),
        **outcome.summary(),
    )
    assert outcome.lost == [] and outcome.restarted == [] and outcome.executed_twice == [], outcome.summary()
    assert "WorkerLostError" not in logs
    assert drills.task_info(target, running)["worker"].startswith(f"{pool}@")


def test_workers_resume_and_queued_tasks_survive_a_redis_crash(deployment: Deployment):
    """Fault 3: tasks wait in Redis (the low pool stops consuming its queue), Redis is SIGKILLed
    and started again. Every pool consumes again within 30 s; every queued task runs once, on
    the low pool (AOF everysec: the promise covers tasks enqueued more than ~1 s before the crash).

    Flower learns of a task from worker events, sent over Redis pub/sub: those published while
    Flower reconnects are gone. For a task Flower did not see finish, the result backend has the
    word: it counts as run (once, on the low pool) when the backend holds its SUCCESS and tally.
    """
    target, pools = deployment.target, deployment.pools()
    pool = deployment.pool_of("low_priority")
    drills.wait_pools(target, pools)  # Flower knows the worker (404 otherwise)
    consumer = target.flower(f"api/worker/queue/%s/{drills.worker_name(target, pool)}?queue=low_priority")
    assert target.request("POST", consumer % "cancel-consumer").status == 200
    try:
        queued = drills.send_tallies(target, 20, "low_priority")
        time.sleep(1.5)  # appendfsync everysec
        deployment.crash_redis()
        restarted_at = time.time()
        deployment.wait_running(REDIS)
        redis_seconds = time.time() - restarted_at
    finally:
        # The low pool consumes its queue again (retried until its worker is reconnected and answers).
        deadline = time.monotonic() + 120
        while target.request("POST", consumer % "add-consumer").status != 200:
            assert time.monotonic() < deadline, "low pool does not take its queue back"
            time.sleep(1)
    queues = sorted({queue for queues in pools.values() for queue in queues})
    resumed = drills.resume_seconds(target, queues, since=restarted_at)
    outcome = drills.settle(target, queued, timeout=120)
    backend = {task_id: drills.backend_result(target, task_id) for task_id in outcome.lost}
    missed = {
        task_id: tally
        for task_id, (state, tally) in backend.items()
        if state == "SUCCESS" and tally.get("completions") == 1
    }
    lost = sorted(set(outcome.lost) - set(missed))
    ran_on = Counter(outcome.workers) + Counter((t.get("worker") or "?").split("@", 1)[0] for t in missed.values())
    drills.record(
        "fault3-redis-sigkill",
        deployment=deployment.kind,
        redis_healthy_seconds=round(redis_seconds, 1),
        resume_seconds=resumed,
        really_lost=len(lost),
        ran_but_flower_missed_the_events=len(missed),
        **outcome.summary(),
    )
    assert max(resumed.values()) <= 30, resumed
    assert lost == [] and outcome.executed_twice == [], (backend, outcome.summary())
    assert dict(ran_on) == {pool: 20}, (ran_on, backend)
    drills.wait_pools(target, pools)  # the low pool has its queue back, no pool more


@pytest.mark.parametrize("how", ["graceful restart", "sigkill"])
def test_flower_comes_back_with_its_task_history(deployment: Deployment, how: str):
    """Fault 4: 20 tasks finished, then Flower restarted (TERM: it saves at exit) or SIGKILLed
    after its periodic save (the supervisor restarts it): every task is still listed afterwards.
    Only tasks newer than the last save could be missing after a SIGKILL, and these are older."""
    target = deployment.target
    task_ids = drills.send_tallies(target, 20, "high_priority")
    assert drills.settle(target, task_ids, timeout=60).lost == []
    restarts = deployment.restarts(FLOWER)
    if how == "sigkill":
        finished = max(drills.task_info(target, t)["succeeded"] for t in task_ids)
        deadline = time.monotonic() + 60
        while deployment.flower_saved_at() <= finished:  # wait for the periodic save after the last task
            assert time.monotonic() < deadline, "Flower did not save its state"
            time.sleep(0.5)
        deployment.kill_flower()
    else:
        deployment.restart_flower()
    back = drills.flower_back(target)
    deployment.wait_running(FLOWER)
    kept = drills.known(target, task_ids)
    drills.record(
        f"fault4-flower-{how.replace(' ', '-')}",
        deployment=deployment.kind,
        tasks=20,
        kept=kept,
        lost=20 - kept,
        api_back_s=round(back, 1),
    )
    assert kept == 20
    if how == "sigkill":
        assert deployment.restarts(FLOWER) == restarts + 1  # the supervisor brought it back


def test_flower_survives_a_damaged_state_file(deployment: Deployment):
    """Fault 4 (damaged db): garbage in Flower's db file, then SIGKILL (no save at exit): Flower
    moves the file aside and starts with an empty history, once, instead of crash-looping, and
    takes tasks again."""
    target = deployment.target
    before = deployment.restarts(FLOWER)
    deployment.damage_flower_db()
    back = drills.flower_back(target)
    deployment.wait_running(FLOWER)
    restarts = deployment.restarts(FLOWER) - before
    deadline = time.monotonic() + 10  # still up a while later: no crash loop
    while time.monotonic() < deadline:
        assert deployment.restarts(FLOWER) - before == restarts, "Flower restarts again and again"
        time.sleep(1)
    deployment.wait_running(FLOWER)
    files = deployment.flower_files()
    drills.record(
        "fault4-flower-damaged-db",
        deployment=deployment.kind,
        api_back_s=round(back, 1),
        restarts=restarts,
        files=files,
    )
    assert restarts == 1
    assert any(name.endswith(".corrupt") for name in files), files
    assert checks.wait_for_task(target, checks.send_probe(target, "high_priority"))["state"] == "SUCCESS"


# A consumer cancelled while its BRPOP still waits in Redis (Celery's warm shutdown), a message
# sent then (Redis hands it to that BRPOP), and the consumer's process gone before it closed the
# channel (killed during the drain): is the message still in Redis? The kit's workers fetch without
# BRPOP (celerykit.atomic_fetch) unless Redis sends no keyspace events (a managed Redis without the
# setting): this drill takes that path, with the kit's patches and without the one that fixes it,
# to show the loss it prevents.
STALE_BRPOP = """
import json, sys, threading, time
from kombu import Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis
from celerykit.app import app  # the kit's settings and patches
if sys.argv[1] == "unpatched":
    for name in ("_basic_cancel", "close"):
        setattr(kombu_redis.Channel, name, getattr(kombu_redis.Channel, name).__wrapped__)
name = "celerykit-drill-cancelled-consumer"
queue = Queue(name, Exchange(name), routing_key=name)
with app.connection_for_write() as connection:
    queue(connection.default_channel).declare()
    connection.default_channel.queue_purge(name)
consuming = app.connection_for_read()
consuming.transport.register_with_event_loop(consuming.connection, Hub())
consuming.transport.cycle._celerykit_atomic = False  # as when Redis sends no keyspace events: BRPOP
channel = consuming.default_channel
consumer = Consumer(channel, [queue], callbacks=[lambda body, message: None], accept=["json"])
consumer.consume()
consuming.transport.cycle.on_poll_start()  # the worker's event loop sends BRPOP
assert channel._in_poll
def publish():
    time.sleep(0.3)  # while the BRPOP still waits (kombu's brpop_timeout: 1 s)
    with app.connection_for_write() as connection:
        Producer(connection).publish({"n": 1}, exchange=name, routing_key=name, declare=[queue])
sender = threading.Thread(target=publish)
sender.start()
consumer.cancel()  # Celery's warm shutdown stops consuming
sender.join()
time.sleep(0.3)
channel.client.connection._sock.close()  # the process dies: its socket goes, nothing is read
with app.connection_for_write() as connection:
    left = connection.default_channel._size(name)
    connection.default_channel.queue_delete(name)
print(json.dumps({"left": left}))
"""


@pytest.mark.parametrize("patched", [True, False], ids=["patched", "unpatched"])
def test_a_message_handed_to_a_cancelled_consumer_stays_in_redis(deployment: Deployment, patched: bool):
    """Patched, the message is back in its queue; unpatched (kombu as it is), it is gone."""
    import json

    output = deployment.run_python(STALE_BRPOP, "patched" if patched else "unpatched", timeout=120)
    left = json.loads(output.strip().splitlines()[-1])["left"]
    assert left == (1 if patched else 0)


# The main process of a worker killed (SIGKILL) the instant a task reaches it, before it recorded the
# task as unacknowledged: kombu's BRPOP had already taken it from its queue, so it was lost for good.
# The kit records it in the step that takes it (celerykit.atomic_fetch), which needs the keyspace
# events the deployment's Redis sends: this runs on the deployment's own Redis, with the kit's fetch
# and with kombu's BRPOP, and says where the message is afterwards.
KILLED_WHILE_FETCHING = """
import json, os, signal, sys, uuid
from kombu import Consumer, Exchange, Producer, Queue
from kombu.asynchronous import Hub
from kombu.transport import redis as kombu_redis
from celerykit.app import app  # the kit's settings and patches
name, tag = "celerykit-drill-killed-while-fetching", str(uuid.uuid4())
queue = Queue(name, Exchange(name), routing_key=name)
with app.connection_for_write() as connection:
    channel = connection.default_channel
    queue(channel).declare()
    channel.queue_purge(name)
    channel._next_delivery_tag = lambda: tag  # kombu's own is a uuid too: this one is known here
    Producer(channel).publish({"n": 1}, exchange=name, routing_key=name, declare=[queue])
child = os.fork()
if child == 0:  # the worker's main process
    def killed(*_):  # the task reached Python: SIGKILL, as the OOM killer sends
        os.kill(os.getpid(), signal.SIGKILL)
    kombu_redis.QoS.append = killed  # kombu records a BRPOP'd message here; the kit's fetch did already
    consuming = app.connection_for_read()
    hub = Hub()
    consuming.transport.register_with_event_loop(consuming.connection, hub)
    if sys.argv[1] == "brpop":
        consuming.transport.cycle._celerykit_atomic = False
    Consumer(consuming.default_channel, [queue], callbacks=[lambda *_: None], accept=["json"]).consume()
    loop = hub.create_loop()
    for _ in range(2000):  # a few seconds at most; the fetch comes within the first turns
        next(loop)
    os._exit(3)
_, status = os.waitpid(child, 0)
with app.connection_for_write() as connection:
    channel = connection.default_channel
    client = channel.client
    found = {"killed": os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL,
             "queued": channel._size(name), "unacked": bool(client.hexists(channel.unacked_key, tag))}
    client.hdel(channel.unacked_key, tag)
    client.zrem(channel.unacked_index_key, tag)
    channel.queue_delete(name)
print(json.dumps(found))
"""


@pytest.mark.parametrize("fetch", ["kit", "brpop"])
def test_a_worker_killed_while_it_fetches_a_task_loses_nothing(deployment: Deployment, fetch: str):
    """The kit's fetch: the killed worker's task is in Redis's unacknowledged set, so it runs again after
    the visibility timeout. kombu's BRPOP, as it is: the task is gone from Redis."""
    import json

    output = deployment.run_python(KILLED_WHILE_FETCHING, fetch, timeout=120)
    found = json.loads(output.strip().splitlines()[-1])
    assert found["killed"], found
    if fetch == "kit":
        assert found == {"killed": True, "queued": 0, "unacked": True}
    else:
        assert found == {"killed": True, "queued": 0, "unacked": False}  # lost
