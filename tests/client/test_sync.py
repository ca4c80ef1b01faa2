"""The sync Breaker's API on a real server: call styles, round trips, bad input."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
import redis
from _servers import ServerFactory

from distbreaker import (
    AccessDeniedError,
    Admin,
    BackendError,
    Breaker,
    BreakerConfig,
    CircuitOpenError,
    ConfigError,
    State,
    UnknownServiceError,
    connect,
)


class Boom(Exception):
    pass


class Ignored(Exception):
    pass


@pytest.fixture
def make(redis_url: str, prefix: str) -> Callable[..., Breaker]:
    client = connect(redis_url, timeout=2.0)

    def factory(service: str = "svc", **cfg: Any) -> Breaker:
        return Breaker(service, client, BreakerConfig(**cfg), prefix=prefix)

    return factory


def fail() -> None:
    raise Boom("down")


def test_decorator_keeps_name_and_counts(make: Callable[..., Breaker]) -> None:
    """A decorated function keeps its metadata and every call is recorded."""
    b = make()

    @b
    def add(x: int, y: int = 1) -> int:
        """Add."""
        return x + y

    assert add.__name__ == "add" and add.__doc__ == "Add."
    assert [add(1), add(2, y=3)] == [2, 5]
    assert b.snapshot().calls == 2


def test_context_manager_records_failures_and_reraises(make: Callable[..., Breaker]) -> None:
    """`with breaker:` re-raises the block's exception and counts it as a failure."""
    b = make()
    with pytest.raises(Boom):
        with b:
            fail()
    with b:
        pass
    s = b.snapshot()
    assert (s.calls, s.failures) == (2, 1)


def test_context_manager_is_per_thread(make: Callable[..., Breaker]) -> None:
    """Concurrent `with` blocks in several threads each record their own outcome."""
    b = make(minimum_calls=1000)
    barrier = threading.Barrier(4)

    def work(i: int) -> None:
        for _ in range(25):
            try:
                with b:
                    barrier.wait(timeout=5) if _ == 0 else None
                    if i % 2:
                        raise Boom
            except Boom:
                pass

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    s = b.snapshot()
    assert (s.calls, s.failures) == (100, 50)


def test_call_fallback_on_failure_and_on_open(make: Callable[..., Breaker]) -> None:
    """fallback receives the call's own exception, then the CircuitOpenError once open."""
    b = make(minimum_calls=1)
    seen: list[type[BaseException]] = []

    def fb(exc: BaseException) -> str:
        seen.append(type(exc))
        return "fallback"

    assert b.call(fail, fallback=fb) == "fallback"
    assert b.call(lambda: "real", fallback=fb) == "fallback"
    assert seen == [Boom, CircuitOpenError]


def test_ignored_exceptions_count_as_nothing(make: Callable[..., Breaker]) -> None:
    """ignored_exceptions propagate without a fallback and are not counted."""
    b = make(ignored_exceptions=(Ignored,))

    def raise_ignored() -> None:
        raise Ignored

    with pytest.raises(Ignored):
        b.call(raise_ignored, fallback=lambda exc: "no")
    assert b.snapshot().calls == 0


def test_exceptions_outside_failure_exceptions_are_successes(make: Callable[..., Breaker]) -> None:
    """With failure_exceptions=(Boom,), a KeyError is re-raised but counted as a success."""
    b = make(failure_exceptions=(Boom,))

    def key_error() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        b.call(key_error)
    s = b.snapshot()
    assert (s.calls, s.failures) == (1, 0)


def test_async_function_is_refused() -> None:
    """Decorating a coroutine function with the sync Breaker raises TypeError pointing to asyncio."""
    b = Breaker("svc", connect("redis://127.0.0.1:1/0"))

    async def coro() -> None:
        pass

    with pytest.raises(TypeError, match="distbreaker.asyncio.Breaker"):
        b(coro)


def test_state_and_snapshot_rates(make: Callable[..., Breaker]) -> None:
    """state comes from the cache; snapshot() exposes counts and rates."""
    b = make(minimum_calls=100)
    for fn in (fail, lambda: None, lambda: None, lambda: None):
        try:
            b.call(fn)
        except Boom:
            pass
    assert b.state is State.CLOSED
    s = b.snapshot()
    assert (s.calls, s.failures, s.failure_rate, s.retry_after) == (4, 1, 0.25, None)


@pytest.mark.parametrize("name", ["", "a b", "x{y}", "é", "a" * 129, None, 5])
def test_invalid_service_names_touch_nothing(name: Any) -> None:
    """Invalid names raise ConfigError (a ValueError) before Redis is contacted."""
    with pytest.raises(ValueError, match="service"):
        Breaker(name, connect("redis://127.0.0.1:1/0"))


def test_wrongtype_key_is_a_clear_error_and_left_alone(
    make: Callable[..., Breaker], r: redis.Redis, prefix: str
) -> None:
    """A non-breaker value at the key raises BackendError naming WRONGTYPE; the value is untouched."""
    r.set(f"{prefix}:{{taken}}", "someone else's")
    b = make("taken")
    with pytest.raises(BackendError, match="WRONGTYPE"):
        b.call(lambda: None)
    assert r.get(f"{prefix}:{{taken}}") == b"someone else's"
    r.set(f"{prefix}:{{ev}}:events", "not a stream")
    b2 = make("ev", minimum_calls=1)
    with pytest.raises(BackendError, match="WRONGTYPE"):
        b2.call(fail)  # the transition would XADD: refused before any write
    assert r.get(f"{prefix}:{{ev}}:events") == b"not a stream"
    assert r.hget(f"{prefix}:{{ev}}", "tc") in (None, b"0")  # the refused record wrote nothing
    assert r.hget(f"{prefix}:{{ev}}", "st") == b"closed"


