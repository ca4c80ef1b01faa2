"""A call through a breaker made from inside a call through the same `Breaker` object counts
once (the outer call), on a real server, in both shells: ``payments.call(charge)`` with
``charge`` decorated by ``@payments`` is one call, not two. ``with`` blocks are explicit permits
and keep taking one each; another `Breaker` object of the same service counts on its own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, CircuitOpenError, connect


class Boom(Exception):
    pass


@pytest.fixture
def payments(redis_url: str, prefix: str) -> Iterator[Breaker]:
    client = connect(redis_url, timeout=2.0)
    breaker = Breaker("payments", client, BreakerConfig(minimum_calls=20), prefix=prefix, listen=False)
    try:
        yield breaker
    finally:
        breaker.close()
        client.close()


def test_call_of_a_decorated_function_counts_once(payments: Breaker) -> None:
    """``payments.call(charge)`` with ``@payments def charge``: calls 1, and a failure counts once."""

    @payments
    def charge(order: int) -> int:
        return order * 2

    @payments
    def refuse(order: int) -> int:
        raise Boom(f"order {order}")

    assert payments.call(charge, 21) == 42
    snap = payments.snapshot()
    assert (snap.calls, snap.failures) == (1, 0)
    with pytest.raises(Boom):
        payments.call(refuse, 1)
    snap = payments.snapshot()
    assert (snap.calls, snap.failures) == (2, 1)
    assert payments.call(refuse, 2, fallback=lambda exc: -1) == -1  # the outer fallback applies
    snap = payments.snapshot()
    assert (snap.calls, snap.failures) == (3, 2)


def test_with_blocks_take_their_own_permit_and_other_objects_count(
    payments: Breaker, redis_url: str, prefix: str
) -> None:
    """Nesting is about `call` and decorators: a decorated function called inside a ``with``
    block is a second permit (as a probe held by a ``with`` block and a call are two), and a
    second `Breaker` object of the same service (another worker simulated in one process)
    counts on its own inside the first one's call."""

    @payments
    def charge() -> str:
        return "ok"

    with payments:
        assert charge() == "ok"
    assert payments.snapshot().calls == 2
    client = connect(redis_url, timeout=2.0)
    other = Breaker("payments", client, BreakerConfig(minimum_calls=20), prefix=prefix, listen=False)
    try:
        assert payments.call(lambda: other.call(charge)) == "ok"  # payments' call, other's call: 2
        assert payments.snapshot().calls == 4
    finally:
        other.close()
        client.close()


def test_nested_call_does_not_take_a_second_probe(payments: Breaker, redis_url: str, prefix: str) -> None:
    """Half-open with one probe slot: the outer call holds it; the nested call must not be
    rejected for want of a second one (before: CircuitOpenError(half_open) from inside the probe)."""
    client = connect(redis_url, timeout=2.0)
    probe = Breaker(
        "probe",
        client,
        BreakerConfig(minimum_calls=2, open_duration=0.05, max_open_duration=0.05, half_open_max_calls=1),
        prefix=prefix,
        listen=False,
    )
    try:

        @probe
        def charge() -> str:
            return "charged"

        for _ in range(2):
            with pytest.raises(Boom):
                probe.call(lambda: (_ for _ in ()).throw(Boom("down")))
        assert probe.snapshot().state.value == "open"
        import time

        deadline = time.monotonic() + 5
        while True:  # open_duration 50 ms, on the server's clock
            try:
                assert probe.call(charge) == "charged"
                break
            except CircuitOpenError as exc:
                assert exc.state == "open" and time.monotonic() < deadline, exc
                time.sleep(0.02)
        snap = probe.snapshot()
        assert snap.state.value == "closed", snap
    finally:
        probe.close()
        client.close()


def test_other_threads_are_not_inside(payments: Breaker) -> None:
    """Being inside a call is per thread: a call another thread makes meanwhile counts on its own."""
    done = threading.Event()

    def other() -> None:
        payments.call(lambda: None)
        done.set()

    def outer() -> None:
        t = threading.Thread(target=other)
        t.start()
        t.join(10)

    payments.call(outer)
    assert done.is_set()
    assert payments.snapshot().calls == 2


async def test_asyncio_call_of_a_decorated_coroutine_counts_once(redis_url: str, prefix: str) -> None:
    """The asyncio shell: ``await payments.call(charge)`` with ``@payments async def charge`` is
    one call (a failure one failure); a task started inside a call is inside it too."""
    client = dba.connect(redis_url, timeout=2.0)
    payments = dba.Breaker("payments", client, BreakerConfig(minimum_calls=20), prefix=prefix, listen=False)
    try:

        @payments
        async def charge(order: int) -> int:
            await asyncio.sleep(0)
            return order + 1

        assert await payments.call(charge, 1) == 2
        assert (await payments.snapshot()).calls == 1
        assert await charge(2) == 3
        assert (await payments.snapshot()).calls == 2

        @payments
        async def fails() -> None:
            raise Boom("down")

        with pytest.raises(Boom):
            await payments.call(fails, timeout=5)
        snap = await payments.snapshot()
        assert (snap.calls, snap.failures) == (3, 1)

        async def fan_out() -> list[int]:
            return list(await asyncio.gather(charge(1), charge(2)))

        assert await payments.call(fan_out) == [2, 3]
        assert (await payments.snapshot()).calls == 4
        assert await asyncio.gather(charge(1), charge(2)) == [2, 3]  # separate calls: two
        assert (await payments.snapshot()).calls == 6
    finally:
        await payments.close()
        await client.aclose()
