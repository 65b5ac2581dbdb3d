"""Flower's search index parses a task's keyword arguments once (celerykit.flower_index), on Flower's
own EventsState fed the events a worker and a client send: without the fix each event of a task parses
them again; with it each distinct string is parsed once, and every search answers the same."""

from __future__ import annotations

import ast
import itertools
import time

import pytest
from flower.events import EventsState
from flower.utils import search

from celerykit import flower_index

LITERAL_EVAL = ast.literal_eval
ORIGINAL = getattr(search._kwargs_pairs, "__wrapped__", search._kwargs_pairs)
TASKS = 30
QUERIES = ["kwargs:customer=7", "kwargs:region=eu", "state:success", "report", "kwargs:customer=99"]


def events(count: int) -> list[dict]:
    """Sent, received, started and succeeded for `count` tasks, every third with the same arguments."""
    clock = itertools.count(1)
    now = time.time()
    out = []
    for n in range(count):
        uuid = f"task-{n}"
        kwargs = repr({"customer": n % 10, "region": "eu" if n % 3 else "us"})
        common = {"uuid": uuid, "hostname": "low@host"}
        out += [
            {**common, "type": "task-sent", "name": "acme.report", "args": "()", "kwargs": kwargs},
            {**common, "type": "task-received", "name": "acme.report", "args": "()", "kwargs": kwargs},
            {**common, "type": "task-started"},
            {**common, "type": "task-succeeded", "result": "None", "runtime": 0.01},
        ]
    for event in out:
        event.update(timestamp=now, local_received=now, clock=next(clock), pid=1)
    return out


def feed(monkeypatch: pytest.MonkeyPatch, pairs) -> tuple[int, dict[str, list[str]]]:
    """Feed the events to a fresh EventsState with `pairs` as Flower's _kwargs_pairs; return how many
    times the arguments were parsed and what each query finds."""
    parsed = []

    def literal_eval(text):
        parsed.append(text)
        return LITERAL_EVAL(text)

    monkeypatch.setattr(search, "_kwargs_pairs", pairs)
    monkeypatch.setattr(search.ast, "literal_eval", literal_eval)
    state = EventsState(max_tasks_in_memory=10000)
    for event in events(TASKS):
        state.event(event)
    answers = {q: sorted(state.search_engine.search(state.tasks, q).task_ids) for q in QUERIES}
    return len(parsed), answers


def test_flower_parses_each_tasks_arguments_once_and_finds_the_same(monkeypatch: pytest.MonkeyPatch):
    unpatched, found = feed(monkeypatch, ORIGINAL)
    assert unpatched >= 3 * TASKS  # sent, received, started, succeeded: a parse at each
    patched, found_patched = feed(monkeypatch, flower_index.parse_once(ORIGINAL))
    distinct = len({event["kwargs"] for event in events(TASKS) if "kwargs" in event})
    assert patched == distinct < TASKS
    assert found_patched == found
    assert found["kwargs:customer=7"] == ["task-17", "task-27", "task-7"]
    assert found["kwargs:customer=99"] == []


def test_arguments_flower_holds_as_a_dict_are_read_as_before():
    pairs = flower_index.parse_once(ORIGINAL)
    assert pairs({"Customer": 7}) == ORIGINAL({"Customer": 7}) == frozenset({"customer=7"})
    assert pairs(None) == frozenset()
    assert pairs("not python") == frozenset()
