"""A worker fetches a task and records it as unacknowledged in one step (kombu 5.7's Redis transport).

**The fetch window** (kombu#305, open; celery#7950 and celery#4354 for its shutdown variants). kombu's
Redis channel takes a message with `BRPOP` and only once the reply is parsed records it as unacknowledged
(`QoS.append`: `ZADD unacked_index` + `HSET unacked` in one MULTI). Between the two, the message exists
only in the worker main process: in its socket while the reply waits unread, then in its memory. A main
process killed then (SIGKILL, the OOM killer) loses the message for good: it is in no queue and not in
`unacked`, so `restore_visible` has nothing to bring back. The same gap loses it when Redis refuses the
ZADD at `maxmemory` after BRPOP succeeded. Redis has no blocking pop from several lists that records as
it pops (BLMOVE waits on one list: redis/redis#2030, #9891), and kombu keeps its queues in lists.

**The fix.** For channels of a connection driven by an event loop (the worker's consumer) and consumed
with acknowledgements, the kit replaces BRPOP by a Lua script (`POP_AND_RECORD`). In BRPOP's key order
(priority first, then the queue rotation) it takes the tail of the first non-empty list and, in the same
atomic step, writes `unacked_index` and `unacked` exactly as `QoS.append` would (same keys, score from the
client's clock, value `[payload, exchange, routing_key]`), writes first and RPOP last, so a refused write
(OOM, a demoted master) pops nothing. A message is therefore always in a queue or in `unacked`; a killed
worker's message comes back after `visibility_timeout` like its running tasks. `QoS.append` then skips its
own Redis write for the message the script recorded (only `_delivered`, for prefetch and
`restore_unacked`, is kept); ack, reject, `restore_by_tag`, `restore_visible` and `restore_unacked` are
unchanged.

A script cannot block, so something must say when to run it: each such channel subscribes one pub/sub
connection (the doorbell: the connection its BRPOP would have held) to the keyspace events of its own
queue lists (`__keyspace@<db>__:<queue>`, one channel per queue and priority), registered with the event
loop like kombu's fanout connection. A push to one of them runs the script (one round trip, as BRPOP's
reply did); every idle worker consuming that queue tries, the first one gets the message (BRPOP served
the longest waiting), the others get nil; workers of other queues hear nothing (the list-push keyevents,
a first version, woke every worker of the deployment for every task: a tenth of a no-op pool's
throughput with two idle pools beside it). The pops and other list commands on those keys ring too and
are ignored without a round trip. The script also runs once every `brpop_timeout` (1 s) whatever rang,
as an idle BRPOP returned, so a doorbell that went silent delays a task by at most that. A turn of the
event loop fetches at most MAX_PER_TURN messages (BRPOP: one), then PINGs the doorbell so that the reply
wakes the loop for the rest. This needs Redis's `notify-keyspace-events` to include `Kl` (the kit's
`celerykit-broker.conf` sets it). The doorbell checks that at start by pushing to (and deleting) a key of
its own: when no event comes, it logs an error naming the setting and the connection keeps kombu's BRPOP,
with the window, and with the kit's put-back fixes in `celerykit.patches`. So do channels consumed
without acknowledgement and connections without an event loop (`drain_events`).

Read on kombu 5.7.0 (private names: `_register_BRPOP`, `_queue_cycle`, `_q_for_pri`, `_register`,
`_fd_to_chan`, `_chan_to_sock`, `_in_poll`, `_in_protected_read`): another version is not patched.
"""

from __future__ import annotations

import functools
import logging
import uuid
from time import monotonic, time

import kombu
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.client import PubSub

from celerykit.patches import affected, version

logger = logging.getLogger(__name__)

KOMBU_READ = ((5, 7), (5, 7))  # the Redis channel and poller read on 5.7.0

