"""Reads and operator actions of one breaker, written once as steps (generators) that yield
Redis commands; `_scripts.drive` runs them on a sync client, `_scripts.adrive` on an async one.

The Breakers (sync and asyncio) run them on their `BreakerCore`; `Admin` (sync and asyncio) on
an `Operator`, a breaker as an operator reaches it (no worker config, no cache). Every check of
the arguments runs before the first command is yielded, so a bad argument never reaches Redis.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

from . import _arg_checks
from ._core import Command, Eval, decode_made, decode_snapshot, keys_for, script_args, validate_prefix, validate_service
from ._model import Snapshot
from ._reply import TRANSITIONS
from ._scripts import SCRIPTS, LuaScript, Steps, eval_steps
from .errors import ConfigError

__all__ = [
    "Operator",
    "Target",
    "check_control",
    "check_for",
    "config_steps",
    "control_steps",
    "read_steps",
    "snapshot_steps",
]

# An expiry must stay an exact integer of milliseconds in Lua (a double): 2**52 ms is ~142,000
# years. Longer ones are refused before anything is sent (wp-schema's `_arg_checks.duration` bounds
# `for_` far below this; this keeps the reply exact whatever that bound is).
_MAX_FOR_MS = 2**52


class Target(Protocol):
    """What the steps need of a breaker: `BreakerCore` (the Breakers) or `Operator` (Admin)."""

    service: str
    test_clock: Callable[[], float] | None

    def eval(self, name: str, extra: list[str]) -> Eval: ...

    def until_ms(self, for_: float | None, server_now_ms: int | None) -> int: ...

    def update(self, reply: Sequence[Any], actor: str = "") -> Any: ...


class Operator:
    """One breaker as `Admin` reaches it: no worker config is sent, nothing is cached, and
    expiries are on the server's clock. Building one validates the names (no I/O)."""

    test_clock: Callable[[], float] | None = None

    def __init__(self, prefix: str, service: str, scripts: dict[str, LuaScript] = SCRIPTS) -> None:
        self.service = validate_service(service)
        self.keys = keys_for(validate_prefix(prefix), self.service)
        self.scripts = scripts  # FUNCTIONS: FCALL (control also names the operator-only key)

    def eval(self, name: str, extra: list[str]) -> Eval:
        return Eval(self.scripts[name], (self.keys.state, self.keys.events), script_args(None, None, extra), None)

    def until_ms(self, for_: float | None, server_now_ms: int | None) -> int:
        if for_ is None:
            return 0
        assert server_now_ms is not None
        return server_now_ms + round(for_ * 1000)

    def update(self, reply: Sequence[Any], actor: str = "") -> None:
        return None


def check_for(for_: Any) -> float | None:
    """`for_` of trip / disable in seconds (None = until reset), checked like the actions do.

    Raises:
        ConfigError: not a positive duration, or too long.
    """
    duration = _arg_checks.duration(for_)
    if duration is not None and not duration * 1000 < _MAX_FOR_MS:
        raise ConfigError("for_", f"must be a positive duration of at most {_MAX_FOR_MS // 1000} s, got {for_!r}")
    return duration


def check_control(op: str, for_: Any, reason: str, actor: str | None) -> tuple[float | None, str, str]:
    """The checked arguments of trip / disable / reset: (seconds or None, reason, actor).

    Raises:
        ConfigError: a `for_` that is not a positive duration (or too long), a reason or
            actor that is not one printable line of text.
    """
    if op not in ("trip", "disable", "reset"):
        raise ConfigError("op", f"must be trip, disable or reset, got {op!r}")
    duration = check_for(for_) if op != "reset" else None
    return duration, _arg_checks.check_reason(reason), _arg_checks.actor_or_default(actor)


def read_steps(target: Target) -> Steps[Sequence[Any]]:
    """Read the shared state (read.lua, with its extras); the reply as the script gave it."""
    reply = yield from eval_steps(target.eval("read", ["1"]))
    target.update(reply)  # read.lua may make lazy expiries: this process performed them
    return cast("Sequence[Any]", reply)


def snapshot_steps(target: Target) -> Steps[Snapshot]:
    """Read the shared state (read.lua) and refresh the cache."""
    reply = yield from read_steps(target)
    return decode_snapshot(target.service, reply)


def control_steps(
    target: Target, op: str, for_: Any, reason: str, actor: str | None, *, last_transition: bool = False
) -> Steps[Snapshot]:
    """trip / disable / reset (control.lua); `for_` seconds from now on the server clock.

    With `last_transition` (Admin), the snapshot carries the transition this action made, as a
    read would show it (the Breakers keep None there, as documented since 0.1).
    """
    duration, reason, actor = check_control(op, for_, reason, actor)
    server_ms = None
    if duration is not None and target.test_clock is None:
        sec, usec = yield Command(("TIME",))
        server_ms = int(sec) * 1000 + int(usec) // 1000
    reply = yield from eval_steps(
        target.eval("control", [op, str(target.until_ms(duration, server_ms)), reason, actor])
    )
    target.update(reply, actor)
    snap = decode_snapshot(target.service, reply)
    if last_transition and reply[TRANSITIONS]:
        snap = dataclasses.replace(snap, last_transition=decode_made(target.service, reply, actor)[-1])
    return snap


def config_steps(target: Target, spec: str, actor: str) -> Steps[Sequence[Any]]:
    """Set (``name=value;...``) or clear (``""``) the fleet-wide overrides (control.lua config)."""
    reply = yield from eval_steps(target.eval("control", ["config", "0", spec, actor]))
    target.update(reply, actor)
    return cast("Sequence[Any]", reply)
