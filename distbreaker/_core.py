"""The sans-IO core shared by the sync and asyncio shells.

Everything that is not a socket call lives here: service-name validation, key names, the
ARGV of each script, decoding replies, the local admission decision from the cached state,
and outcome classification. A shell builds a request here, runs it, and hands the reply back.
"""

from __future__ import annotations

import contextvars
import logging
import math
import os
import re
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

from ._config import BreakerConfig
from ._hooks import Hooks
from ._log import LIMITED, OUTAGE
from ._model import Outcome, Reporter, Snapshot, State, Transition
from ._reply import (
    ACTOR,
    CALLS,
    CAUSE,
    COMMON,
    CONFIG,
    CONSECUTIVE,
    FAILING_CLIENTS,
    FAILURES,
    FORCED_UNTIL,
    GENERATION,
    HALF_OPEN_SUCCESSES,
    LAST_ACTOR,
    LAST_CAUSE,
    LAST_FROM,
    LAST_TIME,
    LEASE,
    LEASES,
    NOW,
    OPEN_COUNT,
    OPEN_UNTIL,
    REASON,
    RETRY_AT,
    SLOW,
    STATE,
    TRANSITIONS,
    is_lean,
)
from ._runner import next_backoff
from .errors import (
    BulkheadFullError,
    CircuitOpenError,
    ConfigError,
    CorruptStateError,
    RedisUnavailableError,
    translate,
)

__all__ = [
    "DEFAULT_PREFIX",
    "BreakerCore",
    "CallHandle",
    "Command",
    "Eval",
    "Keys",
    "Permit",
    "Pipelined",
    "View",
    "classify",
    "classify_result",
    "decode_snapshot",
    "keys_for",
    "state_key",
    "validate_service",
]

log = logging.getLogger("distbreaker")

DEFAULT_PREFIX = "distbreaker"
_SERVICE = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_PREFIX = re.compile(r"[^{}\s]{1,128}")

_STATES: dict[Any, State] = {}
for _state in State:
    _STATES[_state.value] = _state
    _STATES[_state.value.encode()] = _state


def validate_service(service: object) -> str:
    """Return `service` if it is a valid name (1-128 chars of ``[A-Za-z0-9._:-]``), else raise."""
    if not isinstance(service, str) or not _SERVICE.fullmatch(service):
        raise ConfigError("service", f"must be 1-128 characters of A-Z a-z 0-9 . _ : -, got {service!r}")
    return service


def validate_prefix(prefix: object) -> str:
    """Return `prefix` if usable as a key prefix (no braces or whitespace), else raise."""
    if not isinstance(prefix, str) or not _PREFIX.fullmatch(prefix):
        raise ConfigError("prefix", f"must be 1-128 characters without braces or spaces, got {prefix!r}")
    return prefix


class Keys(NamedTuple):
    """The Redis names of one breaker."""

    state: str
    events: str
    channel: str
    ids: str  # batched flushes: each client's last applied batch


def state_key(prefix: str, service: str) -> str:
    """The state hash of `service` under `prefix` (``keys_for(prefix, service).state``)."""
    return f"{prefix}:{{{service}}}"


def keys_for(prefix: str, service: str) -> Keys:
    """Key names of `service` under `prefix` (the service is the Cluster hash tag)."""
    state = state_key(prefix, service)
    return Keys(state, f"{state}:events", f"{prefix}:events", f"{state}:ids")


def service_of_key(prefix: str, key: str) -> str | None:
    """The service of a state key `<prefix>:{service}`, or None for any other key."""
    head = prefix + ":{"
    if key.startswith(head) and key.endswith("}"):
        service = key[len(head) : -1]
        if _SERVICE.fullmatch(service):
            return service
    return None


def text(value: Any) -> str:
    """A reply field as str (replies are bytes unless the client decodes responses)."""
    return value.decode() if isinstance(value, bytes) else str(value)


def key_name(raw: Any) -> str:
    """A key name SCAN returned, as str; "" (which names nothing) for one that is not UTF-8: a
    stray key, never one distbreaker makes."""
    try:
        return text(raw)
    except UnicodeDecodeError:
        return ""


def script_args(config: BreakerConfig | None, now_ms: int | None, extra: Sequence[str]) -> list[str]:
    """ARGV of a script call: now override ('' = server time), fingerprint, the script's own args.

    The config values (`config._lua`) are appended only when the script needs them
    (first call, or after it answered NOCONFIG); see docs/state-machine.md.
    """
    return ["" if now_ms is None else str(now_ms), "" if config is None else config.fingerprint, *extra]


def _s(ms: Any) -> float | None:
    v = int(ms)
    return v / 1000.0 if v else None


