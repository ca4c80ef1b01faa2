"""Rendering for people (aligned tables, state colours) and for scripts (JSON).

Tables are built from plain cells, padded, then styled, so ANSI codes never shift a column;
`click.echo` strips the codes when the output is not a terminal (or with --no-color). When a
width is given (a terminal), the free-text columns are cut to fit it with an ellipsis.
"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from json.encoder import encode_basestring_ascii as _quote
from operator import is_
from typing import Any

import click

from distbreaker import Snapshot, State, Transition
from distbreaker.admin import CONFIG_FIELDS, Check, FleetConfig

from .params import format_duration

__all__ = [
    "ago",
    "check_lines",
    "config_changes",
    "config_table",
    "dumps",
    "dumps_status",
    "fleet_config_dict",
    "history_table",
    "local_clock",
    "safe",
    "snapshot_dict",
    "state_text",
    "table",
    "transition_dict",
    "utc",
]

STATE_STYLES: dict[str, dict[str, Any]] = {
    "closed": {"fg": "green"},
    "open": {"fg": "red", "bold": True},
    "half_open": {"fg": "yellow", "bold": True},
    "forced_open": {"fg": "magenta", "bold": True},
    "disabled": {"fg": "cyan"},
}
CHECK_STYLES: dict[str, dict[str, Any]] = {
    "PASS": {"fg": "green", "bold": True},
    "WARN": {"fg": "yellow", "bold": True},
    "FAIL": {"fg": "red", "bold": True},
}


def safe(text: str) -> str:
    """`text` with every non-printable character escaped (``\\x1b``, ``\\n``, ``\\u202e``): data
    read from Redis (old entries, other writers) can never move the cursor, retitle the
    terminal, or forge a line of a table."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def dumps(value: Any) -> str:
    """One JSON document (indented, keys in insertion order)."""
    return json.dumps(value, indent=2, sort_keys=False)


_INDENT_UP_TO = 100  # a JSON list of more items: one compact item per line (`dumps_rows`)


def dumps_rows(rows: list[Any], indent_up_to: int = _INDENT_UP_TO) -> str:
    """A JSON list: indented (`dumps`) up to `indent_up_to` items, else one compact object per
    line (json's C encoder: 10,000 breakers in a tenth of the indented time)."""
    if len(rows) <= indent_up_to:
        return dumps(rows)
    return "[\n" + ",\n".join(json.dumps(row) for row in rows) + "\n]"


def dumps_status(
    found: Sequence[tuple[Snapshot, FleetConfig]], disagree: Collection[str], *, lines: bool = False
) -> str:
    """``status -o json``: `dumps_rows` of each breaker's `snapshot_dict` with its ``config``
    (``workers_disagree``: its service is in `disagree`); `lines`: ``json.dumps`` of the list, on
    one line (``--watch``). The same text, written faster: each breaker's own fields by
    `_snapshot_json` (one format, no dict), and each distinct config encoded once (a fleet shares
    a few configs, and their 30 values are most of the encoding of 10,000 breakers)."""
    if not lines and len(found) <= _INDENT_UP_TO:
        docs = []
        for snap, cfg in found:
            doc = snapshot_dict(snap, cfg)
            doc["config"]["workers_disagree"] = snap.service in disagree
            docs.append(doc)
        return dumps_rows(docs)
    encoded: dict[Any, str] = {}
    rows = []
    last: tuple[FleetConfig, bool, str] | None = None  # the config of the row before, its text
    for snap, cfg in found:
        agree = snap.service not in disagree
        if last is not None and last[1] is agree and _alike(cfg, last[0]):
            config = last[2]  # (a fleet of one config: every row but the first)
        else:
            pt = cfg.fingerprint_changed_at
            key = (
                cfg.fingerprint,
                cfg.previous_fingerprint,
                pt if pt is None else (type(pt), repr(pt)),  # (1 and 1.0, 0.0 and -0.0: not alike)
                agree,
                *(_exactly(part) for part in (cfg.effective, cfg.client, cfg.overrides)),
            )
            cached = encoded.get(key)
            if cached is None:
                doc = fleet_config_dict(cfg)
                doc["workers_disagree"] = not agree
                cached = encoded[key] = json.dumps(doc)
            config = cached
            last = cfg, agree, config
        # json.dumps(dict) ends with "}" and "config" is the last key of the breaker's object
        rows.append(f'{_snapshot_json(snap) or json.dumps(snapshot_dict(snap))[:-1]}, "config": {config}}}')
    if lines:
        return f"[{', '.join(rows)}]"
    return "[\n" + ",\n".join(rows) + "\n]"


