"""The sans-IO core and helpers, without Redis."""

from __future__ import annotations

from datetime import timedelta

import pytest

from distbreaker import BreakerConfig, CircuitOpenError, State
from distbreaker._core import ALLOW, ASK, REJECT, FAILURE, IGNORED, SUCCESS, View, classify, keys_for, service_of_key
from distbreaker.errors import redact


def reply(state: str, now_ms: int = 1_000_000, open_until: int = 0, forced_until: int = 0,
          reason: str = "", cause: str = "") -> list[object]:
    return [state.encode(), 3, now_ms, open_until, 0, 0, 0, 0, forced_until, reason.encode(), b"",
            0, b"", cause.encode(), b"", 0, 0, 0]


def test_keys_share_the_service_hash_tag() -> None:
    """Both keys of a breaker carry {service}, so they live in one Cluster slot."""
    k = keys_for("distbreaker", "payments")
    assert (k.state, k.events, k.channel) == (
        "distbreaker:{payments}", "distbreaker:{payments}:events", "distbreaker:events")
    assert service_of_key("distbreaker", k.state) == "payments"
    assert service_of_key("distbreaker", k.events) is None


def test_view_allows_closed_while_fresh_then_asks() -> None:
    """A closed cache admits locally until it is older than max_staleness."""
    v = View(max_staleness=1.0)
    assert v.decide(0.0) == ASK
    v.update(reply("closed"), local_now=10.0)
    assert v.decide(10.5) == ALLOW
    assert v.decide(11.01) == ASK


def test_view_rejects_open_until_mapped_local_time() -> None:
    """open_until (server ms) maps to local time through the offset measured at receipt."""
    v = View(max_staleness=100.0)
    v.update(reply("open", now_ms=5_000_000, open_until=5_030_000, reason="probe failed"), local_now=7.0)
    assert v.decide(36.9) == REJECT
    assert v.decide(37.0) == ASK
    err = v.rejection("svc", 27.0)
    assert isinstance(err, CircuitOpenError)
    assert (err.state, err.retry_after, err.reason) == ("open", pytest.approx(10.0), "probe failed")


def test_view_forced_open_without_expiry_rejects_until_stale() -> None:
    """forced_open without expiry rejects with retry_after None until the cache goes stale."""
    v = View(max_staleness=1.0)
    v.update(reply("forced_open", reason="INC-42"), local_now=0.0)
    assert v.decide(0.5) == REJECT
    assert v.rejection("svc", 0.5).retry_after is None
    assert v.decide(1.5) == ASK


def test_half_open_always_asks() -> None:
    """Every half-open admission needs a lease from Redis."""
    v = View(max_staleness=1.0)
    v.update(reply("half_open"), local_now=0.0)
    assert v.decide(0.0) == ASK


def test_classify() -> None:
    """Returned = success; failure_exceptions fail; ignored and BaseExceptions count nothing."""
    cfg = BreakerConfig(failure_exceptions=(OSError,), ignored_exceptions=(FileNotFoundError,))
    assert classify(cfg, None) == SUCCESS
    assert classify(cfg, OSError()) == FAILURE
    assert classify(cfg, FileNotFoundError()) == IGNORED
    assert classify(cfg, KeyError()) == SUCCESS
    assert classify(cfg, KeyboardInterrupt()) == IGNORED


def test_config_durations_accept_timedelta_and_fingerprint_tracks_values() -> None:
    """timedelta durations normalise to seconds; equal configs share a fingerprint."""
    a = BreakerConfig(window=timedelta(minutes=2), open_duration=timedelta(seconds=5))
    b = BreakerConfig(window=120, open_duration=5.0)
    assert a.window == 120.0 and a.fingerprint == b.fingerprint
    assert BreakerConfig(minimum_calls=11).fingerprint != b.fingerprint
    assert a.replace(minimum_calls=3).minimum_calls == 3


def test_config_floats_round_trip_exactly() -> None:
    """Floats go to Lua as repr(), which parses back to the same double."""
    c = BreakerConfig(failure_rate_threshold=0.1 + 0.2)
    assert float(c._lua[0]) == 0.1 + 0.2


@pytest.mark.parametrize(("text", "secret"), [
    ("redis://:hunter2@host:6379/0", "hunter2"),
    ("Error connecting to rediss://alice:s3cr3t@db.example:6380", "s3cr3t"),
    ("{'password': 'pa55'}", "pa55"),
    ("password=abc123 host=x", "abc123"),
])
def test_redact_hides_passwords(text: str, secret: str) -> None:
    """Passwords in URLs and key=value pairs are replaced by ***."""
    out = redact(text)
    assert secret not in out and "***" in out


def test_circuit_open_error_pickles_and_formats() -> None:
    """CircuitOpenError keeps its fields through pickle (multiprocessing) and formats lazily."""
    import pickle

    e = pickle.loads(pickle.dumps(CircuitOpenError("svc", "open", 1.5, "why")))
    assert (e.service, e.state, e.retry_after, e.reason) == ("svc", "open", 1.5, "why")
    assert str(e) == "circuit 'svc' is open; retry after 1.500s (why)"
    assert State("half_open") is State.HALF_OPEN
