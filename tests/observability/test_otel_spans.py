"""Span attributes: the protected call's (current, recording) span is annotated; none is made."""

from __future__ import annotations

import pytest
from _obs import Otel, unique

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect
from distbreaker.testing import FrozenClock


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def make(redis_url: str, prefix: str, **cfg: object) -> Breaker:
    return Breaker(
        unique(),
        connect(redis_url, timeout=1),
        BreakerConfig(**cfg),
        prefix=prefix,  # type: ignore[arg-type]
        listen=False,
    )


def test_success(otel: Otel, redis_url: str, prefix: str) -> None:
    """A successful call's span gets service, state and result, and no transition."""
    b = make(redis_url, prefix)
    with otel.tracer.start_as_current_span("charge"):
        b.call(lambda: None)
    assert otel.span("charge") == {"circuit.service": b.service, "circuit.state": "closed", "circuit.result": "success"}
    assert len(otel.spans()) == 1  # the library made no span of its own
    b.close()


def test_failure_that_trips(otel: Otel, redis_url: str, prefix: str) -> None:
    """The failure whose record tripped the breaker carries the transition and the new state."""
    b = make(redis_url, prefix, minimum_calls=1)
    with otel.tracer.start_as_current_span("charge"), pytest.raises(Boom):
        b.call(boom)
    assert otel.span("charge") == {
        "circuit.service": b.service,
        "circuit.state": "open",
        "circuit.result": "failure",
        "circuit.transition": "closed>open",
    }
    b.close()


def test_plain_failure_and_slow_call(otel: Otel, redis_url: str, prefix: str) -> None:
    """A failure that trips nothing has no transition; a slow call gets circuit.slow."""
    clock = FrozenClock()
    b = Breaker(
        unique(),
        connect(redis_url, timeout=1),
        BreakerConfig(slow_call_duration=1.0),
        prefix=prefix,
        clock=clock,
        listen=False,
    )
    with otel.tracer.start_as_current_span("fails"), pytest.raises(Boom):
        b.call(boom)
    with otel.tracer.start_as_current_span("slow"):
        b.call(lambda: clock.advance(2))
    assert otel.span("fails") == {"circuit.service": b.service, "circuit.state": "closed", "circuit.result": "failure"}
    assert otel.span("slow") == {
        "circuit.service": b.service,
        "circuit.state": "closed",
        "circuit.result": "success",
        "circuit.slow": True,
    }
    b.close()


def test_rejection(otel: Otel, redis_url: str, prefix: str) -> None:
    """A rejected call's span says rejected and the state that rejected it."""
    b = make(redis_url, prefix)
    b.trip(reason="INC-7")
    with otel.tracer.start_as_current_span("charge"), pytest.raises(CircuitOpenError):
        b.call(lambda: None)
    with otel.tracer.start_as_current_span("with"), pytest.raises(CircuitOpenError), b:
        pass
    for name in ("charge", "with"):
        assert otel.span(name) == {
            "circuit.service": b.service,
            "circuit.state": "forced_open",
            "circuit.result": "rejected",
        }
    b.close()


def test_transition_made_by_acquire(otel: Otel, redis_url: str, prefix: str) -> None:
    """The probe admitted by acquire.lua records both transitions of its call (open>half_open, half_open>closed)."""
    clock = FrozenClock()
    b = Breaker(
        unique(),
        connect(redis_url, timeout=1),
        BreakerConfig(minimum_calls=1, open_duration=5),
        prefix=prefix,
        clock=clock,
        listen=False,
    )
    with pytest.raises(Boom):
        b.call(boom)
    clock.advance(6)
    with otel.tracer.start_as_current_span("probe"):
        b.call(lambda: None)
    attrs = otel.span("probe")
    assert attrs["circuit.result"] == "success" and attrs["circuit.state"] == "closed"
    assert attrs["circuit.transition"] == "half_open>closed"  # the last one set wins
    b.close()


def test_operator_action_annotates_its_span(otel: Otel, redis_url: str, prefix: str) -> None:
    """A trip made inside a span (e.g. an admin endpoint) marks that span with the transition."""
    b = make(redis_url, prefix)
    with otel.tracer.start_as_current_span("admin"):
        b.trip(reason="INC-8", actor="ops")
    assert otel.span("admin") == {"circuit.transition": "closed>forced_open"}
    b.close()


def test_no_current_span_is_fine(otel: Otel, redis_url: str, prefix: str) -> None:
    """Without a current span nothing is annotated and nothing fails."""
    b = make(redis_url, prefix)
    b.call(lambda: None)
    assert otel.spans() == []
    b.close()


async def test_asyncio_spans(otel: Otel, redis_url: str, prefix: str) -> None:
    """The asyncio Breaker annotates the task's current span the same way."""
    client = dba.connect(redis_url, timeout=1)
    b = dba.Breaker(unique(), client, BreakerConfig(minimum_calls=1), prefix=prefix, listen=False)

    async def aboom() -> None:
        raise Boom

    with otel.tracer.start_as_current_span("ok"):
        await b.call(lambda: None)
    with otel.tracer.start_as_current_span("trips"), pytest.raises(Boom):
        await b.call(aboom)
    with otel.tracer.start_as_current_span("rejected"), pytest.raises(CircuitOpenError):
        async with b:
            pass
    assert otel.span("ok") == {"circuit.service": b.service, "circuit.state": "closed", "circuit.result": "success"}
    assert otel.span("trips") == {
        "circuit.service": b.service,
        "circuit.state": "open",
        "circuit.result": "failure",
        "circuit.transition": "closed>open",
    }
    assert otel.span("rejected") == {
        "circuit.service": b.service,
        "circuit.state": "open",
        "circuit.result": "rejected",
    }
    await b.close()
    await client.aclose()
