"""The sans-IO core and helpers, without Redis: `BreakerCore` is driven with canned replies
(named through `_reply`) and a test clock, and its requests and reports are checked."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import pytest
import redis.exceptions as rx

from distbreaker import BreakerConfig, CircuitOpenError, State, _reply
from distbreaker._core import (
    ALLOW,
    ASK,
    FAILURE,
    FLUSH,
    IGNORED,
    REJECT,
    SUCCESS,
    BreakerCore,
    Eval,
    LocalPermit,
    View,
    classify,
    keys_for,
    service_of_key,
)
from distbreaker._model import Outcome, Reporter, Transition
from distbreaker._scripts import eval_steps
from distbreaker.errors import BackendError, ScriptError, redact


def reply(
    state: str, now_ms: int = 1_000_000, open_until: int = 0, forced_until: int = 0, reason: str = "", cause: str = ""
) -> list[object]:
    return [
        state.encode(),
        3,
        now_ms,
        open_until,
        0,
        0,
        0,
        0,
        forced_until,
        reason.encode(),
        b"",
        0,
        b"",
        cause.encode(),
        b"",
        0,
        0,
        0,
    ]


def test_keys_share_the_service_hash_tag() -> None:
    """Both keys of a breaker carry {service}, so they live in one Cluster slot."""
    k = keys_for("distbreaker", "payments")
    assert (k.state, k.events, k.channel) == (
        "distbreaker:{payments}",
        "distbreaker:{payments}:events",
        "distbreaker:events",
    )
    assert service_of_key("distbreaker", k.state) == "payments"
    assert service_of_key("distbreaker", k.events) is None


def test_view_allows_closed_while_fresh_then_asks() -> None:
    """A closed cache admits locally until it is older than max_staleness."""
    v = View(max_staleness=1.0)
    assert v.decide(0.0) == ASK
    v.update(reply("closed"), local_now=10.0)
    assert v.decide(10.5) == ALLOW
    assert v.decide(11.01) == ASK


def test_view_rejects_open_until_mapped_local_time() -> None:
    """open_until (server ms) maps to local time through the offset measured at receipt."""
    v = View(max_staleness=100.0)
    v.update(reply("open", now_ms=5_000_000, open_until=5_030_000, reason="probe failed"), local_now=7.0)
    assert v.decide(36.9) == REJECT
    assert v.decide(37.0) == ASK
    err = v.rejection("svc", 27.0)
    assert isinstance(err, CircuitOpenError)
    assert (err.state, err.retry_after, err.reason) == ("open", pytest.approx(10.0), "probe failed")


def test_view_forced_open_without_expiry_rejects_until_stale() -> None:
    """forced_open without expiry rejects with retry_after None until the cache goes stale."""
    v = View(max_staleness=1.0)
    v.update(reply("forced_open", reason="INC-42"), local_now=0.0)
    assert v.decide(0.5) == REJECT
    assert v.rejection("svc", 0.5).retry_after is None
    assert v.decide(1.5) == ASK


def test_half_open_always_asks() -> None:
    """Every half-open admission needs a lease from Redis."""
    v = View(max_staleness=1.0)
    v.update(reply("half_open"), local_now=0.0)
    assert v.decide(0.0) == ASK


def test_classify() -> None:
    """Returned = success; failure_exceptions fail; ignored and BaseExceptions count nothing."""
    cfg = BreakerConfig(failure_exceptions=(OSError,), ignored_exceptions=(FileNotFoundError,))
    assert classify(cfg, None) == SUCCESS
    assert classify(cfg, OSError()) == FAILURE
    assert classify(cfg, FileNotFoundError()) == IGNORED
    assert classify(cfg, KeyError()) == SUCCESS
    assert classify(cfg, KeyboardInterrupt()) == IGNORED


def test_config_durations_accept_timedelta_and_fingerprint_tracks_values() -> None:
    """timedelta durations normalise to seconds; equal configs share a fingerprint."""
    a = BreakerConfig(window=timedelta(minutes=2), open_duration=timedelta(seconds=5))
    b = BreakerConfig(window=120, open_duration=5.0)
    assert a.window == 120.0 and a.fingerprint == b.fingerprint
    assert BreakerConfig(minimum_calls=11).fingerprint != b.fingerprint
    assert a.replace(minimum_calls=3).minimum_calls == 3


def test_config_floats_round_trip_exactly() -> None:
    """Floats go to Lua as repr(), which parses back to the same double."""
    c = BreakerConfig(failure_rate_threshold=0.1 + 0.2)
    assert float(c._lua[0]) == 0.1 + 0.2


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("redis://:hunter2@host:6379/0", "hunter2"),
        ("Error connecting to rediss://alice:s3cr3t@db.example:6380", "s3cr3t"),
        ("{'password': 'pa55'}", "pa55"),
        ("password=abc123 host=x", "abc123"),
    ],
)
def test_redact_hides_passwords(text: str, secret: str) -> None:
    """Passwords in URLs and key=value pairs are replaced by ***."""
    out = redact(text)
    assert secret not in out and "***" in out


def test_circuit_open_error_pickles_and_formats() -> None:
    """CircuitOpenError keeps its fields through pickle (multiprocessing) and formats lazily."""
    import pickle

    e = pickle.loads(pickle.dumps(CircuitOpenError("svc", "open", 1.5, "why")))
    assert (e.service, e.state, e.retry_after, e.reason) == ("svc", "open", 1.5, "why")
    assert str(e) == "circuit 'svc' is open; retry after 1.500s (why)"
    assert State("half_open") is State.HALF_OPEN


# BreakerCore on its own: driven with canned replies, no Redis ------------------------------------
class Script:
    """A stand-in for a LuaScript: the core only passes it through (and reads its name)."""

    def __init__(self, name: str) -> None:
        self.name, self.sha, self.text = name, f"sha-{name}", f"-- {name}"
        self.function = ""  # EVALSHA (a Redis Functions script has its FCALL name here)


SCRIPTS = {name: Script(name) for name in ("acquire", "record", "control", "read")}
T = 1_700_000_000_000  # server ms at local time 0


def canned(state: str = "closed", *, at: float = 0.0, **fields: object) -> list[object]:
    """A script reply with `fields` set by their `_reply` names (server time `T + at` s)."""
    out: list[object] = [0] * len(_reply.COMMON)
    for name in ("reason", "actor", "transitions", "cause", "lease"):
        out[getattr(_reply, name.upper())] = b""
    out[_reply.STATE] = state.encode()
    out[_reply.NOW] = T + round(at * 1000)
    for name, value in fields.items():
        out[getattr(_reply, name.upper())] = value.encode() if isinstance(value, str) else value
    return out


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Recorder(Reporter):
    """A reporter that keeps what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[object, ...]] = []

    def opened(self, breaker: object) -> None:
        self.seen.append(("opened",))

    def closed(self, breaker: object) -> None:
        self.seen.append(("closed",))

    def call(
        self,
        service: str,
        outcome: Outcome,
        duration: float,
        slow: bool,
        state: State | None,
        exc: BaseException | None,
    ) -> None:
        self.seen.append(("call", outcome, slow, state))

    def rejected(self, service: str, err: CircuitOpenError) -> None:
        self.seen.append(("rejected", err.state))

    def transitions(self, service: str, made: Sequence[Transition], ms: int) -> None:
        self.seen.append(("transitions", [(t.from_state.value, t.to_state.value, t.cause) for t in made], ms))

    def round_trip(self, service: str, script: str, start: float) -> None:
        self.seen.append(("round_trip", script))

    def redis_error(self, service: str, exc: BaseException) -> None:
        self.seen.append(("redis_error", type(exc).__name__))


