"""Failures decided by the caller: failure_predicate, result_predicate, and CallHandle marks
(issue 16 item 1), counted in Redis on a real server, sync, asyncio and batched."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, CallHandle, CallTimeoutError, ConfigError, State, connect
from distbreaker._log import LIMITED

LOTS = 10**6  # minimum_calls: never trips, so counts stay in the window


@dataclass
class Response:
    status: int


class Boom(Exception):
    def __init__(self, status: int = 500) -> None:
        super().__init__(status)
        self.status = status


def is_5xx(exc: Exception) -> bool:
    return isinstance(exc, Boom) and exc.status >= 500


def returned_5xx(value: Any) -> bool:
    return isinstance(value, Response) and value.status >= 500


@pytest.fixture
def make(client: Any, prefix: str) -> Callable[..., Breaker]:
    def factory(service: str = "svc", mode: Any = "sync", **cfg: Any) -> Breaker:
        cfg.setdefault("minimum_calls", LOTS)
        return Breaker(
            service, client, BreakerConfig(**cfg), prefix=prefix, listen=False, mode=mode, flush_interval=0.05
        )

    return factory


def counts(b: Breaker) -> tuple[int, int]:
    s = b.snapshot()
    return s.calls, s.failures


def raising(status: int) -> Callable[[], None]:
    def fn() -> None:
        raise Boom(status)

    return fn


# -- config -------------------------------------------------------------------------------------
def test_predicates_are_outside_the_fingerprint() -> None:
    """Two configs that differ only by their predicates have the same fingerprint (and ARGV)."""
    plain = BreakerConfig()
    custom = BreakerConfig(failure_predicate=is_5xx, result_predicate=returned_5xx)
    assert custom.fingerprint == plain.fingerprint
    assert custom._lua == plain._lua
    assert custom.replace(result_predicate=None).result_predicate is None


def test_a_predicate_must_be_callable() -> None:
    """A predicate that is not callable is refused, naming the field."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(result_predicate=503)  # type: ignore[arg-type]
    assert info.value.field == "result_predicate"


# -- sync ---------------------------------------------------------------------------------------
def test_failure_predicate_decides_for_exceptions(make: Callable[..., Breaker]) -> None:
    """failure_predicate: a 404 raised counts as a success in Redis, a 503 raised as a failure."""
    b = make(failure_predicate=is_5xx)
    for status in (404, 503, 404, 500):
        with pytest.raises(Boom):
            b.call(raising(status))
    assert counts(b) == (4, 2)


def test_failure_predicate_keeps_ignored_and_failure_exceptions(make: Callable[..., Breaker]) -> None:
    """ignored_exceptions win over the predicate, and exceptions outside failure_exceptions are
    successes without asking it."""
    asked: list[Exception] = []

    def predicate(exc: Exception) -> bool:
        asked.append(exc)
        return True

    b = make(failure_predicate=predicate, failure_exceptions=(Boom, KeyError), ignored_exceptions=(KeyError,))
    for exc in (KeyError("k"), ValueError("v"), Boom(500)):
        with pytest.raises(type(exc)):
            b.call(lambda exc=exc: (_ for _ in ()).throw(exc))
    assert counts(b) == (2, 1)  # KeyError ignored; ValueError a success; Boom a failure
    assert [type(e) for e in asked] == [Boom]


def test_result_predicate_counts_a_returned_503(make: Callable[..., Breaker]) -> None:
    """result_predicate: a returned 503 counts as a failure and is still returned; no fallback runs."""
    b = make(result_predicate=returned_5xx)
    fallbacks: list[BaseException] = []
    returned = b.call(lambda: Response(503), fallback=fallbacks.append)
    assert returned == Response(503)
    assert b.call(lambda: Response(200)) == Response(200)
    decorated = b(lambda: Response(502))
    assert decorated() == Response(502)
    assert counts(b) == (3, 2)
    assert fallbacks == []


def test_result_predicate_trips_the_breaker(make: Callable[..., Breaker]) -> None:
    """Returned failures alone open the breaker once the window's rate is reached."""
    b = make(result_predicate=returned_5xx, minimum_calls=4, failure_rate_threshold=0.5)
    for _ in range(4):
        b.call(lambda: Response(503))
    assert b.snapshot().state is State.OPEN


