"""distbreaker.testing and its pytest plugin: the fake breaker behaves as the real one.

Every scenario below runs once on the fake breaker (fakeredis, through the plugin's
``fake_breaker`` fixture) and once on a real server with the same clock; both must give the
expected observations, and ``test_fake_and_real_give_identical_snapshots`` compares the full
snapshot lists of every scenario.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from distbreaker import Admin, Breaker, BreakerConfig, CircuitOpenError, Snapshot, State
from distbreaker.testing import (
    EPOCH,
    FakeBreakerFactory,
    FrozenClock,
    fake_redis,
    force_closed,
    force_open,
    make_breaker,
    reset,
)

Make = Callable[..., Breaker]
Observation = str | Snapshot


class Boom(Exception):
    pass


def ok() -> str:
    return "ok"


def fail() -> None:
    raise Boom


def run(b: Breaker, fn: Callable[[], Any]) -> str:
    """Call fn through b: 'ok', 'failed' or 'rejected <state> <retry_after>[ <operator's reason>]'.

    Only an operator's reason is shown: the reason of an automatic open depends on which
    call of this process happened to see the transition (the fake/real comparison below
    still compares it).
    """
    try:
        b.call(fn)
    except CircuitOpenError as exc:
        retry = "-" if exc.retry_after is None else f"{exc.retry_after:g}"
        reason = f" {exc.reason}" if exc.state == "forced_open" else ""
        return f"rejected {exc.state} {retry}{reason}"
    except Boom:
        return "failed"
    return "ok"


def brief(s: Snapshot) -> str:
    """The observable part of a snapshot, short enough for an expected-value table."""
    parts = [s.state.value, f"g{s.generation}", f"calls {s.calls}/{s.failures}/{s.slow_calls}"]
    if s.consecutive_failures:
        parts.append(f"cx {s.consecutive_failures}")
    if s.open_count:
        parts.append(f"oc {s.open_count}")
    if s.retry_after is not None:
        parts.append(f"retry {s.retry_after:g}")
    if s.half_open_calls or s.half_open_successes:
        parts.append(f"probes {s.half_open_calls}/{s.half_open_successes}")
    if s.state.value in ("forced_open", "disabled") and (s.reason or s.actor):  # an operator's
        parts.append(f"by {s.actor}: {s.reason}")
    if s.last_transition is not None:
        parts.append(f"<- {s.last_transition.cause}")
    return " | ".join(parts)


# -- Scenarios: (make, clock) -> observations ---------------------------------------------------


def trip_on_failure_rate(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=4, failure_rate_threshold=0.5, open_duration=30)
    obs: list[Observation] = [run(b, f) for f in (ok, fail, ok)]
    obs.append(b.snapshot())
    obs.append(run(b, fail))
    obs.append(b.snapshot())
    clock.advance(1)
    obs.append(run(b, ok))
    return obs


def half_open_after_open_duration(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=1, open_duration=10)
    obs: list[Observation] = [run(b, fail)]
    clock.advance(9.999)
    obs.append(run(b, ok))
    clock.advance(0.001)

    def probe() -> None:
        obs.append(b.snapshot())

    b.call(probe)
    obs.append(b.snapshot())
    return obs


def failed_probes_back_off(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=1, open_duration=10, backoff_multiplier=2.0, max_open_duration=35)
    obs: list[Observation] = [run(b, fail)]
    for _ in range(3):
        s = b.snapshot()
        obs.append(s)
        assert s.open_until is not None
        clock.set(s.open_until)
        obs.append(run(b, fail))
    obs.append(b.snapshot())
    return obs


def consecutive_failures(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=100, consecutive_failures=3)
    obs: list[Observation] = [run(b, f) for f in (fail, fail, ok, fail, fail)]
    obs.append(b.snapshot())
    obs.append(run(b, fail))
    obs.append(b.snapshot())
    return obs


def window_expiry(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=100, window=10, buckets=5)  # 2 s buckets; EPOCH is a bucket edge
    obs: list[Observation] = [run(b, fail)]
    clock.advance(2)
    obs += [run(b, ok), run(b, ok)]
    clock.advance(7.999)
    obs.append(b.snapshot())
    clock.advance(0.001)  # the first bucket leaves the window
    obs.append(b.snapshot())
    clock.advance(100)
    obs.append(b.snapshot())
    return obs


def forced_states(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=2)
    obs: list[Observation] = [run(b, ok), force_open(b, for_=60), run(b, ok)]
    clock.advance(60)
    obs += [b.snapshot(), force_closed(b, for_=timedelta(seconds=5))]
    obs += [run(b, fail) for _ in range(3)]
    obs.append(b.snapshot())
    clock.advance(5)
    obs += [run(b, fail), b.snapshot(), run(b, ok), reset(b), run(b, ok), b.snapshot()]
    return obs


def slow_calls(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=4, slow_call_duration=0.5, slow_call_rate_threshold=0.5)

    def slow() -> None:
        clock.advance(0.6)

    obs: list[Observation] = [run(b, f) for f in (ok, slow, ok)]
    obs.append(b.snapshot())
    obs.append(run(b, slow))
    obs.append(b.snapshot())
    return obs


def half_open_probe_slots(make: Make, clock: FrozenClock) -> list[Observation]:
    b = make(minimum_calls=1, open_duration=1, half_open_max_calls=2, half_open_successes=5, probe_timeout=3)
    obs: list[Observation] = [run(b, fail)]
    clock.advance(1)
    b.__enter__()
    b.__enter__()  # two probes in flight
    obs += [run(b, ok), b.snapshot()]
    clock.advance(3)  # both leases expire
    obs.append(run(b, ok))
    b.__exit__(None, None, None)
    b.__exit__(None, None, None)
    obs.append(b.snapshot())
    return obs


def two_workers_share_state(make: Make, clock: FrozenClock) -> list[Observation]:
    a = make(minimum_calls=2, failure_rate_threshold=0.6, max_staleness=1.0)
    b = make(minimum_calls=2, failure_rate_threshold=0.6, max_staleness=1.0)
    obs: list[Observation] = [run(b, ok), run(a, fail), run(a, fail)]  # a trips the shared breaker
    obs.append(run(b, ok))  # b acts on its cached "closed" for up to max_staleness (not counted)
    clock.advance(1.001)
    obs.append(run(b, ok))
    obs.append(b.snapshot())
    return obs


SCENARIOS: dict[str, Callable[[Make, FrozenClock], list[Observation]]] = {
    f.__name__: f
    for f in (
        trip_on_failure_rate,
        half_open_after_open_duration,
        failed_probes_back_off,
        consecutive_failures,
        window_expiry,
        forced_states,
        slow_calls,
        half_open_probe_slots,
        two_workers_share_state,
    )
}

EXPECTED: dict[str, list[str]] = {
    "trip_on_failure_rate": [
        "ok",
        "failed",
        "ok",
        "closed | g0 | calls 3/1/0",
        "failed",
        "open | g1 | calls 0/0/0 | oc 1 | retry 30 | <- failure_rate 0.50 >= 0.50 over 4 calls",
        "rejected open 29",
    ],
    "half_open_after_open_duration": [
        "failed",
        "rejected open 0.001",
        "half_open | g2 | calls 0/0/0 | oc 1 | probes 1/0 | <- open_duration elapsed",
        "closed | g3 | calls 0/0/0 | <- 1 probe succeeded",
    ],
    "failed_probes_back_off": [
        "failed",
        "open | g1 | calls 0/0/0 | oc 1 | retry 10 | <- failure_rate 1.00 >= 0.50 over 1 calls",
        "failed",
        "open | g3 | calls 0/0/0 | oc 2 | retry 20 | <- probe failed",
        "failed",
        "open | g5 | calls 0/0/0 | oc 3 | retry 35 | <- probe failed",
        "failed",
        "open | g7 | calls 0/0/0 | oc 4 | retry 35 | <- probe failed",
    ],
    "consecutive_failures": [
        "failed",
        "failed",
        "ok",
        "failed",
        "failed",
        "closed | g0 | calls 5/4/0 | cx 2",
        "failed",
        "open | g1 | calls 0/0/0 | oc 1 | retry 30 | <- consecutive_failures 3 >= 3",
    ],
    "window_expiry": [
        "failed",
        "ok",
        "ok",
        "closed | g0 | calls 3/1/0",
        "closed | g0 | calls 2/0/0",
        "closed | g0 | calls 0/0/0",
    ],
    "forced_states": [
        "ok",
        "forced_open | g1 | calls 1/0/0 | retry 60 | by test: forced by test",
        "rejected forced_open 60 forced by test",
        "closed | g2 | calls 0/0/0 | <- forced_open expired",  # 60 s: the call left the window
        "disabled | g3 | calls 0/0/0 | by test: forced by test",  # a control reply: no last transition
        "failed",
        "failed",
        "failed",
        "disabled | g3 | calls 3/3/0 | cx 3 | by test: forced by test | <- manual disable by test: forced by test",
        "failed",  # admitted after the expiry; the kept window (4/4 failed) trips at once
        "open | g5 | calls 0/0/0 | oc 1 | retry 30 | <- failure_rate 1.00 >= 0.50 over 4 calls",
        "rejected open 30",
        "closed | g6 | calls 0/0/0",
        "ok",
        "closed | g6 | calls 1/0/0 | <- manual reset by test: reset by test",
    ],
    "slow_calls": [
        "ok",
        "ok",
        "ok",
        "closed | g0 | calls 3/0/1",
        "ok",
        "open | g1 | calls 0/0/0 | oc 1 | retry 30 | <- slow_call_rate 0.50 >= 0.50 over 4 calls",
    ],
    "half_open_probe_slots": [
        "failed",
        "rejected half_open 3",
        "half_open | g2 | calls 0/0/0 | oc 1 | probes 2/0 | <- open_duration elapsed",
        "ok",
        "half_open | g2 | calls 0/0/0 | oc 1 | probes 0/3 | <- open_duration elapsed",
    ],
    "two_workers_share_state": [
        "ok",
        "failed",
        "failed",
        "ok",
        "rejected open 28.999",
        "open | g1 | calls 0/0/0 | oc 1 | retry 28.999 | <- failure_rate 0.67 >= 0.60 over 3 calls",
    ],
}


# -- Backends ------------------------------------------------------------------------------------


@dataclass
class Backend:
    """A breaker factory and the clock that drives it."""

    make: Make
    clock: FrozenClock


def real_backend(client: redis.Redis, prefix: str) -> Backend:
    """Breakers on the real server, built by the same make_breaker: only the server differs."""
    clock = FrozenClock()

    def make(service: str = "svc", **fields: Any) -> Breaker:
        return make_breaker(service, BreakerConfig(**fields), redis=client, clock=clock, prefix=prefix)

    return Backend(make, clock)


@pytest.fixture(params=["fake", pytest.param("real", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest) -> Backend:
    """The plugin's fake breaker factory, or breakers on the real server with a frozen clock."""
    if request.param == "fake":
        factory: FakeBreakerFactory = request.getfixturevalue("fake_breaker")
        return Backend(factory, factory.clock)
    # (the session server's client `r` is requested only by the 'real' runs)
    return real_backend(request.getfixturevalue("r"), request.getfixturevalue("prefix"))


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_gives_expected_observations(name: str, backend: Backend) -> None:
    """Each scenario gives the expected states, counts, causes and rejections, fake and real."""
    observations = SCENARIOS[name](backend.make, backend.clock)
    assert [o if isinstance(o, str) else brief(o) for o in observations] == EXPECTED[name]