# KEYS[1..n]: the queue lists in BRPOP's order; KEYS[n+1]: unacked; KEYS[n+2]: unacked_index.
# ARGV[1]: the score (the client's time(), as QoS.append: restore_visible compares it with client time);
# ARGV[2]: one character per queue list, '1' when its consumer acknowledges (record), '0' when not (pop
# only, as BRPOP). Returns {list, message, delivery tag or false, more}, or nil when every list is empty;
# `more` is 1 when a list still holds a message (0 spares the run that would only find them empty). The
# record is `[` + the message as pushed + `, exchange, routing_key]`: the JSON QoS.append writes, without
# re-encoding the message. Writes come before the pop: a refused write leaves the message where it was.
POP_AND_RECORD = """
local n = #KEYS - 2
for i = 1, n do
  local item = redis.call('LINDEX', KEYS[i], -1)
  if item then
    local tag, info
    if string.sub(ARGV[2], i, i) == '1' then
      local ok, m = pcall(cjson.decode, item)
      local p = ok and type(m) == 'table' and m.properties
      if type(p) == 'table' and type(p.delivery_tag) == 'string' then
        tag = p.delivery_tag
        info = type(p.delivery_info) == 'table' and p.delivery_info or {}
      end
    end
    if tag then
      redis.call('ZADD', KEYS[n + 2], ARGV[1], tag)
      redis.call('HSET', KEYS[n + 1], tag,
        '[' .. item .. ', ' .. cjson.encode(info.exchange) .. ', ' .. cjson.encode(info.routing_key) .. ']')
    end
    redis.call('RPOP', KEYS[i])
    local more = 0
    for j = i, n do
      if redis.call('LLEN', KEYS[j]) > 0 then more = 1 break end
    end
    return {KEYS[i], item, tag or false, more}
  end
end
return false
"""

WAKE = "WAKE"  # the doorbell's type among the poller's registrations (kombu's are BRPOP and LISTEN)
PUSHES = frozenset((b"lpush", b"rpush"))  # what kombu's _put and restores use; anything else waits for the 1 s run
SUBSCRIBE_TIMEOUT = 10  # s: Redis confirms a SUBSCRIBE at once; the kit's socket timeout is as long
PROBE_TIMEOUT = 0.5  # s to wait for the probe's own keyspace event
MAX_PER_TURN = 10  # messages fetched in one go at most (with credit left), so the event loop gets its turn
MISSED_PONGS = 2  # the doorbell's unanswered health-check PINGs before it is dropped (kombu's subclient: 2)
NO_NOTIFICATIONS = (
    "Redis sent no keyspace event for a list push: its notify-keyspace-events setting lacks 'Kl' (set "
    "`notify-keyspace-events Kl` in redis.conf, or in the managed service's parameters). This connection "
    "fetches tasks with kombu's BRPOP, and a worker killed while fetching can lose the task it was handed."
)


def _pop_script(channel):
    script = channel.__dict__.get("_celerykit_pop_script")
    if script is None:  # as kombu registers its own scripts (Channel._refresh_binding)
        script = channel._celerykit_pop_script = channel._create_client().register_script(POP_AND_RECORD)
    return script


