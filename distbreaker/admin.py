"""Admin: what the CLI uses. Inspect and change breakers; every change records actor and reason."""

from __future__ import annotations

import builtins
import difflib
import functools
import json
import statistics
import time
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from functools import partial
from typing import Any, NamedTuple, TypeVar, cast

from redis.exceptions import NoPermissionError, NoScriptError, RedisError

from . import _arg_checks, _bulk, _functions, _schema, _transport, errors
from ._action_steps import Operator, config_steps, control_steps
from ._config import BreakerConfig
from ._core import (
    DEFAULT_PREFIX,
    Command,
    Pipelined,
    decode_snapshot,
    decode_transition,
    key_name,
    keys_for,
    service_of_key,
    state_key,
    text,
    validate_prefix,
    validate_service,
)
from ._log import LIMITED
from ._model import Snapshot, Transition
from ._reply import (
    CLIENT_CONFIG,
    CONFIG,
    FINGERPRINT,
    FINGERPRINT_CHANGED_AT,
    NOW,
    OVERRIDES,
    PREVIOUS_FINGERPRINT,
    STATE,
)
from ._scripts import FUNCTIONS, SCRIPTS, Steps, drive, eval_steps, scripts_for
from .errors import (
    AccessDeniedError,
    ConfigError,
    CorruptStateError,
    DistbreakerError,
    RedisUnavailableError,
    UnknownServiceError,
    translate,
)

__all__ = ["Admin", "Check", "Events", "FleetConfig", "Inspection"]

T = TypeVar("T")

# The config values of the scripts, in order (from `_schema.FIELDS`): the script's name,
# the `BreakerConfig` field, and its kind ("ms" = a duration the scripts keep in ms; "off" and
# "float_off": an int or a ratio, None = 0 in the scripts).
CONFIG_FIELDS: tuple[tuple[str, str, str], ...] = tuple((f.lua, f.name, f.kind) for f in _schema.FIELDS)
FLEET_FIELDS: tuple[str, ...] = tuple(field for _, field, _ in CONFIG_FIELDS)
_BY_SCRIPT_NAME = {script: (i, field, kind) for i, (script, field, kind) in enumerate(CONFIG_FIELDS)}
_DEFAULTS = BreakerConfig()
DOCTOR_SERVICE = "__doctor__"
# what doctor publishes to check PUBLISH on the channel (a config-shaped no-op event; listeners re-read)
_DOCTOR_MESSAGE = json.dumps(
    {
        "service": DOCTOR_SERVICE,
        "from": "closed",
        "to": "closed",
        "generation": 0,
        "open_until": 0,
        "cause": "distbreaker doctor",
        "actor": "doctor",
        "ts": 0,
    }
)
MIN_SERVER = (6, 2, 0)
SCAN_COUNT = 5000  # keys per SCAN page (`list`): a large COUNT, few round trips
CHUNK = 500  # breakers per pipeline of `inspect_all` (one round trip each)


def _user_value(kind: str, text_value: str) -> float | int | None:
    """A script value (text) in the units of `BreakerConfig`."""
    if kind == "ms":
        return int(float(text_value)) / 1000.0
    if kind == "float":
        return float(text_value)
    if kind == "float_off":
        return float(text_value) or None
    value = int(float(text_value))
    return None if kind == "off" and value == 0 else value


def _config_values(joined: str) -> dict[str, float | int | None] | None:
    """The comma-joined script values as `BreakerConfig` fields, or None when empty."""
    if not joined:
        return None
    return dict(_parsed_config(joined))  # (a copy: the caller owns it)


@functools.lru_cache(maxsize=256)
def _parsed_config(joined: str) -> dict[str, float | int | None]:
    """`_config_values`, parsed once per distinct text (a fleet shares a few configs)."""
    parts = joined.split(",")
    return {field: _user_value(kind, parts[i]) for i, (_, field, kind) in enumerate(CONFIG_FIELDS)}


def _overrides(joined: str) -> dict[str, float | int | None]:
    """The stored overrides ``name=value;...`` as `BreakerConfig` fields."""
    out: dict[str, float | int | None] = {}
    if not joined:
        return out
    for part in filter(None, joined.split(";")):
        name, _, value = part.partition("=")
        if name in _BY_SCRIPT_NAME:
            _, field, kind = _BY_SCRIPT_NAME[name]
            out[field] = _user_value(kind, value)
    return out


def quorum_unreported(workers: dict[str, Any], overrides: dict[str, Any]) -> bool:
    """Whether `overrides` turn minimum_failing_workers on for workers whose own config
    (`workers`) has it off: they say who fails only when theirs is on, so no failing client would
    be counted and the quorum would hold every trip back (`Admin.set_config` refuses it;
    ``distbreaker config SERVICE`` warns of one stored before)."""
    return not workers.get("minimum_failing_workers") and bool(overrides.get("minimum_failing_workers"))