def _alike(a: FleetConfig, b: FleetConfig) -> bool:
    """Whether JSON writes the configs `a` and `b` alike, without allocating: equal
    fingerprints (str or None), the same time, and the very same objects for the names and the
    values of each dict (a fleet's configs parsed from one stored text share them)."""
    at, bt = a.fingerprint_changed_at, b.fingerprint_changed_at
    return (
        a.fingerprint == b.fingerprint
        and a.previous_fingerprint == b.previous_fingerprint
        and type(a.fingerprint) is type(b.fingerprint)
        and type(a.previous_fingerprint) is type(b.previous_fingerprint)
        and (at is bt or (type(at) is float is type(bt) and at == bt and at != 0))
        and _same_items(a.effective, b.effective)
        and _same_items(a.client, b.client)
        and _same_items(a.overrides, b.overrides)
    )


def _same_items(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    if a is None or b is None:
        return a is b
    return len(a) == len(b) and all(map(is_, a, b)) and all(map(is_, a.values(), b.values()))


def _exactly(values: dict[str, Any] | None) -> Any:
    """A key that tells apart any two `values` that JSON writes differently: the names in their
    order, the values and their types (1, 1.0 and True are equal in Python, not in JSON). A
    value equal to 0 makes a key of its own (0.0 and -0.0 are equal too): never shared."""
    if not values:
        return values is None
    vals = tuple(values.values())
    if 0 in vals:
        return object()
    return tuple(values), vals, tuple(map(type, vals))


# `json.dumps(snapshot_dict(s))` without its closing "}" (and with no "config"), as one format
_SNAPSHOT_JSON = (
    '{"service": %s, "state": %s, "generation": %d, "calls": %d, "failures": %d, "failure_rate": %r, '
    '"slow_calls": %d, "slow_call_rate": %r, "consecutive_failures": %d, "open_until": %s, '
    '"retry_after": %s, "forced_until": %s, "reason": %s, "actor": %s, "open_count": %d, '
    '"half_open_calls": %d, "failing_clients": %s, "server_time": %r, "last_transition": %s'
)
_TRANSITION_JSON = '{"time": %r, "from": %s, "to": %s, "cause": %s, "actor": %s, "generation": %d}'


_STATE_VALUE = {state: state.value for state in State}  # (`.value` is a slow property)
_STATE_JSON = {state: _quote(value) for state, value in _STATE_VALUE.items()}


def _number_json(value: Any) -> str | None:
    """json's text of an int, a finite float or None (``null``); None for anything else."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is float:
        return float.__repr__(value) if value - value == 0 else None  # (not inf, not nan)
    return int.__repr__(value) if kind is int else None


def _state_json(state: Any) -> str | None:
    """json's text of a `State`'s value; None for anything else (a str equal to one too)."""
    return _STATE_JSON[state] if state.__class__ is State else None


def _snapshot_json(s: Snapshot) -> str | None:
    """``json.dumps(snapshot_dict(s))`` without its closing ``}``: the same text
    (tests/cli/test_output_json.py) without building the dict; None where a value is not of a type
    this writes as json does (a bool for an int, a float that is not finite, a text that is not
    a str: json.dumps writes that one)."""
    g, calls, failures, slow, cx, oc, hoc = ints = (
        s.generation,
        s.calls,
        s.failures,
        s.slow_calls,
        s.consecutive_failures,
        s.open_count,
        s.half_open_calls,
    )
    server_time, last, state = s.server_time, s.last_transition, _state_json(s.state)
    if (
        set(map(type, ints)) != _INT
        or type(server_time) is not float
        or server_time - server_time != 0
        or state is None
    ):
        return None
    until, retry, forced, failing = numbers = (
        _number_json(s.open_until),
        _number_json(s.retry_after),
        _number_json(s.forced_until),
        _number_json(s.failing_clients),
    )
    if None in numbers:
        return None
    try:
        if last is None:
            last_text = "null"
        else:
            time_, generation = last.time, last.generation
            frm, to = _state_json(last.from_state), _state_json(last.to_state)
            if type(time_) is not float or time_ - time_ != 0 or type(generation) is not int or not (frm and to):
                return None
            last_text = _TRANSITION_JSON % (time_, frm, to, _quote(last.cause), _quote(last.actor), generation)
        return _SNAPSHOT_JSON % (
            _quote(s.service),
            state,
            g,
            calls,
            failures,
            round(s.failure_rate, 4),
            slow,
            round(s.slow_call_rate, 4),
            cx,
            until,
            retry,
            forced,
            _quote(s.reason),
            _quote(s.actor),
            oc,
            hoc,
            failing,
            server_time,
            last_text,
        )
    except TypeError:  # (encode_basestring_ascii takes only a str)
        return None


_INT = {int}


def utc(seconds: float | None) -> str:
    """Server time as ``YYYY-MM-DD HH:MM:SS`` (UTC), ``-`` for None."""
    if seconds is None:
        return "-"
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def state_text(state: State | str, width: int = 0) -> str:
    """The state name padded to `width` and coloured (colour shows only on a terminal)."""
    value = state.value if isinstance(state, State) else str(state)
    return click.style(value.ljust(width), **STATE_STYLES.get(value, {}))


def transition_dict(t: Transition) -> dict[str, Any]:
    """A transition (or a config change: from = to) for JSON."""
    return {
        "time": t.time,
        "from": t.from_state.value,
        "to": t.to_state.value,
        "cause": t.cause,
        "actor": t.actor,
        "generation": t.generation,
    }


def snapshot_dict(s: Snapshot, config: FleetConfig | None = None) -> dict[str, Any]:
    """A JSON-ready dict with the field names of `Snapshot` (snake_case; times in seconds since
    the epoch on the Redis server's clock, durations in seconds); `config` adds ``config``."""
    last = s.last_transition
    out: dict[str, Any] = {
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
        "failing_clients": s.failing_clients,
        "server_time": s.server_time,
        "last_transition": None if last is None else transition_dict(last),
    }
    if config is not None:
        out["config"] = fleet_config_dict(config)
    return out


def fleet_config_dict(c: FleetConfig) -> dict[str, Any]:
    """A `FleetConfig` for JSON (`BreakerConfig` field names and units)."""
    return {
        "fingerprint": c.fingerprint,
        "effective": c.effective,
        "workers": c.client,
        "overrides": c.overrides,
        "previous_fingerprint": c.previous_fingerprint,
        "fingerprint_changed_at": c.fingerprint_changed_at,
    }


def _cut(text: str, width: int) -> str:
    if width <= 1:
        return text[: max(0, width)]
    return text if len(text) <= width else text[: width - 1] + "…"


def _render(
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    right: Sequence[int] = (),
    styled: dict[int, dict[str, dict[str, Any]]] | None = None,
    width: int | None = None,
    flex: Sequence[tuple[int, int]] = (),
    headers: bool = True,
    output: str = "table",
    wrap: tuple[int, int] | None = None,
) -> str:
    """Aligned columns, two spaces apart (``output="plain"``: tab-separated, nothing cut).

    With a `width` (a terminal), the columns in `flex` give up width in that order, each down
    to its floor, until the lines fit (cut cells end with an ellipsis). `wrap` = (column,
    least width): when that column would get less, it moves to a line of its own under each
    row (indented, cut to the width), so a narrow terminal keeps it. `styled[col][cell value]`
    gives click.style arguments for a cell.
    """
    if output == "plain":
        lines = ["\t".join(header)] if headers else []
        return "\n".join([*lines, *("\t".join(r) for r in rows)])
    all_rows = [header, *rows]
    ncols = len(header)
    longest = [max(map(len, column)) for column in zip(*all_rows, strict=True)]
    widths = list(longest)
    under: int | None = None  # the column shown on a line of its own
    if width is not None:
        over = sum(widths) + 2 * (ncols - 1) - width
        for col, floor in flex:
            if over <= 0:
                break
            give = min(over, max(0, widths[col] - floor))
            widths[col] -= give
            over -= give
        if wrap is not None and (
            over > 0 or widths[wrap[0]] < max(len(r[wrap[0]]) for r in all_rows) and widths[wrap[0]] < wrap[1]
        ):
            under = wrap[0]
            widths = [max(len(r[i]) for r in all_rows) for i in range(ncols)]
            widths[under] = 0
            over = sum(widths) + 2 * (ncols - 2) - width
            for col, floor in (*flex, *((c, 8) for c, _ in flex)):
                if over <= 0:
                    break
                if col != under:
                    give = min(over, max(0, widths[col] - floor))
                    widths[col] -= give
                    over -= give
    cols = [i for i in range(ncols) if i != under]
    if under is None and widths == longest:  # (nothing cut)
        return _render_whole(all_rows if headers else rows, headers, widths, right, styled or {})
    # per column: index, width, right-aligned, last (not padded), the styles of its cells
    specs = [(i, widths[i], i in right, i == cols[-1], (styled or {}).get(i)) for i in cols]
    painted: dict[tuple[str, str], str] = {}  # (cell, value) -> the styled cell (a few distinct)
    lines = []
    for n, row in enumerate(all_rows):
        if n == 0 and not headers:
            continue
        cells = []
        for i, w, to_right, last, styles in specs:
            value = row[i]
            cell = value if len(value) <= w else _cut(value, w)
            if not last:
                cell = cell.rjust(w) if to_right else cell.ljust(w)
            if n == 0:
                cell = click.style(cell, bold=True)
            elif styles is not None and value in styles:
                done = painted.get((cell, value))
                if done is None:
                    done = painted[(cell, value)] = click.style(cell, **styles[value])
                cell = done
            cells.append(cell)
        lines.append("  ".join(cells).rstrip())
        if under is not None and n > 0 and width is not None and row[under] != "-":
            lines += _under(row[under], width)
    return "\n".join(lines)


def _render_whole(
    rows: Sequence[Sequence[str]], header: bool, widths: list[int], right: Sequence[int], styled: dict[int, Any]
) -> str:
    """`_render`'s lines when no cell is cut (nor moved under its row): the same text, each row
    one `str.format` of its cells padded to `widths` (the first row bold when it is the `header`),
    a styled column's cells styled once per distinct value."""
    last = len(widths) - 1
    fmt = "  ".join(
        "{}" if i == last or i in styled else f"{{:{'>' if i in right else '<'}{w}}}" for i, w in enumerate(widths)
    )
    lines = []

    def pad(i: int, cell: str) -> str:
        return cell if i == last else cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])

    if header:
        lines.append("  ".join(click.style(pad(i, cell), bold=True) for i, cell in enumerate(rows[0])).rstrip())
        rows = rows[1:]
    # a styled column: value -> its cell, padded and styled (any other value: padded)
    painted = {
        i: {value: click.style(pad(i, value), **style) for value, style in styles.items()}
        for i, styles in styled.items()
    }
    for row in rows:
        if painted:
            row = list(row)
            for i, cells in painted.items():
                cell = cells.get(row[i])
                row[i] = pad(i, row[i]) if cell is None else cell
        lines.append(fmt.format(*row).rstrip())
    return "\n".join(lines)