def core(reporters: Sequence[Reporter] = (), **config: object) -> tuple[BreakerCore, Clock]:
    """A core whose server clock is the monotonic clock of the test (no test clock in ARGV)."""
    clock = Clock()
    c = BreakerCore("svc", BreakerConfig(**config), "p", None, SCRIPTS, None, reporters)  # type: ignore[arg-type]
    c.clock = clock
    return c, clock


def test_core_asks_redis_first_then_admits_closed_from_the_cache() -> None:
    """No state yet: the acquire request (with the config, once); a closed reply admits the
    following calls from the cache, with no request, until the cache is stale."""
    c, clock = core(max_staleness=1.0)
    request = c.admit()
    assert isinstance(request, Eval) and request.script.name == "acquire"
    assert request.keys == ("p:{svc}", "p:{svc}:events")
    assert request.args[:2] == ["", c.fingerprint] and request.args[2:] == c.config_args
    assert request.config is None  # the config went with this request already
    assert c.acquired(canned("closed", generation=4)) == (4, "")
    clock.now = 0.9
    assert c.admit() == (4, "")
    clock.now = 1.1
    again = c.admit()
    assert isinstance(again, Eval) and again.args == ["", c.fingerprint]
    assert again.config == c.config_args  # for a NOCONFIG answer only