def decode_snapshot(service: str, reply: Sequence[Any]) -> Snapshot:
    """Build a Snapshot from a script reply (docs/state-machine.md, "Reply"; `_reply`)."""
    last = None
    config = None
    failing = None
    if len(reply) > len(COMMON):  # read.lua extras
        config = text(reply[CONFIG]) or None
        failing = int(reply[FAILING_CLIENTS])
        if int(reply[LAST_TIME]):
            last = Transition(
                service,
                int(reply[LAST_TIME]) / 1000.0,
                _STATES[reply[LAST_FROM]],
                _STATES[reply[STATE]],
                text(reply[LAST_CAUSE]),
                text(reply[LAST_ACTOR]),
                int(reply[GENERATION]),
            )
    return Snapshot(
        service=service,
        state=_STATES[reply[STATE]],
        generation=int(reply[GENERATION]),
        calls=int(reply[CALLS]),
        failures=int(reply[FAILURES]),
        slow_calls=int(reply[SLOW]),
        consecutive_failures=int(reply[CONSECUTIVE]),
        open_until=_s(reply[OPEN_UNTIL]),
        forced_until=_s(reply[FORCED_UNTIL]),
        reason=text(reply[REASON]),
        actor=text(reply[ACTOR]),
        open_count=int(reply[OPEN_COUNT]),
        half_open_calls=int(reply[LEASES]),
        half_open_successes=int(reply[HALF_OPEN_SUCCESSES]),
        server_time=int(reply[NOW]) / 1000.0,
        last_transition=last,
        config=config,
        failing_clients=failing,
    )


def _implied_cause(frm: str, to: str) -> str:
    """The cause of a transition that was not the last one of a script call (the reply carries
    only the last cause): the lazy expiries that run before a script's own decision."""
    if frm == "open" and to == "half_open":
        return "open_duration elapsed"
    if to == "closed" and frm in ("forced_open", "disabled"):
        return f"{frm} expired"
    return ""


def decode_made(service: str, reply: Sequence[Any], actor: str = "") -> list[Transition]:
    """The transitions a script call performed (`TRANSITIONS`, `CAUSE`), oldest first; `actor`
    is the operator of a control call (it made the last one; the earlier ones are expiries)."""
    pairs = text(reply[TRANSITIONS]).split(";")
    generation, at, n = int(reply[GENERATION]), int(reply[NOW]) / 1000.0, len(pairs)
    out = []
    for i, pair in enumerate(pairs):
        frm, _, to = pair.partition(">")
        last = i == n - 1
        out.append(
            Transition(
                service,
                at,
                _STATES[frm],
                _STATES[to],
                text(reply[CAUSE]) if last else _implied_cause(frm, to),
                actor if last else "",
                generation - (n - 1 - i),
            )
        )
    return out


def decode_event(service: str, event: dict[str, Any]) -> Transition | None:
    """The Transition a pub/sub message carries, or None for an event that is not one (a fleet
    config change: kind "config", from = to and the generation unchanged). A re-trip of a
    forced state (from = to, a new generation) is a transition."""
    frm, to, cause = event["from"], event["to"], str(event.get("cause", ""))
    kind = event.get("kind")
    if kind == "config" or (kind is None and frm == to and not cause.startswith("manual ")):
        return None  # (no kind: a message of an older version; operator actions say "manual")
    return Transition(
        service,
        int(event["ts"]) / 1000.0,
        _STATES[frm],
        _STATES[to],
        cause,
        str(event.get("actor", "")),
        int(event["generation"]),
    )


def decode_transition(service: str, entry: tuple[Any, dict[Any, Any]]) -> Transition:
    """A Transition from one XRANGE entry of the events stream."""
    f = {text(k): v for k, v in entry[1].items()}
    return Transition(
        service,
        int(f["ts"]) / 1000.0,
        _STATES[f["from"]],
        _STATES[f["to"]],
        text(f.get("cause", b"")),
        text(f.get("actor", b"")),
        int(f["gen"]),
    )


# Admission decisions
ALLOW, REJECT, ASK = 0, 1, 2
_LOCAL_ALLOW = (State.CLOSED, State.DISABLED)
_STATE_TEXT = {
    state: state.value for state in State
}  # (`.value` is a Python-level property: the reject path reads this)
_FORCED = (State.FORCED_OPEN, State.DISABLED)
# The members the cache's methods compare with, as module names: reading ``State.OPEN`` is an
# Enum class attribute lookup (~0.1 µs on Python 3.11), paid twice per rejected call otherwise.
_CLOSED, _HALF_OPEN, _OPEN = State.CLOSED, State.HALF_OPEN, State.OPEN
_FORCED_OPEN, _DISABLED = State.FORCED_OPEN, State.DISABLED