def test_raising_predicate_counts_a_failure_and_logs_once(
    make: Callable[..., Breaker], caplog: pytest.LogCaptureFixture
) -> None:
    """A predicate that raises counts the call as a failure; 20 such calls log one line naming the breaker."""
    LIMITED.clear()
    caplog.set_level(logging.WARNING, logger="distbreaker")

    def broken(value: Any) -> bool:
        raise RuntimeError("predicate bug")

    b = make("pred-raises", result_predicate=broken, failure_predicate=broken)
    for _ in range(20):
        assert b.call(lambda: 1) == 1
    with pytest.raises(Boom):
        b.call(raising(500))
    assert counts(b) == (21, 21)
    lines = [r for r in caplog.records if "raised" in r.getMessage()]
    assert [r.getMessage() for r in lines] == [
        "distbreaker: the result_predicate of breaker 'pred-raises' raised; the call counts as a failure",
        "distbreaker: the failure_predicate of breaker 'pred-raises' raised; the call counts as a failure",
    ]
    assert lines[0].exc_info is not None and "predicate bug" in str(lines[0].exc_info[1])


def test_with_returns_a_call_handle_whose_marks_count(make: Callable[..., Breaker]) -> None:
    """`with breaker as call:` gives a CallHandle: failure(), success() and ignore() decide the count."""
    b = make()
    with b as call:
        assert isinstance(call, CallHandle) and call.service == "svc" and call.outcome is None
        call.failure()
    with b as call:
        pass  # unmarked, normal end: success
    with b as call:
        call.ignore()  # counts as nothing
    with pytest.raises(Boom):
        with b as call:
            call.success()  # the last mark wins even though the block raises
            raise Boom(500)
    with pytest.raises(Boom):
        with b as call:
            call.success()
            call.failure()
            raise Boom(500)
    with b:  # without `as`: unchanged
        pass
    assert counts(b) == (5, 2)


def test_call_handle_check_applies_the_result_predicate(make: Callable[..., Breaker]) -> None:
    """call.check(value) marks a failure when result_predicate says so, and returns the value."""
    b = make(result_predicate=returned_5xx)
    with b as call:
        assert call.check(Response(503)) == Response(503)
    with b as call:
        call.check(Response(200))
    assert counts(b) == (2, 1)


def test_nested_with_blocks_keep_their_own_marks(make: Callable[..., Breaker]) -> None:
    """Nested `with` blocks each have their own handle: the inner mark does not leak out."""
    b = make()
    with b as outer:
        with b as inner:
            inner.failure()
        assert outer.outcome is None
    assert counts(b) == (2, 1)


def test_ignore_releases_the_probe(make: Callable[..., Breaker]) -> None:
    """A half-open probe marked ignore() counts nothing and frees the probe lease for the next one."""
    b = make(minimum_calls=1, open_duration=0.05)
    with pytest.raises(Boom):
        b.call(raising(500))
    assert b.snapshot().state is State.OPEN
    deadline = time.monotonic() + 5
    while True:  # wait until the breaker admits a probe (open_duration passed)
        try:
            with b as call:
                call.ignore()
            break
        except Exception:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    s = b.snapshot()
    assert s.state is State.HALF_OPEN and s.half_open_calls == 0 and s.calls == 0
    with b:  # the next probe is admitted at once and closes it
        pass
    assert b.snapshot().state is State.CLOSED


def test_batched_mode_counts_predicates_and_marks(make: Callable[..., Breaker]) -> None:
    """In mode="batched", predicate verdicts and marks are summed locally and flushed exactly."""
    b = make(mode="batched", failure_predicate=is_5xx, result_predicate=returned_5xx)
    for i in range(300):
        if i % 3 == 0:
            b.call(lambda: Response(503))  # failure by result
        elif i % 3 == 1:
            with pytest.raises(Boom):
                b.call(raising(404))  # success by predicate
        else:
            with b as call:
                call.failure()  # failure by mark
    b.close()
    assert counts(b) == (300, 200)