def test_fake_and_real_give_identical_snapshots(r: redis.Redis, prefix: str) -> None:
    """Every scenario yields equal observations, full snapshots included, on fakeredis and Redis."""
    for name, scenario in SCENARIOS.items():
        fake = FakeBreakerFactory(FrozenClock())
        real = real_backend(r, f"{prefix}-{name}")
        assert scenario(fake, fake.clock) == scenario(real.make, real.clock), name


# -- The helpers themselves ----------------------------------------------------------------------


def test_frozen_clock_moves_only_when_told() -> None:
    """FrozenClock starts at EPOCH, advances by seconds or timedelta, and can be set back."""
    clock = FrozenClock()
    assert clock() == clock() == EPOCH
    assert clock.advance(1.5) == EPOCH + 1.5
    assert clock.advance(timedelta(minutes=1)) == EPOCH + 61.5
    clock.set(100.0)
    assert clock() == 100.0
    with pytest.raises(ValueError, match="set"):
        clock.advance(-1)
    with pytest.raises(TypeError):
        clock.advance("1")  # type: ignore[arg-type]
    assert FrozenClock(5.0)() == 5.0


def test_fake_redis_is_a_private_bytes_client() -> None:
    """fake_redis() is a redis.Redis with bytes replies on its own empty server."""
    a, b = fake_redis(), fake_redis()
    assert isinstance(a, redis.Redis)
    a.set("k", "v")
    assert a.get("k") == b"v"
    assert b.get("k") is None


