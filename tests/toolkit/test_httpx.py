"""The httpx transports against a local HTTP server: 5xx and transport errors fail, 4xx
succeed, one breaker per host, and an open host is not sent any request."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from _toolkit import HTTPServer

import distbreaker.asyncio as dba
from distbreaker import BreakerConfig, BreakerRegistry, CircuitOpenError, State
from distbreaker.toolkit.httpx import AsyncBreakerTransport, BreakerTransport, ResponseFailure, host_service

CONFIG = BreakerConfig(consecutive_failures=3, minimum_calls=1000, open_duration=600)


@pytest.fixture
def registry(client: Any, prefix: str) -> Iterator[BreakerRegistry]:
    reg = BreakerRegistry(client, CONFIG, prefix=prefix, listen=False)
    yield reg
    reg.close()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_host_service() -> None:
    """The service is the host, with the port when the URL names one, made a valid name."""
    assert host_service(httpx.Request("GET", "http://127.0.0.1:8080/x")) == "127.0.0.1:8080"
    assert host_service(httpx.Request("GET", "https://api.example.com/x")) == "api.example.com"
    assert host_service(httpx.Request("GET", "http://[::1]:81/")) == "::1:81"
    assert host_service(httpx.Request("GET", "http://bücher.example/")) == "xn--bcher-kva.example"


def test_5xx_trips_the_host_and_4xx_does_not(registry: BreakerRegistry, http_server: Callable[[], HTTPServer]) -> None:
    """404s count as successes; three 500s (returned to the caller as they are) open the
    host's breaker, after which requests raise CircuitOpenError without reaching the server."""
    server = http_server()
    with httpx.Client(transport=BreakerTransport(registry), base_url=server.url) as http:
        assert http.get("/ok").status_code == 200
        for _ in range(3):
            assert http.get("/missing").status_code == 404
        s = registry.get(f"127.0.0.1:{server.port}").snapshot()
        assert (s.state, s.calls, s.failures) == (State.CLOSED, 4, 0)
        responses = [http.get("/error") for _ in range(3)]
        assert [r.status_code for r in responses] == [500] * 3 and responses[0].text == "500 /error"
        assert registry.get(f"127.0.0.1:{server.port}").snapshot().state is State.OPEN
        with pytest.raises(CircuitOpenError) as info:
            http.get("/ok")
        assert info.value.service == f"127.0.0.1:{server.port}"
    assert server.hits == {"/ok": 1, "/missing": 3, "/error": 3}


def test_one_breaker_per_host(registry: BreakerRegistry, http_server: Callable[[], HTTPServer]) -> None:
    """An open host does not affect another host."""
    bad, good = http_server(), http_server()
    with httpx.Client(transport=BreakerTransport(registry)) as http:
        for _ in range(3):
            http.get(f"{bad.url}/error")
        with pytest.raises(CircuitOpenError):
            http.get(f"{bad.url}/ok")
        assert http.get(f"{good.url}/ok").status_code == 200
    assert sorted(registry.services()) == sorted([f"127.0.0.1:{bad.port}", f"127.0.0.1:{good.port}"])


def test_timeouts_and_connect_errors_fail(registry: BreakerRegistry, http_server: Callable[[], HTTPServer]) -> None:
    """A read timeout and a refused connection propagate as httpx errors and count as failures."""
    server = http_server()
    port = closed_port()
    with httpx.Client(transport=BreakerTransport(registry), timeout=0.05) as http:
        with pytest.raises(httpx.ReadTimeout):
            http.get(f"{server.url}/slow")
        with pytest.raises(httpx.ConnectError):
            http.get(f"http://127.0.0.1:{port}/")
    assert registry.get(f"127.0.0.1:{server.port}").snapshot().failures == 1
    assert registry.get(f"127.0.0.1:{port}").snapshot().failures == 1


def test_fallback_response_and_custom_predicate(
    client: Any, prefix: str, http_server: Callable[[], HTTPServer]
) -> None:
    """`is_failure` can make 404s failures; while open, `fallback` answers without a request,
    and narrowing `failure_exceptions` to httpx.HTTPError still counts them."""
    server = http_server()
    config = BreakerConfig(consecutive_failures=2, failure_exceptions=(httpx.HTTPError,))
    registry = BreakerRegistry(client, config, prefix=prefix, listen=False)
    seen: list[CircuitOpenError] = []

    def fallback(exc: CircuitOpenError) -> httpx.Response:
        seen.append(exc)
        return httpx.Response(503, json={"error": "circuit open", "retry_after": exc.retry_after})

    transport = BreakerTransport(
        registry,
        httpx.HTTPTransport(),
        fallback=fallback,
        is_failure=lambda r: r.status_code >= 400,
        service=lambda request: "upstream",
    )
    try:
        with httpx.Client(transport=transport, base_url=server.url) as http:
            assert [http.get("/missing").status_code for _ in range(2)] == [404, 404]
            response = http.get("/ok")
            assert response.status_code == 503 and response.json()["error"] == "circuit open"
            assert response.request.url.path == "/ok"
            with pytest.raises(httpx.HTTPStatusError):
                response.raise_for_status()
        assert len(seen) == 1 and seen[0].service == "upstream"
        assert server.hits == {"/missing": 2}
        assert issubclass(ResponseFailure, httpx.HTTPError)
    finally:
        registry.close()


async def test_async_transport(aclient: Any, prefix: str, http_server: Callable[[], HTTPServer]) -> None:
    """The async transport: 404s succeed, 500s trip, an open host raises (or an async fallback
    answers) without a request reaching the server."""
    server = http_server()
    registry = dba.BreakerRegistry(aclient, CONFIG, prefix=prefix, listen=False)
    try:
        async with httpx.AsyncClient(transport=AsyncBreakerTransport(registry), base_url=server.url) as http:
            assert (await http.get("/missing")).status_code == 404
            assert [(await http.get("/error")).status_code for _ in range(3)] == [500] * 3
            with pytest.raises(CircuitOpenError):
                await http.get("/ok")
        s = await registry.get(f"127.0.0.1:{server.port}").snapshot()
        assert s.state is State.OPEN

        async def fallback(exc: CircuitOpenError) -> httpx.Response:
            return httpx.Response(503, text=str(exc))

        transport = AsyncBreakerTransport(registry, httpx.AsyncHTTPTransport(), fallback=fallback)
        async with httpx.AsyncClient(transport=transport, base_url=server.url, timeout=0.05) as http:
            response = await http.get("/ok")
            assert response.status_code == 503 and "is open" in response.text
        assert server.hits == {"/missing": 1, "/error": 3}

        with_timeouts = dba.BreakerRegistry(aclient, CONFIG, prefix=prefix + "-t", listen=False)
        async with httpx.AsyncClient(transport=AsyncBreakerTransport(with_timeouts), timeout=0.05) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.get(f"{server.url}/slow")
            with pytest.raises(httpx.ConnectError):
                await http.get(f"http://127.0.0.1:{closed_port()}/")
        assert (await with_timeouts.get(f"127.0.0.1:{server.port}").snapshot()).failures == 1
        await with_timeouts.close()
    finally:
        await registry.close()
