"""The CLI's parameter types and rendering, without Redis."""

from __future__ import annotations

import click
import pytest

from distbreaker import Snapshot, State, Transition
from distbreaker_cli.output import history_table, table
from distbreaker_cli.params import SETTING, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("10m", 600.0),
        ("2h", 7200.0),
        ("1h30m", 5400.0),
        ("1d", 86400.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("45", 45.0),
        ("0.5", 0.5),
        (" 10M ", 600.0),
        ("1m30s", 90.0),
    ],
)
def test_durations_accept_units_and_plain_seconds(text: str, seconds: float) -> None:
    """Durations take s/m/h/d/ms, combinations like 1h30m, and plain seconds."""
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["10x", "", "m", "-5", "0", "0s", "1h-30m", "inf", "nan", "10 m", "1e400"])
def test_bad_durations_are_refused(text: str) -> None:
    """Anything else, zero and negative durations are refused with the accepted forms named."""
    with pytest.raises(ValueError, match="90s, 10m, 2h"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.25, "250ms"),
        (1.5, "1.5s"),
        (9.0, "9s"),
        (45.4, "45s"),
        (90, "1m30s"),
        (600, "10m"),
        (5400, "1h30m"),
        (604800, "7d"),
        (None, "-"),
    ],
)
def test_durations_print_short(seconds: float | None, text: str) -> None:
    """Durations print as the shortest readable form (two units at most)."""
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("minimum_calls=20", ("minimum_calls", 20)),
        ("open_duration=30s", ("open_duration", 30.0)),
        ("window=2m", ("window", 120.0)),
        ("failure_rate_threshold=0.4", ("failure_rate_threshold", 0.4)),
        ("consecutive_failures=off", ("consecutive_failures", None)),
        ("consecutive_failures=5", ("consecutive_failures", 5)),
        (" buckets = 6 ", ("buckets", 6)),
    ],
)
def test_settings_convert_user_units(text: str, parsed: tuple[str, object]) -> None:
    """--set takes BreakerConfig names and units (durations with the duration syntax)."""
    assert SETTING.convert(text, None, None) == parsed


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("minimum_calls", "is not name=value"),
        ("bogus=1", "is not a config field"),
        ("slow_call_duration=1s", "each worker's own setting"),
        ("open_duration_ms=5000", "use open_duration="),
        ("minimum_calls=lots", "'lots' is not an integer"),
        ("open_duration=10x", "is not a duration"),
        ("failure_rate_threshold=high", "is not a number"),
    ],
)
def test_bad_settings_name_the_problem(text: str, message: str) -> None:
    """A bad --set names the field and what is wrong (click turns it into exit 2)."""
    with pytest.raises(click.BadParameter, match=message):
        SETTING.convert(text, None, None)


def _snap(service: str, state: State, **kw: object) -> Snapshot:
    values: dict[str, object] = dict(
        service=service,
        state=state,
        generation=1,
        calls=48,
        failures=31,
        slow_calls=2,
        consecutive_failures=0,
        open_until=None,
        forced_until=None,
        reason="",
        actor="",
        open_count=0,
        half_open_calls=0,
        half_open_successes=0,
        server_time=1_700_000_100.0,
    )
    values.update(kw)
    return Snapshot(**values)  # type: ignore[arg-type]


def test_table_aligns_columns_and_fits_a_terminal() -> None:
    """Columns line up whatever the cell widths; given a width, every line fits it: at 120 columns
    a long cause is cut (to 40+ characters) with an ellipsis; at 100, 80 and 60 the last
    transition's cause moves under its row (wrapped, whole) instead of being cut away; without a
    width (piped) nothing is cut."""
    reason = "INC-42 database failover in progress, do not reset before the DBA says so"
    last = Transition(
        "inventory", 1_700_000_040.0, State.CLOSED, State.FORCED_OPEN, f"manual trip by alice: {reason}", "alice", 1
    )
    snaps = [
        _snap("payments", State.OPEN, open_until=1_700_000_125.0),
        _snap(
            "inventory-service.eu-west-1",
            State.FORCED_OPEN,
            forced_until=1_700_000_700.0,
            actor="alice",
            reason=reason,
            last_transition=last,
        ),
        _snap("email", State.DISABLED, actor="bob", reason="migration", calls=0, failures=0),
    ]
    for width in (120, 100, 80, 60):
        fitted = click.unstyle(table(snaps, width=width)).splitlines()
        assert all(len(line) <= width for line in fitted), width
        rows = [line for line in fitted if not line.startswith("    ")]
        assert len(rows) == 4
        starts = {line.index(state) for line, state in zip(rows[1:], ("open", "forced_open", "disabled"))}
        assert len(starts) == 1  # the STATE column is aligned
        assert "25s" in rows[1] and "10m" in rows[2] and "until reset" in rows[3]
        assert "31 (65%)" in rows[1]
        if width >= 120:  # 40+ characters of it fit beside the row: cut there
            assert rows[2].endswith("…") and len(fitted) == 4
        else:  # the cause, whole, on lines of its own under the row
            assert "LAST TRANSITION" not in fitted[0]
            under = fitted[fitted.index(rows[2]) + 1 : fitted.index(rows[3])]
            assert " ".join(line.strip() for line in under) == f"1m ago: manual trip by alice: {reason}"
    assert "1m ago: manual trip by alice: INC-42 d" in click.unstyle(table(snaps, width=120)).splitlines()[2]
    full = click.unstyle(table(snaps)).splitlines()
    assert full[2].endswith(f"1m ago: manual trip by alice: {reason}")


def test_output_modes_and_no_headers() -> None:
    """-o wide adds the generation and the forced expiry and cuts nothing; -o plain is the same,
    tab-separated; --no-headers drops the header line of both."""
    snaps = [_snap("payments", State.FORCED_OPEN, forced_until=1_700_000_700.0, generation=7)]
    wide = click.unstyle(table(snaps, width=60, output="wide")).splitlines()
    assert wide[0].split()[6:9] == ["GEN", "FORCED", "UNTIL"] and "2023-11-14 22:25:00" in wide[1]
    assert " 7 " in wide[1]
    plain = table(snaps, output="plain", headers=False).splitlines()
    assert len(plain) == 1 and plain[0].split("\t")[:3] == ["payments", "forced_open", "48"]
    assert plain[0].split("\t")[6:8] == ["7", "2023-11-14 22:25:00"]


def test_states_are_coloured_only_as_styles() -> None:
    """The state cell carries ANSI colour (shown on a terminal) without shifting the columns."""
    rendered = table([_snap("a", State.OPEN), _snap("b", State.CLOSED)])
    assert "\x1b[31m" in rendered and "\x1b[32m" in rendered
    plain = click.unstyle(rendered).splitlines()
    assert plain[1].index("open") == plain[2].index("closed")


def test_history_shows_config_changes_with_from_equal_to() -> None:
    """History rows: time (UTC), from, to, generation, actor, cause; newest first as given."""
    events = [
        Transition("a", 1_700_000_060.0, State.CLOSED, State.CLOSED, "config set by bob: minimum_calls=20", "bob", 1),
        Transition("a", 1_700_000_000.0, State.CLOSED, State.OPEN, "failure_rate 0.62 >= 0.50 over 48 calls", "", 1),
    ]
    lines = click.unstyle(history_table(events)).splitlines()
    assert lines[0].split() == ["TIME", "(UTC)", "FROM", "TO", "GEN", "ACTOR", "CAUSE"]
    assert lines[1].startswith("2023-11-14 22:14:20") and "config set by bob" in lines[1]
    assert " - " in lines[2] and "failure_rate 0.62" in lines[2]
