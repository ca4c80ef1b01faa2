"""The config schema on a real server: the Lua accepts and refuses exactly what Python does, and
a refused config (from Python or sent to the script directly) writes nothing."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, ConfigError, State, _schema
from distbreaker._reference import Cfg
from distbreaker._scripts import SCRIPTS

pytestmark = pytest.mark.redis

# Values in the scripts' units around which only the field under test decides: the rules between
# fields (window_ms >= buckets, max_open_duration_ms >= open_duration_ms, idle_ttl_ms >= window_ms)
# hold for every bound of every field.
BASE = {
    "failure_rate_threshold": "0.5",
    "minimum_calls": "10",
    "window_ms": "1000",
    "buckets": "1",
    "consecutive_failures": "0",
    "slow_call_rate_threshold": "1.0",
    "open_duration_ms": "1",
    "backoff_multiplier": "2.0",
    "max_open_duration_ms": str(7 * _schema.DAY_MS),
    "half_open_max_calls": "1",
    "half_open_successes": "1",
    "probe_timeout_ms": "10000",
    "idle_ttl_ms": str(366 * _schema.DAY_MS),
    "half_open_failure_rate_threshold": "0.0",
    "minimum_failing_workers": "0",
}
assert tuple(BASE) == tuple(f.lua for f in _schema.FIELDS)


def candidates() -> Iterator[tuple[str, str, bool]]:
    """(lua name, text in script units, accepted) just inside and just outside each bound."""
    for f in _schema.FIELDS:
        low, high = f.low, f.high
        if f.integral:
            yield f.lua, str(low), True
            yield f.lua, str(high), True
            yield f.lua, str(int(high) + 1), False
            yield f.lua, str(int(low) - 1), f.off  # 0 = off
            yield f.lua, "-1", False
        elif f.low_open:
            yield f.lua, repr(math.nextafter(low, math.inf)), True
            yield f.lua, repr(float(low)), f.off  # 0 = off
            yield f.lua, repr(float(high)), True
            yield f.lua, repr(math.nextafter(high, math.inf)), False
        else:
            yield f.lua, repr(float(low)), True
            yield f.lua, repr(math.nextafter(low, -math.inf)), False
            yield f.lua, repr(float(high)), True
            yield f.lua, repr(math.nextafter(high, math.inf)), False
        yield f.lua, "nan", False
        yield f.lua, "inf", False


def texts_for(name: str, text: str) -> dict[str, str]:
    values = {**BASE, name: text}
    if name == "idle_ttl_ms":
        values["window_ms"] = "1"
    if name == "buckets":
        values["window_ms"] = "1000"
    return values


def python_value(f: _schema.Field, text: str) -> Any:
    """A script text as a `BreakerConfig` value (what would be sent back as this text)."""
    v = float(text)
    if f.unit == "ms":
        return v / 1000
    if f.off and v == 0:
        return None
    if f.integral:
        return int(v) if v.is_integer() else v
    return v


def keys(prefix: str, service: str) -> tuple[str, str]:
    return f"{prefix}:{{{service}}}", f"{prefix}:{{{service}}}:events"


def control(r: redis.Redis, prefix: str, service: str, op: str, until: str, reason: str, actor: str = "t") -> Any:
    """control.lua as an operator runs it: no config of its own (the stored one, else defaults)."""
    return r.eval(SCRIPTS["control"].text, 2, *keys(prefix, service), "", "", op, until, reason, actor)


def lua_accepts(r: redis.Redis, prefix: str, service: str, values: dict[str, str]) -> bool:
    """Whether control.lua's 'config' op takes these values; a refusal writes nothing."""
    spec = ";".join(f"{n}={v}" for n, v in values.items())
    try:
        control(r, prefix, service, "config", "0", spec)
    except redis.ResponseError as exc:
        assert "distbreaker: " in str(exc) and " must be " in str(exc), exc
        assert r.exists(*keys(prefix, service)) == 0, "a refused config wrote something"
        return False
    return True


def test_lua_and_python_agree_on_every_bound(r: redis.Redis, prefix: str) -> None:
    """For every field, values just inside and just outside each bound are accepted or refused
    alike by BreakerConfig, by control.lua's 'config' op and by the reference model's Cfg."""
    seen = []
    for i, (name, text, accepted) in enumerate(candidates()):
        f = _schema.by_lua(name)
        values = texts_for(name, text)
        lua = lua_accepts(r, prefix, f"svc{i}", values)
        model = Cfg.from_argv(list(values.values())).valid()
        try:
            config = BreakerConfig(**{g.name: python_value(g, values[g.lua]) for g in _schema.FIELDS})
        except ConfigError as exc:
            assert exc.field == f.name, (name, text, exc)
            python = False
        else:
            python = True
            assert config._lua == tuple(values.values()) or f.unit in ("ratio", "factor") and text == "nan"
        assert (lua, python, model) == (accepted, accepted, accepted), (name, text)
        seen.append((name, accepted))
    assert {n for n, a in seen if a} == {n for n, a in seen if not a} == set(BASE)


