"""distbreaker: a circuit breaker whose state lives in Redis, shared by a whole fleet."""

from __future__ import annotations

from typing import Any

from ._breaker import Breaker
from ._cluster import connect_cluster, connect_sentinel
from ._config import BreakerConfig
from ._connect import connect
from ._core import CallHandle
from ._functions import use_functions
from ._model import CallDetails, Snapshot, State, Transition
from .admin import Admin
from .bulkhead import Bulkhead, BulkheadState, Lease
from .errors import (
    AccessDeniedError,
    BackendError,
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    CorruptStateError,
    DistbreakerError,
    FailoverError,
    RedisUnavailableError,
    ScriptError,
    UnknownServiceError,
)
from .registry import BreakerRegistry

__all__ = [
    "AccessDeniedError",
    "Admin",
    "BackendError",
    "Breaker",
    "BreakerConfig",
    "BreakerRegistry",
    "Bulkhead",
    "BulkheadFullError",
    "BulkheadState",
    "CallDetails",
    "CallHandle",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "CorruptStateError",
    "DistbreakerError",
    "FailoverError",
    "Lease",
    "RedisUnavailableError",
    "ScriptError",
    "Snapshot",
    "State",
    "Transition",
    "UnknownServiceError",
    "connect",
    "use_functions",
    "connect_cluster",
    "connect_sentinel",
]


def __getattr__(name: str) -> Any:
    if name == "__version__":
        from importlib.metadata import version

        return version("distbreaker")
    raise AttributeError(f"module 'distbreaker' has no attribute {name!r}")
