"""Every redis-py internal distbreaker relies on (`distbreaker._transport.INTERNALS`) exists with
the expected shape on the installed redis-py (CI runs this on redis-py 5.0.1 and the newest)."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import pytest
import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.asyncio.connection
import redis.connection

from distbreaker._transport import INTERNALS, Internal

# instances built without I/O, for the attributes set in __init__
_INSTANCES: dict[tuple[str, str], Callable[[], Any]] = {
    ("redis.connection", "ConnectionPool"): lambda: redis.connection.ConnectionPool(),
    ("redis.connection", "Connection"): lambda: redis.connection.Connection(),
    ("redis.client", "Redis"): lambda: redis.Redis(),
    ("redis.asyncio.connection", "ConnectionPool"): lambda: redis.asyncio.connection.ConnectionPool(),
    ("redis.asyncio.connection", "Connection"): lambda: redis.asyncio.connection.Connection(),
    ("redis.asyncio.client", "Redis"): lambda: redis.asyncio.Redis(),
    ("redis.asyncio.cluster", "RedisCluster"): lambda: redis.asyncio.cluster.RedisCluster(host="127.0.0.1", port=1),
}


def _check(internal: Internal) -> None:
    module = importlib.import_module(internal.module)
    class_name, _, rest = internal.attribute.partition(".")
    cls = getattr(module, class_name)
    if internal.shape == "parameter":
        method, _, names = rest.partition(":")
        params = inspect.signature(getattr(cls, method)).parameters
        assert any(n in params for n in names.split("|")), f"{names} not a parameter of {cls.__name__}.{method}"
        return
    names = rest.split("|")
    if internal.shape in ("method", "coroutine", "class attribute"):
        found = [n for n in names if n in dir(cls)]
        assert found, f"{internal.module}.{internal.attribute} is missing"
        value = getattr(cls, found[0])
        if internal.shape == "method":
            assert callable(value) and not inspect.iscoroutinefunction(value), internal
        elif internal.shape == "coroutine":
            assert inspect.iscoroutinefunction(value), f"{internal.attribute} is no longer a coroutine function"
        return
    assert internal.shape == "attribute", internal
    instance = _INSTANCES[(internal.module, class_name)]()
    assert any(hasattr(instance, n) for n in names), f"{internal.module}.{internal.attribute} is missing"


@pytest.mark.parametrize("internal", INTERNALS, ids=lambda i: f"{i.module}.{i.attribute}")
def test_redis_py_internal_exists_with_its_shape(internal: Internal) -> None:
    """The internal exists on the installed redis-py and has the shape the transport expects."""
    assert internal.why
    _check(internal)


def test_every_internal_the_transport_touches_is_listed() -> None:
    """Each private redis-py attribute named in _transport.py's code is in INTERNALS."""
    import re

    import distbreaker._aio_pipe as aio_pipe
    import distbreaker._transport as transport

    source = inspect.getsource(transport)
    code = source[source.index("def _get_connection_args") :]  # the code after the list
    code += inspect.getsource(aio_pipe)  # the asyncio pipes (their redis-py internals are listed there too)
    listed = {part for i in INTERNALS for part in re.split(r"[.|:]", i.attribute)}
    used = set(re.findall(r"\.(_[a-z][a-z_]*)\b", code)) | set(re.findall(r'getattr\([^,]+, "(_[a-z][a-z_]*)"', code))
    assert {"_writer", "_initialize"} <= used  # the scan sees both spellings
    ours = {"_due", "_expire", "_next_waiter"}  # distbreaker's own private names
    assert used - ours <= listed, used - ours - listed


def test_a_shape_change_is_caught() -> None:
    """The check fails for a missing internal or a method that changed from sync to coroutine."""
    with pytest.raises(AssertionError):
        _check(Internal("redis.connection", "Connection.no_such_thing", "method", "x"))
    with pytest.raises(AssertionError):
        _check(Internal("redis.asyncio.connection", "Connection.encoder", "coroutine", "x"))