def test_make_breaker_defaults_and_shared_client() -> None:
    """make_breaker gives a working breaker; two on one client and clock share the state."""
    b = make_breaker()
    assert (b.service, b.prefix, b.state) == ("test", "distbreaker", State.CLOSED)
    assert b.snapshot().server_time == EPOCH
    client, clock = fake_redis(), FrozenClock()
    one = make_breaker("payments", BreakerConfig(minimum_calls=1), redis=client, clock=clock)
    two = make_breaker("payments", BreakerConfig(minimum_calls=1), redis=client, clock=clock)
    force_open(one, reason="INC-1")
    with pytest.raises(CircuitOpenError) as info:
        two.call(ok)
    assert (info.value.state, info.value.retry_after, info.value.reason) == ("forced_open", None, "INC-1")
    assert Admin(client).list() == ["payments"]
    assert make_breaker("payments", redis=client).state is State.FORCED_OPEN
    assert make_breaker("payments", redis=client, prefix="other").state is State.CLOSED


def test_fixtures_share_clock_and_server(fake_breaker: FakeBreakerFactory, breaker_clock: FrozenClock) -> None:
    """The plugin's fake_breaker uses breaker_clock and one fake server for every breaker it makes."""
    assert fake_breaker.clock is breaker_clock
    a = fake_breaker("payments", minimum_calls=1, open_duration=5)
    run(a, fail)
    assert Admin(fake_breaker.redis).list() == ["payments"]  # Admin has no test clock: nothing timed
    other = fake_breaker("payments")
    assert other.snapshot().state is State.OPEN
    breaker_clock.advance(5)
    assert other.snapshot().state is State.HALF_OPEN


