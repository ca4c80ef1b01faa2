"""httpx integration: a transport that puts every request through its host's breaker.

Wrap the client's transport; each host (``host`` or ``host:port``) gets its own breaker from a
`BreakerRegistry`, so the breakers are shared by every process of the fleet:

    import httpx
    from distbreaker import BreakerRegistry, connect
    from distbreaker.toolkit.httpx import BreakerTransport

    registry = BreakerRegistry(connect("redis://localhost:6379/0"), prefix="http")
    client = httpx.Client(transport=BreakerTransport(registry))

    import distbreaker.asyncio
    from distbreaker.toolkit.httpx import AsyncBreakerTransport
    client = httpx.AsyncClient(transport=AsyncBreakerTransport(distbreaker.asyncio.BreakerRegistry(aredis)))

Outcomes: a response for which `is_failure` is true (default: status 5xx) counts as a failure,
and is still returned to the caller as it is; any exception of the wrapped transport (timeouts,
connection errors) counts as a failure and propagates; any other response (4xx included) counts
as a success. While a host's breaker is open, requests to it raise `CircuitOpenError` without
being sent, or return what `fallback` builds.

Memory: the transport keeps no breaker of its own; each host's is its registry's, so at most
the registry's `max_breakers` hosts (default 1000) have a breaker in memory, the least recently
used closed first (its state stays in Redis, and a later request makes it again). A client that
reaches many hosts (a crawler) bounds its memory with ``BreakerRegistry(..., max_breakers=N)``.

Failures are counted through an exception the transport raises and catches itself,
`ResponseFailure`, a subclass of `httpx.HTTPStatusError`: a breaker config that narrows
`failure_exceptions` must cover it (``httpx.HTTPError`` covers it and the transport errors).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, cast

try:
    import httpx
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise ImportError("distbreaker.toolkit.httpx needs httpx: pip install httpx (the httpx extra)") from _exc

from ..errors import CircuitOpenError

__all__ = ["AsyncBreakerTransport", "BreakerTransport", "ResponseFailure", "host_service", "is_server_error"]

_UNSAFE = re.compile(r"[^A-Za-z0-9._:-]")


def is_server_error(response: httpx.Response) -> bool:
    """The default `is_failure`: status 500-599."""
    return response.status_code >= 500


def host_service(request: httpx.Request) -> str:
    """The default `service`: the request's host, with ``:port`` when the URL names a port
    (characters a service name cannot hold become ``_``; at most 128 characters)."""
    url = request.url
    host = url.raw_host.decode("ascii", "replace")  # IDNA-encoded: ASCII
    name = host if url.port is None else f"{host}:{url.port}"
    return _UNSAFE.sub("_", name)[:128] or "_"


class ResponseFailure(httpx.HTTPStatusError):
    """Raised and caught inside the transport so that the breaker counts a response as a failure."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(f"{response.status_code} counted as a failure", request=response.request, response=response)


class BreakerTransport(httpx.BaseTransport):
    """An httpx transport that sends each request through its host's `distbreaker.Breaker`.

    Args:
        registry: a `distbreaker.BreakerRegistry` (its `get(service)` gives each host's breaker;
            its `max_breakers` caps the hosts kept in memory).
        transport: the transport that sends the requests. Default ``httpx.HTTPTransport()``.
        is_failure: whether a response counts as a failure. Default `is_server_error` (5xx).
        service: the breaker's service for a request. Default `host_service`.
        fallback: called with the `CircuitOpenError` when a host's breaker rejects a request;
            the `httpx.Response` it returns is the answer. Default None: raise.
    """

    def __init__(
        self,
        registry: Any,
        transport: httpx.BaseTransport | None = None,
        *,
        is_failure: Callable[[httpx.Response], bool] = is_server_error,
        service: Callable[[httpx.Request], str] = host_service,
        fallback: Callable[[CircuitOpenError], httpx.Response] | None = None,
    ) -> None:
        self.registry = registry
        self._transport = transport if transport is not None else httpx.HTTPTransport()
        self._is_failure = is_failure
        self._service = service
        self._fallback = fallback

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        breaker = self.registry.get(self._service(request))

        def send() -> httpx.Response:
            response = self._transport.handle_request(request)
            response.request = request
            if self._is_failure(response):
                raise ResponseFailure(response)
            return response

        try:
            return cast("httpx.Response", breaker.call(send))
        except ResponseFailure as failure:
            return failure.response
        except CircuitOpenError as exc:
            if self._fallback is None:
                raise
            return self._fallback(exc)

    def close(self) -> None:
        self._transport.close()


class AsyncBreakerTransport(httpx.AsyncBaseTransport):
    """`BreakerTransport` for `httpx.AsyncClient`, over a `distbreaker.asyncio.BreakerRegistry`.

    Args:
        registry: a `distbreaker.asyncio.BreakerRegistry`.
        transport: the transport that sends the requests. Default ``httpx.AsyncHTTPTransport()``.
        is_failure: whether a response counts as a failure. Default `is_server_error` (5xx).
        service: the breaker's service for a request. Default `host_service`.
        fallback: sync or async, called with the `CircuitOpenError` when a host's breaker
            rejects a request; returns the `httpx.Response`. Default None: raise.
    """

    def __init__(
        self,
        registry: Any,
        transport: httpx.AsyncBaseTransport | None = None,
        *,
        is_failure: Callable[[httpx.Response], bool] = is_server_error,
        service: Callable[[httpx.Request], str] = host_service,
        fallback: Callable[[CircuitOpenError], httpx.Response | Awaitable[httpx.Response]] | None = None,
    ) -> None:
        self.registry = registry
        self._transport = transport if transport is not None else httpx.AsyncHTTPTransport()
        self._is_failure = is_failure
        self._service = service
        self._fallback = fallback

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        breaker = self.registry.get(self._service(request))

        async def send() -> httpx.Response:
            response = await self._transport.handle_async_request(request)
            response.request = request
            if self._is_failure(response):
                raise ResponseFailure(response)
            return response

        try:
            return cast("httpx.Response", await breaker.call(send))
        except ResponseFailure as failure:
            return failure.response
        except CircuitOpenError as exc:
            if self._fallback is None:
                raise
            response = self._fallback(exc)
            if isinstance(response, httpx.Response):
                return response
            return await response

    async def aclose(self) -> None:
        await self._transport.aclose()
