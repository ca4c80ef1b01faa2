"""Many breakers: `Admin.inspect_all` (sync and asyncio) and ``distbreaker status`` read every
breaker with pipelined plain reads, no script per breaker, and find what read.lua finds.

2,000 breakers are made by the scripts in eight shapes (closed with counts, open, open past
open_until, forced open, forced past its expiry, disabled, half-open with a success, a window
with expired buckets). Each listed breaker is checked twice: against what the test made it
(state, counts) and against read.lua (`_read_lua.read_lua`: what `Admin.inspect` ran before it
read with plain commands too) run right after, field by field; the times that read.lua sets
itself (its server time, the time of the expiry it stores) aside.
Nothing here is timed: benchmarks/many.py measures the 10,000-breaker figures.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.asyncio
from _read_lua import read_lua, server_ms
from click.testing import CliRunner

from distbreaker import Admin, Breaker, BreakerConfig, Snapshot, connect
from distbreaker import asyncio as adb
from distbreaker.admin import CHUNK, FleetConfig
from distbreaker.errors import CorruptStateError
from distbreaker_cli.app import cli

N = 2000
SHAPES = 8
BUCKET_MS = 6000  # the default window: 60 s in 10 buckets


def _fail() -> None:
    raise RuntimeError("down")


def _calls(b: Breaker, ok: int, failed: int) -> None:
    for _ in range(ok):
        b.call(lambda: None)
    for _ in range(failed):
        try:
            b.call(_fail)
        except RuntimeError:
            pass


@pytest.fixture(scope="module")
def fleet(redis_url: str) -> Iterator[tuple[str, dict[str, tuple[str, int, int]]]]:
    """N breakers under a fresh prefix: service -> (state, calls, failures) expected."""
    import uuid

    prefix = f"many-{uuid.uuid4().hex[:8]}"
    client = connect(redis_url, timeout=5)
    r = redis.Redis.from_url(redis_url)
    admin = Admin(client, prefix=prefix)
    now = server_ms(r)
    past = (now - 3_600_000) / 1000.0
    expected: dict[str, tuple[str, int, int]] = {}

    def make(service: str, clock: Any = None, **config: Any) -> Breaker:
        cfg = BreakerConfig(**{"minimum_calls": 100, "redis_timeout": 5, **config})
        return Breaker(service, client, cfg, prefix=prefix, listen=False, clock=clock)

    for i in range(N):
        service, shape = f"svc-{i:05d}", i % SHAPES
        if shape == 0:  # closed, with counts
            ok, bad = 1 + i % 5, i % 3
            _calls(make(service), ok, bad)
            expected[service] = ("closed", ok + bad, bad)
        elif shape == 1:  # open
            _calls(make(service, minimum_calls=1, open_duration=600), 0, 1)
            expected[service] = ("open", 0, 0)
        elif shape == 2:  # open an hour ago for 30 s: half_open when read
            _calls(make(service, clock=lambda: past, minimum_calls=1, open_duration=30), 0, 1)
            expected[service] = ("half_open", 0, 0)
        elif shape == 3:  # forced open
            admin.trip(service, reason=f"INC-{i}", actor="alice")
            expected[service] = ("forced_open", 0, 0)
        elif shape == 4:  # forced open, its expiry passed: closed (the window kept)
            _calls(make(service), 2, 1)
            admin.trip(service, for_=3600, reason="gone")
            r.hset(f"{prefix}:{{{service}}}", "fu", now - 1000)
            expected[service] = ("closed", 3, 1)
        elif shape == 5:  # disabled, counting
            admin.disable(service, reason="noisy")
            _calls(make(service), 1, 1)
            expected[service] = ("disabled", 2, 1)
        elif shape == 6:  # half_open with one success of two
            t = {"now": past}
            b = make(service, clock=lambda: t["now"], minimum_calls=1, open_duration=30, half_open_successes=2)
            _calls(b, 0, 1)
            t["now"] = now / 1000.0
            _calls(b, 1, 0)
            expected[service] = ("half_open", 0, 0)  # (probes are not window calls)
        else:  # calls 2 minutes ago (expired) and now
            t = {"now": (now - 120_000) / 1000.0}
            b = make(service, clock=lambda: t["now"])
            _calls(b, 4, 2)
            t["now"] = now / 1000.0
            _calls(b, 1, 1)
            expected[service] = ("closed", 2, 1)
    try:
        yield prefix, expected
    finally:
        keys = list(r.scan_iter(match=f"{prefix}:*", count=5000))
        for at in range(0, len(keys), 1000):
            r.delete(*keys[at : at + 1000])
        client.close()
        r.close()


def _timeless(found: tuple[Snapshot, FleetConfig]) -> tuple[Snapshot, FleetConfig]:
    """The pair without the times a read sets itself (read.lua stores the expiry it applies at
    its own server time)."""
    snap, cfg = found
    last = snap.last_transition
    if last is not None:
        last = dataclasses.replace(last, time=0.0)
    return dataclasses.replace(snap, server_time=0.0, last_transition=last), dataclasses.replace(cfg, server_time=0.0)


def _check(found: list[tuple[Snapshot, FleetConfig]], expected: dict[str, tuple[str, int, int]]) -> None:
    assert [snap.service for snap, _ in found] == sorted(expected)
    for snap, _ in found:
        assert (snap.state.value, snap.calls, snap.failures) == expected[snap.service], snap


def test_inspect_all_reads_every_breaker_as_read_lua_does(
    fleet: tuple[str, dict[str, tuple[str, int, int]]], redis_url: str
) -> None:
    prefix, expected = fleet
    client = connect(redis_url, timeout=10)
    r = redis.Redis.from_url(redis_url)
    admin = Admin(client, prefix=prefix)
    try:
        r.config_resetstat()
        result = admin.inspect_all()
        stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
        assert not result.broken and not result.missing
        _check(result.breakers, expected)
        # pipelined plain reads: an HGETALL per breaker, a TIME per pipeline, no script
        assert stats["hgetall"] == N and stats["time"] == -(-N // CHUNK), stats
        assert not {"eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro"} & set(stats), stats
        by_service = {snap.service: (snap, cfg) for snap, cfg in result.breakers}
        half = by_service["svc-00006"][0]
        assert (half.half_open_successes, half.half_open_calls) == (1, 0)
        forced = by_service["svc-00003"][0]
        assert (forced.reason, forced.actor) == ("INC-3", "alice")
        elapsed = by_service["svc-00002"][0]
        assert elapsed.last_transition is not None and elapsed.last_transition.cause == "open_duration elapsed"
        # the oracle: read.lua on each breaker, right after
        for service, pair in by_service.items():
            assert _timeless(pair) == _timeless(read_lua(client, prefix, service)), service
    finally:
        client.close()
        r.close()


def test_inspect_all_asyncio_and_named_services(
    fleet: tuple[str, dict[str, tuple[str, int, int]]], redis_url: str
) -> None:
    prefix, expected = fleet

    async def main() -> tuple[Any, Any]:
        client = redis.asyncio.Redis.from_url(redis_url)
        try:
            admin = adb.Admin(client, prefix=prefix)
            return await admin.inspect_all(), await admin.inspect_all(["svc-00010", "nope", "svc-00001"])
        finally:
            await client.aclose()

    every, named = asyncio.run(main())
    _check(every.breakers, expected)
    assert [snap.service for snap, _ in named.breakers] == ["svc-00010", "svc-00001"]  # as named
    assert named.missing == ["nope"]


def test_status_over_every_breaker_runs_no_script(
    fleet: tuple[str, dict[str, tuple[str, int, int]]], redis_url: str
) -> None:
    prefix, expected = fleet
    r = redis.Redis.from_url(redis_url)
    try:
        r.config_resetstat()
        result = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "status", "-o", "json"])
        stats = {k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in r.info("commandstats").items()}
    finally:
        r.close()
    assert result.exit_code == 0, result.output
    docs = json.loads(result.stdout)
    assert {d["service"]: (d["state"], d["calls"], d["failures"]) for d in docs} == expected
    assert not {"eval", "evalsha", "fcall"} & set(stats), stats
    assert stats["hgetall"] == N


def test_an_acl_without_hgetall_reads_with_hmget(
    fleet: tuple[str, dict[str, tuple[str, int, int]]], redis_url: str
) -> None:
    """The operator ACL of 0.2 (no HGETALL): the same breakers, read with HMGET."""
    import uuid

    prefix, expected = fleet
    user = f"many-{uuid.uuid4().hex[:8]}"
    r = redis.Redis.from_url(redis_url)
    r.acl_setuser(
        user, enabled=True, passwords=["+pw"], keys=[f"{prefix}:*"], commands=["-@all", "+scan", "+hmget", "+time"]
    )
    try:
        host, port = r.connection_pool.connection_kwargs["host"], r.connection_pool.connection_kwargs["port"]
        client = connect(f"redis://{user}:pw@{host}:{port}/0", timeout=10)
        result = Admin(client, prefix=prefix).inspect_all()
        client.close()
        assert not result.broken and not result.missing
        _check(result.breakers, expected)
    finally:
        r.acl_deluser(user)
        r.close()


def test_broken_and_foreign_keys_hide_no_breaker(redis_url: str, prefix: str) -> None:
    """A corrupt hash, a damaged ring bucket and a key of another type are named (exit 1); the
    other breakers are shown; the same errors as read.lua's."""
    client = connect(redis_url, timeout=5)
    r = redis.Redis.from_url(redis_url)
    try:
        for service in ("a", "b"):
            Breaker(service, client, BreakerConfig(), prefix=prefix, listen=False).call(lambda: None)
        r.hset(f"{prefix}:{{bad-state}}", mapping={"st": "sideways"})
        r.hset(f"{prefix}:{{bad-count}}", mapping={"st": "closed", "tc": "many"})
        epoch = server_ms(r) // BUCKET_MS
        r.hset(
            f"{prefix}:{{bad-ring}}",
            mapping={"st": "closed", "be": epoch - 3, "tc": 5, "tf": 0, "ts": 0, f"r{(epoch - 12) % 10}": "x:y"},
        )
        r.set(f"{prefix}:{{string}}", "x")
        admin = Admin(client, prefix=prefix)
        result = admin.inspect_all()
        assert [snap.service for snap, _ in result.breakers] == ["a", "b"]
        assert sorted(result.broken) == ["bad-count", "bad-ring", "bad-state", "string"]
        for service in ("bad-count", "bad-ring", "bad-state"):
            assert isinstance(result.broken[service], CorruptStateError), service
            with pytest.raises(CorruptStateError):
                admin.inspect(service)  # one breaker: the same plain read
            with pytest.raises(CorruptStateError):
                read_lua(client, prefix, service)  # read.lua refuses it too
            assert f"{prefix}:{{{service}}}" in str(result.broken[service])
        assert "WRONGTYPE" in str(result.broken["string"])
        out = CliRunner().invoke(cli, ["--url", redis_url, "--prefix", prefix, "status"])
        assert out.exit_code == 1, out.output
        assert "4 of 6 breakers could not be read" in out.stderr
        assert [line.split()[0] for line in out.stdout.splitlines()[1:]] == ["a", "b"]
    finally:
        client.close()
        r.close()