def pop_and_record(channel) -> bool:
    """What `_brpop_start` + `_brpop_read` do, with the unacked record written by Redis in the same step
    as the pop. Returns whether a message was delivered."""
    queues = channel._queue_cycle.consume(len(channel.active_queues))
    if not queues:
        channel._celerykit_pending = False
        return False
    acked = getattr(channel, "_celerykit_acked", {})
    steps = channel.priority_steps
    keys = [channel._q_for_pri(queue, pri) for pri in steps for queue in queues]
    record = "".join("1" if acked.get(queue, True) else "0" for _ in steps for queue in queues)
    prefix = channel.global_keyprefix
    names = [*keys, channel.unacked_key, channel.unacked_index_key]
    names = names[:1] + [prefix + name for name in names[1:]]  # the client prefixes the first key itself
    try:
        with channel.conn_or_acquire() as client:
            reply = _pop_script(channel)(keys=names, args=[time(), record], client=client)
    except channel.ResponseError as error:  # such as writes refused at maxmemory: nothing was popped
        logger.warning("Could not fetch from %s (%r); trying again in %s s.", queues, error, channel.brpop_timeout)
        channel._celerykit_pending = False  # the next 1 s run tries again; no busy loop meanwhile
        return False
    if not reply:
        channel._celerykit_pending = False
        return False
    key, item, tag, more = reply
    channel._celerykit_pending = bool(more)  # what is pushed from now on rings the doorbell
    dest = bytes_to_str(key)[len(prefix) :].rsplit(channel.sep, 1)[0]
    channel._queue_cycle.rotate(dest)  # fairness, as _brpop_read
    tag = bytes_to_str(tag) if tag else None
    try:
        payload = loads(bytes_to_str(item))
    except Exception:  # stock kombu loses a message it cannot read; do not redeliver it forever instead
        if tag:
            channel.qos._remove_from_indices(tag).execute()
        raise
    channel._celerykit_recorded = tag
    try:
        channel.connection._deliver(payload, dest)
    finally:
        channel._celerykit_recorded = None
    return True


def fetch(channel) -> int:
    """Fetch while something may wait and the prefetch limit allows, up to MAX_PER_TURN; return how many
    were delivered."""
    delivered = 0
    while (
        getattr(channel, "_celerykit_pending", False)
        and channel.connection is not None
        and channel.active_queues
        and channel.qos.can_consume()
    ):
        if delivered == MAX_PER_TURN:  # let the loop serve the rest; the PING's reply brings it back at once
            _ping(channel)
            break
        if pop_and_record(channel):
            delivered += 1
    return delivered


def _ping(channel) -> None:
    """Make the doorbell readable soon, as a BRPOP's reply makes its socket readable."""
    doorbell = getattr(channel, "_celerykit_doorbell", None)
    connection = getattr(doorbell, "connection", None)
    if connection is None or connection._sock is None:
        return  # subscribing again at the next turn fetches anyway
    try:
        doorbell.execute_command("PING")
    except channel.connection_errors as error:
        logger.warning("The doorbell's connection failed (%r); subscribing again.", error)
        connection.disconnect()


def _keyspace(channel, key: str) -> str:
    db = channel.async_pool.connection_kwargs.get("db", 0)
    return f"__keyspace@{db}__:{channel.global_keyprefix}{key}"


def _watched(channel) -> set[str]:
    """The keyspace channels of the channel's queue lists, every priority."""
    steps = channel.priority_steps
    return {_keyspace(channel, channel._q_for_pri(q, pri)) for q in channel.active_queues for pri in steps}


def watch_the_queues(channel) -> None:
    """Subscribe the doorbell to the channel's queue lists as they are now (queues come and go with
    `add_consumer` / `cancel_consumer`); Redis confirms later, and the coming fetch covers the gap."""
    doorbell = channel._celerykit_doorbell
    wanted, current = _watched(channel), set(getattr(channel, "_celerykit_watching", ()))
    if wanted - current:
        doorbell.subscribe(*sorted(wanted - current))
    if current - wanted:
        doorbell.unsubscribe(*sorted(current - wanted))
    channel._celerykit_watching = wanted
    channel._celerykit_pending = True


def wake_read(channel) -> int:
    """The doorbell is readable: read every event it holds; fetch if one was for the channel's queues."""
    doorbell = getattr(channel, "_celerykit_doorbell", None)
    connection = getattr(doorbell, "connection", None)
    if connection is None or connection._sock is None:  # can_read would reconnect behind the poller's back
        return 0
    rang = False
    try:
        while doorbell.connection is not None and doorbell.connection.can_read(timeout=0):
            response = doorbell.parse_response(block=False, timeout=0)  # None for a health-check PONG
            if isinstance(response, list) and len(response) == 3 and response[0] == b"message":
                rang = rang or response[2] in PUSHES  # the channel is one of its queues' (subscribed)
    except channel.connection_errors as error:  # this connection only: ring up again at the next turn
        logger.warning("The doorbell's connection failed (%r); subscribing again.", error)
        if doorbell.connection is not None:
            doorbell.connection.disconnect()
        channel._celerykit_pending = True
        return 0
    if rang:
        channel._celerykit_pending = True
    cycle = channel.connection.cycle if channel.connection else None
    if cycle is None or cycle._in_protected_read or channel._in_poll:
        return 0  # drain_events (stock BRPOP) or a BRPOP still in flight: fetch at the next turn
    return fetch(channel)


