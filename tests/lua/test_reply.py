"""The reply layout is written once per language and both agree: the positions the client reads
(`distbreaker._reply`) hold, on a real server, the fields the Lua reply builder puts there."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from distbreaker import _reply
from distbreaker._reference import Cfg, Model, Reply, bare, lean
from distbreaker._reply import (
    ACTOR,
    CALLS,
    CAUSE,
    CLIENT_CONFIG,
    COMMON,
    CONFIG,
    CONSECUTIVE,
    EXISTS,
    FAILURES,
    FIELDS,
    FINGERPRINT,
    FINGERPRINT_CHANGED_AT,
    FORCED_UNTIL,
    GENERATION,
    HALF_OPEN_SUCCESSES,
    LAST_ACTOR,
    LAST_CAUSE,
    LAST_FROM,
    LAST_TIME,
    LEAN,
    LEASE,
    LEASES,
    NOW,
    OPEN_COUNT,
    OPEN_UNTIL,
    OVERRIDES,
    PREVIOUS_FINGERPRINT,
    READ,
    REASON,
    RETRY_AT,
    SLOW,
    STATE,
    TRANSITIONS,
    is_lean,
)
from distbreaker._scripts import SCRIPTS

pytestmark = pytest.mark.redis

T0 = 1_700_000_000_000
CFG = Cfg(0.5, 4, 10_000, 5, 3, 0.5, 1_000, 2.0, 5_000, 2, 2, 500, 86_400_000)
OTHER = Cfg(0.5, 5, 10_000, 5, 3, 0.5, 1_000, 2.0, 5_000, 2, 2, 500, 86_400_000)
INTS = frozenset({"exists", "last_time", "fingerprint_changed_at", "failing_clients"})
STRS = frozenset({"state", "reason", "actor", "transitions", "cause", "lease"})


def test_positions_are_the_names_in_order() -> None:
    """Each constant of `_reply` is the index of its name, and `_reference.Reply` has the
    common names in the same order."""
    assert len(COMMON) == 18 and len(READ) == 12
    for i, name in enumerate(FIELDS):
        assert getattr(_reply, name.upper()) == i, name
    assert tuple(Reply.names()) == COMMON
    assert LEAN == COMMON[:3] == ("state", "generation", "now")  # the lean reply: the first three


class Script:
    """One breaker key driven through the real scripts and the reference model at a test clock."""

    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self.r = client
        self.keys = (f"{prefix}:{{{uuid.uuid4().hex[:10]}}}",)
        self.keys += (self.keys[0] + ":events",)
        self.model = Model(CFG)
        self.now = T0

    def run(self, name: str, *own: str, operator: bool = False) -> Any:
        cfg = self.model.cfg
        argv = [str(self.now), "" if operator else cfg.fingerprint, *own, *([] if operator else cfg.argv())]
        reply = self.r.eval(SCRIPTS[name].text, 2, *self.keys, *argv)
        assert isinstance(reply, list) or (name == "record" and type(reply) is int)
        return reply

    def check(self, lua: Any, model: Reply, lean_ok: bool = False, sent: int | None = None) -> Any:
        """Every common field, read at its named position, equals the model's field of that name
        (a record or acquire the model says is lean: the three `LEAN` fields, and nothing else; a
        record of generation `sent` the model says is bare: `now` alone)."""
        if sent is not None and bare(model, sent):
            assert lua == model.now, (lua, model)
            return lua
        if lean_ok and lean(model):
            assert is_lean(lua) and [lua[STATE], lua[GENERATION], lua[NOW]] == [
                model.state,
                model.generation,
                model.now,
            ]
            return lua
        assert not is_lean(lua), lua
        for name in COMMON:
            value = lua[getattr(_reply, name.upper())]
            expected = getattr(model, name)
            got = value if name in STRS else int(value)
            assert got == expected, (
                f"{name} (position {getattr(_reply, name.upper())}): lua {value!r}, model {expected!r}"
            )
        return lua

    def record(self, s: int, f: int, slow: int = 0, lease: str = "") -> Any:
        gen = self.model.g
        lua = self.run("record", str(gen), str(s), str(f), str(slow), lease, "", "")
        return self.check(lua, self.model.record(self.now, gen, s, f, slow, lease), lean_ok=True, sent=gen)

    def acquire(self) -> list[Any]:
        return self.check(self.run("acquire"), self.model.acquire(self.now), lean_ok=True)

    def control(self, op: str, until: int, reason: str, actor: str) -> list[Any]:
        lua = self.run("control", op, str(until), reason, actor, operator=True)
        return self.check(lua, self.model.control(self.now, op, until, reason, actor, operator=True))

    def read(self) -> list[Any]:
        lua = self.check(self.run("read", "1"), self.model.read(self.now))
        assert len(lua) == len(FIELDS)
        for name, expected in zip(READ, self.model.extras):
            value = lua[getattr(_reply, name.upper())]
            got = int(value) if name in INTS else value
            assert got == expected, f"{name}: lua {value!r}, model {expected!r}"
        return lua


@pytest.fixture
def script(rtext: redis.Redis, prefix: str) -> Iterator[Script]:
    s = Script(rtext, prefix)
    yield s
    rtext.delete(*s.keys)


def test_every_named_field_holds_its_value(script: Script) -> None:
    """Crafted states give each field a distinctive value; read at its named position, each
    field has it (and every step equals the reference model field by field)."""
    s = script
    s.record(1, 0)
    s.record(1, 0, slow=1)
    s.now += 10
    s.record(0, 1)
    r = s.read()
    assert (r[STATE], r[CALLS], r[FAILURES], r[SLOW], r[CONSECUTIVE]) == ("closed", 3, 1, 1, 1)
    assert r[NOW] == s.now and r[EXISTS] == 1 and r[GENERATION] == 0
    assert r[CONFIG] == r[CLIENT_CONFIG] == ",".join(CFG.argv()) and r[FINGERPRINT] == CFG.fingerprint
    assert (r[LAST_TIME], r[PREVIOUS_FINGERPRINT], r[FINGERPRINT_CHANGED_AT], r[OVERRIDES]) == (0, "", 0, "")

    s.now += 10
    r = s.record(0, 1)  # 4 calls, half of them failures: trips
    assert (r[STATE], r[GENERATION], r[TRANSITIONS], r[OPEN_COUNT]) == ("open", 1, "closed>open", 1)
    assert r[OPEN_UNTIL] == s.now + 1_000 and r[CAUSE] and r[REASON] == r[CAUSE]
    r = s.acquire()
    assert (r[LEASE], r[RETRY_AT]) == ("", s.now + 1_000)

    s.now += 1_000
    r = s.acquire()
    assert (r[STATE], r[TRANSITIONS], r[LEASES]) == ("half_open", "open>half_open", 1) and r[LEASE]
    first = r[LEASE]
    s.now += 7
    assert s.acquire()[LEASES] == 2
    s.now += 3
    r = s.acquire()  # both probes out: denied until the first lease expires
    assert (r[LEASE], r[RETRY_AT]) == ("", s.now - 10 + 500)
    r = s.record(1, 0, lease=first)
    assert (r[HALF_OPEN_SUCCESSES], r[LEASES]) == (1, 1)

    s.now += 5
    r = s.control("trip", s.now + 60_000, "INC-42", "alice")
    assert (r[STATE], r[FORCED_UNTIL], r[REASON], r[ACTOR]) == ("forced_open", s.now + 60_000, "INC-42", "alice")
    assert r[TRANSITIONS] == "half_open>forced_open" and "INC-42" in r[CAUSE]
    s.now += 5
    r = s.read()
    assert (r[LAST_TIME], r[LAST_FROM], r[LAST_ACTOR]) == (s.now - 5, "half_open", "alice")
    assert "INC-42" in r[LAST_CAUSE]

    s.control("config", 0, "minimum_calls=7", "bob")
    assert s.read()[OVERRIDES] == "minimum_calls=7"
    s.model.cfg = OTHER  # a worker with another config replaces the fingerprint
    s.now += 5
    s.record(1, 0)
    r = s.read()
    assert (r[FINGERPRINT], r[PREVIOUS_FINGERPRINT], r[FINGERPRINT_CHANGED_AT]) == (
        OTHER.fingerprint,
        CFG.fingerprint,
        s.now,
    )


def test_record_answers_bare_or_lean_when_closed_without_transition(script: Script) -> None:
    """record.lua's bare reply (`now` alone: closed at the generation sent) on the fast path and
    on the general path alike (the config passed, a rotation); the lean reply (state, generation,
    now) for a stale generation, which it names; the full reply as soon as the call makes a
    transition; the counts they leave out are in the hash."""
    s = script
    assert s.record(1, 0) == T0  # creates the key (general path)
    s.now += 1
    assert s.record(1, 0) == T0 + 1
    gen = s.model.g
    stale = s.run("record", str(gen + 5), "1", "0", "0", "", "", "")  # an unknown generation: not counted
    assert stale == ["closed", 0, T0 + 1]
    s.now += 2_000  # the next bucket: rotation on the general path, still bare
    assert s.record(0, 1) == T0 + 2_001
    assert s.r.hmget(s.keys[0], "tc", "tf", "cx") == ["3", "1", "1"]
    s.now += 1
    r = s.record(0, 1)  # 4 calls, 2 failures (consecutive 2 < 3): the rate 0.5 trips
    assert not is_lean(r) and (r[STATE], r[TRANSITIONS]) == ("open", "closed>open")


def test_acquire_answers_lean_when_closed(script: Script) -> None:
    """acquire.lua on a closed breaker: the lean reply, on its fast path (fingerprint only) and on
    its general path (the config passed); the full reply once it is open."""
    s = script
    assert s.acquire() == ["closed", 0, T0]  # the config passed: general path
    s.now += 1
    fast = s.r.eval(SCRIPTS["acquire"].text, 2, *s.keys, str(s.now), CFG.fingerprint)
    assert fast == ["closed", 0, T0 + 1]
    s.record(0, 1)
    s.record(0, 1)
    s.record(0, 1)  # consecutive_failures 3: open
    r = s.acquire()
    assert not is_lean(r) and r[STATE] == "open" and r[RETRY_AT] == s.now + 1_000


def test_the_core_reads_lean_replies_through_the_same_names() -> None:
    """`BreakerCore` takes a lean acquire or record reply after a full one that said open: the
    cache is closed again, with no open_until, forced state or reason left from before, and a
    lean acquire admits without a lease."""
    from distbreaker import BreakerConfig, State
    from distbreaker._core import BreakerCore

    core = BreakerCore("svc", BreakerConfig(), "p", lambda: 100.0, SCRIPTS)
    full = ["open", 4, T0, T0 + 30_000, 0, 0, 0, 0, 0, "failure_rate 0.60 >= 0.50 over 20 calls", "", 1]
    full += ["closed>open", "failure_rate 0.60 >= 0.50 over 20 calls", "", 0, 0, 0]
    assert len(full) == len(COMMON) and not is_lean(full)
    core.update(full)
    assert core.view.state is State.OPEN and core.view.open_until and core.view.reason
    assert core.acquired(["closed", 6, T0 + 40_000]) == (6, "")
    view = core.view
    assert (view.state, view.generation, view.open_until, view.forced_until, view.reason) == (
        State.CLOSED,
        6,
        0.0,
        0.0,
        "",
    )
    assert view.server_ms == T0 + 40_000
    core.update(full)
    core.recorded([b"closed", 7, T0 + 50_000], 5)  # bytes, as a client without decode_responses reads it
    assert (core.view.state, core.view.generation, core.view.open_until) == (State.CLOSED, 7, 0.0)
    core.update(full)
    core.recorded(T0 + 60_000, 8)  # the bare reply: closed at the generation sent
    view = core.view
    assert (view.state, view.generation, view.open_until, view.reason) == (State.CLOSED, 8, 0.0, "")
    assert view.server_ms == T0 + 60_000