def test_cluster_every_master(redis_cluster: Any, prefix: str) -> None:
    """On a Cluster, `inspect_all` and `status` read the breakers of every master."""
    from distbreaker import connect_cluster

    rc = connect_cluster(redis_cluster.url, timeout=5)
    try:
        services = [f"c{i:03d}" for i in range(60)]  # sorted as listed
        for service in services:
            Breaker(service, rc, BreakerConfig(redis_timeout=5), prefix=prefix, listen=False).call(lambda: None)
        slots = {rc.get_node_from_key(f"{prefix}:{{{s}}}").name for s in services}
        assert len(slots) == 3  # the breakers live on the three masters
        result = Admin(rc, prefix=prefix).inspect_all()
        assert [snap.service for snap, _ in result.breakers] == services
        assert all(snap.calls == 1 for snap, _ in result.breakers)
        out = CliRunner().invoke(
            cli, ["--cluster", "--url", redis_cluster.url, "--prefix", prefix, "status", "-o", "json"]
        )
        assert out.exit_code == 0, out.output
        assert [d["service"] for d in json.loads(out.stdout)] == services
    finally:
        rc.close()


def test_a_live_probe_lease_is_counted_as_read_lua_counts_it(redis_url: str, prefix: str) -> None:
    """A half-open breaker whose probe is running (a live lease): half_open_calls 1, as read.lua
    says; after the probe, 0 and closed."""
    client = connect(redis_url, timeout=5)
    r = redis.Redis.from_url(redis_url)
    try:
        past = (server_ms(r) - 3_600_000) / 1000.0
        t = {"now": past}
        b = Breaker(
            "probe",
            client,
            BreakerConfig(minimum_calls=1, open_duration=30, redis_timeout=5),
            prefix=prefix,
            listen=False,
            clock=lambda: t["now"],
        )
        _calls(b, 0, 1)  # open an hour ago for 30 s
        t["now"] = server_ms(r) / 1000.0
        admin = Admin(client, prefix=prefix)
        with b:  # the probe: a lease held while the block runs
            (found,) = admin.inspect_all().breakers
            assert (found[0].state.value, found[0].half_open_calls) == ("half_open", 1)
            assert _timeless(found) == _timeless(read_lua(client, prefix, "probe"))
        (after,) = admin.inspect_all().breakers
        assert (after[0].state.value, after[0].half_open_calls) == ("closed", 0)
        b.close()
    finally:
        client.close()
        r.close()


