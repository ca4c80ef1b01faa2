"""Reads and operator actions of one breaker, written once as steps (generators) that yield
Redis commands; `_scripts.drive` runs them on a sync client, `_scripts.adrive` on an async one."""

from __future__ import annotations

from typing import Any

from . import _ops
from ._core import BreakerCore, Command, decode_snapshot
from ._model import Snapshot
from ._scripts import Steps, eval_steps


def snapshot_steps(core: BreakerCore) -> Steps[Snapshot]:
    """Read the shared state (read.lua) and refresh the cache."""
    reply = yield from eval_steps(core.eval("read", ["1"]))
    core.update(reply)  # read.lua may make lazy expiries: this process performed them
    return decode_snapshot(core.service, reply)


def control_steps(core: BreakerCore, op: str, for_: Any, reason: str, actor: str | None) -> Steps[Snapshot]:
    """trip / disable / reset (control.lua); `for_` seconds from now on the server clock."""
    duration = _ops.duration(for_) if op != "reset" else None
    reason, actor = _ops.check_reason(reason), _ops.actor_or_default(actor)
    server_ms = None
    if duration is not None and core.test_clock is None:
        sec, usec = yield Command(("TIME",))
        server_ms = int(sec) * 1000 + int(usec) // 1000
    reply = yield from eval_steps(core.eval("control", [op, str(core.until_ms(duration, server_ms)), reason, actor]))
    core.update(reply, actor)
    return decode_snapshot(core.service, reply)
