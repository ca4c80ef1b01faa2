"""click parameter types: durations (`90s`, `10m`, `2h`, `1h30m`, seconds) and `--set k=v`."""

from __future__ import annotations

import math
import re
from typing import Any

import click

from distbreaker import BreakerConfig
from distbreaker._action_steps import check_for
from distbreaker.admin import CONFIG_FIELDS, FLEET_FIELDS
from distbreaker.errors import ConfigError

__all__ = [
    "DURATION",
    "FOR_DURATION",
    "SETTING",
    "Duration",
    "Finite",
    "ForDuration",
    "Setting",
    "format_duration",
    "parse_duration",
]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WHOLE = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d))+")
_KINDS = {field: kind for _, field, kind in CONFIG_FIELDS}
_HINT = "a duration like 90s, 10m, 2h, 1h30m or plain seconds"


def parse_duration(text: str) -> float:
    """Seconds in `text`: ``90s``, ``10m``, ``2h``, ``1d``, ``250ms``, ``1h30m``, or plain seconds.

    Raises:
        ValueError: not a positive, finite duration.
    """
    value = text.strip().lower()
    try:
        seconds = float(value)
    except ValueError:
        if not _WHOLE.fullmatch(value):
            raise ValueError(f"{text!r} is not {_HINT}") from None
        seconds = sum(float(n) * _UNITS[u] for n, u in _PART.findall(value))
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{text!r} is not {_HINT} (it must be positive)")
    return seconds


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``250ms``, ``45s``, ``1.5s``, ``10m``, ``1h30m``, ``7d``."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{round(seconds * 1000)}ms"
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s") if seconds < 10 else f"{round(seconds)}s"
    total = round(seconds)
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [(days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")]
    shown = [f"{n}{u}" for n, u in parts if n]
    return "".join(shown[:2])


class Duration(click.ParamType):  # type: ignore[type-arg]  # generic from click 8.5 on only
    """A positive duration in seconds (float); see `parse_duration`."""

    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


class ForDuration(Duration):
    """`--for` of trip / disable: a `Duration` the actions accept (checked before any I/O)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = super().convert(value, param, ctx)
        try:
            check_for(seconds)
        except ConfigError as exc:
            self.fail(f"{value!r} is too long: {str(exc).split(': ', 1)[-1]}", param, ctx)
        return seconds


class Finite(click.ParamType):  # type: ignore[type-arg]
    """A finite number of seconds in [`low`, `high`] (`low` excluded when `low_open`): no inf,
    no nan (click's FloatRange lets nan through)."""

    name = "seconds"

    def __init__(self, low: float, high: float, *, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        low_ok = number > self.low if self.low_open else number >= self.low
        if not (math.isfinite(number) and low_ok and number <= self.high):
            side = ">" if self.low_open else ">="
            self.fail(f"{value!r} is not a number of seconds {side} {self.low:g} and <= {self.high:g}", param, ctx)
        return number


class Setting(click.ParamType):  # type: ignore[type-arg]
    """``name=value`` for `Admin.set_config`: a fleet-wide config field in `BreakerConfig` units.

    Durations take the `Duration` syntax (``open_duration=30s``); ``consecutive_failures=off``
    turns that rule off. Value ranges are checked by `BreakerConfig` when the command runs.
    """

    name = "name=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, Any]:
        if isinstance(value, tuple):
            return value
        name, sep, raw = str(value).partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not name or not raw:
            self.fail(f"{value!r} is not name=value (e.g. minimum_calls=20, open_duration=30s)", param, ctx)
        kind = _KINDS.get(name)
        if kind is None:
            script = {s: f for s, f, _ in CONFIG_FIELDS}.get(name)
            if script:
                self.fail(f"{name!r}: use {script}= (seconds, or 30s, 2m)", param, ctx)
            why = (
                "is each worker's own setting, not stored in Redis"
                if name in BreakerConfig.__dataclass_fields__
                else "is not a config field"
            )
            self.fail(f"{name!r} {why}; fleet-wide: {', '.join(FLEET_FIELDS)}", param, ctx)
        try:
            if kind == "ms":
                return name, parse_duration(raw)
            if kind in ("off", "float_off") and raw.lower() in ("off", "none"):
                return name, None
            if kind in ("int", "off"):
                return name, int(raw)
            return name, float(raw)
        except ValueError:
            what = {
                "ms": _HINT,
                "float": "a number",
                "int": "an integer",
                "off": "an integer or off",
                "float_off": "a number or off",
            }[kind]
            self.fail(f"{name}: {raw!r} is not {what}", param, ctx)


DURATION = Duration()
FOR_DURATION = ForDuration()
SETTING = Setting()
