"""Memory stays bounded by the breakers alive, not by the services ever seen (issue 14, item 17)."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from collections.abc import Iterator

import httpx
import pytest
import redis

from distbreaker import BreakerConfig, BreakerRegistry, _otel, connect
from distbreaker.toolkit.httpx import BreakerTransport

pytestmark = pytest.mark.redis

MAX = 100
WARM, MORE = 1_000, 4_000  # services seen before the first measure, then after it
GROWTH = 100_000  # bytes allowed for MORE new services (measured: < 1 KB; 6.1 MB before the fix)


@pytest.fixture
def client(redis_url: str, prefix: str) -> Iterator[redis.Redis]:
    r = connect(redis_url, timeout=1.0)
    yield r
    for key in r.scan_iter(match=f"{prefix}:*", count=1000):
        r.delete(key)
    r.close()


def _traced(step: object) -> int:
    gc.collect()
    current, _ = tracemalloc.get_traced_memory()
    return current


def test_registry_memory_is_bounded_by_max_breakers(client: redis.Redis, prefix: str) -> None:
    """5,000 distinct services through a registry of 100 breakers: after the first 1,000, the
    next 4,000 add less than 100 KB (per-service OTel tallies retire with their breaker, and
    at most `RETIRED_TALLIES` are kept)."""
    cfg = BreakerConfig(minimum_calls=10**6, redis_timeout=1.0)
    reg = BreakerRegistry(client, cfg, max_breakers=MAX, prefix=prefix, listen=False)
    tracemalloc.start()
    try:
        for i in range(WARM):
            reg.call(f"svc-{i}", int, 1)
        before = _traced("warm")
        for i in range(WARM, WARM + MORE):
            reg.call(f"svc-{i}", int, 1)
        after = _traced("more")
    finally:
        tracemalloc.stop()
        reg.close()
    assert len(reg) == 0
    assert after - before < GROWTH, f"{MORE} more services grew memory by {after - before} B"
    assert _otel.INSTRUMENTS.tallies <= MAX + _otel.RETIRED_TALLIES


def test_httpx_transport_keeps_at_most_max_breakers_hosts(client: redis.Redis, prefix: str) -> None:
    """The httpx transport's breakers are its registry's: 600 distinct hosts through a
    registry of 100 leave 100 breakers in memory (the least recently used are closed)."""
    reg = BreakerRegistry(client, BreakerConfig(minimum_calls=10**6), max_breakers=MAX, prefix=prefix, listen=False)
    mock = httpx.MockTransport(lambda request: httpx.Response(200))
    with httpx.Client(transport=BreakerTransport(reg, mock)) as http:
        for i in range(600):
            assert http.get(f"http://host-{i}.example/").status_code == 200
    assert len(reg) == MAX
    assert reg.services()[-1] == "host-599.example"
    reg.close()


def test_a_breaker_collected_while_the_instruments_lock_is_held_does_not_deadlock(
    client: redis.Redis, prefix: str
) -> None:
    """The garbage collector may finalize a dropped breaker inside any allocation, also while
    this thread holds the instruments' lock (building another breaker): its tally is released
    later by the lock's next holder instead of waiting for the lock forever (a full-suite hang:
    test_registry's bounded-routes test stuck in `Instruments.unregister` under `register`)."""
    from distbreaker import Breaker

    service = f"collected-{prefix}"
    breaker = Breaker(service, client, BreakerConfig(), prefix=prefix, listen=False)
    tally = breaker._core.on_call[0].tally  # type: ignore[attr-defined]
    assert tally is not None and tally.users == 1
    instruments = _otel.INSTRUMENTS
    done = threading.Event()

    def collect_inside_the_lock() -> None:
        with instruments._lock:  # what register() holds when an allocation runs the collector
            del_breaker()
            gc.collect()  # runs the finalizer here, in the lock's holder
        done.set()

    def del_breaker() -> None:
        nonlocal breaker
        del breaker

    worker = threading.Thread(target=collect_inside_the_lock, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert done.is_set(), "the finalizer waited for the lock its own thread held"
    assert instruments.tallies >= 1  # the next holder of the lock released the tally
    assert tally.users == 0
