"""Rendering snapshots as a table (humans) or JSON (scripts)."""

from __future__ import annotations

import json
import time
from typing import Any

from distbreaker import Snapshot


def snapshot_dict(s: Snapshot) -> dict[str, Any]:
    """A JSON-ready dict with the same field names as `Snapshot` (snake_case, seconds)."""
    last = s.last_transition
    return {
        "service": s.service,
        "state": s.state.value,
        "generation": s.generation,
        "calls": s.calls,
        "failures": s.failures,
        "failure_rate": round(s.failure_rate, 4),
        "slow_calls": s.slow_calls,
        "slow_call_rate": round(s.slow_call_rate, 4),
        "consecutive_failures": s.consecutive_failures,
        "open_until": s.open_until,
        "retry_after": s.retry_after,
        "forced_until": s.forced_until,
        "reason": s.reason,
        "actor": s.actor,
        "open_count": s.open_count,
        "half_open_calls": s.half_open_calls,
        "server_time": s.server_time,
        "last_transition": None if last is None else {
            "time": last.time, "from": last.from_state.value, "to": last.to_state.value,
            "cause": last.cause, "actor": last.actor, "generation": last.generation,
        },
    }


def dumps(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=False)


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def table(snapshots: list[Snapshot], now: float | None = None) -> str:
    """A plain aligned table, one breaker a row."""
    now = time.time() if now is None else now
    header = ("SERVICE", "STATE", "FAIL%", "CALLS", "SLOW", "REMAINING", "FORCED BY / REASON", "LAST TRANSITION")
    rows = [header]
    for s in snapshots:
        remaining = "-"
        if s.retry_after is not None:
            remaining = _ago(s.retry_after)
        elif s.state.value == "forced_open":
            remaining = "until reset"
        forced = f"{s.actor}: {s.reason}" if s.actor or s.reason else "-"
        last = "-"
        if s.last_transition is not None:
            t = s.last_transition
            last = f"{_ago(s.server_time - t.time)} ago {t.from_state.value}>{t.to_state.value} ({t.cause})"
        rows.append((s.service, s.state.value, f"{100 * s.failure_rate:.1f}", str(s.calls), str(s.slow_calls),
                     remaining, forced, last))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[-1] for r in rows)
