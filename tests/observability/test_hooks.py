"""on_transition / on_call hooks: what they get, when, how often, and what a failing hook does."""

from __future__ import annotations

import asyncio
import logging
import threading

import pytest
from _obs import Records, unique, wait_for

import distbreaker.asyncio as dba
from distbreaker import (
    Admin,
    Breaker,
    BreakerConfig,
    BreakerRegistry,
    CallDetails,
    CircuitOpenError,
    State,
    Transition,
    connect,
)
from distbreaker.testing import FrozenClock


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def summary(t: Transition) -> tuple[str, str, int, str, str]:
    return (t.from_state.value, t.to_state.value, t.generation, t.cause, t.actor)


def test_on_call_gets_one_call_details_per_call(redis_url: str, prefix: str) -> None:
    """Success, failure, slow, ignored and rejected calls each reach on_call once, with their facts."""
    seen: list[CallDetails] = []
    clock = FrozenClock()
    b = Breaker(
        unique(),
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=100, slow_call_duration=1.0, ignored_exceptions=(KeyError,)),
        prefix=prefix,
        clock=clock,
        listen=False,
        on_call=seen.append,
    )
    b.call(lambda: None)
    b.call(lambda: clock.advance(2))
    err = Boom()

    def fail() -> None:
        raise err

    with pytest.raises(Boom):
        b.call(fail)
    with pytest.raises(KeyError), b:
        raise KeyError("x")
    b.trip(reason="INC-3")
    with pytest.raises(CircuitOpenError) as rejected:
        b.call(lambda: None)
    got = [(d.service, d.outcome, d.slow, d.state, d.exception) for d in seen]
    assert got == [
        (b.service, "success", False, State.CLOSED, None),
        (b.service, "success", True, State.CLOSED, None),
        (b.service, "failure", False, State.CLOSED, err),
        (b.service, "ignored", False, State.CLOSED, seen[3].exception),
        (b.service, "rejected", False, State.FORCED_OPEN, rejected.value),
    ]
    assert isinstance(seen[3].exception, KeyError)
    assert seen[1].duration == pytest.approx(2.0) and seen[4].duration == 0.0
    b.close()


def test_on_transition_once_per_transition_own_or_learnt(redis_url: str, prefix: str) -> None:
    """A listening breaker reports its own trip once (reply and pub/sub echo), and once each the
    transitions made by another client and by an operator (pub/sub)."""
    seen: list[Transition] = []
    svc = unique()
    cfg = BreakerConfig(minimum_calls=1, max_staleness=60)
    watched = Breaker(svc, connect(redis_url, timeout=1), cfg, prefix=prefix, on_transition=seen.append)
    other = Breaker(svc, connect(redis_url, timeout=1), cfg, prefix=prefix, listen=False)
    watched.call(lambda: None)
    assert watched._listener is not None
    wait_for("the listener", watched._listener.ready.is_set)
    with pytest.raises(Boom):
        watched.call(boom)  # its own: reply, then its own echo
    assert [summary(t) for t in seen] == [("closed", "open", 1, seen[0].cause, "")]
    assert seen[0].cause.startswith("failure_rate")
    other.reset(reason="fixed", actor="bob")  # another client's
    Admin(other.redis, prefix=prefix).trip(svc, reason="INC-4", actor="ops")  # an operator's
    wait_for("the operator's trip", lambda: len(seen) >= 3)
    Admin(other.redis, prefix=prefix).set_config(svc, actor="ops", minimum_calls=5)  # not a transition
    Admin(other.redis, prefix=prefix).trip(svc, reason="INC-4 longer", actor="ops")  # a re-trip is one
    wait_for("the re-trip", lambda: len(seen) >= 4)
    Admin(other.redis, prefix=prefix).reset(svc, actor="ops")
    wait_for("the reset", lambda: len(seen) >= 5)
    assert [summary(t) for t in seen][1:] == [
        ("open", "closed", 2, "manual reset by bob: fixed", "bob"),
        ("closed", "forced_open", 3, "manual trip by ops: INC-4", "ops"),
        ("forced_open", "forced_open", 4, "manual trip by ops: INC-4 longer", "ops"),
        ("forced_open", "closed", 5, "manual reset by ops", "ops"),
    ]
    assert all(t.service == svc for t in seen)
    watched.close()
    other.close()


