"""Beat fires the periodic task, once per interval, from exactly one scheduler."""

import itertools
import time

from conftest import HEARTBEAT_SECONDS, Stack


def heartbeat_runs(stack: Stack) -> list[float]:
    tasks = stack.target.request(
        "GET", stack.target.flower("api/tasks?taskname=celerykit.demo.heartbeat&limit=1000")
    ).json()
    return sorted(t["received"] for t in tasks.values() if t.get("received"))


def test_exactly_one_beat_runs(stack: Stack):
    assert len(stack.compose.run("ps", "--quiet", "beat").stdout.split()) == 1


def test_beat_fires_the_heartbeat_once_per_interval(stack: Stack):
    window = 5 * HEARTBEAT_SECONDS
    start = time.time()
    time.sleep(window)
    runs = [t for t in heartbeat_runs(stack) if start <= t <= start + window]
    # About one run per interval: not none (Beat fires), not two per tick (no duplicate scheduler).
    assert 3 <= len(runs) <= 6, runs
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert min(gaps) > HEARTBEAT_SECONDS / 2, gaps
