"""Flower reads a task's keyword arguments once, not at each of its events (Flower 2.2's search index).

Flower 2.2 keeps a search index of the tasks it holds (`flower.utils.search.TaskSearchEngine`) and
rebuilds a task's entry at every event of that task: received, started, succeeded (and sent, which
the kit's clients send too). Each rebuild parses the task's keyword arguments, the `repr` string the
events carry, with `ast.literal_eval` (`_kwargs_pairs`), though that string is set once, by the first
event that has it. Profiled in Flower under the benchmark's stream of no-op tasks: the parse was a
quarter of Flower's CPU, and Flower runs beside the workers (on the same host in the all-in-one layout,
where it takes the workers' CPU).

The fix remembers the pairs of the last LIMIT distinct strings: each string is parsed once; what the
index holds and every search answer are unchanged (the pairs are a frozenset, immutable, so sharing
one between tasks is safe).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from types import ModuleType
from typing import Any

LIMIT = 1024  # distinct keyword-argument strings remembered (Flower shows them cut at 1,024 characters)


def parse_once(kwargs_pairs: Callable[[Any], frozenset]) -> Callable[[Any], frozenset]:
    cached = functools.lru_cache(maxsize=LIMIT)(kwargs_pairs)

    @functools.wraps(kwargs_pairs)
    def pairs(value: Any) -> frozenset:
        if isinstance(value, str):
            return cached(value)
        return kwargs_pairs(value)  # a dict (not hashable) or nothing: as Flower does

    pairs.celerykit_patched = True
    return pairs


def apply(search: ModuleType) -> None:
    """Apply the fix to Flower's search module (the caller checked Flower's version)."""
    if not getattr(search._kwargs_pairs, "celerykit_patched", False):  # once per process
        search._kwargs_pairs = parse_once(search._kwargs_pairs)
