"""Throw-away Redis servers for the unit tests that need one (celerykit_testing.local_redis), one of
each per session."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celerykit_testing.local_redis import Server, start_redis, stop_redis


@pytest.fixture(scope="session")
def redis_el(tmp_path_factory) -> Iterator[Server]:
    """With the keyspace events the kit's broker sets (its `notify-keyspace-events`)."""
    server = start_redis(tmp_path_factory.mktemp("redis-el"), notifications=True)
    yield server
    stop_redis(server)


@pytest.fixture(scope="session")
def redis_plain(tmp_path_factory) -> Iterator[Server]:
    """Without them, as some managed Redis services are."""
    server = start_redis(tmp_path_factory.mktemp("redis-plain"), notifications=False)
    yield server
    stop_redis(server)