def _under(text: str, width: int, most: int = 3) -> list[str]:
    """`text` on lines of its own, indented by 4, wrapped to `width` (at most `most` lines)."""
    inner = max(8, width - 4)
    parts = textwrap.wrap(text, inner, break_long_words=True, break_on_hyphens=False) or ["-"]
    if len(parts) > most:
        parts = [*parts[: most - 1], _cut(" ".join(parts[most - 1 :]), inner)]
    return ["    " + p for p in parts]


_OPEN, _FORCED_OPEN, _DISABLED = State.OPEN, State.FORCED_OPEN, State.DISABLED


def _left(s: Snapshot) -> str:
    state = s.state
    if state is _OPEN and s.retry_after is not None:
        return format_duration(s.retry_after) if s.retry_after >= 0.001 else "0s"
    if state is _FORCED_OPEN or state is _DISABLED:
        if s.forced_until is None:
            return "until reset"
        return format_duration(max(0.001, s.forced_until - s.server_time))
    return "-"


def table(
    snapshots: Sequence[Snapshot], width: int | None = None, *, headers: bool = True, output: str = "table"
) -> str:
    """The status table, one breaker a row: state, counts in the window, time left open or forced,
    and when the breaker entered its state and why: the cause names who forced it and why
    (``manual trip by alice: INC-42``). Ages are on the server's clock.

    Fitted to `width`, the last transition's cause is kept: it goes to lines of its own under
    each row (wrapped, whole) when its column would be cut to less than 40 characters. ``output="wide"`` or ``"plain"``
    add the generation and the forced expiry (UTC), and cut nothing.
    """
    wide = output in ("wide", "plain")
    header: tuple[str, ...] = ("SERVICE", "STATE", "CALLS", "FAILED", "SLOW", "LEFT", "LAST TRANSITION")
    if wide:
        header = (*header[:6], "GEN", "FORCED UNTIL (UTC)", header[6])
    rows = []
    for s in snapshots:
        last = "-"
        if s.last_transition is not None:
            t = s.last_transition
            last = f"{ago(s.server_time - t.time)}: {safe(t.cause)}"  # into STATE (history has from>to)
        failed = f"{s.failures} ({100 * s.failure_rate:.0f}%)" if s.calls else "0"
        if s.failing_clients:  # minimum_failing_workers on: how many clients fail
            failed += f" by {s.failing_clients} client{'' if s.failing_clients == 1 else 's'}"
        state = s.state
        value = _STATE_VALUE[state] if state.__class__ is State else state.value  # (.value: a slow property)
        row: tuple[str, ...] = (safe(s.service), value, str(s.calls), failed, str(s.slow_calls), _left(s))
        if wide:
            row += (str(s.generation), utc(s.forced_until) if s.forced_until is not None else "-")
        rows.append((*row, last))
    if wide:
        return _render(header, rows, right=(2, 3, 4, 6), styled={1: STATE_STYLES}, headers=headers, output=output)
    return _render(
        header,
        rows,
        right=(2, 3, 4),
        styled={1: STATE_STYLES},
        width=width,
        flex=((6, 40), (0, 20)),
        headers=headers,
        wrap=(6, 40),
    )


