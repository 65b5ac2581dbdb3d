"""Task events in batches (celerykit.task_events): on Celery's own consumer method, with a real kombu
timer in place of the event loop, and a real event dispatcher over kombu's in-memory transport."""

from __future__ import annotations

from types import SimpleNamespace

from celery import Celery
from celery.worker.consumer import consumer as consumer_module
from celery.worker.consumer import events as events_module
from kombu.asynchronous.timer import Timer

from celerykit import task_events

ORIGINAL = getattr(
    consumer_module.Consumer.on_send_event_buffered, "__wrapped__", consumer_module.Consumer.on_send_event_buffered
)


class Loop:
    """What the consumer uses of kombu's Hub: call_soon (Celery's flush) and call_later (the kit's)."""

    def __init__(self) -> None:
        self.timer, self.soon = Timer(), []

    def call_soon(self, callback, *args):
        self.soon.append(callback)

    def call_later(self, delay, callback, *args):
        return self.timer.call_after(delay, callback, args)

    def due(self) -> list:
        return sorted(self.timer._queue)


def consumer(loop: Loop) -> tuple[SimpleNamespace, list[int]]:
    flushed: list[int] = []
    c = SimpleNamespace(hub=loop, _flush_events=lambda: flushed.append(1))
    c._flush_events_promise = c._flush_events
    return c, flushed


def test_celery_flushes_at_the_next_turn_for_every_event():
    loop = Loop()
    c, _ = consumer(loop)
    for _ in range(3):  # three events of one task, in three turns of a busy pool
        ORIGINAL(c)
    assert len(loop.soon) == 3  # three flushes: three PUBLISHes


def test_the_kit_flushes_once_for_the_events_of_its_window():
    loop = Loop()
    c, flushed = consumer(loop)
    buffered = task_events.flush_in_batches(ORIGINAL)
    for _ in range(30):
        buffered(c)
    assert loop.soon == [] and len(loop.due()) == 1  # one flush, FLUSH_SECONDS away
    (entry,) = loop.due()
    entry.entry()  # the timer fires
    assert flushed == [1]
    buffered(c)  # the next event schedules the next flush
    assert len(loop.due()) == 2  # (the fired one is still in this bare timer's heap)


def test_a_consumer_without_an_event_loop_is_left_to_celery():
    c, _ = consumer(None)
    assert task_events.flush_in_batches(ORIGINAL)(c) is None  # Celery's: nothing to schedule on


def test_what_is_buffered_is_sent_before_the_dispatcher_is_dropped():
    """Stopping (or reconnecting), Celery drops the dispatcher with its buffer; the kit sends it first."""
    app = Celery("events-test", broker="memory://", set_as_current=False)
    with app.connection_for_write() as connection:
        dispatcher = app.events.Dispatcher(connection, hostname="w@test", buffer_group=["task"], enabled=True)
        sent: list = []
        dispatcher._publish = lambda event, producer, routing_key, **_: sent.append(routing_key)
        dispatcher.send("task-succeeded", uuid="1")  # buffered, not sent yet
        assert sent == []
        c = SimpleNamespace(event_dispatcher=dispatcher, connection=None)
        original = getattr(events_module.Events._close, "__wrapped__", events_module.Events._close)
        task_events.flush_before_closing(original)(SimpleNamespace(groups=None), c)
    assert sent == ["task.multi"]
    assert c.event_dispatcher is None