def _registered(cycle, channel) -> bool:
    doorbell = getattr(channel, "_celerykit_doorbell", None)
    connection = getattr(doorbell, "connection", None)
    sock = getattr(connection, "_sock", None)
    return sock is not None and cycle._chan_to_sock.get((channel, doorbell, WAKE)) is sock


def _confirmed(doorbell, names: list[str]) -> None:
    """Subscribe to `names` and wait until Redis confirms each."""
    doorbell.subscribe(*names)
    pending, deadline = set(names), monotonic() + SUBSCRIBE_TIMEOUT
    while pending:
        left = deadline - monotonic()
        if left <= 0:
            doorbell.reset()
            raise TimeoutError("Redis did not confirm the doorbell's SUBSCRIBE")
        message = doorbell.get_message(timeout=left)
        if message and message["type"] == "subscribe":
            pending.discard(bytes_to_str(message["channel"]))


def _subscribe(channel) -> PubSub:
    """A doorbell subscribed (confirmed by Redis) to the keyspace events of the channel's queue lists."""
    doorbell = getattr(channel, "_celerykit_doorbell", None)
    if doorbell is None:  # not the prefixed PubSub: it would prefix the keyspace channel names
        doorbell = channel._celerykit_doorbell = PubSub(channel.async_pool)
    else:
        doorbell.reset()  # a fresh connection: the old one is gone or no longer polled
    channel._celerykit_watching = _watched(channel)
    _confirmed(doorbell, sorted(channel._celerykit_watching))
    return doorbell


def _probe(channel, doorbell) -> bool:
    """Push to (and delete) a key of our own; whether its keyspace event reaches the doorbell."""
    key = f"_celerykit.doorbell.probe.{uuid.uuid4()}"
    probe = _keyspace(channel, key)
    _confirmed(doorbell, [probe])
    try:
        with channel.conn_or_acquire() as client, client.pipeline() as pipe:
            pipe.lpush(key, "probe").delete(key).execute()  # one transaction: the key never stays
        deadline = monotonic() + PROBE_TIMEOUT
        while (left := deadline - monotonic()) > 0:
            message = doorbell.get_message(timeout=left)
            if message and message["type"] == "message" and bytes_to_str(message["channel"]) == probe:
                return True
        return False
    finally:
        doorbell.unsubscribe(probe)  # its confirmation is read, and ignored, with the events


def _ring_up(cycle, channel) -> bool:
    """Subscribe the channel's doorbell and register it with the poller; on the cycle's first, check
    that Redis sends the events. Returns False when it does not (the cycle then keeps BRPOP)."""
    try:
        doorbell = _subscribe(channel)
        if getattr(cycle, "_celerykit_atomic", None) is None:
            cycle._celerykit_atomic = _probe(channel, doorbell)
            if not cycle._celerykit_atomic:
                logger.error(NO_NOTIFICATIONS)
    except channel.ResponseError as error:  # an ACL without these channels, writes refused at maxmemory
        logger.error("The doorbell could not subscribe or probe (%r). %s", error, NO_NOTIFICATIONS)
        cycle._celerykit_atomic = False
    if not cycle._celerykit_atomic:
        _hang_up(channel)
        return False
    cycle._register(channel, doorbell, WAKE)
    channel._celerykit_pending = True  # whatever was pushed before the subscription
    return True