def test_wrong_password_is_reported_without_the_password(redis_server_factory: ServerFactory, prefix: str) -> None:
    """A wrong password raises AccessDeniedError (not swallowed by on_redis_error) without the secret."""
    server = redis_server_factory("--requirepass", "right-secret")
    client = connect(f"redis://:wrong-secret@127.0.0.1:{server.port}/0", timeout=1.0)
    b = Breaker("svc", client, prefix=prefix)
    with pytest.raises(AccessDeniedError) as info:
        b.call(lambda: None)
    assert "wrong-secret" not in str(info.value) and "right-secret" not in str(info.value)
    assert "wrong-secret" not in repr(info.value.__cause__ or "")


def test_round_trips_closed_one_rejected_none(redis_server_factory: ServerFactory, prefix: str) -> None:
    """An admitted closed call costs exactly one EVALSHA; a call rejected from the cache costs none."""
    server = redis_server_factory()
    client = connect(server.url, timeout=1.0)
    stats = server.client()
    # listen=False: the pub/sub listener's re-read of the trip (read.lua, on its own thread) is
    # not a call's cost, and with a fast record it may land after the stats are reset
    b = Breaker(
        "svc",
        client,
        BreakerConfig(minimum_calls=1000, consecutive_failures=5, open_duration=600),
        prefix=prefix,
        listen=False,
    )
    b.call(lambda: None)  # first call: acquire (empty cache) + record
    stats.config_resetstat()
    for _ in range(3):
        b.call(lambda: None)
    cmd = stats.info("commandstats")
    assert cmd["cmdstat_evalsha"]["calls"] == 3
    assert "cmdstat_eval" not in cmd
    for _ in range(5):
        with pytest.raises(Boom):
            b.call(fail)
    assert b.state is State.OPEN
    stats.config_resetstat()
    for _ in range(100):
        with pytest.raises(CircuitOpenError):
            b.call(lambda: None)
    assert "cmdstat_evalsha" not in stats.info("commandstats")


def test_script_flush_is_invisible(make: Callable[..., Breaker], r: redis.Redis) -> None:
    """After SCRIPT FLUSH the next call reloads the script without an error."""
    b = make()
    b.call(lambda: None)
    r.script_flush()
    b.call(lambda: None)
    assert b.snapshot().calls == 2


def test_admin_list_status_history(make: Callable[..., Breaker], r: redis.Redis, prefix: str) -> None:
    """Admin lists breakers by SCAN, reads status, trips, and raises for unknown services."""
    make("alpha").call(lambda: None)
    make("beta", minimum_calls=1).call(lambda: 1)
    admin = Admin(r, prefix=prefix)
    assert admin.list() == ["alpha", "beta"]
    assert admin.status("alpha").calls == 1
    with pytest.raises(UnknownServiceError):
        admin.status("gamma")
    assert r.exists(f"{prefix}:{{gamma}}") == 0  # reading did not create it
    s = admin.trip("gamma", for_=600, reason="INC-42", actor="alice")  # unused breakers may be tripped
    assert s.state is State.FORCED_OPEN and s.retry_after == pytest.approx(600, abs=1)
    [t] = admin.history("gamma")
    assert (t.to_state, t.actor, t.cause) == (State.FORCED_OPEN, "alice", "manual trip by alice: INC-42")
    assert admin.reset("gamma", actor="bob").state is State.CLOSED


def test_operator_trip_reaches_a_worker_within_staleness(
    make: Callable[..., Breaker], r: redis.Redis, prefix: str
) -> None:
    """A worker that cached closed sees an operator's trip once its cache is older than max_staleness."""
    b = make(max_staleness=0.05)
    b.call(lambda: None)
    Admin(r, prefix=prefix).trip("svc", reason="INC-1", actor="ops")
    import time

    deadline = time.monotonic() + 5
    while True:
        try:
            b.call(lambda: None)
        except CircuitOpenError as exc:
            assert exc.state == "forced_open" and "INC-1" in exc.reason
            break
        assert time.monotonic() < deadline, "the trip never reached the worker"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("failure_rate_threshold", 0),
        ("failure_rate_threshold", 1.5),
        ("minimum_calls", 0),
        ("minimum_calls", 1.5),
        ("window", -1),
        ("buckets", 0),
        ("consecutive_failures", 0),
        ("backoff_multiplier", 0.5),
        ("half_open_max_calls", 0),
        ("probe_timeout", 0),
        ("on_redis_error", "ignore"),
        ("redis_timeout", float("nan")),
        ("failure_exceptions", (int,)),
    ],
)
def test_invalid_config_names_the_field(field: str, value: Any) -> None:
    """Every invalid config value raises ConfigError (a ValueError) naming the field."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{field: value})
    assert info.value.field == field and field in str(info.value)
