"""Failover chains: each provider behind its own distributed breaker; strategies; no request
lost while a healthy provider remains; open providers skipped with no Redis round trip."""

from __future__ import annotations

import asyncio
import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from _servers import ServerFactory
from _toolkit import HTTPServer

import distbreaker.asyncio as dba
from distbreaker import Breaker, BreakerConfig, CallTimeoutError, CircuitOpenError, ConfigError, FailoverError, connect
from distbreaker.toolkit.failover import AsyncFailover, Failover, Provider


class Down(Exception):
    pass


class Ignored(Exception):
    pass


def providers(
    make: Callable[..., Breaker],
    names: str = "abc",
    **cfg: Any,
) -> tuple[list[Provider], Counter[str], dict[str, bool]]:
    """One provider per name, each answering its name; `dead[name] = True` makes it raise Down."""
    served: Counter[str] = Counter()
    dead = {n: False for n in names}
    lock = threading.Lock()

    def provider_fn(name: str) -> Callable[[int], str]:
        def fn(x: int) -> str:
            if dead[name]:
                raise Down(name)
            with lock:
                served[name] += 1
            return f"{name}:{x}"

        return fn

    return [Provider(make(n, **cfg), provider_fn(n)) for n in names], served, dead


def test_priority_first_provider_dies_mid_run_over_http(
    make: Callable[..., Breaker], http_server: Callable[[], HTTPServer]
) -> None:
    """Three HTTP providers, four client threads: the first server dies mid-run; every request
    is still answered (by the second), and the first one's breaker opens."""
    servers = [http_server() for _ in range(3)]
    clients = [httpx.Client(base_url=s.url, timeout=2.0) for s in servers]

    def fetch(client: httpx.Client) -> Callable[[str], str]:
        def get(path: str) -> str:
            response = client.get(path)
            response.raise_for_status()
            return response.text

        return get

    chain: Failover[str] = Failover(
        [Provider(make(f"p{i}", consecutive_failures=3), fetch(c)) for i, c in enumerate(clients)]
    )
    results: list[str] = []
    errors: list[BaseException] = []
    halfway = threading.Event()
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(50):
            try:
                text = chain.call("/ok")
            except BaseException as exc:  # collected: the test asserts there is none
                errors.append(exc)
                continue
            with lock:
                results.append(text)
                if len(results) == 60:
                    halfway.set()

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    assert halfway.wait(30)
    servers[0].stop()  # the first provider dies: connections refused from now on
    for t in threads:
        t.join(60)
    for c in clients:
        c.close()
    assert not errors
    assert len(results) == 200 and set(results) == {"200 /ok"}
    assert servers[0].hits["/ok"] >= 60
    assert servers[0].hits["/ok"] + servers[1].hits["/ok"] == 200
    assert servers[2].hits["/ok"] == 0
    assert chain.providers[0].breaker.snapshot().state == "open"
    assert chain.available() == ["p1", "p2"]


def test_priority_skips_a_dead_provider_without_losing_calls(make: Callable[..., Breaker]) -> None:
    """Plain functions: once the first provider dies, calls go to the second; after its
    breaker opens, the dead provider is not even called."""
    ps, served, dead = providers(make, consecutive_failures=2)
    tried: Counter[str] = Counter()
    inner = ps[0].fn

    def first(x: int) -> str:
        tried["a"] += 1
        return inner(x)  # type: ignore[no-any-return]

    chain: Failover[str] = Failover([Provider(ps[0].breaker, first), *ps[1:]])
    out = [chain.call(i) for i in range(5)]
    dead["a"] = True
    out += [chain.call(i) for i in range(5, 20)]
    assert out == [f"a:{i}" for i in range(5)] + [f"b:{i}" for i in range(5, 20)]
    assert served == {"a": 5, "b": 15}
    assert tried["a"] == 5 + 2  # two failures opened its breaker; then it was skipped
    assert ps[0].breaker.snapshot().state == "open"


def test_round_robin(make: Callable[..., Breaker]) -> None:
    """Round robin rotates the first provider; an open provider's turns go to the next one."""
    ps, served, _ = providers(make)
    chain: Failover[str] = Failover(ps, strategy="round_robin")
    assert [chain.call(i)[0] for i in range(6)] == list("abcabc")
    ps[1].breaker.trip(reason="maintenance")
    assert [chain.call(i)[0] for i in range(6)] == list("acc" * 2)
    assert served == {"a": 4, "b": 2, "c": 6}