def test_importing_the_plugin_does_not_import_fakeredis() -> None:
    """Loading the pytest plugin (every pytest run) stays cheap: fakeredis waits for a fixture."""
    code = (
        "import sys, distbreaker.pytest_plugin, distbreaker.testing; "
        "assert 'fakeredis' not in sys.modules, 'fakeredis imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_plugin_loads_by_entry_point_in_another_project(tmp_path: Path) -> None:
    """A project that only installed distbreaker gets the fixtures without any conftest."""
    (tmp_path / "test_user.py").write_text(
        textwrap.dedent("""
        import pytest
        from distbreaker import CircuitOpenError, State
        from distbreaker.testing import force_open

        def test_user_code(fake_breaker, breaker_clock):
            payments = fake_breaker("payments", minimum_calls=2, open_duration=30)
            for _ in range(2):
                with pytest.raises(ZeroDivisionError):
                    payments.call(lambda: 1 / 0)
            assert payments.state is State.OPEN
            breaker_clock.advance(30)
            assert payments.call(lambda: "ok") == "ok"
            force_open(payments)
            with pytest.raises(CircuitOpenError):
                payments.call(lambda: "ok")
    """)
    )
    # -p no:asyncio: pytest-asyncio, when installed, warns about its unset loop scope in a bare project.
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            "-W",
            "error",
            str(tmp_path),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout
