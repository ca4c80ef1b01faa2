"""Issue 16 items 2 and 3 on a real server: the quorum of failing clients
(`minimum_failing_workers`) and the half-open verdict by rate (`half_open_failure_rate_threshold`).

The scenarios drive the scripts and the reference model in lock-step (`BreakerMachine` of
test_model.py: every reply, stream entry and TTL is compared), then assert what the feature
promises. The client tests check what a worker sends: nothing more while the quorum is off.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import redis

from distbreaker import Admin, Breaker, BreakerConfig, State, _schema
from distbreaker._core import BreakerCore, Eval, Outcome
from distbreaker._scripts import SCRIPTS

from .test_model import CLIENT, BreakerMachine

pytestmark = pytest.mark.redis

QUORUM = dataclasses.replace(CLIENT, minimum_calls=4, window_ms=10_000, buckets=5, minimum_failing_workers=2)
RATE = dataclasses.replace(CLIENT, minimum_calls=1, half_open_max_calls=4, half_open_failure_rate_threshold=0.5)


@pytest.fixture
def machine(rtext: redis.Redis, prefix: str) -> Iterator[BreakerMachine]:
    """A `BreakerMachine` driven by hand: one fresh key, the model, `QUORUM` as the worker."""
    mc = BreakerMachine(rtext, prefix)
    mc.setup(QUORUM, offset=0, eager_config=False)
    mc.statistics = False
    try:
        yield mc
    finally:
        mc.teardown()


def failing(mc: BreakerMachine) -> int:
    """read.lua's failing clients (after a lock-step read)."""
    mc.read(True)
    return mc.m.extras[-1]


def test_one_failing_client_does_not_trip_two_do(machine: BreakerMachine) -> None:
    """w1 fails 10 calls (rate 1.0 over 10 >= 4 calls): closed, 1 failing client; w2's first
    failure makes 2 and opens it, with the count in the cause."""
    mc = machine
    for _ in range(10):
        mc.do_record(mc.m.g, 0, 1, 0, "", "w1")
    assert mc.m.st == "closed" and (mc.m.tc, mc.m.tf) == (10, 10)
    assert failing(mc) == 1
    mc.do_record(mc.m.g, 1, 0, 0, "", "w2")  # a success says nothing about w2
    assert mc.m.st == "closed" and failing(mc) == 1
    mc.do_record(mc.m.g, 0, 1, 0, "", "w2", batched=True)  # a batched flush names its client
    assert mc.m.st == "open"
    assert mc.m.lc == "failure_rate 0.92 >= 0.50 over 12 calls from 2 failing clients"
    assert failing(mc) == 0, "the window (and its failing clients) is cleared on open"


def test_a_success_that_would_trip_without_the_quorum_takes_the_general_path(machine: BreakerMachine) -> None:
    """The record fast path does not read the quorum: w1's failures then anonymous successes
    keep the rate over the threshold; every record agrees with the model and nothing trips."""
    mc = machine
    for _ in range(3):
        mc.do_record(mc.m.g, 0, 1, 0, "", "w1")
    for _ in range(3):
        mc.do_record(mc.m.g, 1, 0, 0, "")  # 3 / 4, 3 / 5, 3 / 6 >= 0.5: a cause without the quorum
    assert mc.m.st == "closed" and mc.m.tc == 6


def test_failing_clients_leave_with_their_bucket(machine: BreakerMachine) -> None:
    """A client counts while its last failure is in the window: w1 fails, the window passes,
    w2 fails: 1 failing client, still closed."""
    mc = machine
    for _ in range(4):
        mc.do_record(mc.m.g, 0, 1, 0, "", "w1")
    mc.now += 8_000  # 4 of 5 buckets later: w1 still in the window
    mc.do_record(mc.m.g, 0, 1, 0, "", "w2")
    assert mc.m.st == "open"
    mc.control("reset", 0, "", "alice", True)  # at a bucket edge: bucket E
    for _ in range(4):
        mc.do_record(mc.m.g, 0, 1, 0, "", "w1")
    mc.now += 4_000  # E + 2
    mc.do_record(mc.m.g, 1, 0, 0, "", "w3")  # a success (w3 is not failing); the ring rotates
    mc.now += 6_000  # E + 5: bucket E (w1's 4 failures, and w1) leaves the window
    for _ in range(4):
        mc.do_record(mc.m.g, 0, 1, 0, "", "w2")
    assert (mc.m.st, mc.m.tc, mc.m.tf) == ("closed", 5, 4) and failing(mc) == 1
    assert [c for c, _ in mc.m.wc] == ["w2"]


def test_at_most_32_failing_clients_are_kept(machine: BreakerMachine) -> None:
    """40 clients fail once each: the hash keeps the 32 most recent (the bound of the field)."""
    mc = machine
    mc.switch_client(dataclasses.replace(QUORUM, minimum_calls=1000))
    for i in range(40):
        mc.do_record(mc.m.g, 0, 1, 0, "", f"c{i}")
    assert failing(mc) == _schema.MAX_FAILING_CLIENTS == 32
    assert [c for c, _ in mc.m.wc][:2] == ["c8", "c9"]
    assert len(mc.r.hget(mc.key, "wc") or "") < 1000


def test_a_bad_client_id_is_refused_and_writes_nothing(machine: BreakerMachine) -> None:
    """A reporter (record.lua's ARGV[9]) must be a client id: 'a=b;c' would break `wc`; refused
    even with the quorum off and from a success, as from a failure."""
    mc = machine
    mc.do_record(mc.m.g, 1, 0, 0, "")
    before = mc.r.hgetall(mc.key)
    for s, f in ((0, 1), (1, 0)):
        with pytest.raises(redis.ResponseError, match="a reporter is a client id"):
            mc.call("record", str(mc.m.g), str(s), str(f), "0", "", "", "a=b;c")
    assert mc.r.hgetall(mc.key) == before


# -- half-open verdict by rate -----------------------------------------------------------------
def half_open(mc: BreakerMachine, cfg: Any) -> None:
    """Open with one failure (minimum_calls=1), then wait until half-open."""
    mc.switch_client(cfg)
    mc.do_record(mc.m.g, 0, 1, 0, "")
    assert mc.m.st == "open"
    mc.now = mc.m.ou
    mc.read(False)
    assert mc.m.st == "half_open"


def test_one_failed_probe_of_four_does_not_reopen(machine: BreakerMachine) -> None:
    """x = 0.5 over 4 probes: a failed probe, then successes: closed at the 3rd success (1 of 4
    failing is below 0.5 whatever the 4th does)."""
    mc = machine
    half_open(mc, RATE)
    mc.do_record(mc.m.g, 0, 1, 0, "")
    mc.do_record(mc.m.g, 1, 0, 0, "")
    mc.do_record(mc.m.g, 1, 0, 0, "")
    assert (mc.m.st, mc.m.hs, mc.m.hf) == ("half_open", 2, 1)
    mc.do_record(mc.m.g, 1, 0, 0, "")
    assert mc.m.st == "closed" and mc.m.lc == "3 of 4 probes succeeded, failure rate < 0.50"


def test_half_of_the_probes_failing_reopens_at_once(machine: BreakerMachine) -> None:
    """x = 0.5 over 4 probes: the 2nd failed (or slow) probe reopens, with backoff."""
    mc = machine
    half_open(mc, RATE)
    mc.do_record(mc.m.g, 1, 0, 1, "")  # slow: counts as failed
    mc.do_record(mc.m.g, 1, 0, 0, "")
    mc.do_record(mc.m.g, 0, 1, 0, "")
    assert mc.m.st == "open" and mc.m.lc == "2 of 4 probes failed, 0.50 >= 0.50" and mc.m.oc == 2


def test_the_default_keeps_one_failed_probe_reopens(machine: BreakerMachine) -> None:
    """half_open_failure_rate_threshold off (the default): 0.1's rule, unchanged."""
    mc = machine
    half_open(mc, dataclasses.replace(RATE, half_open_failure_rate_threshold=0.0))
    mc.do_record(mc.m.g, 1, 0, 0, "")
    assert mc.m.st == "closed" and mc.m.lc == "1 probe succeeded"
    half_open(mc, dataclasses.replace(RATE, half_open_failure_rate_threshold=0.0, half_open_successes=3))
    mc.do_record(mc.m.g, 1, 0, 0, "")
    mc.do_record(mc.m.g, 0, 1, 0, "")
    assert mc.m.st == "open" and mc.m.lc == "probe failed"


