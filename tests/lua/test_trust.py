"""What the scripts promise about bad data, expiry and partial writes (issue 14, items 4, 5, 7
and 11), on a real server: a busy breaker never expires, missing config is asked for again,
a refused PUBLISH writes nothing, corrupt state is refused (and repaired by reset)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from model import Cfg

from distbreaker import (
    AccessDeniedError,
    Admin,
    Breaker,
    BreakerConfig,
    CircuitOpenError,
    ConfigError,
    CorruptStateError,
    ScriptError,
    State,
)
from distbreaker._scripts import SCRIPTS

pytestmark = pytest.mark.redis

T0 = 1_700_000_000_000
# idle_ttl 1 s, so the window is 1 s too (idle_ttl >= window is a config rule); one bucket of 1 s
CFG = Cfg(0.5, 2, 1_000, 1, 0, 1.0, 1_000, 2.0, 5_000, 1, 1, 500, 1_000)
CFG60 = Cfg(0.5, 2, 60_000, 10, 0, 1.0, 1_000, 2.0, 5_000, 1, 1, 500, 60_000)  # ten 6 s buckets


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def ok() -> str:
    return "ok"


class Script:
    """The scripts at a test clock, as a worker (fingerprint + config on demand) or an operator."""

    def __init__(self, r: redis.Redis, prefix: str, cfg: Cfg = CFG) -> None:
        self.r, self.cfg = r, cfg
        self.service = f"svc-{uuid.uuid4().hex[:8]}"
        self.key = f"{prefix}:{{{self.service}}}"
        self.events = f"{self.key}:events"

    def raw(self, name: str, now: int, fp: str, *argv: str) -> Any:
        return self.r.eval(SCRIPTS[name].text, 2, self.key, self.events, str(now), fp, *argv)

    def worker(self, name: str, now: int, *own: str) -> Any:
        try:
            return self.raw(name, now, self.cfg.fingerprint, *own)
        except redis.ResponseError as exc:
            if "NOCONFIG" not in str(exc):
                raise
            return self.raw(name, now, self.cfg.fingerprint, *own, *self.cfg.argv())

    def record(self, now: int, gen: int, s: int, f: int) -> Any:
        return self.worker("record", now, str(gen), str(s), str(f), "0", "", "", "")

    def operator(self, name: str, now: int, *own: str) -> Any:
        return self.raw(name, now, "", *own)

    def hash(self) -> dict[str, str]:
        return self.r.hgetall(self.key)


@pytest.fixture
def s(rtext: redis.Redis, prefix: str) -> Script:
    return Script(rtext, prefix)


# -- 14.4: the TTL rule ---------------------------------------------------------------------------


def test_busy_breaker_with_short_idle_ttl_keeps_every_call(r: redis.Redis, prefix: str) -> None:
    """The issue's idle_ttl=1 s, window=60 s is refused now (idle_ttl >= window); at the shortest
    idle_ttl allowed (1 s, with a 1 s window of 100 ms buckets), 150 calls 20 ms apart (3 s) never
    let the key expire: a field written once after the first call is still there at the end.
    Before, the fast path never refreshed the TTL and the key expired mid-use (47 of 143 counted)."""
    with pytest.raises(ConfigError, match="idle_ttl"):
        BreakerConfig(idle_ttl=1, window=60)
    b = Breaker("busy", r, BreakerConfig(idle_ttl=1, window=1, minimum_calls=10_000), prefix=prefix, listen=False)
    key = f"{prefix}:{{busy}}"
    b.call(ok)
    r.hset(key, "test-marker", "1")  # gone if the key ever expires (a new key is created without it)
    for _ in range(150):
        b.call(ok)
        time.sleep(0.02)  # the scenario's pace, not a synchronisation
    assert r.hget(key, "test-marker") == b"1"
    assert 0 < r.pttl(key) <= 1_000


def test_refresh_is_due_at_xr_and_the_fast_path_leaves_it_to_the_general_path(s: Script) -> None:
    """The first write stores xr = now + min(bucket_ms, idle_ttl / 2); before xr a record does not
    touch the expiry, at xr it is refreshed (on the fast path's behalf: same rule)."""
    s.record(T0, 0, 1, 0)
    assert int(s.r.hget(s.key, "xr")) == T0 + 500
    s.r.pexpire(s.key, 100_000)  # a marker: a refresh sets 1 000 ms again
    s.record(T0 + 499, 0, 1, 0)
    assert s.r.pttl(s.key) > 1_000
    s.record(T0 + 500, 0, 1, 0)
    assert 0 < s.r.pttl(s.key) <= 1_000 and 0 < s.r.pttl(s.events) <= 1_000
    assert int(s.r.hget(s.key, "xr")) == T0 + 1_000
    assert int(s.r.hget(s.key, "tc")) == 3


def test_expiry_never_before_open_until_or_forced_until(s: Script) -> None:
    """idle_ttl 1 s: an open period of 5 s and a trip for an hour keep the keys that long."""
    s.cfg = Cfg.from_argv([*CFG.argv()[:6], "5000", "2.0", "5000", "1", "1", "500", "1000"])
    s.record(T0, 0, 0, 2)
    assert s.record(T0, 1, 0, 0)[0] == "open"
    assert s.r.pttl(s.key) > 4_000 and s.r.pttl(s.events) > 4_000
    s.operator("control", T0, "trip", str(T0 + 3_600_000), "INC-1", "alice")
    assert s.r.pttl(s.key) > 3_500_000 and s.r.pttl(s.events) > 3_500_000


def test_trip_for_longer_than_idle_ttl_outlives_it(r: redis.Redis, prefix: str) -> None:
    """Through the client: trip(for_=30) with idle_ttl=1 s leaves 30 s on both keys."""
    b = Breaker("trip", r, BreakerConfig(idle_ttl=1, window=1), prefix=prefix, listen=False)
    b.call(ok)
    b.trip(for_=30, reason="maintenance")
    key = f"{prefix}:{{trip}}"
    assert r.pttl(key) > 25_000 and r.pttl(key + ":events") > 25_000


# -- 14.5: missing config is asked for again -------------------------------------------------------


def test_deleted_config_fields_are_asked_for_again(r: redis.Redis, prefix: str) -> None:
    """HDEL cfg cc q* while fp stays: workers with minimum_calls=3 trip after 1 success and 2
    failures (before, the defaults' minimum_calls=10 kept such a breaker closed)."""
    cfg = BreakerConfig(minimum_calls=3, failure_rate_threshold=0.5)
    b = Breaker("cfg", r, cfg, prefix=prefix, listen=False)
    b.call(ok)
    key = f"{prefix}:{{cfg}}"
    assert r.hget(key, "fp") is not None
    r.hdel(key, "cfg", "cc", "qb", "qn", "qr", "qm", "qc", "qs")
    others = [Breaker("cfg", r, cfg, prefix=prefix, listen=False) for _ in range(2)]
    for w in others:  # fresh workers: they send only the fingerprint first
        with pytest.raises(Boom):
            w.call(boom)
    assert b.snapshot().state is State.OPEN
    assert r.hget(key, "qm") == b"3" and r.hget(key, "cfg") is not None


@pytest.mark.parametrize("field,value", [("qm", "ten"), ("cfg", "1,2,3"), ("cfg", None)])
def test_broken_stored_config_answers_noconfig_then_is_rewritten(s: Script, field: str, value: str | None) -> None:
    """A worker whose fingerprint is stored gets NOCONFIG for a missing or broken config field
    (as soon as the call needs it), and its resent config rewrites it."""
    s.record(T0, 0, 1, 0)
    if value is None:
        s.r.hdel(s.key, field)
    else:
        s.r.hset(s.key, field, value)
    with pytest.raises(redis.ResponseError, match="NOCONFIG"):
        # a failure trips (minimum_calls 2 with 2 calls, 50 %): it needs the whole config
        s.raw("record", T0 + 1, s.cfg.fingerprint, "0", "0", "1", "0", "", "", "")
    assert s.record(T0 + 1, 0, 0, 1)[0] == "open"
    assert s.r.hget(s.key, "cfg") == ",".join(s.cfg.argv())


# -- 14.7: no half-applied write when PUBLISH is denied ---------------------------------------------


@pytest.fixture
def denied_channel(r: redis.Redis, redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    """A client whose ACL user may use the prefix's keys and the scripts, but no channel."""
    user = f"nopub-{uuid.uuid4().hex[:8]}"
    r.execute_command(
        "ACL", "SETUSER", user, "on", ">pw-for-test", "resetkeys", f"~{prefix}:*", "resetchannels", "+@all"
    )
    client = redis.Redis.from_url(redis_url, username=user, password="pw-for-test", socket_timeout=5)
    try:
        yield client
    finally:
        client.close()
        r.execute_command("ACL", "DELUSER", user)


def test_denied_publish_writes_nothing(denied_channel: redis.Redis, r: redis.Redis, prefix: str) -> None:
    """Keys allowed, `&<prefix>:events` not: a trip (operator and worker path) raises
    AccessDeniedError, and the hash and the stream are as before (state, event and publish
    were all-or-nothing; before, state and event were written and BackendError raised)."""
    key = f"{prefix}:{{acl}}"
    b = Breaker("acl", denied_channel, BreakerConfig(minimum_calls=2), prefix=prefix, listen=False)
    b.call(ok)  # no transition: no publish, allowed
    before, xlen = r.hgetall(key), r.xlen(key + ":events")
    assert before[b"st"] == b"closed"
    with pytest.raises(AccessDeniedError):
        b.trip(reason="x")
    with pytest.raises(AccessDeniedError):
        Admin(denied_channel, prefix=prefix).trip("acl")
    assert r.hgetall(key) == before and r.xlen(key + ":events") == xlen
    with pytest.raises(AccessDeniedError):  # 1 success + 1 failure = 50 %: the record trips
        b.call(boom)
    assert r.hgetall(key) == before and r.xlen(key + ":events") == xlen


# -- control: until is bounded before any write -----------------------------------------------------


@pytest.mark.parametrize("until", ["1e300", "inf", "nan", "1.5", str(T0 + 367 * 86_400_000)])
def test_until_out_of_bounds_is_refused_with_nothing_written(s: Script, until: str) -> None:
    s.record(T0, 0, 1, 0)
    before = s.hash()
    with pytest.raises(redis.ResponseError, match="until must be"):
        s.operator("control", T0, "trip", until, "", "alice")
    assert s.hash() == before
    s.operator("control", T0, "trip", str(T0 + 366 * 86_400_000), "", "alice")  # the bound itself


# -- 14.11: corrupt state --------------------------------------------------------------------------


# (ou and f0: fields a success on the record fast path does not add to; the general paths check all)
@pytest.mark.parametrize(
    "field,value",
    [("st", "garbage"), ("st", ""), ("tc", "many"), ("g", "x"), ("ou", "soon"), ("f0", "x"), ("r3", "1:2")],
)
def test_corrupt_fields_fail_every_general_path_before_any_write(s: Script, field: str, value: str) -> None:
    """Every script's general path refuses a corrupt hash before any write (record and acquire
    are sent there by a config given with the call); the fast paths: the next test."""
    s.cfg = CFG60  # a ring of ten 6 s buckets (r3 is read when the window rotates past it)
    s.record(T0, 0, 1, 0)
    s.r.hset(s.key, field, value)
    if field == "r3":  # a ring slot is read when the window rotates past it
        epoch = (T0 + 1) // 6_000
        # (xr, never later than the end of the bucket `be`, moves back with it, as a script would
        # have written it: the record fast path returns early only before xr)
        s.r.hset(s.key, mapping={"be": str(epoch - 5), "xr": str((epoch - 4) * 6_000), f"r{(epoch - 12) % 10}": value})
    before, xlen = s.hash(), s.r.xlen(s.events)
    for name, own in (("record", ("0", "1", "0", "0", "", "", "")), ("acquire", ()), ("read", ("1",))):
        with pytest.raises(redis.ResponseError, match=r"CORRUPT .*rewrites it"):
            s.raw(name, T0 + 1, s.cfg.fingerprint, *own, *([] if name == "read" else s.cfg.argv()))
    for op in ("trip", "disable", "config"):
        with pytest.raises(redis.ResponseError, match="CORRUPT"):
            s.operator("control", T0 + 1, op, "0", "", "alice")
    assert s.hash() == before and s.r.xlen(s.events) == xlen
    reply = s.operator("control", T0 + 1, "reset", "0", "", "alice")
    assert reply[0] == "closed" and "rewrote a corrupt breaker" in reply[13]
    assert s.worker("record", T0 + 2, str(reply[1]), "1", "0", "0", "", "", "") == T0 + 2  # bare
    assert s.r.hget(s.key, "tc") == "1"
    entry = s.r.xrevrange(s.events, count=1)[0][1]
    assert "rewrote a corrupt breaker" in entry["cause"]


@pytest.mark.parametrize("field,value", [("st", "garbage"), ("g", "x"), ("tc", "many"), ("f0", "x"), ("qr", "half")])
def test_a_fast_path_refuses_a_corrupt_field_it_reads(s: Script, field: str, value: str) -> None:
    """A worker's common record reads the state, the generation, the window and the hot config:
    one of them corrupt sends it to the general path, which refuses it (a broken stored config
    is asked for again: NOCONFIG, then the config given repairs it)."""
    s.cfg = CFG60
    s.record(T0, 0, 1, 0)
    s.r.hset(s.key, field, value)
    before = s.hash()
    error = "NOCONFIG" if field == "qr" else r"CORRUPT .*rewrites it"
    with pytest.raises(redis.ResponseError, match=error):
        s.raw("record", T0 + 1, s.cfg.fingerprint, "0", "1", "0", "0", "", "", "")
    assert s.hash() == before


@pytest.mark.parametrize(
    "name,field,value",
    [("acquire", "tc", "many"), ("acquire", "qr", "half"), ("acquire", "ou", "soon"), ("record", "ou", "soon"),
     ("record", "qb", "wide"), ("record", "oc", "x")],
)  # fmt: skip
def test_a_fast_path_leaves_a_field_it_does_not_read_to_the_next_general_path(
    s: Script, name: str, field: str, value: str
) -> None:
    """The fast paths read only what they use (issue 15: fewer fields read): acquire on a closed
    breaker reads `st g fp xr`, the common record also the window and the hot config. A corrupt
    field they do not read is neither used nor written by them; the first general path refuses
    it: here the record at the end of the bucket (past `xr`), before any write."""
    s.cfg = CFG60  # ten 6 s buckets: T0 + 1 is in the first record's bucket, T0 + 6_000 is not
    s.record(T0, 0, 1, 0)
    s.r.hset(s.key, field, value)
    own = ("0", "1", "0", "0", "", "", "") if name == "record" else ()
    assert s.raw(name, T0 + 1, s.cfg.fingerprint, *own) == (T0 + 1 if name == "record" else ["closed", 0, T0 + 1])
    assert s.r.hget(s.key, field) == value
    assert s.r.hget(s.key, "tc") == ("2" if name == "record" else value if field == "tc" else "1")
    before = s.hash()
    with pytest.raises(redis.ResponseError, match=r"CORRUPT .*rewrites it|NOCONFIG"):
        s.raw("record", T0 + 6_000, s.cfg.fingerprint, "0", "1", "0", "0", "", "", "")
    assert s.hash() == before


def test_corrupt_cfg_is_corrupt_for_operators_and_reset_drops_it(s: Script) -> None:
    s.record(T0, 0, 1, 0)
    s.r.hset(s.key, "cfg", "garbage")
    s.r.hdel(s.key, "qb")
    with pytest.raises(redis.ResponseError, match="CORRUPT .*cfg"):
        s.operator("read", T0, "1")
    reply = s.operator("control", T0, "reset", "0", "", "alice")
    assert reply[0] == "closed"
    assert s.r.hget(s.key, "cfg") is None and s.r.hget(s.key, "fp") is None
    s.record(T0 + 1, reply[1], 1, 0)  # the next worker stores its config again
    assert s.r.hget(s.key, "cfg") == ",".join(s.cfg.argv())


def test_corrupt_state_on_the_call_path_follows_on_redis_error(
    r: redis.Redis, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """`HSET key st garbage`: calls run under on_redis_error="allow" with one error logged naming
    the key; trip and status raise CorruptStateError; reset repairs, and calls count again."""
    key = f"{prefix}:{{corrupt}}"
    b = Breaker("corrupt", r, prefix=prefix, listen=False)
    b.call(ok)
    r.hset(key, "st", "garbage")
    caplog.set_level(logging.ERROR, logger="distbreaker")
    ran = [b.call(ok) for _ in range(20)]
    assert ran == ["ok"] * 20
    lines = [rec for rec in caplog.records if key in rec.getMessage()]
    assert len(lines) == 1 and "reset" in lines[0].getMessage(), [x.getMessage() for x in caplog.records]
    admin = Admin(r, prefix=prefix)
    with pytest.raises(CorruptStateError) as info:
        b.trip(reason="x")
    assert info.value.key == key
    with pytest.raises(CorruptStateError):
        admin.status("corrupt")
    assert r.hget(key, "st") == b"garbage"
    snap = admin.reset("corrupt", actor="alice")
    assert snap.state is State.CLOSED
    assert "rewrote a corrupt breaker" in admin.history("corrupt", 1)[0].cause
    deadline = time.monotonic() + 30  # the worker re-reads after its backoff
    while admin.status("corrupt").calls == 0:
        assert time.monotonic() < deadline, "calls were not counted again after the reset"
        b.call(ok)
        time.sleep(0.05)
    assert admin.status("corrupt").state is State.CLOSED


def test_corrupt_state_rejects_under_on_redis_error_reject(r: redis.Redis, prefix: str) -> None:
    key = f"{prefix}:{{rej}}"
    b = Breaker("rej", r, BreakerConfig(on_redis_error="reject"), prefix=prefix, listen=False)
    b.call(ok)
    r.hset(key, "tc", "lots")
    with pytest.raises(CircuitOpenError):
        for _ in range(3):
            b.call(ok)
    assert not issubclass(CorruptStateError, ScriptError)  # a different fix: reset, not arguments


def test_an_expiry_pexpire_would_refuse_fails_before_any_write(s: Script) -> None:
    """idle_ttl_ms = 1e14: PEXPIRE would refuse it after the other writes (issue 14.8); the
    script refuses it first (or the config check does), and nothing is written."""
    s.cfg = Cfg.from_argv([*CFG.argv()[:12], "100000000000000"])
    with pytest.raises(redis.ResponseError, match="idle_ttl"):
        s.record(T0, 0, 1, 0)
    assert s.hash() == {} and s.r.exists(s.events) == 0