def test_two_transitions_in_one_reply(redis_url: str, prefix: str) -> None:
    """A control call that first expires a forced state reports both transitions, in order, with causes."""
    seen: list[Transition] = []
    clock = FrozenClock()
    b = Breaker(
        unique(), connect(redis_url, timeout=1), prefix=prefix, clock=clock, listen=False, on_transition=seen.append
    )
    b.trip(for_=10, reason="maintenance", actor="ops")
    clock.advance(11)
    b.disable(reason="investigating", actor="amy")
    assert [summary(t) for t in seen] == [
        ("closed", "forced_open", 1, "manual trip by ops: maintenance", "ops"),
        ("forced_open", "closed", 2, "forced_open expired", ""),
        ("closed", "disabled", 3, "manual disable by amy: investigating", "amy"),
    ]
    assert seen[1].time == seen[2].time == clock()


def test_a_failing_hook_is_logged_never_raised(redis_url: str, prefix: str, logs: Records) -> None:
    """Exceptions of hooks reach the log (with a traceback); the call, and the next hook, go on."""
    calls: list[str] = []

    def bad(_: object) -> None:
        raise RuntimeError("hook bug")

    b = Breaker(
        unique(),
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=1),
        prefix=prefix,
        listen=False,
        on_call=[bad, lambda d: calls.append(d.outcome)],
        on_transition=[bad, lambda t: calls.append(t.to_state.value)],
    )
    assert b.call(lambda: "ok") == "ok"
    with pytest.raises(Boom):  # the call's own exception, not the hook's
        b.call(boom)
    assert calls == ["success", "open", "failure"]
    errors = [r for r in logs.records if r.levelno == logging.ERROR]
    assert errors and all(r.exc_info and "hook bug" in str(r.exc_info[1]) for r in errors)
    assert any("on_transition hook" in r.getMessage() for r in errors)
    b.close()


def test_the_sync_breaker_refuses_coroutine_hooks(redis_url: str) -> None:
    """async hooks need the asyncio Breaker: the sync Breaker and registry raise TypeError at once."""

    async def hook(_: object) -> None:
        pass

    client = connect(redis_url, timeout=1)
    with pytest.raises(TypeError, match="coroutine function"):
        Breaker(unique(), client, on_call=hook)
    with pytest.raises(TypeError, match="coroutine function"):
        Breaker(unique(), client, on_transition=[print, hook])
    with pytest.raises(TypeError, match="coroutine function"):
        BreakerRegistry(client, on_call=hook)
    with pytest.raises(TypeError, match="callable"):
        Breaker(unique(), client, on_call=[42])  # type: ignore[list-item]


def test_a_sync_hook_returning_an_awaitable_is_logged(redis_url: str, prefix: str, logs: Records) -> None:
    """A plain function that returns a coroutine on the sync Breaker: closed unawaited, logged once."""

    async def later(_: object) -> None:
        raise AssertionError("never runs")

    b = Breaker(unique(), connect(redis_url, timeout=1), prefix=prefix, listen=False, on_call=lambda d: later(d))
    for _ in range(3):
        b.call(lambda: None)
    errors = logs.at(logging.ERROR)
    assert len(errors) == 1 and "returned an awaitable" in errors[0]
    b.close()


def test_registry_hooks_reach_every_breaker(redis_url: str, prefix: str) -> None:
    """A registry passes its hooks to each breaker it makes."""
    transitions: list[Transition] = []
    calls: list[CallDetails] = []
    reg = BreakerRegistry(
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=1),
        prefix=prefix,
        listen=False,
        on_transition=transitions.append,
        on_call=calls.append,
    )
    a, b = unique("a"), unique("b")
    reg.get(a).call(lambda: None)
    with pytest.raises(Boom):
        reg.get(b).call(boom)
    assert [(d.service, d.outcome) for d in calls] == [(a, "success"), (b, "failure")]
    assert [(t.service, t.to_state) for t in transitions] == [(b, State.OPEN)]
    reg.close()


