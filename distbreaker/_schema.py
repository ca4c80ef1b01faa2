"""The config schema: the values the scripts use (15), written once, in ARGV order.

Everything else is derived from `FIELDS`: `BreakerConfig`'s checks and its `_lua` ARGV tuple,
`admin.CONFIG_FIELDS` (and `Admin.set_config`'s checks), the reference model's `Cfg`, and the
Lua: `lua_constants()` is the text `_scripts` inserts at the ``--@schema`` line of
`lua/_lib.lua` (the names, the defaults and `check_cfg`, the bounds as code).
`tests/lua/test_schema.py` proves both languages accept and refuse the same values.

Units: a field's `low`/`high` are in the scripts' units (ms for every duration); `BreakerConfig`
takes seconds, converts (`script_value`) and checks the converted value, so that Python accepts
exactly what the scripts accept. The bounds keep each script's work and numbers small
(docs/configuration.md, "Bounds"): `buckets` bounds the fields a rotation or a cleared window
touches (Lua's `unpack` fails past ~8000), every duration stays far below what PEXPIRE and a
double's integers hold.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from .errors import ConfigError

__all__ = [
    "DEFAULT_ARGV",
    "FIELDS",
    "FIELDS_0_1",
    "FOR_MAX",
    "LOCAL_DURATIONS",
    "MAX_FAILING_CLIENTS",
    "RELATIONS",
    "AtLeast",
    "Field",
    "broken_rule",
    "by_lua",
    "by_name",
    "check_options",
    "check_seconds",
    "fingerprint",
    "human_ms",
    "lua_constants",
]

Unit = Literal["ratio", "count", "ms", "factor"]

SECOND_MS = 1000
HOUR_MS = 3600 * SECOND_MS
DAY_MS = 24 * HOUR_MS


def _num(value: float) -> str:
    """A bound or value as both languages read it: ints in decimal, floats with `repr`."""
    return repr(float(value)) if isinstance(value, float) else str(value)


def _shown(value: float) -> str:
    """A bound in an error text: ``0``, ``1``, ``100``, ``1000000000``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def human_ms(ms: float) -> str:
    """``1 ms``, ``10 s``, ``1 hour``, ``7 days``: a bound in words."""
    for size, one, many in (
        (DAY_MS, "day", "days"),
        (HOUR_MS, "hour", "hours"),
        (SECOND_MS, "s", "s"),
        (1, "ms", "ms"),
    ):
        if ms >= size and ms % size == 0:
            n = int(ms // size)
            return f"{n} {one if n == 1 else many}"
    return f"{ms} ms"


def check_seconds(name: str, value: object, *, high: float, off: bool = False) -> float | None:
    """`value` (seconds or a `timedelta`) as float seconds: finite, > 0 and <= `high` seconds.

    None is returned for None when `off` ("None = off"), and refused otherwise. Every failure is
    a `ConfigError` naming `name`: never `TypeError` or `OverflowError` (``inf``, ``10**400``).
    """
    if value is None:
        if off:
            return None
        raise ConfigError(name, "must be seconds (float) or a timedelta, got None")
    if isinstance(value, timedelta):
        s: float | None = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        s = _real(value)
    else:
        raise ConfigError(name, f"must be seconds (float) or a timedelta, got {value!r}")
    if s is None or not 0 < s <= high:
        limit = human_ms(high * 1000) if high * 1000 == int(high * 1000) else f"{high} s"
        raise ConfigError(name, f"must be a duration > 0 and at most {limit}, got {value!r}")
    return s


@dataclass(frozen=True, slots=True)
class Field:
    """One config value the scripts use.

    Attributes:
        name: the `BreakerConfig` field (and the name `Admin.set_config` takes).
        lua: the scripts' name: `CFG_NAMES`, overrides ``name=value``, `_reference.Cfg`.
        unit: ``ratio`` (0 < x <= 1), ``count`` (int), ``ms`` (a duration: seconds in Python,
            integer ms in the scripts) or ``factor`` (a float >= 1).
        default: `BreakerConfig`'s default, in its units (seconds; None = off).
        low, high: the bounds in the scripts' units, inclusive (`low` excluded with `low_open`).
        off: None in Python is 0 in the scripts ("0 means off"); `low` is then the lowest value
            that is on (for a ratio, `low` stays excluded), and the scripts accept 0 too.
    """

    name: str
    lua: str
    unit: Unit
    default: float | int | None
    low: float | int
    high: float | int
    low_open: bool = False
    off: bool = False

    @property
    def integral(self) -> bool:
        """Whether the scripts' value is an integer (counts and ms)."""
        return self.unit in ("count", "ms")

    @property
    def kind(self) -> str:
        """`admin.CONFIG_FIELDS`' kind: ``ms``, ``float``, ``int`` or ``off``."""
        if self.unit == "ms":
            return "ms"
        if self.integral:
            return "off" if self.off else "int"
        return "float_off" if self.off else "float"

    def accepts(self, v: float) -> bool:
        """The scripts' check of a value in their units (`check_cfg` in the Lua)."""
        if self.off and v == 0:
            return True
        above = v > self.low if self.low_open else v >= self.low
        return above and v <= self.high and (not self.integral or v == math.floor(v))

    def script_value(self, value: float | None) -> float | int:
        """A checked `BreakerConfig` value in the scripts' units."""
        if value is None:
            return 0
        if self.unit == "ms":
            return round(value * 1000)
        return float(value) if self.unit in ("ratio", "factor") else int(value)

    def text(self, v: float) -> str:
        """A value in the scripts' units as ARGV text (what the fingerprint hashes)."""
        return repr(float(v)) if self.unit in ("ratio", "factor") else str(int(v))

    def argv(self, value: float | None) -> str:
        """A checked `BreakerConfig` value as the scripts' ARGV text."""
        return self.text(self.script_value(value))

    def from_argv(self, text: str) -> float | int | None:
        """ARGV text back in `BreakerConfig` units (no check)."""
        v = float(text)
        if self.unit == "ms":
            return int(v) / 1000.0
        if self.off and v == 0:
            return None
        return v if not self.integral else int(v)

    def range_text(self) -> str:
        """What the scripts accept, in their units (the Lua error text)."""
        if self.unit == "ratio":
            off = "0 (off) or " if self.off else ""
            return f"{off}a number with {_shown(self.low)} < x <= {_shown(self.high)}"
        if self.unit == "factor":
            return f"a number from {_shown(self.low)} to {_shown(self.high)}"
        off = " (0 = off)" if self.off else ""
        low = "0" if self.off else _shown(self.low)
        return f"an integer from {low}{off} to {_shown(self.high)}"

    def describe(self) -> str:
        """What `BreakerConfig` accepts, in its units."""
        if self.unit == "ms":
            return f"a duration from {human_ms(self.low)} to {human_ms(self.high)}"
        if self.unit == "count":
            what = f"an int from {self.low} to {self.high}"
            return f"None or {what}" if self.off else what
        if self.off:
            return f"None or a number with {_shown(self.low)} < x <= {_shown(self.high)}"
        return self.range_text()

    def check(self, value: object) -> float | int | None:
        """`value` normalised (durations to float seconds, ratios to float), or `ConfigError`."""
        if value is None and self.off:
            return None
        if self.unit == "ms":
            s = check_seconds(self.name, value, high=self.high / 1000)
            assert s is not None
            if not self.accepts(self.script_value(s)):  # rounds to 0 ms
                raise ConfigError(self.name, f"must be {self.describe()}, got {value!r}")
            return s
        if self.integral:
            if (
                isinstance(value, int)
                and not isinstance(value, bool)
                and not (self.off and value == 0)
                and self.accepts(value)
            ):  # None = off, never 0
                return value
            raise ConfigError(self.name, f"must be {self.describe()}, got {value!r}")
        real = _real(value)
        if real is None or (self.off and real == 0) or not self.accepts(real):  # None = off, never 0
            raise ConfigError(self.name, f"must be {self.describe()}, got {value!r}")
        return real


def _real(value: object) -> float | None:
    """`value` as a finite float, or None (a bool, a non-number, inf, nan, an int past floats)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        real = float(value)
    except OverflowError:
        return None
    return real if math.isfinite(real) else None


@dataclass(frozen=True, slots=True)
class AtLeast:
    """A rule between two fields: `field` >= `other`, compared in the scripts' units.

    `BreakerConfig` raises `ConfigError(field, "must be " + words)`; the scripts fail with
    ``<field's lua name> must be >= <other's lua name>``.
    """

    field: str
    other: str
    words: str


# The failing clients a breaker remembers (field `wc`): the bound of minimum_failing_workers,
# and the most `Snapshot.failing_clients` shows.
MAX_FAILING_CLIENTS = 32

# The values, in ARGV order (docs/state-machine.md, "Config"). New values go at the end.
FIELDS: tuple[Field, ...] = (
    Field("failure_rate_threshold", "failure_rate_threshold", "ratio", 0.5, 0.0, 1.0, low_open=True),
    Field("minimum_calls", "minimum_calls", "count", 10, 1, 10**9),
    Field("window", "window_ms", "ms", 60.0, 1, DAY_MS),
    Field("buckets", "buckets", "count", 10, 1, 1000),
    Field("consecutive_failures", "consecutive_failures", "count", None, 1, 10**9, off=True),
    Field("slow_call_rate_threshold", "slow_call_rate_threshold", "ratio", 1.0, 0.0, 1.0, low_open=True),
    Field("open_duration", "open_duration_ms", "ms", 30.0, 1, DAY_MS),
    Field("backoff_multiplier", "backoff_multiplier", "factor", 2.0, 1.0, 100.0),
    Field("max_open_duration", "max_open_duration_ms", "ms", 600.0, 1, 7 * DAY_MS),
    Field("half_open_max_calls", "half_open_max_calls", "count", 1, 1, 100),
    Field("half_open_successes", "half_open_successes", "count", 1, 1, 1000),
    Field("probe_timeout", "probe_timeout_ms", "ms", 10.0, 1, HOUR_MS),
    Field("idle_ttl", "idle_ttl_ms", "ms", 7 * 86400.0, 1, 366 * DAY_MS),
    # None (0) = off: one failed or slow probe reopens, `half_open_successes` close (0.1's rule)
    Field(
        "half_open_failure_rate_threshold",
        "half_open_failure_rate_threshold",
        "ratio",
        None,
        0.0,
        1.0,
        low_open=True,
        off=True,
    ),
    # None (0) = off; at most MAX_FAILING_CLIENTS: the scripts remember that many failing clients
    Field("minimum_failing_workers", "minimum_failing_workers", "count", None, 1, MAX_FAILING_CLIENTS, off=True),
)

RELATIONS: tuple[AtLeast, ...] = (
    AtLeast("window", "buckets", "at least one millisecond per bucket"),
    AtLeast("max_open_duration", "open_duration", "at least open_duration"),
    AtLeast("idle_ttl", "window", "at least window (a breaker in use must not expire)"),
)

# The durations each worker keeps for itself (never sent to the scripts): name -> (upper bound
# in seconds, None allowed = off).
LOCAL_DURATIONS: dict[str, tuple[float, bool]] = {
    "slow_call_duration": (86400.0, True),
    "redis_timeout": (60.0, False),
    "max_staleness": (86400.0, False),
}

# `trip`/`disable` `for_`: at most this many seconds (None = until reset).
FOR_MAX = 366 * 86400.0

_BY_NAME = {f.name: f for f in FIELDS}
_BY_LUA = {f.lua: f for f in FIELDS}
DEFAULT_ARGV: tuple[str, ...] = tuple(f.argv(f.default) for f in FIELDS)


def by_name(name: str) -> Field:
    """The field named `name` in `BreakerConfig`."""
    return _BY_NAME[name]


def by_lua(name: str) -> Field:
    """The field named `name` in the scripts."""
    return _BY_LUA[name]


FIELDS_0_1 = 13  # the values of 0.1; those appended since are left out of the fingerprint while off


def fingerprint(values: tuple[str, ...] | list[str]) -> str:
    """The short hash of a config's ARGV texts (what a client sends as ARGV 2).

    Values appended since 0.1 count only when they are on: a config that leaves them off keeps
    its 0.1 fingerprint, so workers of two releases with the same settings agree on it.
    """
    kept = list(values)
    while len(kept) > FIELDS_0_1 and float(kept[-1]) == 0:
        kept.pop()
    return hashlib.sha1(",".join(kept).encode()).hexdigest()[:10]


def broken_rule(script_values: dict[str, float | int]) -> AtLeast | None:
    """The first rule the values (`BreakerConfig` names -> scripts' units) break, or None."""
    for rule in RELATIONS:
        if script_values[rule.field] < script_values[rule.other]:
            return rule
    return None


def check_options(listen: object, clock: object) -> None:
    """A Breaker's `listen` (a bool) and `clock` (None or a callable)."""
    if not isinstance(listen, bool):
        raise ConfigError("listen", f"must be True or False, got {listen!r}")
    if clock is not None and not callable(clock):
        raise ConfigError("clock", f"must be None or a callable returning seconds, got {clock!r}")


def lua_head_constants() -> str:
    """The Lua for `lua/_head.lua`'s ``--@schema-head`` line: what a script needs of the schema
    before the library is built: `NCFG`, the number of config values (where a given config ends)."""
    return "\n".join(
        [
            "-- Generated from distbreaker/_schema.py when the scripts are loaded: edit it there.",
            f"local NCFG = {len(FIELDS)}   -- the number of config values",
        ]
    )


def lua_constants() -> str:
    """The Lua for `lua/_lib.lua`'s ``--@schema`` line: `CFG_NAMES`, `DEFAULT_CFG`, the default
    bucket layout and ``check_cfg(c, values)``, which fails on the first value out of bounds
    (`NCFG` is the head's: `lua_head_constants`)."""
    index = {f.name: i for i, f in enumerate(FIELDS, 1)}
    window, buckets = (int(DEFAULT_ARGV[index[n] - 1]) for n in ("window", "buckets"))
    names = ", ".join(f"'{f.lua}'" for f in FIELDS)
    out = [
        "-- Generated from distbreaker/_schema.py when the scripts are loaded: edit it there.",
        f"local NCFG_0_1 = {FIELDS_0_1}   -- 0.1's: a stored config this long takes the defaults of the rest",
        f"local MAX_FAILING = {MAX_FAILING_CLIENTS}   -- failing clients remembered (`wc`)",
        f"local CFG_NAMES = {{{names}}}",
        f"local DEFAULT_CFG = '{','.join(DEFAULT_ARGV)}'",
        f"local DEFAULT_BMS, DEFAULT_NB = {window // buckets}, {buckets}   -- the bucket layout of DEFAULT_CFG",
        "-- c: the NCFG values as numbers, values: as given (text). Fails before anything is written.",
        "local function check_cfg(c, values)",
    ]
    for i, f in enumerate(FIELDS, 1):
        v = f"c[{i}]"
        low = f"{v} > {_num(f.low)}" if f.low_open else f"{v} >= {_num(f.low)}"
        test = f"{low} and {v} <= {_num(f.high)}"
        if f.integral:
            test += f" and {v} % 1 == 0"
        if f.off:
            test = f"{v} == 0 or ({test})"
        out.append(f"  if not ({test}) then")
        out.append(f"    fail('{f.lua} must be {f.range_text()}, got ' .. tostring(values[{i}]))")
        out.append("  end")
    for rule in RELATIONS:
        a, b = by_name(rule.field), by_name(rule.other)
        out.append(f"  if c[{index[a.name]}] < c[{index[b.name]}] then fail('{a.lua} must be >= {b.lua}') end")
    out.append("end")
    return "\n".join(out)


_OUT = [f.name for f in FIELDS if not f.accepts(f.script_value(f.default))]
if _OUT:
    raise RuntimeError(f"distbreaker/_schema.py: defaults out of bounds: {_OUT}")
