"""record.lua's fast path for the batched flush (issue 15, item 1) gives exactly what the general
path gives: the same reply, the same breaker hash, the same batch ids and events, or the same
error. A flush sends its config only when the script asks for it (NOCONFIG), as the common
record does.

Each step runs on two breakers at the same test clock: one with the real record script, whose
fast-path return is marked (so a test knows which path answered), and one with the same script
with its fast path cut out (the general path only). After each step both keys must hold the
same fields; the tests then say which path they expect. `tests/lua/test_model.py` checks both
paths against the reference model besides.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
import redis
from model import Cfg

from distbreaker._reply import STATE, TRANSITIONS, is_lean
from distbreaker._scripts import SCRIPTS

pytestmark = pytest.mark.redis

T0 = 1_700_000_000_000  # 2000 ms into a 6 s bucket: the steps below stay in one bucket
# window 60 s in 10 buckets, minimum_calls 20, the rate 0.5 trips; consecutive failures off
CFG = Cfg(0.5, 20, 60_000, 10, 0, 0.5, 1_000, 2.0, 5_000, 1, 1, 500, 86_400_000)
# the same with a quorum of 2 failing clients (minimum_failing_workers)
QUORUM = Cfg(0.5, 20, 60_000, 10, 0, 0.5, 1_000, 2.0, 5_000, 1, 1, 500, 86_400_000, 0.0, 2)

TEXT = SCRIPTS["record"].text.decode()
_FAST_START = (
    "\nif #ARGV == CFG and ARGV[7] == '' and ARGV[9] == '' and H_st == 'closed' and H_fp == FP"
    " and not REFRESH_DUE then\n"
)
_LIB_START = "-- the hot fields the fast path did not read"  # (then the library: the general path)
_FAST_RETURN = "      return now  -- the bare reply: closed, at the generation the call sent (g, as checked above)\n"
assert TEXT.count(_FAST_START) == 1 and TEXT.count(_LIB_START) == 1
assert TEXT.index(_FAST_START) < TEXT.index(_LIB_START)
assert TEXT.count(_FAST_RETURN) == 1
# the general path only: the fast-path block cut out
GENERAL = TEXT[: TEXT.index(_FAST_START)] + "\n" + TEXT[TEXT.index(_LIB_START) :]
# the real script, its fast path's answer marked with a 4th field
TRACED = TEXT.replace(_FAST_RETURN, "      return {'fast', now}\n")


def _error(exc: Exception) -> str:
    """An error's own text, without the script's line, SHA or name (they differ by design)."""
    text = str(exc)
    if "distbreaker:" in text:
        text = text[text.index("distbreaker:") :]
    return re.split(r" script: [0-9a-f]{40}|\(call to f_", text)[0].strip()


class Pair:
    """Two breakers (traced real script, general path only) driven by the same calls."""

    def __init__(self, r: redis.Redis, prefix: str) -> None:
        self.r = r
        self.now = T0
        self.keys = []
        for _ in range(2):
            key = f"{prefix}:{{flush-{uuid.uuid4().hex[:8]}}}"
            self.keys.append((key, key + ":events", key + ":ids"))

    def flush(
        self,
        s: int,
        f: int,
        slow: int = 0,
        batch: str = "w1:1",
        cfg: Cfg = CFG,
        gen: int = 0,
        ids: bool = True,
        reporter: str = "",
    ) -> tuple[Any, bool]:
        """One batched flush on both breakers, as the flusher sends it (the config only after
        NOCONFIG): (the reply, whether the fast path answered). Both must answer the same (or
        fail with the same error) and leave the same state."""
        argv = [str(self.now), cfg.fingerprint, str(gen), str(s), str(f), str(slow), "", batch, reporter]
        try:
            return self.run(argv, ids)
        except redis.ResponseError as exc:
            if "NOCONFIG" not in str(exc):
                raise
        return self.run([*argv, *cfg.argv()], ids)

    def run(self, argv: list[str], ids: bool = True) -> tuple[Any, bool]:
        """`argv` on both breakers: (the reply, whether the fast path answered)."""
        out = []
        for text, keys in zip((TRACED, GENERAL), self.keys, strict=True):
            ks = keys if ids else keys[:2]
            try:
                out.append(self.r.eval(text, len(ks), *ks, *argv))
            except redis.ResponseError as exc:  # (the key and service named as the other's)
                out.append(redis.ResponseError(str(exc).replace(keys[0], "<key>").replace(keys[0][-15:-1], "<svc>")))
        traced, general = out
        if isinstance(general, Exception):
            assert isinstance(traced, Exception) and _error(traced) == _error(general), (traced, general)
            self.same_state()
            raise general
        fast = isinstance(traced, list) and traced[:1] == ["fast"]
        if fast:
            traced = traced[1]
        assert traced == general, (traced, general)
        self.same_state()
        return general, fast

    def hset(self, field: str, value: str) -> None:
        for keys in self.keys:
            self.r.hset(keys[0], field, value)

    def control(self, op: str, reason: str) -> None:
        for keys in self.keys:
            self.r.eval(SCRIPTS["control"].text, 2, *keys[:2], str(self.now), "", op, "0", reason, "alice")

    def hash(self, i: int = 0) -> dict[str, str]:
        return self.r.hgetall(self.keys[i][0])

    def ids(self, i: int = 0) -> dict[str, str]:
        """The batch ids: client -> its highest applied seq (without the refresh time, field '')."""
        return {k: v for k, v in self.r.hgetall(self.keys[i][2]).items() if k}

    def same_state(self) -> None:
        """The same breaker hash, batch ids, events (without their stream ids) and expiry set."""
        a, b = self.keys
        assert self.r.hgetall(a[0]) == self.r.hgetall(b[0])
        assert self.r.hgetall(a[2]) == self.r.hgetall(b[2])
        assert [e for _, e in self.r.xrange(a[1])] == [e for _, e in self.r.xrange(b[1])]
        for x, y in zip(a, b, strict=True):  # the expiry: set on both or on neither (-1), or no key (-2)
            px, py = self.r.pttl(x), self.r.pttl(y)
            assert (px > 0) == (py > 0) and min(px, 0) == min(py, 0), (x, px, py)


@pytest.fixture
def pair(rtext: redis.Redis, prefix: str) -> Pair:
    return Pair(rtext, prefix)


def test_the_cut_and_the_marker_change_only_the_fast_path() -> None:
    """GENERAL has no fast path and the whole library; TRACED differs from the script only in
    the fast path's return."""
    assert "string.match(ARGV[8], BATCH_ID)" not in GENERAL and "local function begin(" in GENERAL
    assert TRACED.replace("      return {'fast', now}\n", _FAST_RETURN) == TEXT


