"""Fixtures shared by the CLI tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from distbreaker import connect


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A breaker client to the session server (a generous timeout: tests, not outages)."""
    c = connect(redis_url, timeout=2)
    try:
        yield c
    finally:
        c.close()