def test_core_rejects_open_from_the_cache_until_open_until() -> None:
    """An open reply rejects (retry_after from the reply), then the cache rejects with no
    request until open_until, and asks Redis after it."""
    c, clock = core(max_staleness=100.0)
    c.admit()
    with pytest.raises(CircuitOpenError) as denied:
        c.acquired(canned("open", generation=2, open_until=T + 30_000, retry_at=T + 30_000, reason="failure_rate"))
    assert (denied.value.state, denied.value.retry_after, denied.value.reason) == (
        "open",
        pytest.approx(30.0),
        "failure_rate",
    )
    clock.now = 10.0
    with pytest.raises(CircuitOpenError) as cached:
        c.admit()
    assert cached.value.retry_after == pytest.approx(20.0)
    assert not c.allows()
    clock.now = 30.0
    assert isinstance(c.admit(), Eval) and c.allows()


def test_core_forced_open_rejects_and_disabled_admits() -> None:
    """forced_open rejects until forced_until (no expiry: until the cache is stale); disabled
    admits from the cache like closed."""
    c, clock = core(max_staleness=5.0)
    c.admit()
    with pytest.raises(CircuitOpenError):
        c.acquired(canned("forced_open", generation=1, reason="INC-42", actor="alice"))
    clock.now = 4.0
    with pytest.raises(CircuitOpenError) as err:
        c.admit()
    assert (err.value.state, err.value.retry_after, err.value.reason) == ("forced_open", None, "INC-42")
    clock.now = 6.0
    assert isinstance(c.admit(), Eval)
    assert c.acquired(canned("disabled", generation=2, at=6.0)) == (2, "")
    assert c.admit() == (2, "")


def test_core_half_open_needs_a_lease_for_every_probe() -> None:
    """half_open: each admission asks Redis; a lease is the permit and goes with the record;
    a full half-open state rejects with the earliest lease expiry."""
    c, clock = core()
    c.admit()
    permit = c.acquired(canned("half_open", generation=3, lease="3:1", leases=1))
    assert permit == (3, "3:1")
    assert isinstance(c.admit(), Eval)
    with pytest.raises(CircuitOpenError) as full:
        c.acquired(canned("half_open", generation=3, leases=1, retry_at=T + 2_500))
    assert (full.value.state, full.value.retry_after) == ("half_open", pytest.approx(2.5))
    record = c.record(permit, SUCCESS, 0.01)
    assert isinstance(record, Eval) and record.script.name == "record"
    assert record.args[2:7] == ["3", "1", "0", "0", "3:1"]


def test_core_record_counts_success_failure_slow_and_ignored() -> None:
    """The record request carries generation, successes, failures, slow; ignored outcomes send
    nothing unless a lease must be released."""
    c, _ = core(slow_call_duration=0.5)
    c.acquired(canned("closed", generation=7))
    assert c.record((7, ""), SUCCESS, 0.1).args[2:7] == ["7", "1", "0", "0", ""]  # type: ignore[union-attr]
    assert c.record((7, ""), FAILURE, 0.7).args[2:7] == ["7", "0", "1", "1", ""]  # type: ignore[union-attr]
    assert c.record((7, ""), IGNORED, 0.7) is None
    assert c.record((7, "7:1"), IGNORED, 0.7).args[2:7] == ["7", "0", "0", "0", "7:1"]  # type: ignore[union-attr]
    assert c.record(None, SUCCESS, 0.1) is None  # admitted without Redis: nothing to count


def test_core_outage_backs_off_and_allows() -> None:
    """An outage error starts a backoff (0.1 s, doubling to 2 s): calls are admitted without
    Redis (on_redis_error="allow") and records are not sent; a reply ends it."""
    c, clock = core()
    c.admit()
    delays = []
    for _ in range(7):
        c.failed(rx.ConnectionError("refused"))
        delays.append(round(c.down_until - clock.now, 3))
        assert c.backing_off
        assert c.admit() is None and c.record(None, SUCCESS, 0.0) is None
        assert c.record((0, ""), SUCCESS, 0.0) is None  # not sent while backing off
        clock.now = c.down_until
    assert delays == [0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0]
    request = c.admit()
    assert isinstance(request, Eval) and request.args[2:] == c.config_args  # the config is sent again
    c.acquired(canned("closed", at=clock.now))
    assert not c.backing_off and c.backoff == 0.0