def test_flushes_take_the_fast_path_and_write_what_the_general_path_writes(pair: Pair) -> None:
    """The first flush creates the breaker (NOCONFIG, then with the config: general path); then
    flushes of successes, failures and slow calls from two clients, and an empty one, are counted
    by the fast path with no config sent: the same bare reply, counts, cx and batch ids as the
    general path."""
    reply, fast = pair.flush(3, 0, batch="w1:1")
    assert reply == T0 and not fast  # creates the key and stores the config
    steps = [(7, 3, 0, "w1:2"), (0, 2, 1, "w2:1"), (4, 0, 2, "w2:2"), (0, 0, 0, "w1:3"), (1, 1, 1, "w1:10")]
    for s, f, slow, batch in steps:
        pair.now += 1
        reply, fast = pair.flush(s, f, slow, batch)
        assert fast and reply == pair.now, batch
    h = pair.hash()
    assert (h["c0"], h["tc"], h["f0"], h["tf"], h["s0"], h["ts"]) == ("21", "21", "6", "6", "4", "4")
    assert h["cx"] == "1"  # the last batch: 1 success then 1 failure
    assert pair.ids() == {"w1": "10", "w2": "2"}
    assert 3_600_000 < pair.r.pttl(pair.keys[0][2]) <= 7_200_000


def test_the_ids_expiry_is_refreshed_once_an_hour(pair: Pair) -> None:
    """The ids key's expiry (2 hours) is set by the first batch and refreshed by the first batch
    after the time in its field '' (an hour later), not by the flushes between: on both paths."""
    pair.flush(1, 0, batch="w1:1")
    ids = pair.keys[0][2]
    assert pair.r.hget(ids, "") == str(T0 + 3_600_000)
    for keys in pair.keys:
        pair.r.pexpire(keys[2], 600_000)
    pair.now += 1
    _, fast = pair.flush(1, 0, batch="w2:1")  # a new client, the refresh not due: no PEXPIRE
    assert fast and pair.r.pttl(ids) <= 600_000 and pair.ids() == {"w1": "1", "w2": "1"}
    pair.now += 1
    for keys in pair.keys:  # the hour has passed (as if: the breaker's own bucket stays the same)
        pair.r.hset(keys[2], "", str(pair.now))
    _, fast = pair.flush(1, 0, batch="w1:2")
    assert fast and pair.r.pttl(ids) > 600_000 and pair.r.hget(ids, "") == str(pair.now + 3_600_000)
    pair.hset("xr", str(pair.now))  # the general path refreshes the same way
    for keys in pair.keys:
        pair.r.hset(keys[2], "", str(pair.now))
        pair.r.pexpire(keys[2], 600_000)
    _, fast = pair.flush(1, 0, batch="w1:3")
    assert not fast and pair.r.pttl(ids) > 600_000 and pair.r.hget(ids, "") == str(pair.now + 3_600_000)


def test_a_duplicate_seq_counts_nothing(pair: Pair) -> None:
    """A flush retried after a lost reply (its seq applied already), or an older seq, counts
    nothing and leaves the batch ids as they were; on the fast path, as on the general path."""
    pair.flush(3, 0, batch="w1:1")
    pair.now += 1
    pair.flush(2, 1, batch="w1:5")
    before, ids = pair.hash(), pair.ids()
    for batch in ("w1:5", "w1:4", "w1:0"):
        pair.now += 1
        reply, fast = pair.flush(5, 5, 2, batch)
        assert fast and reply == pair.now
        assert pair.hash() == before and pair.ids() == ids == {"w1": "5"}
    pair.now += 1
    _, fast = pair.flush(1, 0, batch="w1:6")  # the next seq counts again
    assert fast and pair.hash()["tc"] == str(int(before["tc"]) + 1) and pair.ids() == {"w1": "6"}


def test_a_broken_stored_config_is_asked_for_when_the_whole_config_is_needed(pair: Pair) -> None:
    """`cfg` lost or not a config under the same fingerprint: flushes that need only the hot
    config (`q*`) count as before, on both paths; the first that needs the whole config (here the
    due refresh of the expiry) is answered NOCONFIG, and the config it then sends is stored again."""
    pair.flush(3, 0)
    for edited in ("garbage", None):
        if edited is None:
            for keys in pair.keys:
                pair.r.hdel(keys[0], "cfg")
        else:
            pair.hset("cfg", edited)
        pair.now += 1
        _, fast = pair.flush(1, 0, batch=f"w1:{pair.now}")
        assert fast and pair.hash().get("cfg") == edited
        pair.hset("xr", str(pair.now))
        _, fast = pair.flush(1, 0, batch=f"w1:{pair.now + 1}")
        assert not fast and pair.hash()["cfg"] == ",".join(CFG.argv())


def test_an_override_is_in_the_stored_hot_config(pair: Pair) -> None:
    """An operator's override (`ov`, here minimum_calls=2) is in the stored config and its hot
    part, which both paths run on: 1 failure in 2 calls trips (the general path makes the
    transition); cleared, the fast path answers again."""
    pair.flush(1, 0)
    pair.control("config", "minimum_calls=2")
    assert pair.hash()["ov"] == "minimum_calls=2" and pair.hash()["qm"] == "2"
    pair.now += 1
    reply, fast = pair.flush(0, 1, batch="w1:2")
    assert not fast and reply[STATE] == "open" and reply[TRANSITIONS] == "closed>open"
    pair.control("reset", "")
    pair.control("config", "")  # overrides cleared: `cfg` is the client's again
    assert "ov" not in pair.hash()
    pair.now += 1
    _, fast = pair.flush(1, 0, batch="w1:3", gen=2)
    assert fast