class View:
    """What one process knows of one breaker: the last reply and when it arrived.

    Local times come from the shell's clock (monotonic, or the test clock); server times are
    mapped onto it with the offset measured when the reply arrived.
    """

    __slots__ = (
        "state",
        "generation",
        "fetched_at",
        "open_until",
        "forced_until",
        "reason",
        "max_staleness",
        "offset",
        "server_ms",
    )

    def __init__(self, max_staleness: float) -> None:
        self.state: State | None = None
        self.generation = 0
        self.fetched_at = 0.0
        self.open_until = 0.0  # local clock; 0 = none
        self.forced_until = 0.0  # local clock; 0 = none
        self.reason = ""
        self.max_staleness = max_staleness
        self.offset = 0.0  # server seconds - local seconds, at the last reply
        self.server_ms = 0  # server time of what the cache knows (a reply, or an event)

    def closed_at(self, generation: int, server_ms: int, local_now: float) -> None:
        """Closed at `generation` and server time `server_ms`, learnt at `local_now`: record.lua's
        bare reply (the generation the call sent) and any lean reply (`update`)."""
        self.server_ms = server_ms
        self.offset = server_ms / 1000.0 - local_now
        self.open_until = self.forced_until = 0.0
        self.reason = ""
        self.generation = generation
        self.fetched_at = local_now
        self.state = _CLOSED

    def update(self, reply: Sequence[Any], local_now: float) -> State:
        """Take a script reply received at `local_now`; return the new state."""
        state = _STATES[reply[STATE]]
        if is_lean(reply):  # record/acquire's common call: closed, so no open_until, forced state or reason
            self.closed_at(int(reply[GENERATION]), int(reply[NOW]), local_now)
            self.state = state
            return state
        self.server_ms = int(reply[NOW])
        self.offset = offset = self.server_ms / 1000.0 - local_now
        ou, fu = int(reply[OPEN_UNTIL]), int(reply[FORCED_UNTIL])
        self.open_until = ou / 1000.0 - offset if ou else 0.0
        self.forced_until = fu / 1000.0 - offset if fu else 0.0
        self.reason = text(reply[REASON])  # operator reason (forced) or the cause of the open
        self.generation = int(reply[GENERATION])
        self.fetched_at = local_now
        self.state = state
        return state

    def expected(self, now: float) -> State | None:
        """The cached state with the lazy expiry the scripts would apply at `now` (local clock):
        open past open_until is half_open, a forced state past its expiry is closed."""
        state = self.state
        if state is _OPEN and now >= self.open_until:
            return _HALF_OPEN
        if state in _FORCED and self.forced_until and now >= self.forced_until:
            return _CLOSED
        return state

    def forget(self) -> None:
        """Drop the cached state (the next admission asks Redis)."""
        self.state = None

    def decide(self, now: float) -> int:
        """ALLOW or REJECT from the cache alone, or ASK (run acquire.lua)."""
        state = self.state
        if state is None or now - self.fetched_at > self.max_staleness:
            return ASK
        if state is _CLOSED or state is _DISABLED:  # (_LOCAL_ALLOW, by identity: no string compare)
            return ALLOW
        if state is _OPEN:
            return REJECT if now < self.open_until else ASK
        if state is _FORCED_OPEN:
            return REJECT if not self.forced_until or now < self.forced_until else ASK
        return ASK  # half_open: every probe needs a lease

    def rejection(self, service: str, now: float, retry_at_ms: int = 0, server_now_ms: int = 0) -> CircuitOpenError:
        """The error for a rejected call, from the cache or from an acquire reply."""
        state = self.state
        if state is None:
            state = _OPEN
        # (no max(): a builtin call costs more than the comparison on the reject path)
        if retry_at_ms:
            retry: float | None = (retry_at_ms - server_now_ms) / 1000.0
        elif state is _OPEN:
            retry = self.open_until - now
        elif state is _FORCED_OPEN and self.forced_until:
            retry = self.forced_until - now
        else:
            retry = None
        if retry is not None and retry < 0.0:
            retry = 0.0
        return CircuitOpenError(service, _STATE_TEXT[state], retry, self.reason)


# Outcomes (the `Outcome` members, by their short names)
SUCCESS, FAILURE, IGNORED = Outcome.SUCCESS, Outcome.FAILURE, Outcome.IGNORED
# record.lua's counts (successes, failures, slow) per outcome code: success, slow success,
# failure, slow failure, nothing (an ignored probe: its lease is released)
_COUNTS: tuple[tuple[int, int, int], ...] = ((1, 0, 0), (1, 0, 1), (0, 1, 0), (0, 1, 1), (0, 0, 0))
_ARGS: tuple[tuple[str, str, str], ...] = tuple((str(s), str(f), str(w)) for s, f, w in _COUNTS)
_NOTHING = 4


def classify(config: BreakerConfig, exc: BaseException | None, service: str = "") -> Outcome:
    """SUCCESS, FAILURE or IGNORED for a call that returned (exc None) or raised `exc`.

    Ignored exceptions, `BulkheadFullError` (a bulkhead inside the breaker refused the call),
    and BaseExceptions that are not Exceptions (KeyboardInterrupt, cancellation), count as
    nothing. Exceptions outside `failure_exceptions` count as success;
    those inside are failures unless `failure_predicate` says False. `service` names the
    breaker in the log line of a raising predicate.
    """
    if exc is None:
        return SUCCESS
    if isinstance(exc, config.ignored_exceptions) or not isinstance(exc, Exception):
        return IGNORED
    if isinstance(exc, BulkheadFullError):  # a bulkhead inside refused: the service was not called
        return IGNORED
    if not isinstance(exc, config.failure_exceptions):
        return SUCCESS
    predicate = config.failure_predicate
    if predicate is None or _ask(predicate, exc, service, "failure_predicate"):
        return FAILURE
    return SUCCESS


def classify_result(config: BreakerConfig, result: Any, service: str = "") -> Outcome:
    """SUCCESS, or FAILURE when `result_predicate` says the returned `result` is a failure."""
    predicate = config.result_predicate
    if predicate is None or not _ask(predicate, result, service, "result_predicate"):
        return SUCCESS
    return FAILURE


def _ask(predicate: Callable[[Any], object], value: Any, service: str, name: str) -> bool:
    """``bool(predicate(value))``; True (a failure) when the predicate raises, logged rate-limited."""
    try:
        return bool(predicate(value))
    except Exception:
        LIMITED.log(
            logging.WARNING,
            ("predicate", service, name),
            "distbreaker: the %s of breaker %r raised; the call counts as a failure",
            name,
            service,
            exc_info=True,
        )
        return True


# Requests a shell executes ---------------------------------------------------------------------
class Eval(NamedTuple):
    """Run `script` on `keys` with `args`; when it answers NOCONFIG, again with `config` appended."""

    script: Any  # _scripts.LuaScript (kept Any here: the core imports no I/O module)
    keys: tuple[str, ...]
    args: list[str]
    config: list[str] | None