def _hang_up(channel) -> None:
    doorbell = channel.__dict__.pop("_celerykit_doorbell", None)
    if doorbell is not None:
        try:
            doorbell.reset()  # disconnect: kombu's hook drops its poller registration
        except Exception as error:
            logger.debug("Closing the doorbell failed: %r", error)


def _atomic(cycle, channel) -> bool:
    return (
        getattr(cycle, "_celerykit_loop", None) is not None  # an event loop drives it: the worker's consumer
        and getattr(cycle, "_celerykit_atomic", None) is not False  # unknown (probe first) or working
        and not cycle._in_protected_read  # drain_events keeps BRPOP
        and not channel._in_poll  # a BRPOP already in flight is read first
        and any(getattr(channel, "_celerykit_acked", {}).get(q, True) for q in channel.active_queues)
    )


def register_doorbell(register_BRPOP):
    """MultiChannelPoller._register_BRPOP (called at each turn for a channel with queues and credit):
    an atomic channel gets its doorbell instead of a BRPOP."""

    @functools.wraps(register_BRPOP)
    def register(cycle, channel):
        if not _atomic(cycle, channel):
            return register_BRPOP(cycle, channel)
        if not _registered(cycle, channel) and not _ring_up(cycle, channel):
            return register_BRPOP(cycle, channel)
        if _watched(channel) != getattr(channel, "_celerykit_watching", None):  # queues came or went
            watch_the_queues(channel)
        return None

    register.celerykit_atomic_fetch = True
    return register


def poll_start_fetches(on_poll_start):
    """MultiChannelPoller.on_poll_start (each turn of the event loop, before it polls): after kombu's
    registrations, fetch for atomic channels, as a BRPOP sent now would answer during the poll."""

    @functools.wraps(on_poll_start)
    def start(cycle):
        on_poll_start(cycle)
        loop = getattr(cycle, "_celerykit_loop", None)
        if loop is None or cycle._in_protected_read:
            return
        delivered = 0
        for channel in list(cycle._channels):  # a delivery may add or close channels
            if _registered(cycle, channel) and not channel._in_poll:
                delivered += fetch(channel)
        if delivered:
            _wake(loop, cycle)

    start.celerykit_atomic_fetch = True
    return start


def _wake(loop, cycle) -> None:
    """After a delivery made while the loop ticks: make its coming poll return at once. The tick
    callbacks run in no set order, and the pool's may already have run, so the task waits in the
    pool's outbound buffer until the next turn writes it to a process: with nothing else to wake
    the poll, the next timer (up to a second). BRPOP's reply was read after the poll, so the next
    turn came at once."""
    waker = getattr(loop, "_waker", None)  # kombu's Hub: a pipe its poll watches
    if waker is not None:
        waker.wake()
        return
    for channel in list(cycle._channels):
        if _registered(cycle, channel):
            _ping(channel)
            return


def readable_rings(on_readable):
    """MultiChannelPoller.on_readable: a doorbell is read with or without credit (kombu reads only with
    credit; an unread doorbell would keep a level-triggered poll busy)."""

    @functools.wraps(on_readable)
    def readable(cycle, fileno):
        chan_type = cycle._fd_to_chan.get(fileno)
        if chan_type is not None and chan_type[1] == WAKE:
            return wake_read(chan_type[0])
        return on_readable(cycle, fileno)

    readable.celerykit_atomic_fetch = True
    return readable


def poll_error_reads_the_doorbell(poll_error):
    """Channel._poll_error (drain_events, an error event): kombu's would read the BRPOP connection."""

    @functools.wraps(poll_error)
    def error(channel, type, **options):
        if type == WAKE:
            return wake_read(channel)
        return poll_error(channel, type, **options)

    error.celerykit_atomic_fetch = True
    return error