def test_random(make: Callable[..., Breaker]) -> None:
    """Random order per call (seeded here): every provider serves; an open one never does."""
    ps, served, _ = providers(make)
    chain: Failover[str] = Failover(ps, strategy="random", rng=random.Random(7))
    firsts = [chain.call(i)[0] for i in range(60)]
    assert set(firsts) == {"a", "b", "c"} and firsts != sorted(firsts)
    ps[0].breaker.trip()
    served.clear()
    for i in range(30):
        chain.call(i)
    assert served["a"] == 0 and served["b"] + served["c"] == 30 and served["b"] and served["c"]


def test_fastest(make: Callable[..., Breaker]) -> None:
    """Fastest measures every provider once, then prefers the lowest observed latency; when
    that provider dies, the next fastest serves."""
    delays = {"a": 0.06, "b": 0.0, "c": 0.03}  # sleeps model the providers' work
    dead = {"b": False}

    def fn(name: str) -> Callable[[], str]:
        def call() -> str:
            if dead.get(name):
                raise Down(name)
            threading.Event().wait(delays[name])
            return name

        return call

    chain: Failover[str] = Failover(
        [Provider(make(n, consecutive_failures=1), fn(n)) for n in "abc"], strategy="fastest"
    )
    assert [chain.call() for _ in range(3)] == ["a", "b", "c"]  # each measured once, in priority order
    assert [chain.call() for _ in range(5)] == ["b"] * 5
    latency = chain.latencies()
    assert latency["b"] < latency["c"] < latency["a"]  # type: ignore[operator]
    dead["b"] = True
    assert [chain.call() for _ in range(3)] == ["c"] * 3
    assert chain.available() == ["a", "c"]


def test_all_fail_lists_every_reason(make: Callable[..., Breaker]) -> None:
    """When every provider fails, FailoverError names each with its reason, in order; a
    fallback receives that error instead."""
    a, b, c = make("a"), make("b"), make("c")
    a.trip(reason="INC-42")

    def refused() -> None:
        raise ConnectionError("refused")

    def slow() -> None:
        raise TimeoutError("took too long")

    chain: Failover[Any] = Failover([(a, lambda: "never"), (b, refused), (c, slow)])
    with pytest.raises(FailoverError) as info:
        chain.call()
    err = info.value
    assert list(err.errors) == ["a", "b", "c"]
    assert isinstance(err.errors["a"], CircuitOpenError) and err.errors["a"].reason == "INC-42"
    text = str(err)
    assert text.startswith("all 3 providers failed: ")
    for part in (
        "a: circuit 'a' is forced_open",
        "INC-42",
        "b: ConnectionError: refused",
        "c: TimeoutError: took too long",
    ):
        assert part in text
    with_fallback: Failover[Any] = Failover([(b, refused), (c, slow)], fallback=lambda e: sorted(e.errors))
    assert with_fallback.call() == ["b", "c"]


def test_non_failures_propagate_at_once(make: Callable[..., Breaker]) -> None:
    """An exception the provider's breaker does not count as a failure is the caller's: it
    propagates without trying the next provider."""
    called: list[str] = []

    def ignored() -> None:
        called.append("a")
        raise Ignored

    def value_error() -> None:
        called.append("b")
        raise ValueError("bad input")

    def ok() -> str:
        called.append("c")
        return "c"

    chain: Failover[Any] = Failover([(make("a", ignored_exceptions=(Ignored,)), ignored), (make("c"), ok)])
    with pytest.raises(Ignored):
        chain.call()
    chain2: Failover[Any] = Failover([(make("b", failure_exceptions=(KeyError,)), value_error), (make("c"), ok)])
    with pytest.raises(ValueError):
        chain2.call()
    assert called == ["a", "b"]