async def test_asyncio_hooks_sync_and_async(redis_url: str, prefix: str, logs: Records) -> None:
    """On the asyncio Breaker sync hooks run inline; async ones run as tasks the call never waits
    for; close() waits for them; a failing async hook is logged."""
    release = asyncio.Event()
    sync_seen: list[str] = []
    async_seen: list[str] = []

    async def slow_hook(d: CallDetails) -> None:
        await release.wait()
        async_seen.append(d.outcome)

    async def bad_hook(t: Transition) -> None:
        raise RuntimeError("async hook bug")

    client = dba.connect(redis_url, timeout=1)
    b = dba.Breaker(
        unique(),
        client,
        BreakerConfig(minimum_calls=1),
        prefix=prefix,
        listen=False,
        on_call=[lambda d: sync_seen.append(d.outcome), slow_hook],
        on_transition=[bad_hook, lambda t: sync_seen.append(t.to_state.value)],
    )

    async def aboom() -> None:
        raise Boom

    assert await asyncio.wait_for(b.call(lambda: "ok"), 2) == "ok"  # not blocked by slow_hook
    with pytest.raises(Boom):
        await b.call(aboom)
    assert sync_seen == ["success", "open", "failure"]
    assert async_seen == [] and b._hooks.pending == 3  # two slow_hook tasks, one bad_hook task
    release.set()
    await b.close()
    assert sorted(async_seen) == ["failure", "success"] and b._hooks.pending == 0
    assert any("async hook bug" in str(r.exc_info[1]) for r in logs.records if r.exc_info)
    await client.aclose()


async def test_asyncio_transitions_from_pubsub(redis_url: str, prefix: str) -> None:
    """An asyncio breaker's hook hears another process's (here: client's) transitions once each."""
    seen: list[Transition] = []
    svc = unique()
    client = dba.connect(redis_url, timeout=1)
    b = dba.Breaker(svc, client, BreakerConfig(max_staleness=60), prefix=prefix, on_transition=seen.append)
    await b.call(lambda: None)
    assert b._listener is not None
    await asyncio.wait_for(b._listener.ready.wait(), 5)
    admin = Admin(connect(redis_url, timeout=1), prefix=prefix)
    await asyncio.to_thread(admin.trip, svc, reason="INC-5", actor="ops")
    await asyncio.to_thread(admin.reset, svc, actor="ops")
    for _ in range(500):
        if len(seen) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [summary(t) for t in seen] == [
        ("closed", "forced_open", 1, "manual trip by ops: INC-5", "ops"),
        ("forced_open", "closed", 2, "manual reset by ops", "ops"),
    ]
    await b.close()
    await client.aclose()


def test_hooks_run_on_the_thread_that_learnt_the_transition(redis_url: str, prefix: str) -> None:
    """Another process's transition runs the hook on the listener thread; this process's own on
    whichever thread learnt it first (the caller reading its reply, or the listener its echo)."""
    threads: dict[str, str] = {}
    svc = unique()

    def hook(t: Transition) -> None:
        threads[t.to_state.value] = threading.current_thread().name

    b = Breaker(svc, connect(redis_url, timeout=1), BreakerConfig(max_staleness=60), prefix=prefix, on_transition=hook)
    b.call(lambda: None)
    assert b._listener is not None
    wait_for("the listener", b._listener.ready.is_set)
    b.trip(reason="x")
    Admin(connect(redis_url, timeout=1), prefix=prefix).disable(svc, reason="y", actor="ops")
    wait_for("the disable", lambda: "disabled" in threads)
    assert threads["disabled"] == "distbreaker-listener"
    assert threads["forced_open"] in (threading.current_thread().name, "distbreaker-listener")
    b.close()