def test_a_corrupt_hot_field_fails_as_before(pair: Pair) -> None:
    """A hot field that is not a number: CORRUPT from both paths, nothing written."""
    pair.flush(1, 0)
    pair.hset("tc", "lots")
    pair.now += 1
    with pytest.raises(redis.ResponseError, match='CORRUPT .*tc is "lots", not a number'):
        pair.flush(1, 0, batch="w1:2")
    assert pair.hash()["tc"] == "lots" and pair.ids() == {"w1": "1"}


def test_a_flush_that_trips_takes_the_general_path(pair: Pair) -> None:
    """The flush that reaches minimum_calls with a failure rate of 0.5: the transition (full
    reply, event) from the general path; the flushes before it, on the fast path."""
    pair.flush(5, 0)
    pair.now += 1
    _, fast = pair.flush(5, 5, batch="w1:2")  # 15 calls, 5 failures: below minimum_calls
    assert fast
    pair.now += 1
    reply, fast = pair.flush(0, 5, batch="w1:3")  # 20 calls, 10 failures: 0.5 >= 0.5
    assert not fast and not is_lean(reply) and reply[TRANSITIONS] == "closed>open"
    assert pair.hash()["st"] == "open" and pair.ids() == {"w1": "3"}
    assert pair.r.xlen(pair.keys[0][1]) == 1  # the transition (the stream was created empty)


def test_a_quorum_config_notes_the_reporters(pair: Pair) -> None:
    """minimum_failing_workers on: a flush with a failed or slow outcome says its client as the
    reporter (as the flusher does), noted in `wc` (general path); a flush of successes says
    nothing and takes the fast path. The quorum holds the trip back until 2 clients failed."""
    pair.flush(5, 0, cfg=QUORUM)
    pair.now += 1
    _, fast = pair.flush(0, 1, batch="w1:2", cfg=QUORUM, reporter="w1")
    assert not fast and pair.hash()["wc"] == "w1=283333333"  # the bucket epoch, T0 // 6000
    pair.now += 1
    _, fast = pair.flush(1, 0, 1, batch="w2:1", cfg=QUORUM, reporter="w2")  # a slow success: noted too
    assert not fast and pair.hash()["wc"] == "w1=283333333;w2=283333333"
    pair.now += 1
    _, fast = pair.flush(4, 0, batch="w3:1", cfg=QUORUM)
    assert fast and pair.hash()["wc"] == "w1=283333333;w2=283333333"
    pair.now += 1
    reply, fast = pair.flush(0, 9, batch="w1:3", cfg=QUORUM, reporter="w1")  # 20 calls, 10 failures, 2 clients
    assert not fast and reply[TRANSITIONS] == "closed>open"


def test_only_a_reporter_is_noted(pair: Pair) -> None:
    """A batch with failures and no reporter (a client whose own quorum is off, under an
    override that turned it on) is counted on the fast path and notes nobody, as the general
    path would; a reporter with successes only is not noted either (general path)."""
    pair.flush(5, 0)
    pair.control("config", "minimum_failing_workers=2")
    pair.now += 1
    _, fast = pair.flush(2, 1, batch="w1:2")
    assert fast and "wc" not in pair.hash()
    pair.now += 1
    _, fast = pair.flush(2, 0, batch="w1:3", reporter="w1")
    assert not fast and "wc" not in pair.hash() and pair.hash()["tc"] == "10"


def test_a_quorum_holds_the_trip_back(pair: Pair) -> None:
    """With the quorum on, a flush whose totals would trip without it goes to the general path,
    which holds it back (1 failing client of 2): closed, lean, the client noted."""
    pair.flush(10, 0, cfg=QUORUM)
    pair.now += 1
    reply, fast = pair.flush(0, 10, batch="w1:2", cfg=QUORUM, reporter="w1")
    assert not fast and reply == pair.now and pair.hash()["wc"] == "w1=283333333"


@pytest.mark.parametrize("batch", ["w1:", ":5", "w1:x", "w 1", "w1:5:"])
def test_a_bad_batch_id_fails_as_before(pair: Pair, batch: str) -> None:
    """An id that is not '<client>:<seq>' fails with the general path's error, nothing written."""
    pair.flush(1, 0)
    before = pair.hash()
    pair.now += 1
    with pytest.raises(redis.ResponseError, match="a batch id is '<client>:<seq>'"):
        pair.flush(1, 0, batch=batch)
    assert pair.hash() == before and pair.ids() == {"w1": "1"}