def test_core_outage_rejects_under_reject() -> None:
    """on_redis_error="reject": during the backoff every call is rejected ("unavailable"),
    and the cache (which would admit) is dropped."""
    c, clock = core(on_redis_error="reject")
    c.acquired(canned("closed"))
    assert c.admit() == (0, "")
    c.failed(rx.TimeoutError("timeout"))
    with pytest.raises(CircuitOpenError) as err:
        c.admit()
    assert err.value.state == "unavailable" and err.value.retry_after == pytest.approx(0.1)
    assert not c.allows()
    c.retry_now()
    assert isinstance(c.admit(), Eval) and c.allows()


def test_core_outage_decides_locally_under_local() -> None:
    """on_redis_error="local": the in-process model admits and counts, and trips on its own;
    Redis answering again drops it."""
    c, clock = core(on_redis_error="local", minimum_calls=2, failure_rate_threshold=0.5)
    c.failed(rx.ConnectionError("refused"))
    for _ in range(2):
        permit = c.admit()
        assert type(permit) is LocalPermit
        assert c.record(permit, FAILURE, 0.0) is None  # counted in-process, nothing sent
        clock.now += 0.01
    with pytest.raises(CircuitOpenError) as err:
        c.admit()
    assert err.value.state == "open"
    c.retry_now()
    c.acquired(canned("closed", at=clock.now))
    assert c.local is None


def test_core_raises_errors_that_are_not_outages() -> None:
    """A script refusal or any other Redis error is raised, translated; no backoff."""
    c, _ = core()
    with pytest.raises(ScriptError):
        c.failed(rx.ResponseError("distbreaker: bad generation"))
    with pytest.raises(BackendError):
        c.failed(rx.ResponseError("WRONGTYPE Operation against a key"))
    assert not c.backing_off


def test_noconfig_is_answered_with_the_config() -> None:
    """A request sent without the config is sent once more with it when the script answers
    NOCONFIG (the stored fingerprint differs); any other error propagates."""
    c, _ = core()
    c.acquired(canned("closed"))
    c.config_sent = True
    request = c.eval("record", ["0", "1", "0", "0", "", "", ""])
    assert request.config == c.config_args
    steps = eval_steps(request)
    first = steps.send(None)
    assert first.args[0] == "EVALSHA" and len(first.args) == 3 + 2 + 9
    second = steps.throw(rx.ResponseError("distbreaker: NOCONFIG"))
    assert second.args[-len(c.config_args) :] == tuple(c.config_args)
    with pytest.raises(StopIteration) as done:
        steps.send(["ok"])
    assert done.value.value == ["ok"]
    other = eval_steps(request)
    other.send(None)
    with pytest.raises(rx.ResponseError):
        other.throw(rx.ResponseError("distbreaker: something else"))


def test_batching_flushes_at_size_and_before_a_trip() -> None:
    """Batched mode sums outcomes locally: FLUSH at `flush_size` outcomes, or as soon as the
    unflushed failures alone could trip (minimum_calls × threshold, or consecutive_failures)."""
    c, _ = core(minimum_calls=10, failure_rate_threshold=0.3)
    c.batched(5)
    c.acquired(canned("closed", generation=1))
    assert [c.record((1, ""), SUCCESS, 0.0) for _ in range(5)] == [None] * 4 + [FLUSH]
    c.flush_requests()
    assert [c.record((1, ""), FAILURE, 0.0) for _ in range(3)] == [None, None, FLUSH]  # ceil(10 * 0.3)
    c.flush_requests()
    d, _ = core(minimum_calls=100, consecutive_failures=2)
    d.batched(1000)
    d.acquired(canned("closed"))
    assert [d.record((0, ""), o, 0.0) for o in (FAILURE, SUCCESS, FAILURE, FAILURE)] == [None, None, None, FLUSH]


