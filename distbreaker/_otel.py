"""OpenTelemetry instrumentation, through `opentelemetry-api` only (the SDK is the app's choice).

Every metric and attribute name lives here. The instruments are made on first use (the first
breaker built in the process) from ``metrics.get_meter("distbreaker", version)``; without an
SDK they are the API's proxies, whose calls do nothing, and they start recording when the app
sets a `MeterProvider`, even later. Spans are never created: the protected call's span is the
*current* span, and it gets attributes only when it is recording.

Each breaker reports through its own `Metrics` (a `_model.Reporter`); this module knows nothing
of the core. A service's call tally lives while it has a breaker, then among the last
`RETIRED_TALLIES` retired ones, so memory follows the breakers alive, not the services ever seen.

What is recorded (README "Observability"):

- ``distbreaker.calls`` counter {service, outcome, slow}: every call through a breaker of this
  process. ``outcome`` is ``success``, ``failure``, ``rejected`` or ``ignored`` (one value per
  call: they add up to the calls made); ``slow`` (true/false) is an extra attribute on
  ``success`` and ``failure``, as the breaker itself counts a slow call *and* its result.
  Counted in the process (one atomic `itertools.count` step per call) and reported by an observable
  counter when the SDK collects: an SDK measurement costs several µs in Python, too much for
  every call.
- ``distbreaker.transitions`` counter {service, from, to}: transitions that a script run by this
  process performed (read from its reply), never those learnt from pub/sub: summed over a
  fleet, each transition counts once.
- ``distbreaker.state`` observable gauge {service}: 0 closed, 1 half_open, 2 open,
  3 forced_open, 4 disabled, per breaker cached in this process, with the lazy expiry applied
  when observed (an idle breaker open past open_until reports half_open, a forced state past
  its expiry closed), as the scripts would find it. The fleet's view: `distbreaker.exporter`.
- ``distbreaker.redis.duration`` histogram {service, script}, seconds: script round trips on
  the call path (acquire, record, batched flushes), sampled: at most one every
  `DURATION_SAMPLE` seconds per breaker (every one below 100 per second), so its quantiles are
  right and its cost stays flat; its count is not the number of round trips (use the calls).
- ``distbreaker.redis.errors`` counter {service, error}: Redis errors on the call path
  (``error`` is the redis-py exception class, e.g. ``TimeoutError``).
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import metrics
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace.propagation import _SPAN_KEY

from ._model import BreakerView, Outcome, Reporter, State

if TYPE_CHECKING:
    from ._model import Transition
    from .errors import CircuitOpenError

__all__ = [
    "CALLS",
    "DURATION_SAMPLE",
    "INSTRUMENTS",
    "Instruments",
    "METER_NAME",
    "Metrics",
    "PROMETHEUS",
    "REDIS_DURATION",
    "REDIS_ERRORS",
    "RETIRED_TALLIES",
    "STATE",
    "STATE_VALUES",
    "TRANSITIONS",
    "Tally",
    "use_meter_provider",
]

METER_NAME = "distbreaker"

# Metric names, units, descriptions
CALLS = "distbreaker.calls"
TRANSITIONS = "distbreaker.transitions"
STATE = "distbreaker.state"
REDIS_DURATION = "distbreaker.redis.duration"
REDIS_ERRORS = "distbreaker.redis.errors"

# Metric attributes
SERVICE = "service"
OUTCOME = "outcome"
SLOW = "slow"
FROM = "from"
TO = "to"
SCRIPT = "script"
ERROR = "error"

# Outcome values: the `Outcome` enum (success, failure, ignored, rejected)
REJECTED = Outcome.REJECTED.value

# Span attributes (set on the current span when it is recording)
SPAN_SERVICE = "circuit.service"
SPAN_STATE = "circuit.state"
SPAN_RESULT = "circuit.result"
SPAN_SLOW = "circuit.slow"
SPAN_TRANSITION = "circuit.transition"


def _context_reader() -> Callable[[], Mapping[str, Any]]:
    """The function that returns the current OpenTelemetry `Context`.

    `get_current_span()` is four Python calls (~0.2 µs) on every call through a breaker; with the
    API's default runtime context (contextvars) the current context is one `ContextVar.get`,
    and the span is its entry under the API's span key (what `get_current_span` reads).
    Another runtime context (``OTEL_PYTHON_CONTEXT``) is read through the public API.
    """
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    var = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(var, ContextVar):
        return var.get
    return otel_context.get_current


current_context = _context_reader()


def current_span() -> Any:
    """The current span, or None when there is none (a non-recording span: nothing to annotate)."""
    return current_context().get(_SPAN_KEY)


STATE_VALUES = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2, State.FORCED_OPEN: 3, State.DISABLED: 4}

# The names Prometheus gives them (OTLP -> Collector prometheus exporter, or the SDK's
# Prometheus exporter): dots become underscores, counters get _total, the unit "s" _seconds.
PROMETHEUS = {
    CALLS: "distbreaker_calls_total",
    TRANSITIONS: "distbreaker_transitions_total",
    STATE: "distbreaker_state",
    REDIS_DURATION: "distbreaker_redis_duration_seconds",
    REDIS_ERRORS: "distbreaker_redis_errors_total",
}

# Redis round trips are ~0.05-1 ms on a LAN and bounded by redis_timeout (50 ms by default).
_DURATION_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
DURATION_SAMPLE = 0.01  # seconds between two measured round trips of one breaker

# Slots of a service's call tally: success (+1 when slow), failure (+1 when slow), ignored, rejected
_SLOT = {Outcome.SUCCESS: 0, Outcome.FAILURE: 2, Outcome.IGNORED: 4}
REJECTED_SLOT = 6
# Tallies of services with no breaker left in the process, kept (least recently closed dropped
# first) so that a breaker made again for the service continues its counts: the memory of the
# tallies is bounded by the live breakers plus this many.
RETIRED_TALLIES = 256


class Tally:
    """The calls of one service in this process, per outcome (shared by its breakers).

    Each slot is an `itertools.count`: a call takes its next value (`next(tally.slots[i])`, one
    C call, atomic under the GIL: no lock on the call path, ~0.1 µs less than taking one). A
    read (`counts`) takes one too: a slot's count is what was taken minus the reads before.
    """

    __slots__ = ("lock", "slots", "reads", "attrs", "users")

    def __init__(self, service: str) -> None:
        self.lock = threading.Lock()  # serialises the reads
        self.users = 0  # live breakers of the service (Instruments._lock)
        self.slots = tuple(itertools.count() for _ in range(7))
        self.reads = 0
        plain = {SERVICE: service, OUTCOME: "ignored"}
        self.attrs: tuple[dict[str, Any], ...] = (
            {SERVICE: service, OUTCOME: "success", SLOW: False},
            {SERVICE: service, OUTCOME: "success", SLOW: True},
            {SERVICE: service, OUTCOME: "failure", SLOW: False},
            {SERVICE: service, OUTCOME: "failure", SLOW: True},
            plain,
            plain,
            {SERVICE: service, OUTCOME: REJECTED},
        )

    def counts(self) -> list[int]:
        """The calls counted so far, per slot."""
        with self.lock:
            reads = self.reads
            self.reads = reads + 1
            return [next(slot) - reads for slot in self.slots]


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("distbreaker")
    except PackageNotFoundError:
        return None


class Instruments:
    """The instruments of this process, shared by every breaker; made on first use.

    `on` is an internal switch (benchmarks/otel_overhead.py measures against it): when False,
    breakers record nothing (hooks still run).
    """

    def __init__(self) -> None:
        self.on = True
        self._lock = threading.Lock()  # breakers and tallies; never held while calling the SDK
        self._make_lock = threading.Lock()  # making instruments (the SDK's collection holds its own
        # lock while it runs our callbacks, which take _lock: one lock for both could deadlock)
        self._provider: Any = None  # None: the global MeterProvider (proxied until the app sets one)
        self._made = False
        self._cores: weakref.WeakSet[BreakerView] = weakref.WeakSet()
        self._tallies: dict[str, Tally] = {}  # services with a live breaker
        self._retired: OrderedDict[str, Tally] = OrderedDict()  # the last RETIRED_TALLIES others
        self._collected: deque[Tally] = deque()  # tallies of breakers collected meanwhile (`collected`)

    def _make(self) -> None:
        provider = self._provider if self._provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter(METER_NAME, _version())
        meter.create_observable_counter(CALLS, [self._observe_calls], "{call}", "Calls through a breaker, by outcome")
        self.transitions = meter.create_counter(
            TRANSITIONS, "{transition}", "Transitions performed by this process's scripts"
        )
        self.redis_duration = meter.create_histogram(
            REDIS_DURATION,
            "s",
            "Round trips of breaker scripts on the call path",
            explicit_bucket_boundaries_advisory=_DURATION_BUCKETS,
        )
        self.redis_errors = meter.create_counter(REDIS_ERRORS, "{error}", "Redis errors on the call path")
        meter.create_observable_gauge(
            STATE, [self._observe_states], "", "Breaker state: 0 closed, 1 half_open, 2 open, 3 forced_open, 4 disabled"
        )
        self._made = True

    # -- breakers ---------------------------------------------------------------------------
    def reporter(self) -> Metrics:
        """A reporter for one new breaker."""
        return Metrics(self)

    def register(self, core: BreakerView) -> Tally:
        """A breaker was built: make the instruments if needed; report its state in the gauge.
        Returns the tally of its service."""
        if not self._made:
            with self._make_lock:
                if not self._made:
                    self._make()
        service = core.service
        with self._lock:
            self._retire_collected()
            self._cores.add(core)
            tally = self._tallies.get(service)
            if tally is None:
                tally = self._retired.pop(service, None) or Tally(service)
                self._tallies[service] = tally
            tally.users += 1
            return tally

    def unregister(self, core: BreakerView, tally: Tally) -> None:
        """A breaker was closed: its state leaves the gauge; the tally of its service retires
        with the service's last breaker."""
        with self._lock:
            self._retire_collected()
            self._cores.discard(core)
            self._release(tally)

    def collected(self, tally: Tally) -> None:
        """A breaker was garbage-collected without close() (a `weakref.finalize` callback).

        The collector runs callbacks wherever an allocation triggers it, also in this thread
        while it holds `_lock` (inside `register`, say): waiting for the lock there would never
        end. So the tally is queued, and released now only if the lock is free; else by the
        next holder of the lock.
        """
        self._collected.append(tally)  # deque.append: atomic, takes no lock
        if self._lock.acquire(blocking=False):
            try:
                self._retire_collected()
            finally:
                self._lock.release()

    def _retire_collected(self) -> None:
        """Release the tallies of collected breakers (with `_lock` held)."""
        while self._collected:
            self._release(self._collected.popleft())

    def _release(self, tally: Tally) -> None:
        """One breaker of the tally's service is gone (with `_lock` held)."""
        tally.users -= 1
        service = tally.attrs[0][SERVICE]
        if tally.users <= 0 and self._tallies.get(service) is tally:
            del self._tallies[service]
            self._retired[service] = tally
            while len(self._retired) > RETIRED_TALLIES:
                self._retired.popitem(last=False)

    @property
    def tallies(self) -> int:
        """How many tallies are kept (live and retired)."""
        with self._lock:
            self._retire_collected()
            return len(self._tallies) + len(self._retired)

    def _observe_calls(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            self._retire_collected()
            tallies = [*self._tallies.values(), *self._retired.values()]
        out: list[Observation] = []
        for tally in tallies:
            counts = tally.counts()
            out.extend(Observation(n, tally.attrs[i]) for i, n in enumerate(counts) if n)
        return out

    def _observe_states(self, options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            cores = list(self._cores)
        latest: dict[str, tuple[float, State]] = {}
        for core in cores:
            state, at = core.last_state()
            if state is None:
                continue
            seen = latest.get(core.service)
            if seen is None or at >= seen[0]:
                latest[core.service] = (at, state)
        return [Observation(STATE_VALUES[state], {SERVICE: service}) for service, (_, state) in latest.items()]


class Metrics(Reporter):
    """The OpenTelemetry reporter of one breaker: its service's call tally, the current span's
    attributes, transitions, sampled round trips, Redis errors. Records nothing while
    `Instruments.on` is False."""

    __slots__ = ("obs", "tally", "redis_attrs", "sample_at", "_release")

    def __init__(self, obs: Instruments) -> None:
        self.obs = obs
        self.tally: Tally | None = None
        self.redis_attrs: dict[str, dict[str, str]] = {}
        self.sample_at = 0.0  # perf_counter time from which the next round trip is measured
        self._release: weakref.finalize[Any, Any] | None = None

    def opened(self, breaker: BreakerView) -> None:
        self.tally = tally = self.obs.register(breaker)
        # a breaker dropped without close() releases its tally when it is collected
        self._release = weakref.finalize(breaker, self.obs.collected, tally)

    def closed(self, breaker: BreakerView) -> None:
        release, self._release = self._release, None
        if release is not None and self.tally is not None and release.detach() is not None:
            self.obs.unregister(breaker, self.tally)

    def call(
        self,
        service: str,
        outcome: Outcome,
        duration: float,
        slow: bool,
        state: State | None,
        exc: BaseException | None,
    ) -> None:
        """One admitted call finished: count it, annotate the current span."""
        tally = self.tally
        if tally is None or not self.obs.on:
            return
        next(tally.slots[_SLOT[outcome] + slow])
        span = current_context().get(_SPAN_KEY)  # current_span(), inline: it runs on every call
        if span is not None and span.is_recording():
            attrs: dict[str, Any] = {
                SPAN_SERVICE: service,
                SPAN_STATE: "unknown" if state is None else state.value,
                SPAN_RESULT: outcome.value,
            }
            if slow:
                attrs[SPAN_SLOW] = True  # set only when slow (each attribute costs the SDK ~0.5 µs)
            span.set_attributes(attrs)

    def rejected(self, service: str, err: CircuitOpenError) -> None:
        """One call was rejected: count it, annotate the current span."""
        tally = self.tally
        if tally is None or not self.obs.on:
            return
        next(tally.slots[REJECTED_SLOT])
        span = current_context().get(_SPAN_KEY)  # current_span(), inline: it runs on every call
        if span is not None and span.is_recording():
            span.set_attributes({SPAN_SERVICE: service, SPAN_STATE: err.state, SPAN_RESULT: REJECTED})

    def transitions(self, service: str, made: Sequence[Transition], ms: int) -> None:
        """This process's script performed `made`: count them, annotate the current span."""
        if not self.obs.on:
            return
        for t in made:
            self.obs.transitions.add(1, {SERVICE: service, FROM: t.from_state.value, TO: t.to_state.value})
        span = current_span()
        if span is not None and span.is_recording():
            span.set_attribute(SPAN_TRANSITION, ";".join(f"{t.from_state.value}>{t.to_state.value}" for t in made))

    def round_trip(self, service: str, script: str, start: float) -> None:
        """A script round trip on the call path: one per `DURATION_SAMPLE` seconds goes to the
        histogram (an SDK measurement costs several µs)."""
        now = time.perf_counter()
        if now >= self.sample_at and self.obs.on:
            self.sample_at = now + DURATION_SAMPLE
            attrs = self.redis_attrs.get(script)
            if attrs is None:
                attrs = self.redis_attrs[script] = {SERVICE: service, SCRIPT: script}
            self.obs.redis_duration.record(now - start, attrs)

    def redis_error(self, service: str, exc: BaseException) -> None:
        """A Redis error on the call path."""
        if self.obs.on:
            self.obs.redis_errors.add(1, {SERVICE: service, ERROR: type(exc).__name__})


INSTRUMENTS = Instruments()


def use_meter_provider(provider: Any = None) -> None:
    """Make the instruments again from `provider` (None: the global one). Tests and benchmarks
    use it to read metrics with a private SDK `MeterProvider`; apps set the global provider."""
    with INSTRUMENTS._make_lock:
        INSTRUMENTS._provider = provider
        INSTRUMENTS._make()