def test_a_bad_reporter_fails(pair: Pair) -> None:
    """A reporter that is not a client id fails, also with successes only, nothing written."""
    pair.flush(1, 0)
    before = pair.hash()
    for s, f in ((1, 0), (0, 1)):
        with pytest.raises(redis.ResponseError, match="a reporter is a client id"):
            pair.flush(s, f, batch="w1:2", reporter="w1=2;x")
    assert pair.hash() == before and pair.ids() == {"w1": "1"}


def test_a_call_of_the_old_argument_layout_is_refused(pair: Pair) -> None:
    """Five arguments and the config (0.1's record layout) would read a config value as the
    batch id: refused by the count of ARGV, nothing written."""
    pair.flush(1, 0)
    before = pair.hash()
    argv = [str(pair.now), CFG.fingerprint, "0", "1", "0", "0", "", *CFG.argv()]
    for extra in ([], ["w1:2"]):
        with pytest.raises(redis.ResponseError, match="record takes 7 arguments"):
            pair.run(argv + extra)
    with pytest.raises(redis.ResponseError, match="record takes 7 arguments"):
        pair.run(argv[:7])
    assert pair.hash() == before


def test_batch_ids_are_split_as_the_general_path_splits_them(pair: Pair) -> None:
    """'<client>:<seq>' with the same pattern on both paths: the seq is the digits after the
    last colon, the client anything before it."""
    pair.flush(1, 0)
    for batch in ("a:b:7", "w 1:5", "w1:007"):
        pair.now += 1
        _, fast = pair.flush(1, 0, batch=batch)
        assert fast
    assert pair.ids() == {"w1": "7", "a:b": "7", "w 1": "5"}


def test_a_batch_id_without_the_ids_key_fails(pair: Pair) -> None:
    """'<client>:<seq>' needs KEYS[3]: the general path's error, nothing counted."""
    pair.flush(1, 0)
    before = pair.hash()
    pair.now += 1
    with pytest.raises(redis.ResponseError, match="needs KEYS\\[3\\]"):
        pair.flush(1, 0, batch="w1:2", ids=False)
    assert pair.hash() == before


def test_other_flushes_take_the_general_path_with_the_same_result(pair: Pair) -> None:
    """A stale generation (counted nowhere, its seq stored), a due refresh (`xr` passed) and a
    new bucket: the general path, the same result on both breakers."""
    pair.flush(1, 0)
    pair.now += 1
    reply, fast = pair.flush(4, 4, batch="w1:2", gen=7)
    assert not fast and reply == ["closed", 0, pair.now] and pair.hash()["tc"] == "1"
    assert pair.ids() == {"w1": "2"}
    pair.hset("xr", str(pair.now))  # the refresh is due now
    _, fast = pair.flush(1, 0, batch="w1:3")
    assert not fast and int(pair.hash()["xr"]) > pair.now
    pair.now += 6_000  # the next bucket
    _, fast = pair.flush(1, 0, batch="w1:4")
    assert not fast and pair.hash()["be"] == str(pair.now // 6_000)
    pair.now += 1
    _, fast = pair.flush(1, 0, batch="w1:5")
    assert fast


def test_the_stored_hot_config_is_what_both_paths_run_on(pair: Pair) -> None:
    """`qm` edited: to another text of the same number, the fast path counts; to 2, 1 failure in
    2 calls trips on both paths (the general path makes it); to a non-number, NOCONFIG, and the
    config then sent is stored again."""
    pair.flush(1, 0)
    pair.hset("qm", "20.0")
    pair.now += 1
    reply, fast = pair.flush(0, 1, batch="w1:2")
    assert fast and reply == pair.now
    pair.hset("qm", "x")
    pair.now += 1
    _, fast = pair.flush(1, 0, batch="w1:3")
    assert not fast and pair.hash()["qm"] == "20"
    pair.hset("qm", "2")
    pair.now += 1
    reply, fast = pair.flush(0, 1, batch="w1:4")
    assert not fast and reply[TRANSITIONS] == "closed>open"
