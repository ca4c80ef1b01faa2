"""Fast, deterministic checks of the reference model alone (no Redis)."""

from __future__ import annotations

import dataclasses
import math

from model import CLOSED, DISABLED, FORCED_OPEN, HALF_OPEN, OPEN, Cfg, Model

T0 = 1_700_000_000_000  # a realistic epoch-ms clock, a multiple of every bucket width below

CFG = Cfg(
    failure_rate_threshold=0.5,
    minimum_calls=4,
    window_ms=10_000,
    buckets=5,
    consecutive_failures=0,
    slow_call_rate_threshold=1.0,
    open_duration_ms=1_000,
    backoff_multiplier=2.0,
    max_open_duration_ms=5_000,
    half_open_max_calls=2,
    half_open_successes=2,
    probe_timeout_ms=500,
    idle_ttl_ms=86_400_000,
)


def cfg(**changes: float) -> Cfg:
    """CFG with some values replaced."""
    return dataclasses.replace(CFG, **changes)


def tripped(model: Model, now: int = T0) -> Model:
    """Open `model` with failures under its current generation, at `now`."""
    model.record(now, model.g, 0, model.cfg.minimum_calls, 0)
    assert model.st == OPEN
    return model


def test_failure_rate_trips_only_after_minimum_calls() -> None:
    """The failure rate is not judged before minimum_calls, and trips once it is reached."""
    m = Model(cfg(minimum_calls=4))
    for _ in range(3):
        reply = m.record(T0, 0, 0, 1, 0)
        assert reply.state == CLOSED
    reply = m.record(T0, 0, 1, 0, 0)
    assert reply.state == OPEN
    assert reply.transitions == "closed>open"
    assert reply.cause == "failure_rate 0.75 >= 0.50 over 4 calls"
    assert reply.generation == 1
    assert reply.open_until == T0 + 1_000
    assert (reply.calls, reply.failures, reply.open_count) == (0, 0, 1)  # window cleared


def test_consecutive_failures_trip_before_the_rate() -> None:
    """A run of failures trips on consecutive_failures even below minimum_calls."""
    m = Model(cfg(consecutive_failures=3, minimum_calls=100))
    m.record(T0, 0, 1, 2, 0)  # successes first, then 2 failures: cx = 2
    assert (m.st, m.cx) == (CLOSED, 2)
    reply = m.record(T0, 0, 0, 1, 0)
    assert reply.state == OPEN
    assert reply.cause == "consecutive_failures 3 >= 3"
    assert reply.consecutive == 0


def test_open_becomes_half_open_exactly_at_open_until() -> None:
    """`open` lasts until open_until exclusive, then the next call sees `half_open`."""
    m = tripped(Model(CFG))
    before = m.acquire(T0 + 999)
    assert (before.state, before.retry_at) == (OPEN, T0 + 1_000)
    after = m.read(T0 + 1_000)
    assert after.state == HALF_OPEN
    assert after.transitions == "open>half_open"
    assert after.cause == "open_duration elapsed"
    assert after.open_until == 0


def test_backoff_doubles_and_is_capped() -> None:
    """Each reopening from half_open doubles the open duration, up to max_open_duration."""
    m = tripped(Model(cfg(max_open_duration_ms=5_000)))
    durations = [m.ou - T0]
    now = T0
    for _ in range(4):
        now = m.ou
        m.acquire(now)  # -> half_open
        reply = m.record(now, m.g, 0, 1, 0)
        assert reply.transitions == "half_open>open"
        assert reply.cause == "probe failed"
        durations.append(m.ou - now)
    assert durations == [1_000, 2_000, 4_000, 5_000, 5_000]
    assert m.oc == 5


def test_backoff_exponent_is_capped_at_64() -> None:
    """From the 66th opening on, the open duration stops growing: exponent min(oc - 1, 64)."""
    m = Model(cfg(open_duration_ms=100, backoff_multiplier=1.01, max_open_duration_ms=5_000))
    m.oc = 65  # the next opening is the 66th
    tripped(m)
    assert m.ou - T0 == math.floor(100 * 1.01**64) == 189


def test_expired_lease_frees_a_probe_slot() -> None:
    """Half-open leases are limited to half_open_max_calls until one of them expires."""
    m = tripped(Model(cfg(half_open_max_calls=2, probe_timeout_ms=500)))
    t = T0 + 1_000
    first = m.acquire(t)
    second = m.acquire(t + 10)
    assert (first.lease, second.lease) == ("2:1", "2:2")
    denied = m.acquire(t + 499)
    assert (denied.lease, denied.retry_at, denied.leases) == ("", t + 500, 2)
    third = m.acquire(t + 500)  # the first lease expires at t + 500
    assert (third.lease, third.leases) == ("2:3", 2)


def test_half_open_successes_close_and_clear() -> None:
    """half_open_successes successful probes close the breaker with an empty window."""
    m = tripped(Model(cfg(half_open_successes=2)))
    t = T0 + 1_000
    lease = m.acquire(t).lease
    reply = m.record(t, m.g, 1, 0, 0, lease)
    assert (reply.state, reply.half_open_successes, reply.leases) == (HALF_OPEN, 1, 0)
    reply = m.record(t, m.g, 1, 0, 0)
    assert reply.state == CLOSED
    assert reply.cause == "2 probes succeeded"
    assert (reply.open_count, reply.half_open_successes, reply.calls) == (0, 0, 0)