class Command(NamedTuple):
    """A plain Redis command, run through the client's `execute_command` (reply callbacks apply)."""

    args: tuple[Any, ...]


class Pipelined(Command):
    """Plain commands (`args`: one tuple per command) run as one pipeline without a transaction
    (`_transport.pipeline`): the reply is the list of their replies in order, an error reply
    (`ResponseError`) in the place of its reply; a connection error is raised. Replies are as
    the server sent them on a plain client, through redis-py's callbacks on others (a Cluster:
    each key to its node): readers take both (`_bulk`)."""

    __slots__ = ()


FLUSH = "flush"  # BreakerCore.record: flush the batch now (batched mode)

Permit = tuple[int, str] | None  # (generation, lease id); None = admitted without Redis (degraded)


class LocalPermit(tuple):  # type: ignore[type-arg]
    """A permit granted by the in-process model (on_redis_error="local")."""

    __slots__ = ()


def _refuses_writes(exc: BaseException) -> bool:
    """Redis refused a write but may answer reads: out of memory (noeviction), a read-only replica."""
    return type(exc).__name__ in ("OutOfMemoryError", "ReadOnlyError") or str(exc).startswith(("OOM", "READONLY"))


def _wanting(reporters: Sequence[Reporter], method: str) -> tuple[Reporter, ...]:
    """The reporters whose class overrides `method` of `Reporter`."""
    base = getattr(Reporter, method)
    return tuple(r for r in reporters if getattr(type(r), method) is not base)


