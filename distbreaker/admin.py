"""Admin: what the CLI uses. Inspect and change breakers; every change records actor and reason."""

from __future__ import annotations

from typing import Any

from redis.exceptions import RedisError

from . import _ops
from ._core import (
    DEFAULT_PREFIX,
    decode_snapshot,
    decode_transition,
    keys_for,
    script_args,
    service_of_key,
    text,
    validate_prefix,
    validate_service,
)
from ._model import Snapshot, Transition
from ._scripts import SCRIPTS, run
from .errors import UnknownServiceError, translate

__all__ = ["Admin"]


class Admin:
    """Operator access to every breaker under a prefix.

    Args:
        redis: a `redis.Redis` client (the CLI uses a longer timeout than workers).
        prefix: key prefix. Default ``"distbreaker"``.
    """

    def __init__(self, redis: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = validate_prefix(prefix)

    def _run(self, service: str, name: str, extra: list[str]) -> Any:
        keys = keys_for(self.prefix, validate_service(service))
        try:
            return run(self.redis, SCRIPTS[name], (keys.state, keys.events),
                       script_args(None, None, extra))
        except RedisError as exc:
            raise translate(exc, service) from exc

    def list(self) -> list[str]:
        """Services of every breaker under the prefix, sorted (SCAN; never KEYS)."""
        try:
            found = {service_of_key(self.prefix, text(k))
                     for k in self.redis.scan_iter(match=f"{self.prefix}:{{*}}", count=1000)}
        except RedisError as exc:
            raise translate(exc) from exc
        return sorted(s for s in found if s)

    def status(self, service: str) -> Snapshot:
        """The snapshot of `service`, with its config and last transition.

        Raises:
            UnknownServiceError: no breaker by that name exists.
        """
        reply = self._run(service, "read", ["1"])
        if not int(reply[18]):
            raise UnknownServiceError(service)
        return decode_snapshot(service, reply)

    def exists(self, service: str) -> bool:
        """Whether a breaker named `service` exists in Redis."""
        try:
            return bool(self.redis.exists(keys_for(self.prefix, validate_service(service)).state))
        except RedisError as exc:
            raise translate(exc, service) from exc

    def _until(self, for_: Any) -> int:
        value = _ops.duration(for_)
        return 0 if value is None else _ops.server_ms(self.redis) + round(value * 1000)

    def _control(self, service: str, op: str, until: int, reason: str, actor: str | None) -> Snapshot:
        reply = self._run(service, "control", [op, str(until), _ops.check_reason(reason),
                                               _ops.actor_or_default(actor)])
        return decode_snapshot(service, reply)

    def trip(self, service: str, *, for_: Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force `service` open fleet-wide for `for_` seconds (None = until reset)."""
        return self._control(service, "trip", self._until(for_), reason, actor)

    def disable(self, service: str, *, for_: Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force `service` closed fleet-wide (outcomes still counted) for `for_` seconds."""
        return self._control(service, "disable", self._until(for_), reason, actor)

    def reset(self, service: str, *, reason: str = "", actor: str | None = None) -> Snapshot:
        """Return `service` to closed with an empty window, clearing any forced state."""
        return self._control(service, "reset", 0, reason, actor)

    def history(self, service: str, n: int = 20) -> list[Transition]:
        """The last `n` transitions of `service`, newest first."""
        if not isinstance(n, int) or n < 1:
            raise ValueError(f"n must be an int >= 1, got {n!r}")
        keys = keys_for(self.prefix, validate_service(service))
        try:
            entries = self.redis.xrevrange(keys.events, count=n)
        except RedisError as exc:
            raise translate(exc, service) from exc
        return [decode_transition(service, e) for e in entries]