def safety_run(cycle) -> None:
    """Every brpop_timeout: run the script whatever rang, and check the doorbells' connections."""
    for channel in list(cycle._channels):
        doorbell = getattr(channel, "_celerykit_doorbell", None)
        if doorbell is None:
            continue
        channel._celerykit_pending = True
        connection = doorbell.connection
        if connection is None or connection._sock is None:
            continue
        try:
            if doorbell.health_check_response_counter >= MISSED_PONGS:  # half-open: PINGs unanswered
                logger.warning("The doorbell missed %d health checks; subscribing again.", MISSED_PONGS)
                connection.disconnect()
            else:
                doorbell.check_health()  # a PING once per health_check_interval without traffic
        except channel.connection_errors as error:
            logger.warning("The doorbell's health check failed (%r); subscribing again.", error)
            connection.disconnect()


def loop_marks_the_cycle(register_with_event_loop):
    """Transport.register_with_event_loop: this connection's cycle may fetch atomically; add the 1 s run."""

    @functools.wraps(register_with_event_loop)
    def register(transport, connection, loop):
        register_with_event_loop(transport, connection, loop)
        cycle = transport.cycle
        cycle._celerykit_loop = loop
        old = getattr(cycle, "_celerykit_safety_tref", None)
        if old is not None:  # as kombu cancels its own entries of a previous registration
            old.cancel()
        cycle._celerykit_safety_tref = loop.call_repeatedly(transport.brpop_timeout or 1, safety_run, cycle)

    register.celerykit_atomic_fetch = True
    return register


def append_once(append):
    """QoS.append: the message the script recorded is not written again (only kept in _delivered)."""

    @functools.wraps(append)
    def appending(qos, message, delivery_tag):
        if delivery_tag is not None and getattr(qos.channel, "_celerykit_recorded", None) == delivery_tag:
            return virtual.QoS.append(qos, message, delivery_tag)
        return append(qos, message, delivery_tag)

    appending.celerykit_atomic_fetch = True
    return appending


def consume_remembers_no_ack(basic_consume):
    """Channel.basic_consume: which queues are consumed without acknowledgement (nothing to record)."""

    @functools.wraps(basic_consume)
    def consume(channel, queue, *args, **kwargs):
        no_ack = kwargs["no_ack"] if "no_ack" in kwargs else bool(args and args[0])
        channel.__dict__.setdefault("_celerykit_acked", {})[queue] = not no_ack
        return basic_consume(channel, queue, *args, **kwargs)

    consume.celerykit_atomic_fetch = True
    return consume


def close_hangs_up(close):
    """Channel.close: close the doorbell too."""

    @functools.wraps(close)
    def closing(channel):
        _hang_up(channel)
        return close(channel)

    closing.celerykit_atomic_fetch = True
    return closing


def _patches() -> list[tuple[type, str, object]]:
    poller, channel = kombu_redis.MultiChannelPoller, kombu_redis.Channel
    return [
        (poller, "_register_BRPOP", register_doorbell),
        (poller, "on_poll_start", poll_start_fetches),
        (poller, "on_readable", readable_rings),
        (channel, "_poll_error", poll_error_reads_the_doorbell),
        (channel, "basic_consume", consume_remembers_no_ack),
        (channel, "close", close_hangs_up),
        (kombu_redis.QoS, "append", append_once),
        (kombu_redis.Transport, "register_with_event_loop", loop_marks_the_cycle),
    ]


def apply() -> list[str]:
    """Apply the fix if the installed kombu is one it was read on; return its name (or nothing)."""
    if not affected(version(kombu), KOMBU_READ):
        return []
    for owner, name, fix in _patches():
        if not getattr(getattr(owner, name), "celerykit_atomic_fetch", False):  # once per process
            setattr(owner, name, fix(getattr(owner, name)))
    return ["a fetched task is recorded unacknowledged in the same step"]


def undo() -> None:
    """kombu's fetch again, for connections made from now on (the benchmark prices the fix with it)."""
    for owner, name, _ in _patches():
        if getattr(getattr(owner, name), "celerykit_atomic_fetch", False):
            setattr(owner, name, getattr(owner, name).__wrapped__)