@pytest.mark.parametrize("name", [f.lua for f in _schema.FIELDS if f.integral])
def test_lua_refuses_fractions_of_integral_fields(r: redis.Redis, prefix: str, name: str) -> None:
    values = texts_for(name, str(_schema.by_lua(name).low + 0.5))
    assert not lua_accepts(r, prefix, "svc", values)
    assert not Cfg.from_argv(list(values.values())).valid()


@pytest.mark.parametrize("rule", _schema.RELATIONS, ids=lambda rule: rule.field)
def test_lua_and_python_agree_on_the_rules_between_fields(r: redis.Redis, prefix: str, rule: _schema.AtLeast) -> None:
    """field == other is accepted, field one below other is refused, in every language."""
    a, b = _schema.by_name(rule.field), _schema.by_name(rule.other)
    for n, (lower, accepted) in enumerate(((0, True), (1, False))):
        values = {
            **BASE,
            "window_ms": "1000",
            "idle_ttl_ms": "1000",
            "open_duration_ms": "1000",
            "max_open_duration_ms": "1000",
            "buckets": "10",
        }
        values[a.lua] = str(int(values[b.lua]) - lower)
        assert lua_accepts(r, prefix, f"svc{n}", values) is accepted
        assert Cfg.from_argv(list(values.values())).valid() is accepted
        kwargs = {g.name: python_value(g, values[g.lua]) for g in _schema.FIELDS}
        if accepted:
            BreakerConfig(**kwargs)
        else:
            with pytest.raises(ConfigError) as info:
                BreakerConfig(**kwargs)
            assert info.value.field == rule.field


# -- issue 14 item 6: buckets ----------------------------------------------------------------------


def test_set_config_buckets_10000_is_refused_with_nothing_stored(r: redis.Redis, prefix: str) -> None:
    """`config svc --set buckets=10000 --set window=10m` stored the override without a history
    entry; now it is refused before Redis, and the breaker is as it was."""
    b = Breaker("svc", r, BreakerConfig(), prefix=prefix, listen=False)
    b.call(lambda: None)
    admin = Admin(r, prefix=prefix)
    before = r.hgetall(keys(prefix, "svc")[0]), r.xlen(keys(prefix, "svc")[1]), len(admin.history("svc"))
    for overrides in ({"buckets": 10_000, "window": 600.0}, {"buckets": 10_000}, {"buckets": 1001}):
        with pytest.raises(ConfigError) as info:
            admin.set_config("svc", actor="alice", **overrides)
        assert info.value.field == "buckets"
    assert (r.hgetall(keys(prefix, "svc")[0]), r.xlen(keys(prefix, "svc")[1]), len(admin.history("svc"))) == before
    assert admin.config("svc").overrides == {}


def test_control_config_refuses_buckets_above_the_bound_before_writing(r: redis.Redis, prefix: str) -> None:
    """Sent to control.lua directly (another client, an older CLI), buckets=10000 fails in the
    script before its first write: no override, no event, no publish."""
    Breaker("svc", r, BreakerConfig(), prefix=prefix, listen=False).call(lambda: None)
    state, events = keys(prefix, "svc")
    before = r.hgetall(state), r.xlen(events)
    p = r.pubsub()
    p.subscribe(f"{prefix}:events")
    assert p.get_message(timeout=1) is not None  # the subscribe confirmation
    with pytest.raises(redis.ResponseError, match="buckets must be an integer from 1 to 1000, got 10000"):
        control(r, prefix, "svc", "config", "0", "buckets=10000;window_ms=600000")
    assert (r.hgetall(state), r.xlen(events)) == before
    control(r, prefix, "svc", "config", "0", "buckets=1000;window_ms=600000")  # the bound itself: fine
    assert r.hget(state, "ov") == b"window_ms=600000;buckets=1000"
    # the first message published since the refusal is the accepted change's
    message = p.get_message(timeout=5)
    assert message is not None and b"window_ms=600000, buckets=1000" in message["data"], message
    p.close()


def test_the_largest_bucket_count_trips_cleanly(r: redis.Redis, prefix: str) -> None:
    """buckets=8000 made the second failing call raise 'too many results to unpack' and left the
    state half-written; at the bound (1000) the caller gets its own exception and the trip is
    complete: state open, an event in the history."""

    class Boom(Exception):
        pass

    def fail() -> None:
        raise Boom

    b = Breaker("svc", r, BreakerConfig(buckets=1000, window=60, minimum_calls=2), prefix=prefix, listen=False)
    for _ in range(2):
        with pytest.raises(Boom):
            b.call(fail)
    assert b.snapshot().state is State.OPEN
    [t] = Admin(r, prefix=prefix).history("svc")
    assert t.to_state is State.OPEN and t.cause.startswith("failure_rate")