@dataclass(frozen=True, slots=True)
class FleetConfig:
    """A breaker's config as Redis holds it (`BreakerConfig` field names and units: seconds).

    Only the 13 values the scripts use are stored; the rest (`slow_call_duration`, exceptions,
    `on_redis_error`, `redis_timeout`, `max_staleness`) is each worker's own.

    Attributes:
        service: the breaker.
        effective: the config in force (the workers' config with the overrides applied), or
            None when nothing is stored yet (the defaults apply).
        client: the config the workers passed last, or None.
        overrides: fleet-wide overrides set by operators (they win over `client`).
        fingerprint: fingerprint of the workers' config stored last, or None.
        previous_fingerprint: the fingerprint it replaced, or None.
        fingerprint_changed_at: server time (seconds since the epoch) of that replacement.
        server_time: server time of the read.

    .. versionadded:: 0.1.0
    """

    service: str
    effective: dict[str, float | int | None] | None
    client: dict[str, float | int | None] | None
    overrides: dict[str, float | int | None]
    fingerprint: str | None
    previous_fingerprint: str | None
    fingerprint_changed_at: float | None
    server_time: float

    def changed_within(self, seconds: float) -> bool:
        """Whether the workers' config fingerprint changed in the last `seconds`.

        When it keeps changing, workers run different configs and overwrite each other's.
        """
        at = self.fingerprint_changed_at
        return at is not None and self.server_time - at <= seconds


@dataclass(frozen=True, slots=True)
class Check:
    """One finding of `Admin.doctor`.

    Attributes:
        name: what was checked (``"server"``, ``"lua"``, ``"acl"``, ``"maxmemory-policy"``,
            ``"latency"``, ``"cleanup"``).
        status: ``"PASS"``, ``"WARN"`` or ``"FAIL"``.
        detail: one line for people.
        denied: the failure is an ACL denial (NOPERM).

    .. versionadded:: 0.1.0
    """

    name: str
    status: str
    detail: str
    denied: bool = False


class Events(NamedTuple):
    """What `Admin.events` read from a breaker's events stream.

    Attributes:
        transitions: the transitions (and config changes: from = to), newest first.
        skipped: entries that are not distbreaker events (another writer's, or damaged),
            left out of `transitions`.

    .. versionadded:: 0.2.0
    """

    transitions: list[Transition]
    skipped: int


class Inspection(NamedTuple):
    """What `Admin.inspect_all` read: every breaker, in pipelined plain reads.

    Attributes:
        breakers: (`Snapshot`, `FleetConfig`) of each breaker that reads, as `Admin.inspect`
            returns them (expiry applied as the scripts would apply it), in the order of the
            services named (sorted when every breaker was listed).
        broken: services whose keys hold what no script wrote (`CorruptStateError`) or a key
            of another type (`BackendError`), each with its error; they hide no other breaker.
        missing: services named that no breaker has (none when every breaker was listed).

    .. versionadded:: 0.3.0
    """

    breakers: builtins.list[tuple[Snapshot, FleetConfig]]
    broken: dict[str, DistbreakerError]
    missing: builtins.list[str]


def _denied(error: Exception | None) -> bool:
    """Whether a pipelined reply is an ACL denial (NOPERM)."""
    return isinstance(error, NoPermissionError) or (error is not None and str(error).startswith("NOPERM"))


def _corrupt_error(service: str, key: str, detail: str) -> CorruptStateError:
    """The error for a breaker whose data cannot be read: names the key and the repair."""
    return CorruptStateError(
        f"breaker {service!r}: key {key} holds corrupt data ({detail}); "
        f"'distbreaker reset {service}' (Admin.reset) rewrites it",
        key,
        service,
    )


def _stream_entry(entry: Any) -> tuple[Any, dict[Any, Any]]:
    """An XREVRANGE entry as (id, fields): redis-py's parsed form or the raw [id, [k, v, ...]]."""
    entry_id, fields = entry[0], entry[1]
    if not isinstance(fields, dict):
        fields = dict(zip(fields[::2], fields[1::2], strict=True))
    return entry_id, fields


R = TypeVar("R")


def _pipelined(steps: Generator[_bulk.Pipeline, builtins.list[Any], tuple[int, R, Any]]) -> Steps[tuple[int, R]]:
    """`_bulk` steps (each yields a pipeline) as steps of `drive` / `adrive`: each pipeline a
    `Pipelined` request (one round trip). Returns the server time and the reads."""
    try:
        commands = next(steps)
        while True:
            commands = steps.send((yield Pipelined(tuple(commands))))
    except StopIteration as stop:
        now_ms, reads, _ = stop.value
        return now_ms, reads