def test_a_stored_config_of_13_values_reads_the_new_ones_as_off(machine: BreakerMachine) -> None:
    """A breaker written by 0.1 (13 values in `cfg`/`cc`) still works for operators and for a
    worker whose config leaves the new values off (same fingerprint as 0.1)."""
    mc = machine
    old = dataclasses.replace(QUORUM, minimum_failing_workers=0)
    mc.switch_client(old)
    mc.do_record(mc.m.g, 1, 0, 0, "")
    thirteen = ",".join(old.argv()[:13])
    assert old.fingerprint == _schema.fingerprint(old.argv()[:13])
    mc.r.hset(mc.key, mapping={"cfg": thirteen, "cc": thirteen})
    mc.m.stored = mc.m.cc = old.argv()[:13]  # the model reads them the same way (Cfg.from_argv)
    mc.read(True)
    assert mc.m.extras[1] == thirteen
    for _ in range(3):  # 3 of 4 failed: a transition, which reads the whole stored config
        mc.do_record(mc.m.g, 0, 1, 0, "")
    assert mc.m.st == "open" and mc.m.lc == "failure_rate 0.75 >= 0.50 over 4 calls"


# -- what a worker sends --------------------------------------------------------------------------
def requests(**cfg: Any) -> list[Eval]:
    """The record requests of a core (config already sent) for: success, failure, slow success."""
    core = BreakerCore("svc", BreakerConfig(slow_call_duration=1.0, **cfg), "p", None, SCRIPTS)
    core.config_sent = True
    out = []
    for outcome, duration in ((Outcome.SUCCESS, 0.0), (Outcome.FAILURE, 0.0), (Outcome.SUCCESS, 2.0)):
        request = core.record((0, ""), outcome, duration)
        assert isinstance(request, Eval)
        out.append(request)
    return out


def test_with_the_quorum_off_a_record_sends_nothing_more() -> None:
    """Quorum off: every record is now, fingerprint and its own 7 (no batch id, no reporter), no
    config (it comes only after NOCONFIG)."""
    for requests_ in (requests(), requests(half_open_failure_rate_threshold=0.5)):
        assert [r.args[2:] for r in requests_] == [
            ["0", "1", "0", "0", "", "", ""],
            ["0", "0", "1", "0", "", "", ""],
            ["0", "1", "0", "1", "", "", ""],
        ]
        assert all(r.config is not None for r in requests_)


def test_with_the_quorum_on_only_failed_and_slow_calls_say_who_reports() -> None:
    """Quorum on: a success is unchanged; a failure and a slow success say this process's id as
    the reporter (ARGV[9]), the config still only after NOCONFIG."""
    success, failure, slow = requests(minimum_failing_workers=2)
    assert success.args[2:] == ["0", "1", "0", "0", "", "", ""]
    for r in (failure, slow):
        assert len(r.args) == 9 and r.args[7] == "" and r.config is not None
        assert r.args[8].isalnum() and len(r.args[8]) == 16


def test_status_shows_the_failing_clients(r: redis.Redis, prefix: str) -> None:
    """Admin.status (and Breaker.snapshot) carry failing_clients: 1 after this process failed
    with the quorum on; 0 for a breaker with the quorum off, which stores no `wc`."""
    on = Breaker("q-on", r, BreakerConfig(minimum_failing_workers=3), prefix=prefix, listen=False)
    off = Breaker("q-off", r, BreakerConfig(), prefix=prefix, listen=False)
    for b, n in ((on, 12), (off, 10)):  # off trips at the 10th (minimum_calls)
        for _ in range(n):
            with pytest.raises(ZeroDivisionError):
                b.call(lambda: 1 / 0)
    admin = Admin(r, prefix=prefix)
    snap = admin.status("q-on")
    assert (snap.state, snap.failures, snap.failing_clients) == (State.CLOSED, 12, 1)
    assert on.snapshot().failing_clients == 1
    assert admin.status("q-off").state is State.OPEN and admin.status("q-off").failing_clients == 0
    assert r.hget(f"{prefix}:{{q-off}}", "wc") is None