def test_failing_clients_are_counted_as_read_lua_counts_them(redis_url: str, prefix: str) -> None:
    """minimum_failing_workers on: two processes failed (this one and a forked child), so the
    fleet-wide read finds 2 failing clients, as read.lua does; still closed (quorum of 3)."""
    import os

    cfg = BreakerConfig(minimum_failing_workers=3, minimum_calls=1, redis_timeout=5)
    client = connect(redis_url, timeout=5)
    try:
        b = Breaker("quorum", client, cfg, prefix=prefix, listen=False)
        _calls(b, 0, 2)
        pid = os.fork()
        if pid == 0:  # a second worker process: its own client id, its own connection
            code = 1
            try:
                child = Breaker("quorum", connect(redis_url, timeout=5), cfg, prefix=prefix, listen=False)
                _calls(child, 0, 1)
                child.close()
                code = 0
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        admin = Admin(client, prefix=prefix)
        (found,) = admin.inspect_all().breakers
        assert (found[0].state.value, found[0].failures, found[0].failing_clients) == ("closed", 3, 2)
        assert _timeless(found) == _timeless(read_lua(client, prefix, "quorum"))
        b.close()
    finally:
        client.close()


@pytest.mark.parametrize("options", [{"decode_responses": True}, {"protocol": 3}], ids=["decoding", "resp3"])
def test_inspect_all_reads_the_same_through_any_plain_client(
    fleet: tuple[str, dict[str, tuple[str, int, int]]], redis_url: str, options: dict[str, Any]
) -> None:
    """A client that decodes replies, or speaks RESP3 (its replies read by redis-py, not the
    lane's parser), finds what `connect()`'s client finds."""
    prefix, expected = fleet
    plain = connect(redis_url, timeout=10)
    other = redis.Redis.from_url(redis_url, socket_timeout=10, **options)
    try:
        ours, theirs = Admin(plain, prefix=prefix).inspect_all(), Admin(other, prefix=prefix).inspect_all()
    finally:
        plain.close()
        other.close()
    _check(theirs.breakers, expected)
    assert [_timeless(found) for found in theirs.breakers] == [_timeless(found) for found in ours.breakers]