def test_two_workers_with_different_predicates_share_one_fingerprint(redis_url: str, prefix: str) -> None:
    """Two processes with different predicates on one breaker store one fingerprint (no config
    flapping) and both count: one by its predicate, the other by its marks."""
    code = textwrap.dedent("""
        import sys
        from distbreaker import Admin, Breaker, BreakerConfig, connect
        url, prefix, which = sys.argv[1:4]
        pred = (lambda v: v == "bad") if which == "a" else (lambda v: False)
        b = Breaker("shared", connect(url, timeout=2.0), BreakerConfig(minimum_calls=10**6, result_predicate=pred),
                    prefix=prefix, listen=False)
        for i in range(10):
            if which == "a":
                b.call(lambda: "bad" if i < 4 else "ok")
            else:
                with b as call:
                    if i < 3:
                        call.failure()
        print(b.config.fingerprint)
    """)
    out = [
        subprocess.run(
            [sys.executable, "-c", code, redis_url, prefix, which],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout.strip()
        for which in ("a", "b")
    ]
    assert out[0] == out[1] == BreakerConfig(minimum_calls=10**6).fingerprint
    b = Breaker(
        "shared", connect(redis_url, timeout=2.0), BreakerConfig(minimum_calls=10**6), prefix=prefix, listen=False
    )
    s = b.snapshot()
    assert (s.calls, s.failures) == (20, 7)
    fleet = Admin(b.redis, prefix=prefix).config("shared")
    assert fleet.fingerprint == out[0] and fleet.previous_fingerprint is None


# -- sync timeout (item 6) ------------------------------------------------------------------------
def test_sync_timeout_raises_and_counts_a_failure(make: Callable[..., Breaker]) -> None:
    """call(timeout=) stops waiting: CallTimeoutError, a failure in Redis; the thread keeps running."""
    b = make()
    release = threading.Event()
    finished = threading.Event()

    def hang() -> str:
        release.wait(10)
        finished.set()
        return "late"

    with pytest.raises(CallTimeoutError) as info:
        b.call(hang, timeout=0.05)
    assert info.value.service == "svc"
    assert not finished.is_set()  # honest: still running in its thread
    release.set()
    assert finished.wait(5)
    assert counts(b) == (1, 1)


def test_sync_timeout_passes_results_errors_and_context(make: Callable[..., Breaker]) -> None:
    """Within the limit, the result and the exception come back to the caller; a call inside runs
    nested (not counted again); a fallback gets the CallTimeoutError."""
    b = make()
    assert b.call(lambda x: x * 2, 21, timeout=5) == 42
    with pytest.raises(Boom):
        b.call(raising(500), timeout=5)
    assert b.call(lambda: b.call(lambda: "inner"), timeout=5) == "inner"
    release = threading.Event()
    got: list[BaseException] = []
    fb = b.call(release.wait, 10, timeout=0.05, fallback=lambda e: got.append(e) or "fb")  # type: ignore[func-returns-value]
    assert fb == "fb"
    release.set()
    assert len(got) == 1 and isinstance(got[0], CallTimeoutError)
    assert counts(b) == (4, 2)


def test_protect_timeout(make: Callable[..., Breaker]) -> None:
    """@breaker.protect(timeout=) applies the limit to every call; the function's own `timeout` kwarg passes."""
    b = make()
    release = threading.Event()

    @b.protect(timeout=0.05)
    def slow(timeout: float) -> bool:
        return release.wait(timeout)

    with pytest.raises(CallTimeoutError):
        slow(timeout=10)
    release.set()
    assert slow(timeout=1) is True
    assert counts(b) == (2, 1)
    with pytest.raises(ConfigError):
        b.protect(timeout=0)


# -- asyncio ------------------------------------------------------------------------------------
async def test_async_predicates_and_marks(aclient: Any, prefix: str) -> None:
    """asyncio: failure_predicate, result_predicate and `async with ... as call` marks count in Redis."""
    b = dba.Breaker(
        "svc",
        aclient,
        BreakerConfig(minimum_calls=LOTS, failure_predicate=is_5xx, result_predicate=returned_5xx),
        prefix=prefix,
        listen=False,
    )

    async def get(status: int) -> Response:
        return Response(status)

    async def fail(status: int) -> None:
        raise Boom(status)

    assert await b.call(get, 503) == Response(503)  # failure by result
    assert await b.call(get, 200) == Response(200)  # success
    with pytest.raises(Boom):
        await b.call(fail, 404)  # success by predicate
    with pytest.raises(Boom):
        await b.call(fail, 502)  # failure
    async with b as call:
        assert isinstance(call, CallHandle)
        call.failure()
    async with b as call:
        call.ignore()
    async with b:
        pass
    s = await b.snapshot()
    assert (s.calls, s.failures) == (6, 3)
    await b.close()


async def test_async_batched_predicates(aclient: Any, prefix: str) -> None:
    """asyncio in mode="batched": result verdicts and marks flush exactly."""
    b = dba.Breaker(
        "svc",
        aclient,
        BreakerConfig(minimum_calls=LOTS, result_predicate=returned_5xx),
        prefix=prefix,
        listen=False,
        mode="batched",
        flush_interval=0.05,
    )
    for i in range(100):
        if i % 2:
            await b.call(lambda: Response(500))
        else:
            async with b as call:
                call.success()
    await b.close()
    s = await b.snapshot()
    assert (s.calls, s.failures) == (100, 50)


def test_registry_call_hands_timeout_to_the_breaker(client: Any, prefix: str) -> None:
    """BreakerRegistry.call(..., timeout=) reaches the breaker: CallTimeoutError, one failure counted."""
    from distbreaker import BreakerRegistry

    registry = BreakerRegistry(client, BreakerConfig(minimum_calls=LOTS), prefix=prefix, listen=False)
    release = threading.Event()
    try:
        with pytest.raises(CallTimeoutError):
            registry.call("reg", release.wait, 10, timeout=0.05)
    finally:
        release.set()
    s = registry.get("reg").snapshot()
    assert (s.calls, s.failures) == (1, 1)
    registry.close()