# -- issue 14 items 4 and 8: idle_ttl ------------------------------------------------------------------


def test_idle_ttl_at_its_bound_is_set_on_both_keys(r: redis.Redis, prefix: str) -> None:
    """idle_ttl >= 1e14 s made PEXPIRE refuse every call; the bound (366 days) is far below."""
    b = Breaker("svc", r, BreakerConfig(idle_ttl=timedelta(days=366)), prefix=prefix, listen=False)
    b.call(lambda: None)
    state, events = keys(prefix, "svc")
    for key in (state, events):
        assert 365 * 86400_000 < r.pttl(key) <= 366 * 86400_000
    with pytest.raises(ConfigError) as info:
        BreakerConfig(idle_ttl=timedelta(days=366, milliseconds=1))
    assert info.value.field == "idle_ttl"
    with pytest.raises(ConfigError) as info:
        Admin(r, prefix=prefix).set_config("svc", idle_ttl=1e14)
    assert info.value.field == "idle_ttl"
    with pytest.raises(redis.ResponseError, match="idle_ttl_ms must be an integer from 1 to 31622400000"):
        control(r, prefix, "svc", "config", "0", "idle_ttl_ms=100000000000000000")
    assert r.hget(state, "ov") is None


def test_idle_ttl_shorter_than_the_window_is_refused_everywhere(r: redis.Redis, prefix: str) -> None:
    """issue 14 item 4 (idle_ttl=1, window=60): refused by BreakerConfig, by Admin.set_config
    against the workers' window, and by the script."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(idle_ttl=1, window=60)
    assert info.value.field == "idle_ttl"
    Breaker("svc", r, BreakerConfig(window=60), prefix=prefix, listen=False).call(lambda: None)
    admin = Admin(r, prefix=prefix)
    with pytest.raises(ConfigError) as info:
        admin.set_config("svc", idle_ttl=1)
    assert info.value.field == "idle_ttl"
    state, events = keys(prefix, "svc")
    before = r.hgetall(state), r.xlen(events)
    with pytest.raises(redis.ResponseError, match="idle_ttl_ms must be >= window_ms"):
        control(r, prefix, "svc", "config", "0", "idle_ttl_ms=1000")
    assert (r.hgetall(state), r.xlen(events)) == before
    assert admin.set_config("svc", idle_ttl=60).overrides == {"idle_ttl": 60.0}


# -- issue 14 item 9: for_ ---------------------------------------------------------------------------

BAD_FOR = [math.inf, float("1e999"), 1e300, 1e16, _schema.FOR_MAX + 1, -1, math.nan, True, "60"]


@pytest.mark.parametrize("value", BAD_FOR, ids=repr)
def test_trip_with_a_bad_for_changes_nothing(r: redis.Redis, prefix: str, redis_url: str, value: Any) -> None:
    """trip(for_=inf) raised OverflowError, for_ >= 1e16 s wrapped forced_until to -9.2e15 and
    `trip --for 1e300` applied the trip: every path now raises ConfigError and writes nothing."""
    b = Breaker("svc", r, BreakerConfig(), prefix=prefix, listen=False)
    b.call(lambda: None)
    state, events = keys(prefix, "svc")
    before = r.hgetall(state), r.xlen(events)
    admin = Admin(r, prefix=prefix)
    for trip in (b.trip, b.disable, lambda **kw: admin.trip("svc", **kw), lambda **kw: admin.disable("svc", **kw)):
        with pytest.raises(ConfigError) as info:
            trip(for_=value, actor="alice")
        assert info.value.field == "for_"

    async def main() -> None:
        client = redis.asyncio.Redis.from_url(redis_url)
        ab = dba.Breaker("svc", client, BreakerConfig(), prefix=prefix, listen=False)
        try:
            for trip in (ab.trip, ab.disable):
                with pytest.raises(ConfigError) as info:
                    await trip(for_=value, actor="alice")
                assert info.value.field == "for_"
        finally:
            await client.aclose()

    asyncio.run(main())
    assert (r.hgetall(state), r.xlen(events)) == before


def test_trip_for_the_longest_duration(r: redis.Redis, prefix: str) -> None:
    """for_ at its bound (366 days): forced_until and retry_after are right, not wrapped around."""
    s = Admin(r, prefix=prefix).trip("svc", for_=_schema.FOR_MAX, actor="alice")
    assert s.state is State.FORCED_OPEN
    assert s.retry_after == pytest.approx(_schema.FOR_MAX, abs=5)