def test_batched_flush_keeps_a_batch_over_an_outage_and_drops_it_on_a_refusal() -> None:
    """A flush that meets an outage keeps its batch, sent again with the same id once the
    backoff ends; a refused batch is dropped (logged)."""
    c, clock = core(minimum_calls=100)
    c.batched(1000)
    c.acquired(canned("closed", generation=2))
    for outcome in (SUCCESS, SUCCESS, FAILURE):
        c.record((2, ""), outcome, 0.0)
    [(batch_id, gen, request)] = c.flush_requests()
    assert gen == 2 and request.keys == ("p:{svc}", "p:{svc}:events", "p:{svc}:ids")
    assert request.args[2:9] == ["2", "2", "1", "0", "", batch_id, ""]  # (no reporter: the quorum is off)
    c.flush_failed(batch_id, rx.ConnectionError("refused"))
    assert c.flush_requests() == []  # backing off
    clock.now = c.down_until
    [(again, _, _)] = c.flush_requests()
    assert again == batch_id
    c.flush_failed(again, rx.ResponseError("distbreaker: bad batch"))
    assert c.flush_requests() == [] and c.batch is not None and c.batch.empty


def test_core_reports_to_the_reporters_that_want_it() -> None:
    """Calls, rejections, transitions, round trips and Redis errors reach each reporter that
    overrides the method; a reporter that overrides nothing is never called on the call path."""
    rec, idle = Recorder(), Reporter()
    c, clock = core((rec, idle))
    assert c.on_call == (rec,) and c.on_rejected == (rec,)
    request = c.admit()
    assert isinstance(request, Eval)
    c.ran(request, 0.0)
    c.acquired(canned("closed", generation=0))
    c.finished(SUCCESS, 0.01, None)
    c.failed(rx.ConnectionError("x"))
    clock.now = 1.0
    c.admit()
    with pytest.raises(CircuitOpenError):
        c.acquired(
            canned(
                "open",
                generation=1,
                at=1.0,
                open_until=T + 31_000,
                transitions="closed>open",
                cause="failure_rate 0.60 >= 0.50",
            )
        )
    c.close()
    assert rec.seen == [
        ("opened",),
        ("round_trip", "acquire"),
        ("call", SUCCESS, False, State.CLOSED),
        ("redis_error", "ConnectionError"),
        ("transitions", [("closed", "open", "failure_rate 0.60 >= 0.50")], T + 1000),
        ("rejected", "open"),
        ("closed",),
    ]


def test_refused_writes_end_with_a_write_not_a_read() -> None:
    """Out of memory: an acquire that wrote nothing (a read) does not end the outage or its
    backoff; a record that succeeds does."""
    c, clock = core()
    c.failed(rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'."))
    assert c.writes_refused and c.backing_off
    clock.now = c.down_until
    c.acquired(canned("closed", at=clock.now))
    assert c.backoff == 0.1 and c.writes_refused
    c.recorded(canned("closed", at=clock.now, calls=1), 0)
    assert c.backoff == 0.0 and not c.writes_refused


def test_the_bare_reply_is_closed_at_the_generation_sent_and_says_a_lost_key(caplog: pytest.LogCaptureFixture) -> None:
    """record.lua's bare reply (`now` alone): the cache is closed at the generation the record
    was sent with, at that server time; generation 0 after a later one is a lost key (one
    warning), unless the reply is older than what the cache knows."""
    caplog.set_level(logging.WARNING, logger="distbreaker")
    c, clock = core()
    c.update(canned("open", generation=3, at=1.0, open_until=T + 31_000, reason="failure_rate"))
    clock.now = 2.0
    c.recorded(T + 1_500, 3)
    view = c.view
    assert (view.state, view.generation, view.open_until, view.reason, view.server_ms) == (
        State.CLOSED,
        3,
        0.0,
        "",
        T + 1_500,
    )
    assert view.offset == pytest.approx((T + 1_500) / 1000 - 2.0) and view.fetched_at == 2.0
    c.recorded(T + 1_400, 0)  # older than what the cache knows: not a lost key
    assert not [r for r in caplog.records if "vanished" in r.getMessage()]
    c.update(canned("closed", generation=3, at=3.0))
    c.recorded(T + 4_000, 0)
    assert len([r for r in caplog.records if "vanished" in r.getMessage()]) == 1
    assert (c.view.state, c.view.generation) == (State.CLOSED, 0)
