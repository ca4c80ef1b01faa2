"""Every transition of the state machine, on a real server, driven by the test clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis

from distbreaker import Admin, Breaker, BreakerConfig, CircuitOpenError, State

T0 = 1_700_000_000.0


class Clock:
    """A settable clock in seconds, shared by the client and (as an override) the scripts."""

    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class Boom(Exception):
    pass


def fail() -> None:
    raise Boom


def ok() -> str:
    return "ok"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make(r: redis.Redis, prefix: str, clock: Clock) -> Callable[..., Breaker]:
    def factory(service: str = "svc", **cfg: Any) -> Breaker:
        cfg.setdefault("minimum_calls", 4)
        return Breaker(service, r, BreakerConfig(**cfg), prefix=prefix, clock=clock)

    return factory


def run(b: Breaker, fn: Callable[[], Any]) -> str:
    """Call fn through b; return 'ok', 'failed' or 'rejected'."""
    try:
        b.call(fn)
    except CircuitOpenError:
        return "rejected"
    except Boom:
        return "failed"
    return "ok"


def test_failure_rate_trips_after_minimum_calls(make: Callable[..., Breaker]) -> None:
    """closed -> open once calls >= minimum_calls and failures/calls >= the threshold."""
    b = make(minimum_calls=4, failure_rate_threshold=0.5)
    assert [run(b, f) for f in (ok, fail, ok)] == ["ok", "failed", "ok"]
    assert b.snapshot().state is State.CLOSED  # 3 calls < minimum
    assert run(b, fail) == "failed"  # 2/4 = 0.5 >= 0.5
    s = b.snapshot()
    assert s.state is State.OPEN
    assert s.last_transition is not None
    assert s.last_transition.cause == "failure_rate 0.50 >= 0.50 over 4 calls"
    assert run(b, ok) == "rejected"


def test_rate_below_threshold_stays_closed(make: Callable[..., Breaker]) -> None:
    """A failure rate under the threshold never trips, however many calls."""
    b = make(minimum_calls=4, failure_rate_threshold=0.5)
    for _ in range(10):
        run(b, ok)
        run(b, ok)
        run(b, fail)
    s = b.snapshot()
    assert (s.state, s.calls, s.failures) == (State.CLOSED, 30, 10)


def test_consecutive_failures_trip_before_minimum_calls(make: Callable[..., Breaker]) -> None:
    """consecutive_failures=3 trips on the third failure in a row, a success resets the run."""
    b = make(minimum_calls=100, consecutive_failures=3)
    assert [run(b, f) for f in (fail, fail, ok, fail, fail)] == ["failed"] * 2 + ["ok"] + ["failed"] * 2
    assert b.snapshot().state is State.CLOSED
    run(b, fail)
    s = b.snapshot()
    assert s.state is State.OPEN
    assert s.last_transition is not None and s.last_transition.cause == "consecutive_failures 3 >= 3"


def test_slow_calls_trip(make: Callable[..., Breaker], clock: Clock) -> None:
    """Calls taking >= slow_call_duration count as slow and trip at slow_call_rate_threshold."""
    b = make(minimum_calls=4, slow_call_duration=0.5, slow_call_rate_threshold=0.5)

    def slow() -> None:
        clock.advance(0.6)

    assert [run(b, f) for f in (ok, slow, ok)] == ["ok"] * 3
    assert b.snapshot().slow_calls == 1
    run(b, slow)
    s = b.snapshot()
    assert s.state is State.OPEN
    assert s.last_transition is not None
    assert s.last_transition.cause == "slow_call_rate 0.50 >= 0.50 over 4 calls"


def test_open_rejects_then_half_opens_at_open_until(make: Callable[..., Breaker], clock: Clock) -> None:
    """open rejects until open_until, then one probe is admitted (half_open)."""
    b = make(minimum_calls=1, open_duration=10)
    run(b, fail)
    clock.advance(9.999)
    with pytest.raises(CircuitOpenError) as info:
        b.call(ok)
    assert info.value.state == "open"
    assert info.value.retry_after == pytest.approx(0.001, abs=1e-6)
    clock.advance(0.001)
    seen = []

    def probe() -> None:
        seen.append(b.snapshot().state)

    b.call(probe)
    assert seen == [State.HALF_OPEN]
    assert b.snapshot().state is State.CLOSED  # half_open_successes=1


def test_backoff_doubles_and_caps(make: Callable[..., Breaker], clock: Clock) -> None:
    """Each failed probe reopens for open_duration * multiplier^(n-1), capped at max_open_duration."""
    b = make(minimum_calls=1, open_duration=10, backoff_multiplier=2.0, max_open_duration=35)
    run(b, fail)
    durations = []
    for _ in range(4):
        s = b.snapshot()
        assert s.state is State.OPEN and s.open_until is not None
        durations.append(round(s.open_until - s.server_time, 3))
        clock.t = s.open_until
        assert run(b, fail) == "failed"  # the probe fails: reopen
    assert durations == [10, 20, 35, 35]
    assert b.snapshot().open_count == 5


def test_half_open_needs_n_successes_and_closes_with_empty_window(make: Callable[..., Breaker], clock: Clock) -> None:
    """half_open_successes=2 closes after the second successful probe, with the window cleared."""
    b = make(minimum_calls=1, open_duration=1, half_open_successes=2)
    run(b, fail)
    clock.advance(1)
    run(b, ok)
    s = b.snapshot()
    assert (s.state, s.half_open_successes) == (State.HALF_OPEN, 1)
    run(b, ok)
    s = b.snapshot()
    assert (s.state, s.calls, s.failures, s.open_count) == (State.CLOSED, 0, 0, 0)
    assert s.last_transition is not None and s.last_transition.cause == "2 probes succeeded"


def test_half_open_admits_at_most_k_probes_and_leases_expire(make: Callable[..., Breaker], clock: Clock) -> None:
    """With half_open_max_calls=2 a third concurrent probe is rejected until a lease expires."""
    b = make(minimum_calls=1, open_duration=1, half_open_max_calls=2, half_open_successes=5, probe_timeout=3)
    run(b, fail)
    clock.advance(1)
    b.__enter__()
    b.__enter__()  # two probes in flight (context managers stack per thread)
    with pytest.raises(CircuitOpenError) as info:
        b.call(ok)
    assert info.value.state == "half_open"
    assert info.value.retry_after == pytest.approx(3.0)
    assert b.snapshot().half_open_calls == 2
    clock.advance(3)  # both leases expire
    assert run(b, ok) == "ok"
    b.__exit__(None, None, None)
    b.__exit__(None, None, None)  # late outcomes of the same generation still count
    assert b.snapshot().half_open_successes == 3


def test_failed_probe_reopens(make: Callable[..., Breaker], clock: Clock) -> None:
    """One failed probe sends half_open back to open with a longer open duration."""
    b = make(minimum_calls=1, open_duration=1)
    run(b, fail)
    clock.advance(1)
    run(b, fail)
    s = b.snapshot()
    assert s.state is State.OPEN and s.open_count == 2
    assert s.last_transition is not None and s.last_transition.cause == "probe failed"


def test_stale_generation_outcome_is_ignored(make: Callable[..., Breaker], clock: Clock) -> None:
    """A slow success admitted before a trip cannot close or count against the new generation."""
    b = make(minimum_calls=1, open_duration=1)
    other = make(minimum_calls=1, open_duration=1)
    with b:  # admitted in closed, generation 0
        run(other, fail)  # meanwhile another worker trips it
        clock.advance(1)  # ... and it is half_open by the time we finish
    s = b.snapshot()
    assert s.state is State.HALF_OPEN
    assert s.half_open_successes == 0


def test_trip_with_expiry_returns_to_closed_with_window_kept(make: Callable[..., Breaker], clock: Clock) -> None:
    """A timed trip forces open with reason/actor, then expires to closed keeping the window."""
    b = make(minimum_calls=100, window=600)
    run(b, ok)
    run(b, fail)
    s = b.trip(for_=60, reason="INC-42", actor="alice")
    assert (s.state, s.reason, s.actor) == (State.FORCED_OPEN, "INC-42", "alice")
    with pytest.raises(CircuitOpenError) as info:
        b.call(ok)
    assert info.value.state == "forced_open" and info.value.reason == "INC-42"
    assert info.value.retry_after == pytest.approx(60)
    clock.advance(60)
    s = b.snapshot()
    assert (s.state, s.calls, s.failures, s.reason) == (State.CLOSED, 2, 1, "")
    assert s.last_transition is not None and s.last_transition.cause == "forced_open expired"


def test_disable_counts_but_never_trips(make: Callable[..., Breaker], clock: Clock) -> None:
    """disabled admits everything and counts outcomes, but does not trip; expiry re-arms it."""
    b = make(minimum_calls=2)
    b.disable(for_=5, reason="maintenance", actor="bob")
    assert [run(b, fail) for _ in range(5)] == ["failed"] * 5
    s = b.snapshot()
    assert (s.state, s.failures) == (State.DISABLED, 5)
    clock.advance(5)
    assert run(b, fail) == "failed"  # admitted after expiry; the kept window (6/6) trips at once
    assert b.snapshot().state is State.OPEN
    assert run(b, fail) == "rejected"


def test_reset_clears_everything(make: Callable[..., Breaker]) -> None:
    """reset returns any state to closed with an empty window and open_count 0."""
    b = make(minimum_calls=1)
    run(b, fail)
    b.trip(reason="x", actor="a")
    s = b.reset(reason="fixed", actor="carol")
    assert (s.state, s.calls, s.open_count, s.reason) == (State.CLOSED, 0, 0, "")
    assert run(b, ok) == "ok"


def test_window_buckets_expire_old_counts(make: Callable[..., Breaker], clock: Clock) -> None:
    """Outcomes leave the sliding window bucket by bucket as time passes."""
    b = make(minimum_calls=100, window=10, buckets=5)  # 2 s buckets
    clock.t = 1_700_000_000.0  # a bucket edge (multiple of 2 s)
    run(b, fail)
    clock.advance(2)
    run(b, ok)
    run(b, ok)
    clock.advance(7.999)
    s = b.snapshot()
    assert (s.calls, s.failures) == (3, 1)
    clock.advance(0.001)  # the first bucket leaves the window
    s = b.snapshot()
    assert (s.calls, s.failures) == (2, 0)
    clock.advance(100)
    assert b.snapshot().calls == 0


def test_events_stream_and_publish(make: Callable[..., Breaker], r: redis.Redis, prefix: str, clock: Clock) -> None:
    """Every transition is appended to the stream and published on <prefix>:events."""
    ps = r.pubsub()
    ps.subscribe(f"{prefix}:events")
    assert ps.get_message(timeout=1.0) is not None  # subscribe confirmation
    b = make(minimum_calls=1, open_duration=1)
    run(b, fail)
    msg = ps.get_message(timeout=2.0)
    ps.close()
    assert msg is not None and b'"to":"open"' in msg["data"] and b'"service":"svc"' in msg["data"]
    clock.advance(1)
    run(b, ok)
    history = Admin(r, prefix=prefix).history("svc")
    assert [(t.from_state, t.to_state) for t in history] == [
        (State.HALF_OPEN, State.CLOSED),
        (State.OPEN, State.HALF_OPEN),
        (State.CLOSED, State.OPEN),
    ]


def test_server_time_is_used_without_a_clock(r: redis.Redis, prefix: str) -> None:
    """Without clock=, the scripts read the server's TIME."""
    b = Breaker("svc", r, BreakerConfig(), prefix=prefix)
    (sec, _usec) = r.time()
    assert abs(b.snapshot().server_time - sec) < 5


def test_config_change_is_stored_and_window_reset_when_buckets_change(
    r: redis.Redis, prefix: str, clock: Clock
) -> None:
    """A worker with another config stores it (fingerprint); a different bucket layout clears the window."""
    a = Breaker("svc", r, BreakerConfig(minimum_calls=50), prefix=prefix, clock=clock)
    run(a, ok)
    same_buckets = Breaker("svc", r, BreakerConfig(minimum_calls=60), prefix=prefix, clock=clock)
    run(same_buckets, ok)
    assert r.hget(f"{prefix}:{{svc}}", "cfg").split(b",")[1] == b"60"  # type: ignore[union-attr]
    assert same_buckets.snapshot().calls == 2
    other_buckets = Breaker("svc", r, BreakerConfig(minimum_calls=60, buckets=5), prefix=prefix, clock=clock)
    run(other_buckets, ok)
    assert other_buckets.snapshot().calls == 1
    run(a, ok)  # the first worker is told NOCONFIG, sends its config again: buckets change back
    assert a.snapshot().calls == 1