class BreakerCore:
    """Everything one breaker decides, with no I/O: the shells run the requests it builds.

    A shell's call path is: `admit()` → a permit, or an `Eval` to run and hand to
    `acquired()`; then `record()` → an `Eval` (or None) to run and hand to `recorded()`;
    any Redis error goes to `failed()`.
    """

    def __init__(
        self,
        service: str,
        config: BreakerConfig | None,
        prefix: str,
        clock: Callable[[], float] | None,
        scripts: dict[str, Any],
        hooks: Hooks | None = None,
        reporters: Sequence[Reporter] = (),
    ) -> None:
        config = config if config is not None else BreakerConfig()
        if not isinstance(config, BreakerConfig):
            raise TypeError(f"config must be a BreakerConfig, got {type(config).__name__}")
        self.service = validate_service(service)
        self.prefix = validate_prefix(prefix)
        self.config = config
        self.keys = keys_for(self.prefix, self.service)
        self.key_list = (self.keys.state, self.keys.events)
        self.test_clock = clock
        self.clock: Callable[[], float] = clock if clock is not None else time.monotonic
        self.view = View(cast(float, config.max_staleness))  # seconds: BreakerConfig normalises
        self.scripts = scripts
        self.fingerprint = config.fingerprint
        self.config_args = list(config._lua)
        self.config_sent = False  # the first call stores our config; later ones send only its hash
        # minimum_failing_workers on: a failed or slow call (or batch) says who reports it (its
        # client id, record.lua's ARGV[9]); off: nothing more on any call
        self.quorum = config.minimum_failing_workers is not None
        # requests of the common calls, made once (record: gen * 4 + outcome code; acquire: -1)
        self.prepared: dict[int, Eval] = {}
        self.slow = cast("float | None", config.slow_call_duration)  # seconds: normalised by BreakerConfig
        self.reject_when_down = config.on_redis_error == "reject"
        self.local_when_down = config.on_redis_error == "local"
        self.local: Any = None  # on_redis_error="local": the in-process model during an outage
        self.down_until = 0.0
        self.backoff = 0.0
        self.writes_refused = False  # the last outage error refused a write (OOM, READONLY)
        self.batch: Batcher | None = None
        self.hooks = hooks if hooks else None  # None: no hook at all (the hot path checks this only)
        # What this breaker reports to (metrics, log, hooks); per kind of report, only the
        # reporters that override its method: a report nobody wants costs an empty loop.
        self.reporters: tuple[Reporter, ...] = (*reporters, *((self.hooks,) if self.hooks is not None else ()))
        self.on_call = _wanting(self.reporters, "call")
        self.on_rejected = _wanting(self.reporters, "rejected")
        self.on_transitions = _wanting(self.reporters, "transitions")
        self.on_round_trip = _wanting(self.reporters, "round_trip")
        self.on_redis_error = _wanting(self.reporters, "redis_error")
        for reporter in self.reporters:
            reporter.opened(self)

    def close(self) -> None:
        """The breaker is closed: its reporters free what they held for it."""
        for reporter in self.reporters:
            reporter.closed(self)

    def last_state(self) -> tuple[State | None, float]:
        """The state last learnt (None: none yet), with the expiry Redis would apply by now, and
        when it was learnt, on this breaker's clock."""
        view = self.view
        return view.expected(self.clock()), view.fetched_at

    def batched(self, size: int) -> None:
        """Sum outcomes locally: `record` returns None, or FLUSH when the caller should flush now."""
        cfg = self.config
        self.batch = Batcher(
            size,
            max_age=cast(float, cfg.window),  # seconds: BreakerConfig normalises
            trip_failures=max(1, math.ceil(cfg.minimum_calls * cfg.failure_rate_threshold)),
            trip_consecutive=cfg.consecutive_failures or 0,
        )

    # -- requests -------------------------------------------------------------------------------
    def eval(self, name: str, extra: list[str]) -> Eval:
        """A request for script `name` with its own arguments `extra`."""
        now = "" if self.test_clock is None else str(round(self.test_clock() * 1000))
        args = [now, self.fingerprint, *extra]
        if not self.config_sent:
            self.config_sent = True  # optimistic; failed() clears it
            return Eval(self.scripts[name], self.key_list, args + self.config_args, None)
        return Eval(self.scripts[name], self.key_list, args, self.config_args)

    # -- the call path ------------------------------------------------------------------------
    def admit(self) -> Permit | Eval:
        """A permit from the cache (or the outage policy), or the acquire request to run.

        Raises:
            CircuitOpenError: the cache says open / forced open, or Redis is down and the
                policy is "reject".
        """
        permit = self.admission()
        if isinstance(permit, CircuitOpenError):
            raise permit
        return permit

    def admission(self) -> Permit | Eval | CircuitOpenError:
        """`admit()`, except that the cache's rejection is returned (reported already), not raised.

        The shells' call paths raise it themselves: an exception costs about 0.3 µs more for
        each frame it leaves, and a rejected call is otherwise a few hundred ns in all.

        Raises:
            CircuitOpenError: Redis is down and the policy is "reject" (or "local" rejects).
        """
        now = self.clock()
        view = self.view
        decision = view.decide(now)
        if decision == ALLOW:
            return (view.generation, "")
        if decision == REJECT:  # the error and its report, each written once (View.rejection, rejected)
            return self.rejected(view.rejection(self.service, now))
        if now < self.down_until:
            return self.degraded(now)
        if not self.config_sent or self.test_clock is not None:
            return self.eval("acquire", [])
        request = self.prepared.get(-1)
        if request is None:
            request = self.prepared[-1] = self.eval("acquire", [])
        return request

    def acquired(self, reply: Sequence[Any]) -> Permit:
        """The permit an acquire reply grants; raises CircuitOpenError when it denies."""
        if is_lean(reply):  # closed, nothing written: admitted without a lease
            self.recovered(False)
            self.update(reply)
            return (self.view.generation, "")
        self.recovered(bool(reply[TRANSITIONS] or reply[LEASE]))  # written: a transition, or a lease
        state = self.update(reply)
        lease = reply[LEASE]
        if lease or state in _LOCAL_ALLOW:
            return (self.view.generation, text(lease) if lease else "")
        raise self.rejected(self.view.rejection(self.service, self.clock(), int(reply[RETRY_AT]), int(reply[NOW])))

    def record(self, permit: Permit, outcome: Outcome, duration: float) -> Eval | None | str:
        """The record request for a finished call, None when nothing is to be sent, or FLUSH
        (batched mode) when the caller should flush the batch now."""
        if permit is None:
            return None
        if type(permit) is LocalPermit:
            self.local_record(permit, outcome, duration)
            return None
        gen, lease = permit
        if outcome is IGNORED:
            if not lease:
                return None
            code = _NOTHING
        else:
            code = (0 if outcome is SUCCESS else 2) + (self.slow is not None and duration >= self.slow)
        if self.batch is not None and not lease:  # probes stay synchronous: half-open is exact
            successes, failures, slow = _COUNTS[code]  # (no f(*args): a slower call)
            return FLUSH if self.batch.add(gen, successes, failures, slow) else None
        if self.down_until and self.clock() < self.down_until:
            return None
        if self.quorum and not lease and (outcome is FAILURE or _ARGS[code][2] == "1"):
            # minimum_failing_workers on: a failed or slow call says who reports it
            return self.eval("record", [str(gen), *_ARGS[code], lease, "", client_id()])
        if lease or not self.config_sent or self.test_clock is not None:
            return self.eval("record", [str(gen), *_ARGS[code], lease, "", ""])
        # The common call: the same request object while the generation and the outcome stay the
        # same (a shell's transport packs it once: _transport.Lane).
        key = gen * 4 + code
        request = self.prepared.get(key)
        if request is None:
            if len(self.prepared) >= 8:
                self.prepared.clear()
            request = self.prepared[key] = self.eval("record", [str(gen), *_ARGS[code], "", "", ""])
        return request

    def flush_requests(self) -> list[tuple[str, int, Eval]]:
        """One record request per pending batch, with its id and generation (none while backing
        off after an outage)."""
        now = self.clock()
        if self.batch is None or (self.down_until and now < self.down_until):
            return []
        keys = (*self.key_list, self.keys.ids)
        out = []
        for batch_id, gen, (s, f, slow) in self.batch.take(now):
            # the reporter (minimum_failing_workers on, something failed or was slow): the batch's client
            reporter = batch_id.rpartition(":")[0] if self.quorum and (f or slow) else ""
            request = self.eval("record", [str(gen), str(s), str(f), str(slow), "", batch_id, reporter])
            out.append((batch_id, gen, request._replace(keys=keys)))
        return out

    def flushed(self, batch_id: str, generation: int, reply: Sequence[Any] | int) -> None:
        """A batch of `generation` was applied."""
        assert self.batch is not None
        self.batch.done(batch_id)
        self.recorded(reply, generation)

    def flush_failed(self, batch_id: str, exc: BaseException) -> None:
        """Keep the batch for the next flush on an outage; drop it (logged) on any other error."""
        assert self.batch is not None
        try:
            self.failed(exc)
        except Exception as err:
            self.batch.done(batch_id)
            LIMITED.log(
                logging.ERROR,
                ("batch-dropped", self.service),
                "breaker %r: dropping a batch of outcomes: %s",
                self.service,
                err,
                burst=3,
            )

    def recorded(self, reply: Sequence[Any] | int, generation: int) -> None:
        """Take the reply of a record sent with `generation` (the new shared state; bare, lean
        or full, see `_reply`)."""
        if self.writes_refused or self.backoff or self.local is not None:
            self.recovered()
        if type(reply) is int:  # the bare reply: closed at the generation sent (no transition)
            if not generation:
                self.vanished(reply)
            self.view.closed_at(generation, reply, self.clock())
        else:
            self.update(reply)  # type: ignore[arg-type]

    def vanished(self, server_ms: int) -> None:
        """A reply at server time `server_ms` says generation 0: after a later one the key was
        lost, unless this reply was computed before what the cache already knows (an in-flight
        reply racing a pub/sub event)."""
        if self.view.generation and server_ms > self.view.server_ms:
            LIMITED.warning(
                ("key-vanished", self.service),
                "breaker %r: its Redis key vanished (eviction, "
                "FLUSHDB or DEL); it starts again closed with empty counts",
                self.service,
            )

    def update(self, reply: Sequence[Any], actor: str = "") -> State:
        """Take any script reply but the bare one: refresh the cache, and report the transitions
        the call made (`actor`: the operator of a control call). Returns the new state."""
        if reply[GENERATION] in (0, b"0", "0"):
            self.vanished(int(reply[NOW]))
        state = self.view.update(reply, self.clock())
        if not is_lean(reply) and reply[TRANSITIONS]:  # a lean reply made none
            self.made(decode_made(self.service, reply, actor), int(reply[NOW]))
        return state

    # -- reports: metrics, span attributes, logs, hooks (the reporters) --------------------------
    def made(self, transitions: list[Transition], ms: int) -> None:
        """This process's script performed `transitions` (at server time `ms`)."""
        for reporter in self.on_transitions:
            reporter.transitions(self.service, transitions, ms)

    def event(self, reply: Sequence[Any], claims: Sequence[tuple[Transition, int]] = (), heard: int = -1) -> int:
        """Take the state the pub/sub listener re-read from Redis (read.lua's reply) after a
        message named this service: the cache takes it, unless a newer reply already arrived.

        The hooks hear of the transitions made elsewhere since generation `heard` (-1: since
        the first one the messages claim): the last one as Redis recorded it, earlier ones
        (several transitions coalesced into one read) as the messages `claims` describe them,
        each ``(Transition, ms)``. A message never changes the cache, and a claim beyond what
        Redis says is ignored. Returns the generation the hooks have now heard up to.
        """
        generation = int(reply[GENERATION])
        if generation >= self.view.generation:
            self.update(reply)
        elif reply[TRANSITIONS]:  # an older reply than the cache's, but this read made lazy expiries
            self.made(decode_made(self.service, reply), int(reply[NOW]))
        hooks = self.hooks
        if hooks is None or not hooks.on_transition:
            return generation
        base = heard if heard >= 0 else min((t.generation for t, _ in claims), default=generation + 1) - 1
        learnt = [(t, ms) for t, ms in claims if base < t.generation < generation]
        last = decode_snapshot(self.service, reply).last_transition
        if last is not None and base < last.generation == generation:
            learnt.append((last, int(reply[LAST_TIME])))
        for t, ms in sorted(learnt, key=lambda c: c[0].generation):
            log.debug(
                "breaker %r: %s -> %s (%s), learnt from pub/sub",
                self.service,
                t.from_state.value,
                t.to_state.value,
                t.cause,
            )
            hooks.transition(t, ms)
        return max(heard, generation)

    def finished(self, outcome: Outcome, duration: float, exc: BaseException | None) -> None:
        """An admitted call ended with `outcome` after `duration` seconds (after its record)."""
        slow = outcome is not IGNORED and self.slow is not None and duration >= self.slow
        for reporter in self.on_call:
            reporter.call(self.service, outcome, duration, slow, self.view.state, exc)

    def rejected(self, err: CircuitOpenError) -> CircuitOpenError:
        """Report the rejection `err` (metrics, span, hooks) and return it, to be raised."""
        for reporter in self.on_rejected:
            reporter.rejected(self.service, err)
        return err

    def ran(self, request: Eval, start: float) -> None:
        """A script request on the call path returned; it started at `time.perf_counter()` `start`."""
        for reporter in self.on_round_trip:
            reporter.round_trip(self.service, request.script.name, start)

    def degraded(self, now: float) -> Permit:
        """The permit while Redis is unreachable: run the call ("allow"), raise ("reject"), or
        ask the in-process breaker ("local")."""
        if self.reject_when_down:
            raise self.rejected(
                CircuitOpenError(
                    self.service,
                    "unavailable",
                    max(0.0, self.down_until - now),
                    "Redis unavailable and on_redis_error='reject'",
                )
            )
        if self.local_when_down:
            return self.local_admit(now)
        return None

    def local_admit(self, now: float) -> Permit:
        """Admission by the in-process model (the reference state machine, proven equal to the
        scripts), made on the first call of an outage with this breaker's config."""
        if self.local is None:
            from dataclasses import replace

            from ._reference import Cfg, Model

            # one process: no quorum (it would never be met by one client)
            self.local = Model(replace(Cfg.from_argv(self.config_args), minimum_failing_workers=0))
            LIMITED.warning(
                "local-on",
                "breaker %r: deciding in-process until Redis answers (on_redis_error='local')",
                self.service,
                burst=3,
            )
        r = self.local.acquire(round(now * 1000))
        if r.lease or r.state in ("closed", "disabled"):
            return LocalPermit((r.generation, r.lease))
        retry = max(0.0, (r.retry_at - r.now) / 1000.0) if r.retry_at else None
        raise self.rejected(CircuitOpenError(self.service, r.state, retry, r.reason))

    def local_record(self, permit: Permit, outcome: Outcome, duration: float) -> None:
        """Count an outcome admitted by the in-process model."""
        if self.local is None or permit is None:
            return  # Redis came back meanwhile: local counts are not replayed
        gen, lease = permit
        if outcome is IGNORED:
            s = f = 0
        else:
            s, f = (1, 0) if outcome is SUCCESS else (0, 1)
        slow = int(outcome is not IGNORED and self.slow is not None and duration >= self.slow)
        self.local.record(round(self.clock() * 1000), gen, s, f, slow, lease)

    def failed(self, exc: BaseException) -> None:
        """Handle a Redis error on the call path: back off on outages, raise anything else."""
        self.config_sent = False
        for reporter in self.on_redis_error:
            reporter.redis_error(self.service, exc)
        err = translate(exc, self.service)
        if isinstance(err, CorruptStateError):
            # Not the caller's problem: the call goes on as in an outage (on_redis_error), and one
            # error line per key names it (rate-limited; the breaker re-reads after its backoff).
            LIMITED.log(
                logging.ERROR,
                ("corrupt", err.key or self.service),
                "breaker %r: %s; on_redis_error=%r until it is repaired",
                self.service,
                err,
                self.config.on_redis_error,
            )
        elif not isinstance(err, RedisUnavailableError):
            raise err from exc
        else:
            # once per outage of this process (and change of its kind), then a reminder at most every
            # OUTAGE_REMINDER seconds
            self.writes_refused = refused = _refuses_writes(exc)
            if refused:
                OUTAGE.failed(
                    "breaker %r: Redis refuses writes, outcomes are not counted (%s); on_redis_error=%r "
                    "until a write succeeds",
                    self.service,
                    err,
                    self.config.on_redis_error,
                    writes=True,
                )
            else:
                OUTAGE.failed(
                    "breaker %r: %s; on_redis_error=%r until Redis answers",
                    self.service,
                    err,
                    self.config.on_redis_error,
                )
        self.backoff = next_backoff(self.backoff)
        self.down_until = self.clock() + self.backoff
        if self.reject_when_down or self.local_when_down:
            self.view.forget()  # the cache must not keep admitting calls during the outage

    def recovered(self, wrote: bool = True) -> None:
        """A script answered (`wrote`: one that wrote). While Redis refuses writes (out of
        memory, read-only), a read that answers ends nothing: the outage, its backoff and the
        in-process breaker last until a write succeeds."""
        if self.writes_refused:
            if not wrote:
                return
            self.writes_refused = False
        if self.local is not None:  # reconcile: Redis is the truth again; local counts are dropped
            self.local = None
            LIMITED.warning(
                "local-off",
                "breaker %r: Redis answers again; the in-process breaker's counts are dropped",
                self.service,
                burst=3,
            )
        if self.backoff:
            OUTAGE.recovered("breaker %r: Redis answers again", self.service, wrote=wrote)
            self.backoff = 0.0
            self.down_until = 0.0

    def retry_now(self) -> None:
        """End the current backoff: the next call or flush asks Redis at once. A documented
        internal hook for tests and benchmarks (the backoff spares a dead Redis; a test that
        injects one failure after another wants each call to try)."""
        self.down_until = 0.0

    @property
    def backing_off(self) -> bool:
        """True while calls skip Redis after an outage error (until `down_until`)."""
        return bool(self.down_until) and self.clock() < self.down_until

    def allows(self) -> bool:
        """False when `admit()` would reject from the cache alone (open, forced open, or Redis
        down under ``on_redis_error="reject"``); True otherwise. No I/O."""
        now = self.clock()
        decision = self.view.decide(now)
        if decision == REJECT:
            return False
        return decision == ALLOW or not (self.reject_when_down and now < self.down_until)

    def cached_state(self) -> State | None:
        """The cached state while fresh, else None."""
        view = self.view
        if view.state is not None and self.clock() - view.fetched_at <= view.max_staleness:
            return view.state
        return None

    def until_ms(self, for_: float | None, server_now_ms: int | None) -> int:
        """Absolute expiry (ms) `for_` seconds from now on the script clock; 0 = none."""
        if for_ is None:
            return 0
        if self.test_clock is not None:
            return round((self.test_clock() + for_) * 1000)
        assert server_now_ms is not None
        return server_now_ms + round(for_ * 1000)