class _Operations:
    """What `Admin` and `distbreaker.asyncio.Admin` share: every read and action written once as
    steps (`_action_steps`); the two shells only run them (`drive` / `adrive`). Every argument is
    checked before the first command, so bad input never reaches Redis."""

    def __init__(self, redis: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.redis = redis
        self.prefix = validate_prefix(prefix)

    def _operator(self, service: str) -> Operator:
        return Operator(self.prefix, service, scripts_for(self.redis))

    def _found(self, keys: builtins.list[Any]) -> builtins.list[str]:
        found = {service_of_key(self.prefix, key_name(k)) for k in keys}
        return sorted(s for s in found if s)

    def _match(self) -> str:
        return f"{self.prefix}:{{*}}"

    def _read_steps(self, service: str) -> Steps[Any]:
        """Read one breaker as `inspect_all` reads each (`_bulk`: ``TIME`` and ``HGETALL`` in one
        pipeline, ``HMGET`` where the ACL has no ``HGETALL``; no script), the lazy steps applied
        at the server's time and nothing written; the reply read.lua would give (`_bulk.reply`).

        Raises:
            UnknownServiceError: no breaker (no ``st``): nothing is created.
            CorruptStateError, BackendError: see `_reply_of`.
        """
        key = state_key(self.prefix, validate_service(service))
        now_ms, reads = yield from _pipelined(_bulk.read_hashes([key], whole=True))
        if _denied(reads[0].error):  # an ACL without HGETALL (docs/operations.md before 0.3): HMGET
            now_ms, reads = yield from _pipelined(_bulk.read_hashes([key]))
        reply = self._reply_of(service, reads[0], now_ms)
        if reply is None:
            raise UnknownServiceError(service)
        return reply

    @staticmethod
    def _reply_of(service: str, read: _bulk.Read, now_ms: int) -> builtins.list[Any] | None:
        """read.lua's reply for a breaker `_bulk` read (`_bulk.reply`), None when there is none.

        Raises:
            CorruptStateError: fields no script could have written (names the key and `reset`).
            BackendError: the error reply that replaced the read, translated (WRONGTYPE: a key
                of another type, named); RedisUnavailableError, AccessDeniedError as such.
        """
        error = read.error
        if error is None:
            try:
                return _bulk.reply(read.fields, read.ring, now_ms, operator=True)
            except _bulk.Corrupt as exc:
                error = exc
        if isinstance(error, _bulk.Corrupt):
            raise _corrupt_error(service, read.key, str(error))
        if "WRONGTYPE" in str(error):  # (as the server says it, or annotated by a client pipeline)
            raise errors.BackendError(
                f"breaker {service!r}: key {read.key} holds a value that is not a breaker (WRONGTYPE); "
                "choose another prefix or delete the key"
            ) from error
        raise translate(error, service) from error

    def _decode(self, service: str, reply: Any) -> tuple[Snapshot, FleetConfig]:
        try:
            snap = decode_snapshot(service, reply)
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise _corrupt_error(
                service,
                self._operator(service).keys.state,
                f"state {text(reply[STATE])!r}" if isinstance(exc, KeyError) else str(exc),
            ) from None
        try:
            return snap, self._fleet_config(service, reply)
        except (KeyError, ValueError, IndexError, TypeError):
            raise _corrupt_error(
                service, self._operator(service).keys.state, f"config {text(reply[CONFIG])[:60]!r}"
            ) from None

    def _names(self, services: Iterable[str]) -> builtins.list[str]:
        """`services` validated (before any I/O), in order, without repeats."""
        if isinstance(services, str):
            raise ConfigError("services", f"must be an iterable of names, not a str: {services!r}")
        return builtins.list(dict.fromkeys(validate_service(s) for s in services))

    def _inspect_all_steps(
        self, names: builtins.list[str]
    ) -> Generator[_bulk.Pipeline, builtins.list[Any], Inspection]:
        """`names` read in pipelines of `CHUNK` (an HGETALL each, a TIME per pipeline) and decoded
        as read.lua's reply would be (`_bulk.reply`), each by position (`_bulk.snapshot`,
        `_fleet_config`: what `_decode` gives, without converting the reply's values again)."""
        found: builtins.list[tuple[Snapshot, FleetConfig]] = []
        broken: dict[str, DistbreakerError] = {}
        missing: builtins.list[str] = []
        whole = True
        for at in range(0, len(names), CHUNK):
            chunk = names[at : at + CHUNK]
            keys = [state_key(self.prefix, service) for service in chunk]
            now_ms, reads, _ = yield from _bulk.read_hashes(keys, whole=whole)
            if whole and any(_denied(read.error) for read in reads):
                whole = False  # an ACL without HGETALL (docs/operations.md before 0.3): HMGET
                now_ms, reads, _ = yield from _bulk.read_hashes(keys)
            for service, read in zip(chunk, reads, strict=True):
                try:
                    reply = self._reply_of(service, read, now_ms)
                except (RedisUnavailableError, AccessDeniedError):
                    raise  # nothing can be read: the whole call fails
                except DistbreakerError as exc:
                    broken[service] = exc
                    continue
                if reply is None:
                    missing.append(service)  # (listed by SCAN, then gone: expired or deleted)
                    continue
                try:
                    found.append((_bulk.snapshot(service, reply), self._fleet_config(service, reply)))
                except (KeyError, ValueError, IndexError, TypeError):
                    try:  # as one breaker's read decodes it: its error
                        found.append(self._decode(service, reply))
                    except CorruptStateError as exc:
                        broken[service] = exc
        return Inspection(found, broken, missing)

    def _status_steps(self, service: str) -> Steps[Snapshot]:
        return self._decode(service, (yield from self._read_steps(service)))[0]

    def _config_steps(self, service: str) -> Steps[FleetConfig]:
        return self._decode(service, (yield from self._read_steps(service)))[1]

    def _inspect_steps(self, service: str) -> Steps[tuple[Snapshot, FleetConfig]]:
        return self._decode(service, (yield from self._read_steps(service)))

    @staticmethod
    def _fleet_config(service: str, reply: builtins.list[Any]) -> FleetConfig:
        """The FleetConfig of a `_bulk.reply` (its numbers int, its texts str: none converted
        again), by position.

        Raises:
            ValueError, IndexError: a stored config that does not parse.
        """
        pt = reply[FINGERPRINT_CHANGED_AT]
        return FleetConfig(
            service,
            _config_values(reply[CONFIG]),
            _config_values(reply[CLIENT_CONFIG]),
            _overrides(reply[OVERRIDES]),
            reply[FINGERPRINT] or None,
            reply[PREVIOUS_FINGERPRINT] or None,
            pt / 1000.0 if pt else None,
            reply[NOW] / 1000.0,
        )

    def _set_config_steps(
        self, service: str, actor: str | None, replace: bool, reason: str, overrides: dict[str, Any]
    ) -> Steps[FleetConfig]:
        target = self._operator(service)
        for name, value in overrides.items():
            if name not in FLEET_FIELDS:
                why = (
                    "is each worker's own setting, not stored in Redis"
                    if name in BreakerConfig.__dataclass_fields__
                    else "is not a config field"
                )
                raise ConfigError(name, f"{why}; fleet-wide: {', '.join(FLEET_FIELDS)}")
            _schema.by_name(name).check(value)  # bounds: ConfigError names the field
        if not overrides:
            raise ConfigError("overrides", "give at least one name=value (clear_config removes them)")
        who = _config_actor(actor, reason)
        try:
            current: FleetConfig | None = yield from self._config_steps(service)
        except UnknownServiceError:
            current = None
        base = dict(current.client or current.effective or {}) if current else {}
        kept = {} if replace or current is None else dict(current.overrides)
        wanted = {**kept, **overrides}
        if base and quorum_unreported(base, overrides):
            raise ConfigError(
                "minimum_failing_workers",
                "the workers have it off, so they do not say which of them fail; an override would "
                "count no failing client and hold every trip back: set it in their BreakerConfig",
            )
        values = {f: getattr(_DEFAULTS, f) for f in FLEET_FIELDS}
        values.update({k: v for k, v in base.items() if k in values})
        values.update(wanted)
        try:
            merged = BreakerConfig(**values)  # validates: ConfigError names the field
        except ConfigError as exc:
            if exc.field in wanted:
                raise
            raise ConfigError(
                exc.field,
                f"{str(exc).split(': ', 1)[1]} (the workers' value, with the "
                f"overrides given; override {exc.field} too)",
            ) from None
        lua = merged._lua
        spec = ";".join(f"{script}={lua[i]}" for i, (script, field, _) in enumerate(CONFIG_FIELDS) if field in wanted)
        yield from config_steps(target, spec, who)
        return (yield from self._config_steps(service))

    def _clear_config_steps(self, service: str, actor: str | None, reason: str) -> Steps[FleetConfig]:
        target, who = self._operator(service), _config_actor(actor, reason)
        if not (yield from self._exists_steps(service)):
            raise UnknownServiceError(service)
        yield from config_steps(target, "", who)
        return (yield from self._config_steps(service))

    def _exists_steps(self, service: str) -> Steps[bool]:
        return bool((yield Command(("EXISTS", self._operator(service).keys.state))))

    def _delete_steps(self, service: str) -> Steps[bool]:
        keys = self._operator(service).keys
        return bool((yield Command(("DEL", keys.state, keys.events, keys.ids))))

    def _control_steps(self, service: str, op: str, for_: Any, reason: str, actor: str | None) -> Steps[Snapshot]:
        return (yield from control_steps(self._operator(service), op, for_, reason, actor, last_transition=True))

    def _events_steps(self, service: str, n: int) -> Steps[Events]:
        keys = self._operator(service).keys
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError("n", f"must be an int >= 1, got {n!r}")
        entries = yield Command(("XREVRANGE", keys.events, "+", "-", "COUNT", n))
        out: builtins.list[Transition] = []
        skipped = 0
        for entry in entries or ():
            try:
                out.append(decode_transition(service, _stream_entry(entry)))
            except (KeyError, ValueError, IndexError, TypeError, AttributeError):
                skipped += 1  # not ours (another writer) or damaged: never fail the others
        if skipped:
            LIMITED.warning(
                ("foreign-events", keys.events),
                "%s: %d entries that are not distbreaker events were skipped",
                keys.events,
                skipped,
            )
        return Events(out, skipped)


def close_matches(service: str, names: builtins.list[str], n: int = 3) -> builtins.list[str]:
    """The names in `names` most like `service` (difflib; a typo, a missing character)."""
    return difflib.get_close_matches(service, names, n=n, cutoff=0.6)


def _config_actor(actor: str | None, reason: str) -> str:
    """The actor recorded for a config change; a reason goes with it (``alice (INC-42)``): the
    config event's cause is ``config set by <actor>: <changes>``."""
    who, why = _arg_checks.actor_or_default(actor), _arg_checks.check_reason(reason)
    return f"{who} ({why})" if why else who


class Admin(_Operations):
    """Operator access to every breaker under a prefix.

    The same reads and actions as `distbreaker.asyncio.Admin` (the same steps run on a sync
    client), plus `doctor`.

    Args:
        redis: a `redis.Redis` client (the CLI uses a longer timeout than workers).
        prefix: key prefix. Default ``"distbreaker"``.
    """

    def _do(self, service: str, steps: Steps[T]) -> T:
        try:
            return drive(self.redis, steps)
        except RedisError as exc:
            raise translate(exc, service) from exc

    def list(self) -> builtins.list[str]:
        """Services of every breaker under the prefix, sorted (SCAN with a large COUNT, every
        master of a Cluster; never KEYS)."""
        try:
            return self._found(builtins.list(self.redis.scan_iter(match=self._match(), count=SCAN_COUNT)))
        except RedisError as exc:
            raise translate(exc) from exc

    def inspect_all(self, services: Iterable[str] | None = None) -> Inspection:
        """`inspect` of every breaker (`services`: of these only), in pipelined plain reads: one
        HGETALL per breaker (HMGET where an ACL has no HGETALL), pipelines of a few hundred keys,
        no script; on a plain `redis.Redis`, written and read on its socket (`_transport.pipeline`).
        The scripts' lazy expiry is applied at the server's time of each pipeline, as read.lua
        would apply it, but nothing is written (read.lua stores the expiry it applies). 10,000
        breakers read in a few hundred ms of client CPU on loopback (docs/scaling.md).

        Raises:
            ConfigError: an invalid service name (before any I/O).
            RedisUnavailableError, AccessDeniedError: nothing could be read.

        .. versionadded:: 0.3.0
        """
        names = self.list() if services is None else self._names(services)
        try:
            return cast(Inspection, _bulk.run(self.redis, self._inspect_all_steps(names), _transport.pipeline)[0])
        except RedisError as exc:
            raise translate(exc) from exc

    def status(self, service: str) -> Snapshot:
        """The snapshot of `service`, with its config and last transition.

        Read as `inspect_all` reads each breaker: plain commands, no script (``TIME`` and
        ``HGETALL`` in one pipeline; ``HMGET`` where the ACL has no ``HGETALL``), decoded as
        read.lua's reply. The scripts' lazy steps are applied at the server's time but **not
        written**: an ``open`` breaker past ``open_until`` reads ``half_open`` (its last
        transition that one, at the time of the read) and a forced state past its expiry reads
        ``closed``, while the hash and the events stream stay as they are; the next worker call
        makes and records that transition (and publishes it). read.lua, which these reads ran
        before, stored it; `Breaker.snapshot` still does. Nothing is ever created.

        Raises:
            UnknownServiceError: no breaker by that name exists.
            CorruptStateError: its hash holds what no script writes (the message names the key
                and the field; `reset` rewrites it).
            BackendError: its key holds another type (WRONGTYPE; the message names the key).
        """
        return self._do(service, self._status_steps(service))

    def config(self, service: str) -> FleetConfig:
        """The stored config of `service`: the workers', the overrides and the one in force.

        The same read as `status` (plain commands, nothing written).

        Raises:
            UnknownServiceError: no breaker by that name exists.
            CorruptStateError, BackendError: as `status`.

        .. versionadded:: 0.1.0
        """
        return self._do(service, self._config_steps(service))

    def inspect(self, service: str) -> tuple[Snapshot, FleetConfig]:
        """`status` and `config` of `service` from one read (one round trip; plain commands,
        nothing written, as `status`).

        Raises:
            UnknownServiceError: no breaker by that name exists.
            CorruptStateError, BackendError: as `status`.

        .. versionadded:: 0.1.0
        """
        return self._do(service, self._inspect_steps(service))

    def set_config(
        self, service: str, *, actor: str | None = None, replace: bool = False, reason: str = "", **overrides: Any
    ) -> FleetConfig:
        """Override config values of `service` fleet-wide; they win over what workers pass.

        The overrides apply to every worker's next call (the record fast path reads the merged
        values), survive worker restarts and config changes, and are recorded in the events
        stream (``"config set by <actor> (<reason>): minimum_calls=20"``; the state and
        generation stay).

        Args:
            service: the breaker (it need not exist yet).
            actor: who makes the change; default the OS user.
            replace: drop the overrides set before (default: keep them, and change these).
            reason: why (recorded with the actor). Added in 0.2.0.
            **overrides: `BreakerConfig` fields the scripts use, in its units (durations in
                seconds or `timedelta`; ``consecutive_failures=None`` turns it off):
                ``failure_rate_threshold``, ``minimum_calls``, ``window``, ``buckets``,
                ``consecutive_failures``, ``slow_call_rate_threshold``, ``open_duration``,
                ``backoff_multiplier``, ``max_open_duration``, ``half_open_max_calls``,
                ``half_open_successes``, ``probe_timeout``, ``idle_ttl``.

        Returns:
            The config after the change.

        Raises:
            ConfigError: a name that cannot be set fleet-wide, a value `BreakerConfig`
                rejects (checked with the workers' stored config around it), or
                ``minimum_failing_workers`` turned on while the workers have it off (they do not
                say which of them fail: the quorum would hold every trip back).

        .. versionadded:: 0.1.0
        """
        return self._do(service, self._set_config_steps(service, actor, replace, reason, overrides))

    def clear_config(self, service: str, *, actor: str | None = None, reason: str = "") -> FleetConfig:
        """Remove every fleet-wide override of `service`: the workers' own config applies again.

        Recorded in the events stream as ``"config cleared by <actor>"``.

        Raises:
            UnknownServiceError: no breaker by that name exists.

        .. versionadded:: 0.1.0
        """
        return self._do(service, self._clear_config_steps(service, actor, reason))

    def exists(self, service: str) -> bool:
        """Whether a breaker named `service` exists in Redis."""
        return self._do(service, self._exists_steps(service))

    def delete(self, service: str) -> bool:
        """Delete the breaker `service`: its state (with its config and overrides), its events
        stream and its batch ids. A worker that calls it again starts a new closed breaker.

        Returns:
            Whether anything was deleted (False: no such breaker).

        .. versionadded:: 0.2.0
        """
        return self._do(service, self._delete_steps(service))

    def similar(self, service: str, n: int = 3) -> builtins.list[str]:
        """Existing breakers whose names look like `service` (a typo), closest first.

        .. versionadded:: 0.2.0
        """
        return close_matches(service, self.list(), n)

    def trip(self, service: str, *, for_: Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force `service` open fleet-wide for `for_` seconds (None = until reset).

        Returns the snapshot after the change; its `last_transition` is this trip.

        Raises:
            ConfigError: an invalid service name, `for_`, reason or actor (before any I/O).
        """
        return self._do(service, self._control_steps(service, "trip", for_, reason, actor))

    def disable(self, service: str, *, for_: Any = None, reason: str = "", actor: str | None = None) -> Snapshot:
        """Force `service` closed fleet-wide (outcomes still counted) for `for_` seconds."""
        return self._do(service, self._control_steps(service, "disable", for_, reason, actor))

    def reset(self, service: str, *, reason: str = "", actor: str | None = None) -> Snapshot:
        """Return `service` to closed with an empty window, clearing any forced state."""
        return self._do(service, self._control_steps(service, "reset", None, reason, actor))

    def history(self, service: str, n: int = 20) -> builtins.list[Transition]:
        """The last `n` transitions of `service`, newest first (entries of other writers are
        skipped; `events` counts them)."""
        return self.events(service, n).transitions

    def events(self, service: str, n: int = 20) -> Events:
        """The last `n` entries of the events stream of `service`: its transitions, newest
        first, and how many entries were not distbreaker events (skipped).

        .. versionadded:: 0.2.0
        """
        return self._do(service, self._events_steps(service, n))

    # -- Redis Functions -------------------------------------------------------------------
    def load_functions(self) -> str:
        """Load this version's Redis Functions library (FUNCTION LOAD REPLACE; on a Cluster
        client, on every master) and return its name. Needed where workers may not load it
        themselves (the worker role of docs/operations.md): after a FUNCTION FLUSH, a restart
        without persistence, or a new master.

        Raises:
            AccessDeniedError: this user may not run FUNCTION LOAD.
            BackendError: the server has no Functions (Redis < 7.0, Valkey < 7.2).
        """
        self._do(_functions.LIBRARY_NAME, _functions.load_steps())
        return _functions.LIBRARY_NAME

    # -- doctor ------------------------------------------------------------------------------
    def doctor(self, *, pings: int = 20, role: str | None = None) -> builtins.list[Check]:
        """Check that this Redis can hold breakers: server version, the Lua scripts, the ACL
        permissions the breaker needs, the eviction policy, and the round-trip latency.

        Commands run on a throwaway breaker ``<prefix>:{__doctor__}`` (its keys get a 60 s
        expiry and are deleted at the end); one message for it is published on
        ``<prefix>:events``.

        `role` (``"worker"`` or ``"operator"``, docs/operations.md): instead of the generic Lua and
        ACL checks, check this URL's user against that role, trying each command on the
        throwaway breaker: what the role needs and is denied (FAIL), and, for the worker, what
        it can run and must not (FAIL: EVAL, EVALSHA, FUNCTION LOAD/DELETE, FCALL of control).
        Both roles must be denied another prefix's keys.

        Raises:
            RedisUnavailableError: Redis does not answer.
            AccessDeniedError: authentication failed (ACL denials of single commands are
                reported as checks instead).

        .. versionadded:: 0.1.0
        """
        keys = keys_for(self.prefix, DOCTOR_SERVICE)
        if role is not None and role not in ("worker", "operator"):
            raise ConfigError("role", f"must be 'worker' or 'operator', got {role!r}")
        lua = self._check_lua_and_acl(keys) if role is None else self._check_role(role, keys)
        checks = [self._check_server(), *lua, self._check_eviction(), self._check_latency(pings)]
        _, denied = self._attempt(lambda: self.redis.execute_command("DEL", keys.state, keys.events))
        if denied:
            checks.append(Check("cleanup", "WARN", f"cannot delete {keys.state} (NOPERM); it expires in 60 s"))
        return checks

    @staticmethod
    def _attempt(fn: Callable[[], Any]) -> tuple[Any, str | None]:
        """(reply, None), or (None, the message) when the ACL denies it; other errors propagate."""
        try:
            return fn(), None
        except RedisError as exc:
            message = str(exc).split(" script:", 1)[0]
            if isinstance(exc, NoPermissionError) or "NOPERM" in message or "no permissions" in message:
                return None, message
            raise translate(exc) from exc

    def _check_server(self) -> Check:
        info, denied = self._attempt(lambda: self.redis.info("server"))
        if denied:
            return Check("server", "WARN", f"cannot read INFO server ({denied}); version unknown")
        if isinstance(info, dict) and info and all(isinstance(v, dict) for v in info.values()):
            info = next(iter(info.values()))  # a cluster client answers per node
        redis_version = str(info.get("redis_version", "0"))
        name = str(info.get("server_name") or "redis")
        version = str(info.get("valkey_version") or redis_version)
        mode = info.get("redis_mode") or info.get("server_mode") or "standalone"  # Valkey 8: server_mode
        parts = tuple(int(p) for p in redis_version.split(".")[:3] if p.isdigit())
        detail = f"{name} {version} ({mode})"
        if name != "redis":
            detail = f"{name} {version} (redis_version {redis_version}, {mode})"
        if parts < MIN_SERVER:
            return Check("server", "FAIL", f"{detail}: distbreaker needs Redis >= 6.2 or Valkey >= 7.2")
        return Check("server", "PASS", detail)

    def _check_lua_and_acl(self, keys: Any) -> builtins.list[Check]:
        r, attempt = self.redis, self._attempt
        read = SCRIPTS["read"]
        read_args = (2, keys.state, keys.events, "", "", "1")
        checks: list[Check] = []
        # SCRIPT LOAD compiles every script (workers never need it: EVAL loads on first use).
        loaded: list[str] = []
        script_denied = None
        for script in SCRIPTS.values():
            sha, script_denied = attempt(partial(r.script_load, script.text))
            if script_denied:
                break
            if text(sha) != script.sha:
                checks.append(
                    Check(
                        "lua", "FAIL", f"SCRIPT LOAD of {script.name}.lua returned {text(sha)}, expected {script.sha}"
                    )
                )
                return checks
            loaded.append(script.name)

        def evalsha() -> Any:
            try:
                return r.execute_command("EVALSHA", read.sha, *read_args)
            except NoScriptError:  # not loaded (SCRIPT LOAD denied): the command itself is allowed
                return None

        commands: list[tuple[str, Callable[[], Any]]] = [
            ("TIME", lambda: r.execute_command("TIME")),
            ("EVALSHA", evalsha),
            ("EVAL", lambda: r.execute_command("EVAL", read.text, *read_args)),
            ("HMGET", lambda: r.execute_command("HMGET", keys.state, "st", "g")),
            ("HGET", lambda: r.execute_command("HGET", keys.state, "st")),
            ("HSET", lambda: r.execute_command("HSET", keys.state, "doctor", "1")),
            ("HDEL", lambda: r.execute_command("HDEL", keys.state, "doctor")),
            ("EXISTS", lambda: r.execute_command("EXISTS", keys.state)),
            ("TYPE", lambda: r.execute_command("TYPE", keys.events)),
            (
                "XADD",
                lambda: r.execute_command(
                    "XADD",
                    keys.events,
                    "MAXLEN",
                    "~",
                    "1000",
                    "*",
                    "ts",
                    "0",
                    "from",
                    "closed",
                    "to",
                    "closed",
                    "cause",
                    "distbreaker doctor",
                    "actor",
                    "doctor",
                    "gen",
                    "0",
                ),
            ),
            ("XREVRANGE", lambda: r.execute_command("XREVRANGE", keys.events, "+", "-", "COUNT", "1")),
            (
                "PEXPIRE",
                lambda: (
                    r.execute_command("PEXPIRE", keys.state, 60000),
                    r.execute_command("PEXPIRE", keys.events, 60000),
                ),
            ),
            ("SCAN", lambda: r.scan(0, match=f"{self.prefix}:{{*}}", count=10)),
            ("PUBLISH", lambda: r.publish(keys.channel, _DOCTOR_MESSAGE)),
            ("SUBSCRIBE", lambda: self._subscribe_once(keys.channel)),
        ]
        denied = []
        for name, fn in commands:
            _, why = attempt(fn)
            if why:
                denied.append(Check("acl", "FAIL", f"{name}: {why}", denied=True))
        if script_denied:
            lua_ok = not any(c.detail.startswith("EVAL:") for c in denied)
            checks.append(
                Check(
                    "lua",
                    "WARN" if lua_ok else "FAIL",
                    f"SCRIPT LOAD denied ({script_denied}); "
                    + (
                        "EVAL of read.lua works, workers load scripts with EVAL"
                        if lua_ok
                        else "EVAL is denied too: no script can run"
                    ),
                )
            )
        else:
            checks.append(Check("lua", "PASS", f"{len(loaded)} scripts load ({', '.join(loaded)})"))
        if denied:
            checks.extend(denied)
        else:
            checks.append(
                Check(
                    "acl",
                    "PASS",
                    f"{len(commands)} commands the breaker uses are allowed on "
                    f"{self.prefix}:{{...}} and {keys.channel}",
                )
            )
        return checks

    def _check_role(self, role: str, keys: Any) -> builtins.list[Check]:
        """Try what `role` needs and what it must not run, on the throwaway breaker."""
        r = self.redis
        # FUNCTIONS: the Operator target calls FCALL whatever the client was made with
        target = Operator(self.prefix, DOCTOR_SERVICE, FUNCTIONS)
        other = f"{self.prefix}:other:{{{DOCTOR_SERVICE}}}"

        def probe(fn: Callable[[], Any], allowed: Callable[[Any], bool] = lambda exc: False) -> str | None:
            """None when it ran (or failed the way `allowed` says a permitted command does); else
            the denial."""
            try:
                fn()
            except RedisError as exc:
                message = str(exc).split(" script:", 1)[0]
                if isinstance(exc, NoPermissionError) or "NOPERM" in message or "no permissions" in message:
                    return message
                if allowed(exc):
                    return None
                raise translate(exc) from exc
            return None

        read = eval_steps(target.eval("read", ["0"]))
        needs: list[tuple[str, Callable[[], Any]]] = [
            ("FCALL read (creates the throwaway breaker)", lambda: drive(r, read)),
            ("PUBLISH", lambda: r.publish(keys.channel, _DOCTOR_MESSAGE)),
            ("SUBSCRIBE", lambda: self._subscribe_once(keys.channel)),
        ]
        must_not: list[tuple[str, Callable[[], Any], Callable[[Any], bool]]] = [
            (f"HGET {other} (another prefix)", lambda: r.execute_command("HGET", other, "st"), lambda e: False)
        ]
        control = ("FCALL control (trip/disable/reset/config)", lambda: drive(r, config_steps(target, "", "doctor")))
        if role == "operator":
            needs += [
                ("FUNCTION LOAD", lambda: drive(r, _functions.load_steps())),
                control,
                ("SCAN", lambda: r.scan(0, match=f"{self.prefix}:{{*}}", count=10)),
                ("XREVRANGE", lambda: r.execute_command("XREVRANGE", keys.events, "+", "-", "COUNT", "1")),
                ("DEL", lambda: r.execute_command("DEL", f"{keys.state}:op")),
            ]
        else:
            must_not += [
                ("EVAL", lambda: r.execute_command("EVAL", "return 1", 0), lambda e: False),
                ("EVALSHA", lambda: r.execute_command("EVALSHA", "0" * 40, 0), lambda e: isinstance(e, NoScriptError)),
                (
                    "FUNCTION LOAD",
                    lambda: r.execute_command("FUNCTION", "LOAD", "#!lua name=doctor_probe\n("),
                    lambda e: True,
                ),
                (
                    "FUNCTION DELETE",
                    lambda: r.execute_command("FUNCTION", "DELETE", "distbreaker_doctor_none"),
                    lambda e: True,
                ),
                (control[0], control[1], lambda e: False),
            ]
        checks: list[Check] = []
        missing = []
        for name, fn in needs:
            try:
                why = probe(fn)
            except errors.DistbreakerError as exc:  # e.g. no FUNCTION/FCALL (Redis < 7.0)
                why = f"{exc} (roles need Redis Functions: Redis >= 7.0 or Valkey >= 7.2)"
            if why is not None:
                missing.append(f"{name}: {why}")
        allowed = [name for name, fn, ok in must_not if probe(fn, ok) is None]
        checks.append(
            Check(
                "role",
                "FAIL" if missing else "PASS",
                ("missing: " + "; ".join(missing))
                if missing
                else f"{role}: the {len(needs)} commands the role needs run on {self.prefix}:{{...}}",
                denied=bool(missing),
            )
        )
        checks.append(
            Check(
                "role-limits",
                "FAIL" if allowed else "PASS",
                (f"{role} can run what it must not: " + ", ".join(allowed))
                if allowed
                else f"{role}: denied " + ", ".join(name for name, _, _ in must_not),
            )
        )
        return checks

    def _subscribe_once(self, channel: str) -> None:
        pubsub = self.redis.pubsub()
        try:
            pubsub.subscribe(channel)
            deadline = time.monotonic() + 2.0
            while time.monotonic() < deadline:
                message = pubsub.get_message(timeout=0.5)
                if message is not None and message.get("type") == "subscribe":
                    return
            raise RedisError(f"no answer to SUBSCRIBE {channel}")
        finally:
            pubsub.close()

    def _check_eviction(self) -> Check:
        reply, denied = self._attempt(lambda: self.redis.config_get("maxmemory*"))
        if denied:
            return Check(
                "maxmemory-policy", "WARN", f"cannot read it (CONFIG GET denied: {denied}); make sure it is noeviction"
            )
        config = {text(k): text(v) for k, v in (reply or {}).items()}
        policy = config.get("maxmemory-policy", "?")
        limit = int(config.get("maxmemory", "0") or 0)
        if policy == "noeviction":
            return Check("maxmemory-policy", "PASS", "noeviction")
        where = f"maxmemory {limit} bytes" if limit else "maxmemory 0 (no limit set now)"
        return Check(
            "maxmemory-policy",
            "WARN",
            f"{policy} ({where}): under memory pressure Redis may evict breaker keys (they carry "
            "an idle TTL, so volatile-* policies can pick them too) and lose their state; "
            "use noeviction",
        )

    def _check_latency(self, pings: int) -> Check:
        samples: list[float] = []
        for _ in range(max(1, pings)):
            start = time.perf_counter()
            _, denied = self._attempt(lambda: self.redis.execute_command("PING"))
            if denied:
                return Check("latency", "WARN", f"cannot PING ({denied})")
            samples.append((time.perf_counter() - start) * 1000)
        samples.sort()
        p50 = statistics.median(samples)
        p99 = samples[min(len(samples) - 1, round(0.99 * (len(samples) - 1)))]
        detail = f"{len(samples)} PINGs: p50 {p50:.2f} ms, p99 {p99:.2f} ms"
        budget = 1000 * float(cast(float, _DEFAULTS.redis_timeout))
        if p99 >= budget / 2:
            return Check(
                "latency",
                "WARN",
                f"{detail}: close to the default redis_timeout ({budget:.0f} ms); raise it in BreakerConfig",
            )
        return Check("latency", "PASS", detail)
