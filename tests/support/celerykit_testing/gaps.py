"""How long each queue went without work during a window: the longest gap between consecutive task
starts or finishes on that queue, for drills that replace workers while a stream of tasks flows
(an app upgrade, a rolling restart of hosts). Any deployment: it reads only what the drill already
has, the tasks it sent (`soak.Sent`) and a record per task.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import pairwise

from celerykit_testing.soak import Sent

# The moments a task record may carry (time.time() stamps): the tally task's own result from the
# result backend has "started"; Flower's task info has "started" and "succeeded".
MOMENTS = ("started", "succeeded")


def longest_gaps(sent: Sequence[Sent], records: Mapping[str, Mapping], since: float, until: float) -> dict[str, float]:
    """Queue -> the longest time (s) within [since, until] in which no task sent to it started or
    finished. The window's edges count as moments, so a queue that stalled at the start or at the
    end shows it, and one with no task in the window shows the whole window.

    `records` maps task ids to a record with any of MOMENTS: `soak.Tally.results` (the result
    backend: it sees every task, even while Flower restarts) or Flower's task info.
    """
    moments: dict[str, list[float]] = {s.queue: [since, until] for s in sent}
    for s in sent:
        record = records.get(s.task_id) or {}
        for key in MOMENTS:
            moment = record.get(key)
            if isinstance(moment, int | float) and since <= moment <= until:
                moments[s.queue].append(float(moment))
    gaps = {}
    for queue, stamps in moments.items():
        stamps.sort()
        gaps[queue] = round(max(later - earlier for earlier, later in pairwise(stamps)), 2)
    return dict(sorted(gaps.items()))