class CallHandle:
    """What ``with breaker as call:`` (and ``async with``) gives the block: the call in progress.

    By default the block's outcome follows from how it ends: an exception is classified
    (`failure_exceptions`, `ignored_exceptions`, `failure_predicate`), a normal end is a
    success. The block can decide instead; the last mark made wins, whether the block then
    ends normally or raises (the exception still propagates):

        with payments as call:
            response = http.post(...)
            if response.status_code >= 500:
                call.failure()      # counted as a failure, although nothing was raised

    ``with breaker:`` without ``as`` works as before.

    Attributes:
        service: the breaker's service.
        outcome: the mark (``Outcome.SUCCESS``, ``FAILURE`` or ``IGNORED``), None while unmarked.

    .. versionadded:: 0.2.0
    """

    __slots__ = ("service", "outcome", "_config", "_permit", "_start")

    def __init__(self, service: str, config: BreakerConfig, permit: Permit, start: float) -> None:
        self.service, self._config, self._permit, self._start = service, config, permit, start
        self.outcome: Outcome | None = None

    def failure(self) -> None:
        """Count this call as a failure."""
        self.outcome = FAILURE

    def success(self) -> None:
        """Count this call as a success (even if the block then raises)."""
        self.outcome = SUCCESS

    def ignore(self) -> None:
        """Count this call as nothing (like an `ignored_exceptions` one); a probe lease is released."""
        self.outcome = IGNORED

    def check(self, value: Any) -> Any:
        """Mark the call a failure when the config's `result_predicate` says `value` is one; return `value`."""
        if classify_result(self._config, value, self.service) is FAILURE:
            self.outcome = FAILURE
        return value

    def __repr__(self) -> str:
        return f"CallHandle({self.service!r}, outcome={self.outcome.value if self.outcome else None})"


