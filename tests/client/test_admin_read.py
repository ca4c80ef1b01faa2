"""An operator's read of one breaker (`Admin.status` / `config` / `inspect`, sync and asyncio) is
plain commands, no script: ``TIME`` and ``HGETALL`` in one pipeline (``HMGET`` where the ACL has no
``HGETALL``), decoded by `_bulk` as `Admin.inspect_all` decodes each breaker (issue 15 item 1).

On a real server: a missing breaker is `UnknownServiceError` and no key is made; a corrupt one,
or a key of another type, is an error naming the key; an open breaker past open_until reads
half_open and nothing is written (the next worker call records the transition); and each read
equals what read.lua (`_read_lua.read_lua`, the oracle) gives for the same breaker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import redis
from _read_lua import read_lua, server_ms

import distbreaker
import distbreaker.asyncio as dba
from distbreaker import (
    BackendError,
    Breaker,
    BreakerConfig,
    CorruptStateError,
    Snapshot,
    State,
    UnknownServiceError,
    connect,
)
from distbreaker.admin import FleetConfig

SCRIPTS = {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"}


@pytest.fixture
def make(client: redis.Redis, prefix: str) -> Callable[..., Breaker]:
    def factory(service: str, clock: Any = None, **config: Any) -> Breaker:
        cfg = BreakerConfig(redis_timeout=5, **config)
        return Breaker(service, client, cfg, prefix=prefix, listen=False, clock=clock)

    return factory


def calls(b: Breaker, ok: int = 0, failed: int = 0) -> None:
    for _ in range(ok):
        b.call(lambda: None)
    for _ in range(failed):
        with pytest.raises(ZeroDivisionError):
            b.call(lambda: 1 / 0)


def stored(r: redis.Redis, prefix: str, service: str) -> tuple[dict[bytes, bytes], int, bool]:
    """What is written for `service`: its hash, the length of its events stream, whether that exists."""
    key = f"{prefix}:{{{service}}}"
    return r.hgetall(key), r.xlen(key + ":events"), bool(r.exists(key + ":events"))


def timeless(pair: tuple[Snapshot, FleetConfig], lazy: bool = False) -> tuple[Snapshot, FleetConfig]:
    """The pair without its server time; with `lazy`, without the time of the last transition
    too (a lazy step: read.lua stores it at its own time, a plain read shows it at the read's)."""
    snap, cfg = pair
    last = snap.last_transition
    if lazy and last is not None:
        last = dataclasses.replace(last, time=0.0)
    return dataclasses.replace(snap, server_time=0.0, last_transition=last), dataclasses.replace(cfg, server_time=0.0)


def commands(r: redis.Redis) -> dict[str, int]:
    return {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}


# -- (a) a missing breaker ----------------------------------------------------------------------
def test_a_missing_breaker_is_unknown_and_nothing_is_made(client: redis.Redis, r: redis.Redis, prefix: str) -> None:
    admin = distbreaker.Admin(client, prefix=prefix)
    r.hset(f"{prefix}:{{foreign}}", "name", "not a breaker")  # a hash without `st`: no breaker either
    for service in ("missing", "foreign"):
        for read in (admin.status, admin.config, admin.inspect):
            with pytest.raises(UnknownServiceError, match=service):
                read(service)
    assert r.keys(f"{prefix}:*") == [f"{prefix}:{{foreign}}".encode()]  # no key made, none changed
    assert r.hgetall(f"{prefix}:{{foreign}}") == {b"name": b"not a breaker"}


# -- (b) corrupt, and a key of another type -------------------------------------------------------
CORRUPT = {
    "state": ({"st": "sideways"}, "st is 'sideways', not a state"),
    "count": ({"st": "closed", "tc": "many"}, "tc is 'many', not a number"),
    "config": ({"st": "closed", "cfg": "1,2"}, "cfg is '1,2', not a config"),
    "hot-config": ({"st": "closed", "qb": "6000", "qn": "10"}, "q* without cfg"),  # (docs: operators)
}


@pytest.mark.parametrize("what", sorted(CORRUPT))
def test_a_corrupt_breaker_is_an_error_naming_the_key(
    client: redis.Redis, r: redis.Redis, prefix: str, what: str
) -> None:
    fields, detail = CORRUPT[what]
    key = f"{prefix}:{{{what}}}"
    r.hset(key, mapping=fields)
    admin = distbreaker.Admin(client, prefix=prefix)
    for read in (admin.status, admin.config, admin.inspect):
        with pytest.raises(CorruptStateError) as info:
            read(what)
        assert (info.value.key, info.value.service) == (key, what)
        assert key in str(info.value) and detail in str(info.value) and f"distbreaker reset {what}" in str(info.value)
    with pytest.raises(CorruptStateError):
        read_lua(client, prefix, what)  # the scripts refuse it too
    assert r.hgetall(key) == {k.encode(): v.encode() for k, v in fields.items()}  # untouched


def test_a_key_of_another_type_is_an_error_naming_the_key(client: redis.Redis, r: redis.Redis, prefix: str) -> None:
    key = f"{prefix}:{{odd}}"
    r.set(key, "someone else's")
    admin = distbreaker.Admin(client, prefix=prefix)
    for read in (admin.status, admin.config, admin.inspect):
        with pytest.raises(BackendError, match="WRONGTYPE") as info:
            read("odd")
        assert key in str(info.value) and not isinstance(info.value, CorruptStateError)
    assert r.get(key) == b"someone else's"


# -- (c) the lazy steps are shown, not written -----------------------------------------------------
def test_open_past_open_until_reads_half_open_and_nothing_is_written(
    client: redis.Redis, r: redis.Redis, prefix: str, make: Callable[..., Breaker]
) -> None:
    past = (server_ms(r) - 3_600_000) / 1000.0
    calls(make("elapsed", clock=lambda: past, minimum_calls=1, open_duration=30), failed=1)
    before = stored(r, prefix, "elapsed")
    assert before[0][b"st"] == b"open" and before[1] == 1  # closed>open, an hour ago
    admin = distbreaker.Admin(client, prefix=prefix)
    snap = admin.status("elapsed")
    assert snap.state is State.HALF_OPEN and snap.generation == 2 and snap.open_until is None
    assert snap.last_transition is not None
    assert (snap.last_transition.from_state, snap.last_transition.cause) == (State.OPEN, "open_duration elapsed")
    pair, cfg = admin.inspect("elapsed"), admin.config("elapsed")
    assert pair[0].state is State.HALF_OPEN and cfg == dataclasses.replace(pair[1], server_time=cfg.server_time)
    assert stored(r, prefix, "elapsed") == before  # the hash and the stream: unchanged
    # the next worker call performs and records it (then its probe succeeds: closed)
    calls(make("elapsed", minimum_calls=1, open_duration=30), ok=1)
    moves = [(e[b"from"], e[b"to"]) for _, e in r.xrange(f"{prefix}:{{elapsed}}:events")]
    assert moves == [(b"closed", b"open"), (b"open", b"half_open"), (b"half_open", b"closed")]
    assert admin.status("elapsed").state is State.CLOSED


def test_a_forced_state_past_its_expiry_reads_closed_and_nothing_is_written(
    client: redis.Redis, r: redis.Redis, prefix: str, make: Callable[..., Breaker]
) -> None:
    admin = distbreaker.Admin(client, prefix=prefix)
    calls(make("gone"), ok=2, failed=1)
    admin.trip("gone", for_=3600, reason="INC-2", actor="alice")
    r.hset(f"{prefix}:{{gone}}", "fu", server_ms(r) - 1000)  # its hour has passed
    before = stored(r, prefix, "gone")
    snap = admin.status("gone")
    assert (snap.state, snap.calls, snap.failures, snap.forced_until, snap.reason) == (State.CLOSED, 3, 1, None, "")
    assert snap.last_transition is not None and snap.last_transition.cause == "forced_open expired"
    assert stored(r, prefix, "gone") == before
    assert timeless(admin.inspect("gone"), lazy=True) == timeless(read_lua(client, prefix, "gone"), lazy=True)


# -- (d) the same as read.lua ------------------------------------------------------------------
def test_each_read_equals_read_lua(
    client: redis.Redis, r: redis.Redis, prefix: str, make: Callable[..., Breaker]
) -> None:
    """closed with counts, open, forced_open with a reason, half_open with a live lease, disabled,
    overrides set, expired window buckets, a >64-byte config (a hashtable hash), the quorum on:
    `inspect` (and `status`, `config`) give what read.lua gives, no script run."""
    admin = distbreaker.Admin(client, prefix=prefix)
    calls(make("closed"), ok=4, failed=2)
    calls(make("open", minimum_calls=1, open_duration=600), failed=1)
    admin.trip("forced", reason="INC-42", actor="alice")
    admin.disable("disabled", reason="noisy", actor="bob")
    calls(make("disabled"), ok=1, failed=1)
    calls(make("overrides", window=30), ok=1)
    admin.set_config("overrides", minimum_calls=7, open_duration=12, actor="carol", reason="INC-7")
    big = {"failure_rate_threshold": 0.123456789, "window": 123.456, "buckets": 40, "probe_timeout": 3.5}
    calls(make("big", **big), ok=3)
    calls(make("quorum", minimum_calls=1, minimum_failing_workers=3), failed=2)
    now = server_ms(r)
    t = {"now": (now - 120_000) / 1000.0}
    window = make("window", clock=lambda: t["now"])
    calls(window, ok=4, failed=2)  # two minutes ago: expired
    t["now"] = now / 1000.0
    calls(window, ok=1, failed=1)
    services = ["closed", "open", "forced", "disabled", "overrides", "big", "quorum", "window"]
    # the default config (64 bytes) keeps a small hash a listpack; a longer one makes it a hashtable
    assert r.object("encoding", f"{prefix}:{{closed}}") == b"listpack"
    assert r.object("encoding", f"{prefix}:{{big}}") == b"hashtable"

    r.config_resetstat()
    plain = {service: admin.inspect(service) for service in services}
    stats = commands(r)
    assert not SCRIPTS & set(stats), stats
    assert stats["hgetall"] == len(services) and stats["time"] == len(services), stats
    for service in services:
        assert timeless(plain[service]) == timeless(read_lua(client, prefix, service)), service
        assert timeless((admin.status(service), admin.config(service))) == timeless(plain[service]), service
    assert (plain["closed"][0].calls, plain["closed"][0].failures) == (6, 2)
    assert (plain["window"][0].calls, plain["window"][0].failures) == (2, 1)
    assert (plain["forced"][0].reason, plain["forced"][0].actor) == ("INC-42", "alice")
    assert plain["overrides"][1].overrides == {"minimum_calls": 7, "open_duration": 12.0}
    assert plain["quorum"][0].failing_clients == 1

    # half_open with a live lease (the probe runs while the block does)
    past = (now - 3_600_000) / 1000.0
    clock = {"now": past}
    probe = make("probe", clock=lambda: clock["now"], minimum_calls=1, open_duration=30)
    calls(probe, failed=1)
    clock["now"] = server_ms(r) / 1000.0
    with probe:
        snap, cfg = admin.inspect("probe")
        assert (snap.state, snap.half_open_calls) == (State.HALF_OPEN, 1)
        assert timeless((snap, cfg)) == timeless(read_lua(client, prefix, "probe"))


def test_an_acl_without_hgetall_reads_with_hmget(r: redis.Redis, prefix: str, make: Callable[..., Breaker]) -> None:
    """A user with HMGET and TIME but no HGETALL (the worker's ACL, the operator's of 0.2) reads
    the same breaker; a window of more ring slots than the first HMGET names gets a second one."""
    t = {"now": (server_ms(r) - 12_000) / 1000.0}
    calls(make("svc", clock=lambda: t["now"], buckets=20, window=20), ok=3, failed=1)  # 12 buckets ago
    user = f"reader-{prefix}"
    r.acl_setuser(user, enabled=True, passwords=["+pw"], keys=[f"{prefix}:*"], commands=["-@all", "+hmget", "+time"])
    kwargs = r.connection_pool.connection_kwargs
    c = connect(f"redis://{user}:pw@{kwargs['host']}:{kwargs['port']}/0", timeout=5)
    try:
        admin = distbreaker.Admin(c, prefix=prefix)
        r.config_resetstat()
        pair = admin.inspect("svc")
        stats = commands(r)
        assert stats["hmget"] == 2 and not SCRIPTS & set(stats), stats  # the fields, then ring slots >= 10
        assert (pair[0].calls, pair[0].failures) == (4, 1)
        assert timeless(pair) == timeless(distbreaker.Admin(r, prefix=prefix).inspect("svc"))
        with pytest.raises(UnknownServiceError):
            admin.status("nothing")
    finally:
        c.close()
        r.acl_deluser(user)


# -- (e) asyncio ---------------------------------------------------------------------------------
async def test_asyncio_admin_reads_the_same(
    aclient: Any, client: redis.Redis, r: redis.Redis, prefix: str, make: Callable[..., Breaker]
) -> None:
    admin, sync = dba.Admin(aclient, prefix=prefix), distbreaker.Admin(client, prefix=prefix)
    calls(make("closed"), ok=3, failed=1)
    await admin.trip("forced", reason="INC-1", actor="alice")
    await admin.set_config("closed", minimum_calls=9, actor="carol")
    past = (server_ms(r) - 3_600_000) / 1000.0
    calls(make("elapsed", clock=lambda: past, minimum_calls=1, open_duration=30), failed=1)
    before = stored(r, prefix, "elapsed")
    for service in ("closed", "forced", "elapsed"):
        pair = await admin.inspect(service)
        lazy = service == "elapsed"
        assert timeless(pair, lazy) == timeless(sync.inspect(service), lazy), service
        assert timeless((await admin.status(service), await admin.config(service)), lazy) == timeless(pair, lazy)
    assert (await admin.status("elapsed")).state is State.HALF_OPEN
    assert stored(r, prefix, "elapsed") == before  # nothing written
    assert timeless(await admin.inspect("elapsed"), True) == timeless(read_lua(client, prefix, "elapsed"), True)
    # missing, corrupt, another type
    for read in (admin.status, admin.config, admin.inspect):
        with pytest.raises(UnknownServiceError):
            await read("missing")
    assert r.exists(f"{prefix}:{{missing}}", f"{prefix}:{{missing}}:events") == 0
    r.hset(f"{prefix}:{{bad}}", mapping={"st": "closed", "tc": "many"})
    r.set(f"{prefix}:{{odd}}", "x")
    for read in (admin.status, admin.config, admin.inspect):
        with pytest.raises(CorruptStateError, match=r"\{bad\}.*tc is 'many'"):
            await read("bad")
        with pytest.raises(BackendError, match=r"\{odd\}.*WRONGTYPE"):
            await read("odd")


# -- Cluster ---------------------------------------------------------------------------------------
async def test_cluster_one_breaker_on_its_master(redis_cluster: Any, prefix: str) -> None:
    """On a Cluster the pipeline sends the HGETALL to the key's master (TIME to any): sync and
    asyncio read breakers on each of the three masters as read.lua does; a missing one is unknown."""
    from distbreaker import connect_cluster

    rc = connect_cluster(redis_cluster.url, timeout=5)
    arc = await dba.connect_cluster(redis_cluster.url, timeout=5)
    try:
        services = [f"c{i}" for i in range(9)]
        for i, service in enumerate(services):
            b = Breaker(service, rc, BreakerConfig(redis_timeout=5, minimum_calls=1), prefix=prefix, listen=False)
            if i % 3 == 0:
                calls(b, failed=1)  # open
            else:
                calls(b, ok=1 + i % 2)
        assert len({rc.get_node_from_key(f"{prefix}:{{{s}}}").name for s in services}) == 3
        admin, aadmin = distbreaker.Admin(rc, prefix=prefix), dba.Admin(arc, prefix=prefix)
        for i, service in enumerate(services):
            pair = admin.inspect(service)
            assert pair[0].state is (State.OPEN if i % 3 == 0 else State.CLOSED), service
            assert timeless(pair) == timeless(read_lua(rc, prefix, service)), service
            assert timeless(await aadmin.inspect(service)) == timeless(pair), service
        with pytest.raises(UnknownServiceError):
            admin.status("missing")
        with pytest.raises(UnknownServiceError):
            await aadmin.config("missing")
        assert rc.exists(f"{prefix}:{{missing}}") == 0
    finally:
        rc.close()
        await arc.aclose()


def test_a_key_that_is_not_utf8_is_skipped_by_list_and_status(
    client: redis.Redis, r: redis.Redis, prefix: str, make: Callable[..., Breaker]
) -> None:
    """A stray key under the prefix whose name is not UTF-8 (`<prefix>:{\\xff}`) names no breaker:
    Admin.list, inspect_all and the bulkheads' list skip it (they raised UnicodeDecodeError)."""
    make("payments").call(lambda: None)
    r.hset(f"{prefix}:{{".encode() + b"\xff}", "st", "closed")
    r.zadd(f"{prefix}:{{".encode() + b"\xfe}:bulkhead", {"x": 1})
    admin = distbreaker.Admin(client, prefix=prefix)
    assert admin.list() == ["payments"]
    inspection = admin.inspect_all()
    assert [s.service for s, _ in inspection.breakers] == ["payments"] and not inspection.broken
    assert distbreaker.bulkhead.bulkhead_names(client, prefix=prefix) == []