def test_open_provider_is_skipped_without_a_round_trip(redis_server_factory: ServerFactory, prefix: str) -> None:
    """On a private server: with the first provider's breaker open, 50 failover calls cost
    exactly 50 EVALSHA (the second provider's records) and nothing else."""
    server = redis_server_factory()
    client = connect(server.url, timeout=1.0)
    stats = server.client()
    config = BreakerConfig(consecutive_failures=1, open_duration=600, max_staleness=600, minimum_calls=1000)
    a = Breaker("a", client, config, prefix=prefix, listen=False)
    b = Breaker("b", client, config, prefix=prefix, listen=False)
    calls: Counter[str] = Counter()

    def down() -> None:
        calls["a"] += 1
        raise Down

    def up() -> str:
        calls["b"] += 1
        return "b"

    chain: Failover[str] = Failover([(a, down), (b, up)])
    assert chain.call() == "b"  # a fails (and opens), b answers
    assert chain.call() == "b"  # a skipped
    stats.config_resetstat()
    assert [chain.call() for _ in range(50)] == ["b"] * 50
    assert chain.available() == ["b"]
    cmd = stats.info("commandstats")
    assert cmd["cmdstat_evalsha"]["calls"] == 50  # an acquire for "a" would be one more
    assert "cmdstat_eval" not in cmd
    assert calls == {"a": 1, "b": 52}
    client.close()


def test_invalid_chains(make: Callable[..., Breaker]) -> None:
    """A chain needs providers with unique names and a known strategy."""
    b = make("a")
    with pytest.raises(ConfigError, match="providers"):
        Failover([])
    with pytest.raises(ConfigError, match="unique"):
        Failover([(b, lambda: 1), (b, lambda: 2)])
    with pytest.raises(ConfigError, match="strategy"):
        Failover([(b, lambda: 1)], strategy="fastest-first")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Provider(b, "not callable")  # type: ignore[arg-type]
    assert Failover([Provider(b, lambda: 1, name="primary")]).providers[0].name == "primary"


async def test_async_failover_first_dies_mid_run(amake: Callable[..., dba.Breaker]) -> None:
    """AsyncFailover under 200 concurrent calls: the first provider dies after 50 answers and
    every call is still answered."""
    state = {"a_served": 0}

    async def a(x: int) -> str:
        await asyncio.sleep(0)
        if state["a_served"] >= 50:
            raise Down("a")
        state["a_served"] += 1
        return "a"

    async def b(x: int) -> str:
        await asyncio.sleep(0)
        return "b"

    def c(x: int) -> str:  # a sync provider works too
        return "c"

    chain: AsyncFailover[str] = AsyncFailover(
        [(amake("a", consecutive_failures=3), a), (amake("b"), b), (amake("c"), c)]
    )
    results = await asyncio.gather(*(chain.call(i) for i in range(200)))
    assert len(results) == 200 and set(results) <= {"a", "b"}
    assert Counter(results)["a"] == 50
    assert (await chain.providers[0].breaker.snapshot()).state == "open"
    assert await chain(0) == "b"


async def test_async_failover_timeout_per_attempt(amake: Callable[..., dba.Breaker]) -> None:
    """With `timeout`, a hanging provider is cancelled and counted as a failed slow call, and
    the next provider answers; all failing gives a FailoverError with the timeouts."""

    async def hang() -> str:
        await asyncio.sleep(30)
        return "never"

    async def fallback(error: FailoverError) -> str:
        return "fallback:" + ",".join(error.errors)

    a = amake("a", slow_call_duration=0.05, minimum_calls=100)
    chain: AsyncFailover[str] = AsyncFailover([(a, hang), (amake("b"), lambda: "b")], timeout=0.05)
    assert await chain.call() == "b"
    s = await a.snapshot()
    assert (s.calls, s.failures, s.slow_calls) == (1, 1, 1)
    both: AsyncFailover[str] = AsyncFailover([(a, hang), (amake("c", minimum_calls=100), hang)], timeout=0.02)
    with pytest.raises(FailoverError) as info:
        await both.call()
    assert all(isinstance(e, CallTimeoutError) for e in info.value.errors.values())
    assert "timed out after 0.02s" in str(info.value)
    with_fallback: AsyncFailover[str] = AsyncFailover([(amake("d"), hang)], timeout=0.02, fallback=fallback)
    assert await with_fallback.call() == "fallback:d"


