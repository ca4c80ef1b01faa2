"""Value types: State, Outcome, Snapshot, Transition, CallDetails; and `Reporter`, what a breaker
reports to (metrics, logs, hooks), so that the core knows none of them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .errors import CircuitOpenError

__all__ = ["BreakerView", "CallDetails", "Outcome", "Reporter", "Snapshot", "State", "Transition"]


class State(str, Enum):
    """Breaker states; the values are the same strings in Lua, Python, metrics and JSON."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"
    FORCED_OPEN = "forced_open"
    DISABLED = "disabled"

    def __str__(self) -> str:
        return self.value


class Outcome(str, Enum):
    """How a call ended, as a breaker counts it; the values are the ``outcome`` of `CallDetails`
    and of the ``distbreaker.calls`` metric.

    ``success`` and ``failure`` count in the window; ``ignored`` (an ignored exception or a
    cancellation) counts as nothing; ``rejected``: the breaker did not run the call.
    """

    SUCCESS = "success"
    FAILURE = "failure"
    IGNORED = "ignored"
    REJECTED = "rejected"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change of a breaker, as stored in its events stream.

    Attributes:
        service: the breaker.
        time: server time of the transition, seconds since the epoch.
        from_state: the state it left.
        to_state: the state it entered.
        cause: e.g. ``"failure_rate 0.62 >= 0.50 over 48 calls"``, ``"manual trip by alice: INC-42"``.
        actor: who made it (operators), ``""`` for automatic transitions.
        generation: the generation the breaker entered.
    """

    service: str
    time: float
    from_state: State
    to_state: State
    cause: str
    actor: str
    generation: int


@dataclass(frozen=True, slots=True)
class CallDetails:
    """One protected call, as `on_call` hooks receive it (fields may be added; none removed).

    Attributes:
        service: the breaker.
        outcome: ``"success"``, ``"failure"``, ``"rejected"`` (not run: `CircuitOpenError`) or
            ``"ignored"`` (an ignored exception or a cancellation: counted as nothing). The same
            values as the ``outcome`` attribute of the ``distbreaker.calls`` metric.
        duration: seconds the protected function ran (0.0 when rejected).
        slow: the call took at least `slow_call_duration` (always False when that is None or
            the call was rejected).
        state: the breaker's state as this process knew it after the call: a `State`, or
            ``"unavailable"`` (rejected because Redis is unreachable and
            ``on_redis_error="reject"``), or ``"unknown"`` (no reply from Redis yet).
        exception: what the call raised (the `CircuitOpenError` when rejected), else None.

    .. versionadded:: 0.1.0
    """

    service: str
    outcome: str
    duration: float
    slow: bool
    state: str
    exception: BaseException | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A breaker's shared state as Redis held it at `server_time`.

    Times are seconds since the epoch on the Redis server's clock; durations are seconds.
    `failing_clients` is the number of distinct clients (processes) that reported a failed or
    slow call in the window, counted while `minimum_failing_workers` is on (at most 32; 0 when
    off); None in a snapshot taken from a call's reply, which does not carry it (`Breaker.
    snapshot()`, `Admin.status` and `distbreaker status` read it).
    """

    service: str
    state: State
    generation: int
    calls: int
    failures: int
    slow_calls: int
    consecutive_failures: int
    open_until: float | None
    forced_until: float | None
    reason: str
    actor: str
    open_count: int
    half_open_calls: int
    half_open_successes: int
    server_time: float
    last_transition: Transition | None = None
    config: str | None = None
    failing_clients: int | None = None

    @property
    def failure_rate(self) -> float:
        """Failures / calls in the window (0.0 with no calls)."""
        return self.failures / self.calls if self.calls else 0.0

    @property
    def slow_call_rate(self) -> float:
        """Slow calls / calls in the window (0.0 with no calls)."""
        return self.slow_calls / self.calls if self.calls else 0.0

    @property
    def retry_after(self) -> float | None:
        """Seconds until an open or forced-open breaker may admit calls, else None."""
        until = self.open_until if self.state is State.OPEN else self.forced_until
        if self.state not in (State.OPEN, State.FORCED_OPEN) or until is None:
            return None
        return max(0.0, until - self.server_time)


class BreakerView(Protocol):
    """What a reporter may read of the breaker it reports for."""

    @property
    def service(self) -> str: ...

    def last_state(self) -> tuple[State | None, float]:
        """The state this process last learnt (None: none yet), with the lazy expiry the scripts
        would apply by now, and when it was learnt (the breaker's clock)."""
        ...


class Reporter:
    """Receives what one breaker reports; every method does nothing here (override what you need).

    The core calls a method only on the reporters whose class overrides it, so a reporter that
    ignores calls adds no work to the call path. Methods run on the thread (or task) that learnt
    the fact, must be fast, and must not raise. Implemented by the OpenTelemetry metrics
    (`_otel`), the log (`_log`) and the user's hooks (`_hooks`).
    """

    __slots__ = ()

    def opened(self, breaker: BreakerView) -> None:
        """`breaker` was built: every later report is about it."""

    def closed(self, breaker: BreakerView) -> None:
        """`breaker` was closed: nothing more will be reported (free what it held)."""

    def call(
        self,
        service: str,
        outcome: Outcome,
        duration: float,
        slow: bool,
        state: State | None,
        exc: BaseException | None,
    ) -> None:
        """An admitted call finished (after its outcome was recorded): `duration` seconds,
        `state` as this process knows it after the call (None: no reply from Redis yet)."""

    def rejected(self, service: str, err: CircuitOpenError) -> None:
        """A call was rejected with `err` (not run)."""

    def transitions(self, service: str, made: Sequence[Transition], ms: int) -> None:
        """This process's script performed `made` (oldest first) at server time `ms`."""

    def round_trip(self, service: str, script: str, start: float) -> None:
        """A script round trip on the call path returned; it started at `time.perf_counter()`
        `start` (the reporter reads the clock only if it wants the duration)."""

    def redis_error(self, service: str, exc: BaseException) -> None:
        """A Redis error on the call path (any error, before it is classified)."""
