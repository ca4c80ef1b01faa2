"""on_redis_error="local": an in-process breaker decides while Redis is unreachable."""

from __future__ import annotations

import pytest
from _servers import ServerFactory

from distbreaker import Breaker, BreakerConfig, CircuitOpenError, State, connect


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def test_local_breaker_trips_recovers_and_is_dropped_when_redis_returns(
    redis_server_factory: ServerFactory, prefix: str
) -> None:
    """During an outage the in-process model trips and probes like the scripts; Redis wins after."""
    now = [1_700_000_000.0]
    server = redis_server_factory()
    cfg = BreakerConfig(minimum_calls=4, open_duration=10, on_redis_error="local")
    b = Breaker("svc", connect(server.url, timeout=0.05), cfg, prefix=prefix, clock=lambda: now[0], listen=False)
    for _ in range(3):
        b.call(lambda: None)  # counted in Redis: 3 successes
    server.kill()

    ran = 0

    def counted() -> None:
        nonlocal ran
        ran += 1
        raise Boom

    outcomes = []
    for _ in range(8):
        try:
            b.call(counted)
            outcomes.append("ok")
        except Boom:
            outcomes.append("failed")
        except CircuitOpenError as exc:
            outcomes.append(f"rejected {exc.state}")
    # call 1 is admitted from the cache; its failed record reveals the outage. Then the
    # in-process breaker (empty) counts: 4 failures reach minimum_calls and trip it.
    assert outcomes[:5] == ["failed"] * 5
    assert set(outcomes[5:]) == {"rejected open"}
    assert ran == 5

    now[0] += 10  # open_duration elapses on the local clock: one probe, it succeeds, closed
    b._core.retry_now()  # (skip the Redis retry backoff: the server is still dead)
    assert b.call(lambda: "probe") == "probe"
    assert b._core.local is not None and b._core.local.st == "closed"

    server.restart()
    b._core.retry_now()
    b._core.view.forget()
    assert b.call(lambda: "back") == "back"  # asks Redis again
    assert b._core.local is None  # the local counts were dropped, not replayed
    s = b.snapshot()
    assert (s.state, s.calls, s.failures) == (State.CLOSED, 1, 0)  # only the call after recovery
    b.close()


def test_local_is_a_valid_policy_and_others_are_not() -> None:
    """on_redis_error accepts 'local' and rejects unknown values."""
    assert BreakerConfig(on_redis_error="local").on_redis_error == "local"
    with pytest.raises(ValueError, match="on_redis_error"):
        BreakerConfig(on_redis_error="ignore")  # type: ignore[arg-type]