def history_table(
    transitions: Sequence[Transition], width: int | None = None, *, headers: bool = True, output: str = "table"
) -> str:
    """The events of a breaker, newest first; a config change shows from = to."""
    header = ("TIME (UTC)", "FROM", "TO", "GEN", "ACTOR", "CAUSE")
    rows = [
        (utc(t.time), t.from_state.value, t.to_state.value, str(t.generation), safe(t.actor) or "-", safe(t.cause))
        for t in transitions
    ]
    return _render(
        header,
        rows,
        right=(3,),
        styled={1: STATE_STYLES, 2: STATE_STYLES},
        width=width,
        flex=((5, 30), (4, 12), (4, 5)),
        headers=headers,
        output=output,
        wrap=(5, 24),
    )


def _value(kind: str, value: Any) -> str:
    if value is None:
        return "off" if kind in ("off", "float_off") else "-"
    if kind == "ms":
        return format_duration(float(value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def config_table(c: FleetConfig, width: int | None = None, *, headers: bool = True, output: str = "table") -> str:
    """Each fleet-wide config field: in force, as the workers pass it, and the override."""
    header = ("FIELD", "IN FORCE", "WORKERS", "OVERRIDE")
    effective, client = c.effective or {}, c.client or {}
    rows = []
    for _, field, kind in CONFIG_FIELDS:
        override = _value(kind, c.overrides[field]) if field in c.overrides else "-"
        rows.append(
            (
                field,
                _value(kind, effective.get(field)) if effective else "(default)",
                _value(kind, client.get(field)) if client else "-",
                override,
            )
        )
    return _render(header, rows, width=width, headers=headers, output=output)


def config_changes(before: FleetConfig | None, after: FleetConfig) -> list[str]:
    """``field old → new`` for every value in force that changed."""
    old, new = (before.effective if before else None) or {}, after.effective or {}
    out = []
    for _, field, kind in CONFIG_FIELDS:
        if not old:
            if field in after.overrides:
                out.append(f"{field} {_value(kind, after.overrides[field])}")
        elif field in new and old.get(field) != new[field]:
            out.append(f"{field} {_value(kind, old.get(field))} → {_value(kind, new[field])}")
    return out


def check_lines(checks: Sequence[Check]) -> str:
    """One ``PASS/WARN/FAIL  name  detail`` line per check."""
    width = max((len(c.name) for c in checks), default=0)
    return "\n".join(
        f"{click.style(c.status, **CHECK_STYLES.get(c.status, {}))}  {c.name.ljust(width)}  {safe(c.detail)}"
        for c in checks
    )


def ago(seconds: float) -> str:
    """``12s ago``."""
    return f"{format_duration(max(0.0, seconds))} ago" if seconds >= 0.5 else "just now"


def local_clock() -> str:
    """The local wall-clock time (headers of --watch and the demo)."""
    return time.strftime("%H:%M:%S")
