"""The fast decoding of `Admin.inspect_all`, without Redis: each breaker read in bulk becomes its
`Snapshot` by position (`_bulk.snapshot`) instead of through `decode_snapshot`, the decoder of a
script's reply, and its `FleetConfig` as one breaker's read makes it (`_fleet_config`). Hypothesis
draws breaker hashes (every state, expiries due or not, transitions, configs, texts that are not
UTF-8, damaged fields) and the two ways must give equal objects, or the same error."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from distbreaker import Admin, BreakerConfig, State, _bulk
from distbreaker._core import decode_snapshot, state_key
from distbreaker.errors import CorruptStateError

NOW = 1_800_000_000_000  # server time of the reads, ms
PREFIX = "t"
CONFIGS = [
    ",".join(BreakerConfig()._lua),
    ",".join(BreakerConfig(minimum_calls=2, buckets=5, window=10)._lua),
    ",".join(BreakerConfig(half_open_max_calls=3, consecutive_failures=4)._lua),
]

times = st.integers(NOW - 120_000, NOW + 120_000)
counts = st.integers(0, 50)
texts = st.one_of(
    st.text(max_size=12).map(str.encode),
    st.sampled_from([b"manual trip by alice: INC-42", b"\xff\xfe not utf-8", b"caf\xc3\xa9"]),
)


@st.composite
def hashes(draw: st.DrawFn) -> dict[bytes, bytes]:
    """A breaker hash as HGETALL returns it (names and values as bytes)."""
    fields: dict[str, Any] = {
        "st": draw(st.sampled_from([s.value for s in State] + ["sideways"])),
        "g": draw(st.integers(0, 9)),
        "tc": draw(counts),
        "tf": draw(counts),
        "ts": draw(counts),
        "cx": draw(counts),
        "oc": draw(st.integers(0, 4)),
    }
    optional: dict[str, st.SearchStrategy[Any]] = {
        "ou": times,
        "fu": st.one_of(times, st.just(0)),
        "be": st.integers((NOW - 120_000) // 6000, NOW // 6000),
        "lt": times,
        "lf": st.sampled_from([s.value for s in State] + ["", "nowhere"]),
        "lc": texts,
        "la": texts,
        "fr": texts,
        "fa": texts,
        "hs": st.integers(0, 3),
        "hl": st.sampled_from(["", f"a={NOW + 5000}", f"a={NOW - 5000};b={NOW + 9000}"]),
        "cfg": st.sampled_from([*CONFIGS, "1,2,3"]),
        "cc": st.sampled_from([*CONFIGS, "", "x,y"]),
        "ov": st.sampled_from(["", "minimum_calls=5", "failure_rate_threshold=0.25;buckets=5", "unknown=1"]),
        "fp": st.sampled_from(["572b8a63c4", "0123456789"]),
        "pf": st.sampled_from(["", "572b8a63c4"]),
        "pt": st.one_of(times, st.just(0)),
        "wc": st.sampled_from([f"c1={NOW // 6000}", f"c1={NOW // 6000};c2={NOW // 6000 - 20}"]),
        "qb": st.sampled_from([6000, 2000]),
        "qn": st.sampled_from([10, 5]),
        "r3": st.sampled_from(["1:1:0", "4:2:1", "x:y"]),
        "r7": st.sampled_from(["2:0:0", "3:3:3"]),
        "c0": st.sampled_from([1, "two"]),
    }
    for name in draw(st.sets(st.sampled_from(sorted(optional)))):
        fields[name] = draw(optional[name])
    return {name.encode(): value if isinstance(value, bytes) else str(value).encode() for name, value in fields.items()}


def _steps_replies(services: list[str], hashes_: list[dict[bytes, bytes]]) -> Any:
    """`Admin._inspect_all_steps` of `services`, each answered with its hash (sans-IO)."""
    admin = Admin(object(), prefix=PREFIX)
    steps = admin._inspect_all_steps(services)
    commands = next(steps)
    assert commands[0] == ("TIME",)
    assert [c[1] for c in commands[1:]] == [state_key(PREFIX, s) for s in services]
    flat = [[x for pair in h.items() for x in pair] for h in hashes_]
    try:
        steps.send([[str(NOW // 1000).encode(), str(NOW % 1000 * 1000).encode()], *flat])
    except StopIteration as stop:
        return stop.value
    raise AssertionError("inspect_all asked for a second pipeline")


@settings(max_examples=400, deadline=None)
@given(hashes())
def test_snapshot_by_position_equals_the_decoder_of_a_reply(fields: dict[bytes, bytes]) -> None:
    """For any hash `_bulk.reply` decodes, `_bulk.snapshot` equals `decode_snapshot`, or both
    raise the same kind of error."""
    read = {_bulk._KEYS.get(name): value for name, value in fields.items()}
    try:
        out = _bulk.reply(read, read, NOW, operator=True)
    except _bulk.Corrupt:
        return
    assert out is not None
    try:
        expected: Any = decode_snapshot("svc", out)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        expected = type(exc)
    try:
        got: Any = _bulk.snapshot("svc", out)
    except (KeyError, ValueError, IndexError, TypeError) as exc:
        got = type(exc)
    assert got == expected


@settings(max_examples=100, deadline=None)
@given(st.lists(hashes(), min_size=1, max_size=6))
def test_inspect_all_finds_what_each_breakers_own_read_finds(many: list[dict[bytes, bytes]]) -> None:
    """`inspect_all`'s steps give each breaker the `Snapshot` and `FleetConfig` that one
    breaker's read gives it (`_reply_of` and `_decode`), and name the same error for the others."""
    services = [f"svc-{i}" for i in range(len(many))]
    found = _steps_replies(services, many)
    admin = Admin(object(), prefix=PREFIX)
    expected_found, expected_broken = [], {}
    for service, fields in zip(services, many, strict=True):
        read = {_bulk._KEYS.get(name): value for name, value in fields.items()}
        try:
            reply = admin._reply_of(service, _bulk.Read(state_key(PREFIX, service), read, read), NOW)
            assert reply is not None
            expected_found.append(admin._decode(service, reply))
        except CorruptStateError as exc:
            expected_broken[service] = str(exc)
    assert found.breakers == expected_found
    assert {service: str(exc) for service, exc in found.broken.items()} == expected_broken
    assert all(isinstance(exc, CorruptStateError) for exc in found.broken.values())
