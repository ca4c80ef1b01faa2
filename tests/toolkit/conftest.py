"""Fixtures of the resilience toolkit tests: clients of the session server, breaker factories,
and a local HTTP server (loopback only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from _toolkit import HTTPServer

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig


@pytest.fixture
def make(client: Any, prefix: str) -> Callable[..., Breaker]:
    """``make(service, clock=None, **config) -> Breaker`` under this test's prefix, not listening."""

    def factory(service: str = "svc", clock: Callable[[], float] | None = None, **cfg: Any) -> Breaker:
        return Breaker(service, client, BreakerConfig(**cfg), prefix=prefix, clock=clock, listen=False)

    return factory


@pytest.fixture
def amake(aclient: Any, prefix: str) -> Callable[..., dba.Breaker]:
    """``amake(service, clock=None, **config)``: an asyncio Breaker under this test's prefix."""

    def factory(service: str = "svc", clock: Callable[[], float] | None = None, **cfg: Any) -> dba.Breaker:
        return dba.Breaker(service, aclient, BreakerConfig(**cfg), prefix=prefix, clock=clock, listen=False)

    return factory


@pytest.fixture
def http_server() -> Iterator[Callable[[], HTTPServer]]:
    """``http_server() -> HTTPServer``: local servers, all stopped at teardown."""
    servers: list[HTTPServer] = []

    def factory() -> HTTPServer:
        servers.append(HTTPServer())
        return servers[-1]

    yield factory
    for server in servers:
        server.stop()