def test_slow_probe_reopens() -> None:
    """A slow success during half_open reopens the breaker with cause "probe slow"."""
    m = tripped(Model(CFG))
    t = T0 + 1_000
    reply = m.record(t, 1, 1, 0, 1)  # generation 1 is stale after open>half_open
    assert (reply.state, reply.transitions) == (HALF_OPEN, "open>half_open")
    reply = m.record(t, m.g, 1, 0, 1)
    assert (reply.state, reply.cause) == (OPEN, "probe slow")


def test_stale_generation_is_ignored_but_releases_its_lease() -> None:
    """An outcome from an older generation neither counts nor transitions, yet frees its lease."""
    m = tripped(Model(cfg(half_open_successes=1)))
    t = T0 + 1_000
    lease = m.acquire(t).lease
    m.control(t, "trip", 0, "INC-1", "alice")
    assert (m.st, len(m.hl)) == (FORCED_OPEN, 1)
    reply = m.record(t, m.g - 1, 1, 0, 0, lease)
    assert (reply.state, reply.transitions, reply.leases, reply.calls) == (FORCED_OPEN, "", 0, 0)
    m.control(t, "reset", 0, "", "bob")
    reply = m.record(t, m.g - 1, 0, 50, 0)
    assert (reply.state, reply.calls) == (CLOSED, 0)


def test_forced_state_expires_to_closed_and_keeps_the_window() -> None:
    """A trip with an expiry returns to closed at `until`, with the window still counted."""
    m = Model(CFG)
    m.record(T0, 0, 2, 1, 0)
    reply = m.control(T0 + 10, "trip", T0 + 500, "INC-42", "alice")
    assert reply.state == FORCED_OPEN
    assert reply.cause == "manual trip by alice: INC-42"
    assert (reply.forced_until, reply.reason, reply.actor) == (T0 + 500, "INC-42", "alice")
    assert m.acquire(T0 + 499).retry_at == T0 + 500
    reply = m.read(T0 + 500)
    assert reply.state == CLOSED
    assert reply.cause == "forced_open expired"
    assert (reply.calls, reply.failures) == (3, 1)
    assert (reply.forced_until, reply.reason, reply.actor) == (0, "", "")


def test_disabled_counts_but_never_trips() -> None:
    """`disabled` keeps counting outcomes, and its first record after expiry can trip."""
    m = Model(cfg(minimum_calls=2))
    m.control(T0, "disable", T0 + 100, "", "ops")
    assert m.record(T0, m.g, 0, 5, 0).state == DISABLED
    assert (m.tc, m.tf, m.cx) == (5, 5, 5)
    reply = m.record(T0 + 100, m.g + 1, 1, 0, 0)  # the generation after the expiry
    assert reply.transitions == "disabled>closed;closed>open"
    assert reply.cause == "failure_rate 0.83 >= 0.50 over 6 calls"


def test_reset_clears_the_window_and_the_open_count() -> None:
    """reset returns to closed from any state with an empty window and open_count 0."""
    m = tripped(Model(CFG))
    m.read(T0 + 1_000)
    m.record(T0 + 1_000, m.g, 0, 1, 0)  # probe failed: open_count 2
    reply = m.control(T0 + 1_001, "reset", 0, "", "bob")
    assert reply.transitions == "open>closed"
    assert reply.cause == "manual reset by bob"
    assert (reply.state, reply.open_count, reply.calls, reply.consecutive) == (CLOSED, 0, 0, 0)
    m.record(T0 + 1_001, m.g, 1, 0, 0)
    m.control(T0 + 1_002, "reset", 0, "again", "bob")
    assert (m.tc, m.st, m.g) == (0, CLOSED, 5)


def test_buckets_expire_one_by_one() -> None:
    """Counts leave the window when their bucket is `buckets` buckets old."""
    m = Model(cfg(window_ms=10_000, buckets=5, minimum_calls=1000))  # 2 s buckets
    m.record(T0, 0, 1, 0, 0)
    m.record(T0 + 2_000, 0, 2, 0, 0)
    m.record(T0 + 4_500, 0, 0, 4, 1)
    assert m.read(T0 + 9_999).calls == 7
    assert m.read(T0 + 10_000).calls == 6  # epoch of T0 expired
    reply = m.read(T0 + 12_000)
    assert (reply.calls, reply.failures, reply.slow) == (4, 4, 1)
    assert m.read(T0 + 14_000).calls == 0
    m.record(T0 + 14_000, 0, 1, 0, 0)
    assert m.read(T0 + 30_000).calls == 0  # a whole window later: everything cleared


def test_clock_going_back_keeps_the_current_bucket() -> None:
    """A call with an earlier clock counts into the current bucket and expires nothing."""
    m = Model(cfg(minimum_calls=1000))
    m.record(T0 + 4_000, 0, 1, 0, 0)
    m.record(T0, 0, 1, 0, 0)
    assert (m.be, m.c0, m.tc) == ((T0 + 4_000) // 2_000, 2, 2)


def test_read_of_a_missing_key_keeps_nothing() -> None:
    """A read before any other call does not create the key, so its rotation is not kept."""
    m = Model(CFG)
    reply = m.read(T0 + 4_000)
    assert (reply.state, reply.generation, m.exists, m.be) == (CLOSED, 0, False, None)


def test_the_transition_table_is_the_same_in_lua_and_python() -> None:
    """lua/_lib.lua `allowed()` and `_reference.TRANSITIONS` list the same pairs."""
    import re
    from pathlib import Path

    from distbreaker._reference import TRANSITIONS

    lib = (Path(__file__).resolve().parents[2] / "lua" / "_lib.lua").read_text()
    body = lib[lib.index("local function allowed(") : lib.index("local function transition(")]
    pairs = set(re.findall(r"\['(\w+)>(\w+)'\] = true", body))
    assert pairs == set(TRANSITIONS) and len(pairs) == 18
