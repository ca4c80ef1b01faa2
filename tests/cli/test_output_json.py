"""``status -o json`` over many breakers writes the text json.dumps writes, without json.dumps
for each breaker: its own fields by one format (`output._snapshot_json`), its config reused from
the row before when the very same objects hold it. Hypothesis draws snapshots with any values a
`Snapshot` can be given (bools for ints, infinities, NaN, -0.0, None, texts that need escapes),
and configs that are alike in Python but not in JSON."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from distbreaker import Snapshot, State, Transition
from distbreaker.admin import FleetConfig
from distbreaker_cli.output import _snapshot_json, dumps_rows, dumps_status, snapshot_dict

ints = st.one_of(st.integers(-5, 10**12), st.booleans())
floats = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([0.0, -0.0, 1e9 + 0.5]))
maybe_floats = st.one_of(st.none(), floats, st.integers(0, 10))
words = st.one_of(st.text(max_size=10), st.sampled_from(["", "café", "a\x1b[31mb", 'quote " and \\', "\u202e"]))
states = st.sampled_from(list(State))


def snapshot_strategy(count: Any, time: Any, maybe_time: Any) -> Any:
    """Snapshots (and their last transition) whose counts are drawn from `count`, their times
    from `time` (`maybe_time` where None is allowed)."""
    last = st.builds(Transition, words, time, states, states, words, words, count)
    return st.builds(
        Snapshot,
        service=words,
        state=states,
        generation=count,
        calls=count,
        failures=count,
        slow_calls=count,
        consecutive_failures=count,
        open_until=maybe_time,
        forced_until=maybe_time,
        reason=words,
        actor=words,
        open_count=count,
        half_open_calls=count,
        half_open_successes=count,
        server_time=time,
        last_transition=st.one_of(st.none(), last),
        config=st.one_of(st.none(), words),
        failing_clients=st.one_of(st.none(), count),
    )


snapshots = snapshot_strategy(ints, floats, maybe_floats)
counts = st.integers(-1, 10**12)
finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.sampled_from([0.0, -0.0, 1.8e9 + 0.123]))
plain_snapshots = snapshot_strategy(counts, finite, st.one_of(st.none(), finite))


def _reference(s: Snapshot) -> str | None:
    try:
        return json.dumps(snapshot_dict(s))[:-1]
    except (ZeroDivisionError, OverflowError, ValueError):  # (a bool count of 0 calls, huge ints)
        return None


@settings(max_examples=500, deadline=None)
@given(snapshots)
def test_a_snapshot_is_written_as_json_dumps_writes_it(s: Snapshot) -> None:
    """`_snapshot_json` gives json.dumps's text of `snapshot_dict`, or None (json.dumps then
    writes that one): never another text."""
    expected = _reference(s)
    try:
        got = _snapshot_json(s)
    except (ZeroDivisionError, OverflowError):
        got = None
    assert got is None or got == expected


@settings(max_examples=500, deadline=None)
@given(plain_snapshots)
def test_a_snapshot_of_ints_and_finite_floats_is_written_without_json_dumps(s: Snapshot) -> None:
    """What a read gives (ints, finite floats, None, str) is written by `_snapshot_json` itself,
    and as json.dumps writes it."""
    assert _snapshot_json(s) == json.dumps(snapshot_dict(s))[:-1]


@settings(max_examples=100, deadline=None)
@given(st.lists(snapshots, min_size=1, max_size=20))
def test_status_json_of_many_is_the_text_of_json_dumps(drawn: list[Snapshot]) -> None:
    """``status -o json`` of more than 100 breakers (one compact object per line) and its
    ``--watch`` line are json.dumps's text of the documents, whatever the snapshots hold."""
    cfg = FleetConfig("s", {"a": 1}, None, {}, "f", None, None, 1e9)
    snaps = [s for s in drawn if _reference(s) is not None] * 101
    found = [(s, cfg) for s in snaps]
    docs = []
    for s, c in found:
        doc = snapshot_dict(s, c)
        doc["config"]["workers_disagree"] = False
        docs.append(doc)
    assert dumps_status(found, ()) == dumps_rows(docs)
    assert dumps_status(found, (), lines=True) == json.dumps(docs)


def test_rows_that_share_config_objects_are_told_apart_where_json_differs() -> None:
    """A config reused from the row before is so only when JSON writes it alike: the same dict
    objects but another fingerprint (None, ""), another time (1, 1.0, 0.0, -0.0), another
    ``workers_disagree``; and dicts of equal values of other types (1, 1.0, True) or order."""
    shared = {"a": 1.0, "b": 2, "c": None}
    client = {"a": 1.0, "b": 2, "c": None}
    others: list[dict[str, Any]] = [
        {"a": 1, "b": 2, "c": None},
        {"a": True, "b": 2, "c": None},
        {"b": 2, "a": 1.0, "c": None},
        {"a": -0.0, "b": 2, "c": None},
        {"a": math.nan, "b": 2, "c": None},
    ]
    variants = [
        dict(fingerprint="f", previous_fingerprint=None, fingerprint_changed_at=None),
        dict(fingerprint=None, previous_fingerprint=None, fingerprint_changed_at=None),
        dict(fingerprint="", previous_fingerprint=None, fingerprint_changed_at=None),
        dict(fingerprint="f", previous_fingerprint="", fingerprint_changed_at=None),
        dict(fingerprint="f", previous_fingerprint="e", fingerprint_changed_at=1.0),
        dict(fingerprint="f", previous_fingerprint="e", fingerprint_changed_at=1),
        dict(fingerprint="f", previous_fingerprint="e", fingerprint_changed_at=0.0),
        dict(fingerprint="f", previous_fingerprint="e", fingerprint_changed_at=-0.0),
    ]
    found = []
    for i in range(480):  # row by row, one thing changes: the times, the fingerprints, a dict
        snap = Snapshot(f"s{i:03d}", State.CLOSED, 0, 0, 0, 0, 0, None, None, "", "", 0, 0, 0, 1e9)
        effective = others[i // 6 % len(others)] if i % 6 == 3 else shared  # (its neighbours: shared)
        names = variants[i // 6 % len(variants)]  # (another at each sixth row, after a shared one)
        cfg = FleetConfig(snap.service, effective, client, {}, server_time=1e9, **names)
        found.append((snap, cfg))
    disagree = {f"s{i:03d}" for i in range(0, 480, 7)}
    docs = []
    for s, c in found:
        doc = snapshot_dict(s, c)
        doc["config"]["workers_disagree"] = s.service in disagree
        docs.append(doc)
    assert dumps_status(found, disagree) == dumps_rows(docs)
    assert dumps_status(found, disagree, lines=True) == json.dumps(docs)