def test_weighted_splits_first_tries_by_weight(make: Callable[..., Breaker]) -> None:
    """ "weighted": with weights 3:1 the first provider serves about 75% of 2000 calls; weight 0
    is only a last resort; a failing provider still hands over to the others."""
    (a, b, c), served, dead = providers(make)
    chain = Failover(
        [Provider(a.breaker, a.fn, weight=3), Provider(b.breaker, b.fn, weight=1), Provider(c.breaker, c.fn, weight=0)],
        strategy="weighted",
        rng=random.Random(7),
    )
    for i in range(2000):
        chain.call(i)
    assert served["c"] == 0
    assert 0.70 < served["a"] / 2000 < 0.80, served
    dead["a"] = dead["b"] = True
    assert chain.call(1) == "c:1"
    with pytest.raises(ConfigError):
        Provider(a.breaker, a.fn, weight=-1)


def test_on_failover_hook_and_metric(make: Callable[..., Breaker]) -> None:
    """Every switch calls on_failover with (from, to, error) and counts distbreaker.failovers {from, to}."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from distbreaker._otel import use_meter_provider
    from distbreaker.toolkit.failover import FailoverEvent

    reader = InMemoryMetricReader()
    use_meter_provider(MeterProvider(metric_readers=[reader]))
    try:
        ps, _, dead = providers(make, "xyz", minimum_calls=100)
        events: list[FailoverEvent] = []

        def hook(event: FailoverEvent) -> None:
            events.append(event)
            raise RuntimeError("a broken hook is logged, not raised")

        chain = Failover(ps, on_failover=hook)
        assert chain.call(1) == "x:1" and events == []
        dead["x"] = True
        assert chain.call(2) == "y:2"
        dead["y"] = True
        assert chain.call(3) == "z:3"
        assert [(e.from_provider, e.to_provider, type(e.error)) for e in events] == [
            ("x", "y", Down),
            ("x", "y", Down),
            ("y", "z", Down),
        ]
        counts: dict[tuple[str, str], int] = {}
        data = reader.get_metrics_data()
        assert data is not None
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name == "distbreaker.failovers":
                        for p in metric.data.data_points:
                            counts[(p.attributes["from"], p.attributes["to"])] = p.value  # type: ignore[index]
        assert counts == {("x", "y"): 2, ("y", "z"): 1}
    finally:
        use_meter_provider(None)


def test_sync_failover_timeout_moves_on(make: Callable[..., Breaker]) -> None:
    """Failover(timeout=): a hanging provider times out (counted a failure) and the next one answers."""
    release = threading.Event()
    slow, fast = make("slow"), make("fast")
    chain = Failover([(slow, lambda: release.wait(30)), (fast, lambda: "fast")], timeout=0.05)
    try:
        assert chain.call() == "fast"
    finally:
        release.set()
    assert slow.snapshot().failures == 1


async def test_async_on_failover_hook_may_be_async(amake: Callable[..., dba.Breaker]) -> None:
    """AsyncFailover awaits an async on_failover before trying the next provider."""
    seen: list[tuple[str, str]] = []

    async def hook(event: Any) -> None:
        await asyncio.sleep(0)
        seen.append((event.from_provider, event.to_provider))

    async def down() -> str:
        raise Down

    chain = AsyncFailover([(amake("p"), down), (amake("q"), lambda: "q")], on_failover=hook)
    assert await chain.call() == "q"
    assert seen == [("p", "q")]


def test_a_returned_failure_moves_on(make: Callable[..., Breaker]) -> None:
    """A provider returning a value its result_predicate counts as a failure hands the call on:
    counted in its breaker, reported as FailedResult; when all do, FailoverError lists them."""
    from distbreaker.toolkit.failover import FailedResult

    def is_503(value: object) -> bool:
        return value == 503

    first, second = make("first", result_predicate=is_503), make("second", result_predicate=is_503)
    status = {"first": 503, "second": 200}
    chain = Failover([(first, lambda: status["first"]), (second, lambda: status["second"])])
    assert chain.call() == 200
    assert (first.snapshot().failures, second.snapshot().failures) == (1, 0)
    status["second"] = 503
    with pytest.raises(FailoverError) as info:
        chain.call()
    errors = info.value.errors
    assert all(isinstance(e, FailedResult) and e.value == 503 for e in errors.values()), errors
    assert sorted(errors) == ["first", "second"]