class PermitStack:
    """The calls of open `with`/`async with` blocks: per thread and per asyncio task (a ContextVar)."""

    __slots__ = ("_var",)

    def __init__(self) -> None:
        self._var: contextvars.ContextVar[tuple[CallHandle, ...]] = contextvars.ContextVar(
            "distbreaker_permits", default=()
        )

    def push(self, call: CallHandle) -> None:
        self._var.set((*self._var.get(), call))

    def pop(self, exc: BaseException | None) -> tuple[Permit, float, Outcome]:
        """The innermost call's permit, start and outcome (its mark, else `exc` classified)."""
        stack = self._var.get()
        self._var.set(stack[:-1])
        call = stack[-1]
        outcome = call.outcome if call.outcome is not None else classify(call._config, exc, call.service)
        return call._permit, call._start, outcome


# Batched mode ----------------------------------------------------------------------------------
_CLIENT_ID: tuple[int, str] | None = None


def client_id() -> str:
    """A random id of this process (new after a fork), the prefix of batch ids."""
    global _CLIENT_ID
    pid = os.getpid()
    if _CLIENT_ID is None or _CLIENT_ID[0] != pid:
        _CLIENT_ID = (pid, uuid.uuid4().hex[:16])
    return _CLIENT_ID[1]


class Batcher:
    """Outcomes of one breaker summed locally until the next flush (no I/O).

    Counts are kept per generation (an outcome counts only under the generation that
    admitted it). A flush takes them as numbered batches; a batch whose record failed stays
    pending and is sent again with the same id, which record.lua applies at most once.
    Batches older than the window are dropped (their outcomes would count in the wrong bucket).
    """

    def __init__(self, size: int, max_age: float, trip_failures: int, trip_consecutive: int) -> None:
        self.size = size
        self.max_age = max_age
        self.trip_failures = trip_failures  # unflushed failures that may trip on their own
        self.trip_consecutive = trip_consecutive  # 0 = off
        self._failures = 0
        self._consecutive = 0
        self._lock = threading.Lock()
        self._counts: dict[int, list[int]] = {}  # generation -> [successes, failures, slow]
        self._n = 0
        self._seq = 0
        self._pending: list[tuple[str, int, list[int], float]] = []  # (id, generation, counts, taken at)

    def add(self, generation: int, successes: int, failures: int, slow: int) -> bool:
        """Count one outcome; True when the caller should flush now: `size` outcomes wait, or
        the unflushed failures alone could trip the breaker (so that a worker never runs far
        past a trip it is causing while the flusher waits for its turn)."""
        lock = self._lock  # acquire/release rather than `with`: ~0.1 µs less on every batched call
        lock.acquire()
        try:
            c = self._counts.get(generation)
            if c is None:
                c = self._counts[generation] = [0, 0, 0]
            c[0] += successes
            c[1] += failures
            c[2] += slow
            self._n = n = self._n + 1
            if failures:
                self._failures += failures
                self._consecutive = failures if successes else self._consecutive + failures
            elif successes:
                self._consecutive = 0
            return (
                n >= self.size
                or self._failures >= self.trip_failures
                or (self.trip_consecutive > 0 and self._consecutive >= self.trip_consecutive)
            )
        finally:
            lock.release()

    def take(self, now: float) -> list[tuple[str, int, list[int]]]:
        """The batches to send now: the pending ones first, then what was counted since."""
        with self._lock:
            ident = client_id()
            for gen, counts in self._counts.items():
                self._seq += 1
                self._pending.append((f"{ident}:{self._seq}", gen, counts, now))
            self._counts, self._n, self._failures, self._consecutive = {}, 0, 0, 0
            self._pending = [p for p in self._pending if now - p[3] <= self.max_age]
            return [(i, g, c) for i, g, c, _ in self._pending]

    def done(self, batch_id: str) -> None:
        """A batch was applied (or refused for good): forget it."""
        with self._lock:
            self._pending = [p for p in self._pending if p[0] != batch_id]

    @property
    def empty(self) -> bool:
        return not self._counts and not self._pending
