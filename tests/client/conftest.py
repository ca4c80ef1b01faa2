"""Fixtures shared by the client tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import redis

import distbreaker.asyncio as dba
from distbreaker import connect


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    """A breaker client to the session server (a generous timeout: tests, not outages)."""
    c = connect(redis_url, timeout=2.0)
    yield c
    c.close()


@pytest.fixture
async def aclient(redis_url: str) -> AsyncIterator[Any]:
    """The asyncio twin of `client`."""
    c = dba.connect(redis_url, timeout=2.0)
    yield c
    await c.aclose()