def test_a_pipeline_keeps_each_reply_in_its_place(redis_url: str, prefix: str) -> None:
    """`_transport.pipeline`: an error reply takes the place of its command's reply, the others
    are read on, and the connection serves the next pipeline; arguments it does not pack go
    through redis-py's pipeline."""
    from distbreaker._transport import pipeline

    client = connect(redis_url, timeout=5)
    try:
        client.hset(f"{prefix}:h", mapping={"a": "1"})
        client.set(f"{prefix}:s", "x")
        first = pipeline(client, [("HGETALL", f"{prefix}:h"), ("HGETALL", f"{prefix}:s"), ("GET", f"{prefix}:s")])
        assert first[0] == [b"a", b"1"] and first[2] == b"x"
        assert isinstance(first[1], redis.ResponseError) and "WRONGTYPE" in str(first[1])
        assert pipeline(client, [("GET", f"{prefix}:s"), ("HGET", f"{prefix}:h", "a")]) == [b"x", b"1"]
        assert pipeline(client, [("INCRBYFLOAT", f"{prefix}:f", 1.5)]) == [1.5]  # (redis-py's callback)
    finally:
        client.delete(f"{prefix}:h", f"{prefix}:s", f"{prefix}:f")
        client.close()


def test_status_json_encodes_each_config_as_json_would(redis_url: str) -> None:
    """``status -o json`` over many breakers encodes each distinct config once: the text is
    json's, also for configs that are equal in Python but not in JSON (1, 1.0, True; 0.0 and
    -0.0; another order of the names)."""
    from distbreaker import State
    from distbreaker_cli.output import dumps_rows, dumps_status, snapshot_dict

    def snap(i: int) -> Snapshot:
        return Snapshot(f"s{i:03d}", State.CLOSED, i, 1, 0, 0, 0, None, None, "", "", 0, 0, 0, 1e9 + i)

    base = {"a": 1.0, "b": 2, "c": None}
    variants: list[dict[str, Any]] = [
        base,
        {"a": 1, "b": 2, "c": None},
        {"a": True, "b": 2, "c": None},
        {"b": 2, "a": 1.0, "c": None},
        {"a": 0.0, "b": 2, "c": None},
        {"a": -0.0, "b": 2, "c": None},
        {"a": float("nan"), "b": 2, "c": None},
    ]
    found = [
        (
            snap(i),
            FleetConfig(
                f"s{i:03d}",
                dict(variants[i % len(variants)]),
                dict(variants[(i // 3) % len(variants)]) if i % 5 else None,
                {"a": 1} if i % 11 == 0 else {},
                "f1" if i % 2 else None,
                None,
                None,
                1e9,
            ),
        )
        for i in range(250)
    ]
    disagree = {"s004", "s010"}

    def docs(rows: list[tuple[Snapshot, FleetConfig]]) -> list[dict[str, Any]]:
        out = []
        for s, c in rows:
            doc = snapshot_dict(s, c)
            doc["config"]["workers_disagree"] = s.service in disagree
            out.append(doc)
        return out

    for rows in (found, found[:100], found[:1], []):
        assert dumps_status(rows, disagree) == dumps_rows(docs(rows))
        assert dumps_status(rows, disagree, lines=True) == json.dumps(docs(rows))


def test_an_asyncio_pipeline_keeps_each_reply_in_its_place(redis_url: str, prefix: str) -> None:
    """`_transport.apipeline` (the pool's pipelined connection): an error reply in its place, the
    replies of a client that decodes as str, and the next pipeline served."""
    from distbreaker._transport import apipeline

    async def main() -> tuple[list[Any], list[Any]]:
        client = redis.asyncio.Redis.from_url(redis_url, decode_responses=True, socket_timeout=5)
        try:
            await client.hset(f"{prefix}:h", mapping={"a": "1"})
            await client.set(f"{prefix}:s", "x")
            first = await apipeline(
                client, [("HGETALL", f"{prefix}:h"), ("HGETALL", f"{prefix}:s"), ("GET", f"{prefix}:s")]
            )
            second = await apipeline(client, [("GET", f"{prefix}:s"), ("HGET", f"{prefix}:h", "a")])
            await client.delete(f"{prefix}:h", f"{prefix}:s")
            return first, second
        finally:
            await client.aclose()

    first, second = asyncio.run(main())
    assert first[0] in (["a", "1"], {"a": "1"}) and first[2] == "x"  # (RESP2 or RESP3: redis-py 8's default)
    assert isinstance(first[1], redis.ResponseError) and "WRONGTYPE" in str(first[1])
    assert second == ["x", "1"]
