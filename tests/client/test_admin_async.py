"""distbreaker.asyncio.Admin mirrors Admin: the same methods, answers and errors, on a real server.

Each test drives the asyncio Admin and, where it matters, checks the result against the sync
Admin reading the same keys (one set of steps, two shells). Also the input checks both share:
an invalid name, `for_`, reason or actor is refused before any command reaches Redis.
"""

from __future__ import annotations

import dataclasses
import inspect
import socket
from collections.abc import Callable
from typing import Any

import pytest
import redis

import distbreaker
import distbreaker.asyncio as dba
from distbreaker import (
    AccessDeniedError,
    BackendError,
    BreakerConfig,
    ConfigError,
    RedisUnavailableError,
    State,
    UnknownServiceError,
    connect,
)


@pytest.fixture
def sync_client(client: redis.Redis) -> redis.Redis:
    """The shared sync `client` (tests/conftest.py), by the name these tests give it beside `aclient`."""
    return client


@pytest.fixture
def admin(aclient: Any, prefix: str) -> dba.Admin:
    return dba.Admin(aclient, prefix=prefix)


@pytest.fixture
def sync_admin(sync_client: redis.Redis, prefix: str) -> distbreaker.Admin:
    return distbreaker.Admin(sync_client, prefix=prefix)


@pytest.fixture
def used(sync_client: redis.Redis, prefix: str) -> Callable[..., None]:
    """``used(service, ok=1, **config)``: a worker made `ok` calls through `service`."""

    def factory(service: str, ok: int = 1, **config: Any) -> None:
        b = distbreaker.Breaker(
            service, sync_client, BreakerConfig(redis_timeout=2, **config), prefix=prefix, listen=False
        )
        try:
            for _ in range(ok):
                b.call(lambda: None)
        finally:
            b.close()

    return factory


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_same_public_methods_as_the_sync_admin() -> None:
    """Every public method of Admin but doctor exists on the asyncio Admin, as a coroutine, with
    the same parameters."""
    names = {n for n in dir(distbreaker.Admin) if not n.startswith("_")} - {"doctor"}
    for name in sorted(names):
        sync, aio = getattr(distbreaker.Admin, name), getattr(dba.Admin, name, None)
        assert aio is not None, name
        if callable(sync):
            assert inspect.iscoroutinefunction(aio), name
            assert inspect.signature(aio).parameters.keys() == inspect.signature(sync).parameters.keys(), name
    assert "sync-only" in (dba.Admin.__doc__ or "")


async def test_list_status_exists_inspect(
    admin: dba.Admin, sync_admin: distbreaker.Admin, used: Callable[..., None], sync_client: redis.Redis, prefix: str
) -> None:
    used("alpha", ok=3)
    used("beta")
    assert await admin.list() == ["alpha", "beta"] == sync_admin.list()
    snap = await admin.status("alpha")
    assert (snap.state, snap.calls) == (State.CLOSED, 3)
    same = sync_admin.status("alpha")
    assert {**vars_of(snap), "server_time": 0} == {**vars_of(same), "server_time": 0}
    assert await admin.exists("alpha") and not await admin.exists("gamma")
    s, cfg = await admin.inspect("alpha")
    assert s.calls == 3 and cfg.effective is not None and cfg.effective["minimum_calls"] == 10
    with pytest.raises(UnknownServiceError):
        await admin.status("gamma")
    with pytest.raises(UnknownServiceError):
        await admin.config("gamma")
    assert sync_client.exists(f"{prefix}:{{gamma}}") == 0  # reading did not create it


def vars_of(snap: Any) -> dict[str, Any]:
    return {f: getattr(snap, f) for f in snap.__dataclass_fields__}


async def test_trip_disable_reset_and_history(admin: dba.Admin, sync_admin: distbreaker.Admin) -> None:
    s = await admin.trip("gamma", for_=600, reason="INC-42", actor="alice")
    assert s.state is State.FORCED_OPEN and s.retry_after == pytest.approx(600, abs=1)
    assert (s.reason, s.actor) == ("INC-42", "alice")
    assert s.last_transition is not None  # the trip it made, as status shows it
    assert s.last_transition.cause == "manual trip by alice: INC-42"
    assert s.last_transition == sync_admin.status("gamma").last_transition
    d = await admin.disable("gamma", reason="maintenance", actor="bob")
    assert d.state is State.DISABLED and d.forced_until is None
    r = await admin.reset("gamma", actor="carol")
    assert r.state is State.CLOSED and r.last_transition is not None and r.last_transition.actor == "carol"
    history = await admin.history("gamma")
    assert [t.to_state for t in history] == [State.CLOSED, State.DISABLED, State.FORCED_OPEN]
    assert history == sync_admin.history("gamma")
    assert [t.actor for t in await admin.history("gamma", n=2)] == ["carol", "bob"]


async def test_config_set_and_clear(admin: dba.Admin, sync_admin: distbreaker.Admin, used: Callable[..., None]) -> None:
    used("svc", minimum_calls=5)
    after = await admin.set_config("svc", minimum_calls=20, open_duration=30, actor="alice", reason="INC-7")
    assert after.overrides == {"minimum_calls": 20, "open_duration": 30.0}
    assert after.effective is not None and after.effective["minimum_calls"] == 20
    assert after == dataclasses.replace(sync_admin.config("svc"), server_time=after.server_time)
    [event] = await admin.history("svc", n=1)
    assert event.cause.startswith("config set by alice (INC-7): ")
    cleared = await admin.clear_config("svc", actor="bob")
    assert cleared.overrides == {} and cleared.effective is not None and cleared.effective["minimum_calls"] == 5
    with pytest.raises(ConfigError, match="redis_timeout"):
        await admin.set_config("svc", redis_timeout=1)
    with pytest.raises(ConfigError, match="minimum_calls"):
        await admin.set_config("svc", minimum_calls=0)
    with pytest.raises(UnknownServiceError):
        await admin.clear_config("nosuch")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"service": "bad name"},
        {"for_": float("inf")},
        {"for_": float("nan")},
        {"for_": -1},
        {"reason": "a\x1b[2Jb"},
        {"reason": "line\nforged"},
        {"reason": "cr\rreturn"},
        {"reason": "lone \ud800 surrogate"},
        {"reason": "c1 \x9b control"},
        {"reason": "del \x7f"},
        {"actor": "eve\x07"},
        {"actor": "eve\udcff"},
        {"actor": "x" * 129},
    ],
)
async def test_bad_input_is_refused_before_redis(kwargs: dict[str, Any]) -> None:
    """With Redis down, bad input still gives ConfigError (it never reaches the network), in
    both Admins."""
    url = f"redis://127.0.0.1:{closed_port()}/0"
    args = {"service": "svc", "for_": 60, "reason": "ok", "actor": "ops", **kwargs}
    service = args.pop("service")
    client = dba.connect(url, timeout=0.5)
    try:
        with pytest.raises(ConfigError):
            await dba.Admin(client, prefix="p").trip(service, **args)
    finally:
        await client.aclose()
    sync = connect(url, timeout=0.5)
    try:
        with pytest.raises(ConfigError):
            distbreaker.Admin(sync, prefix="p").trip(service, **args)
        if "for_" not in kwargs:
            with pytest.raises(ConfigError):
                distbreaker.Admin(sync, prefix="p").reset(service, reason=args["reason"], actor=args["actor"])
            with pytest.raises(ConfigError):
                distbreaker.Admin(sync, prefix="p").set_config(
                    service, reason=args["reason"], actor=args["actor"], minimum_calls=3
                )
    finally:
        sync.close()


async def test_breakers_refuse_control_characters_too(aclient: Any, sync_client: redis.Redis, prefix: str) -> None:
    """The Breakers' trip / disable / reset run the same checks."""
    b = distbreaker.Breaker("svc", sync_client, prefix=prefix, listen=False)
    ab = dba.Breaker("svc", aclient, prefix=prefix, listen=False)
    try:
        with pytest.raises(ConfigError, match="reason"):
            b.trip(reason="\x1b]0;owned\x07")
        with pytest.raises(ConfigError, match="actor"):
            b.disable(reason="x", actor="a\nb")
        with pytest.raises(ConfigError, match="reason"):
            await ab.reset(reason="\ud800")
    finally:
        b.close()
        await ab.close()
    assert sync_client.exists(f"{prefix}:{{svc}}") == 0  # nothing was written


async def test_unavailable_and_wrong_type_errors(admin: dba.Admin, sync_client: redis.Redis, prefix: str) -> None:
    url = f"redis://127.0.0.1:{closed_port()}/0"
    client = dba.connect(url, timeout=0.5)
    try:
        with pytest.raises(RedisUnavailableError):
            await dba.Admin(client, prefix=prefix).status("svc")
        with pytest.raises(RedisUnavailableError):
            await dba.Admin(client, prefix=prefix).list()
    finally:
        await client.aclose()
    sync_client.set(f"{prefix}:{{str}}", "not a hash")
    with pytest.raises(BackendError, match="WRONGTYPE|not a breaker"):
        await admin.status("str")
    with pytest.raises(ConfigError):
        await admin.history("svc", n=0)


async def test_corrupt_state_and_config_name_the_key(
    admin: dba.Admin, sync_admin: distbreaker.Admin, used: Callable[..., None], sync_client: redis.Redis, prefix: str
) -> None:
    used("cfg")
    sync_client.hset(f"{prefix}:{{cfg}}", "cfg", "garbage")
    with pytest.raises(BackendError, match=r"\{cfg\}.*reset cfg"):
        sync_admin.config("cfg")
    with pytest.raises(BackendError, match=r"\{cfg\}.*reset cfg"):
        await admin.config("cfg")
    used("hot")
    sync_client.hset(
        f"{prefix}:{{hot}}", "tc", "garbage"
    )  # the script fails on it (a broken q* field is re-sent by workers)
    with pytest.raises(BackendError, match=r"\{hot\}.*reset hot"):
        await admin.status("hot")
    with pytest.raises(BackendError, match=r"\{hot\}.*reset hot"):
        sync_admin.inspect("hot")


async def test_foreign_stream_entries_are_skipped_and_counted(
    admin: dba.Admin, sync_admin: distbreaker.Admin, sync_client: redis.Redis, prefix: str
) -> None:
    await admin.trip("svc", reason="INC-1", actor="ops")
    sync_client.xadd(f"{prefix}:{{svc}}:events", {"hello": "world"})
    sync_client.xadd(f"{prefix}:{{svc}}:events", {"ts": "x", "from": "nope", "to": "closed", "gen": "1"})
    events = await admin.events("svc")
    assert events.skipped == 2 and [t.actor for t in events.transitions] == ["ops"]
    assert sync_admin.events("svc") == events
    assert [t.actor for t in await admin.history("svc")] == ["ops"]


async def test_access_denied(redis_url: str, sync_client: redis.Redis, prefix: str) -> None:
    sync_client.execute_command("ACL", "SETUSER", "ro-admin-test", "on", ">pw", "~*", "+@read", "-@scripting")
    try:
        host_port = redis_url.split("://", 1)[1].split("/", 1)[0].split("@")[-1]
        client = dba.connect(f"redis://ro-admin-test:pw@{host_port}/0", timeout=2.0)
        try:
            with pytest.raises(AccessDeniedError) as info:
                await dba.Admin(client, prefix=prefix).trip("svc", reason="x")
            assert "pw@" not in str(info.value)
        finally:
            await client.aclose()
    finally:
        sync_client.execute_command("ACL", "DELUSER", "ro-admin-test")


async def test_on_a_cluster(redis_cluster: Any, prefix: str) -> None:
    """On a Redis Cluster: breakers on every master are listed, read, tripped and reset, and
    their history read, by the asyncio Admin (each command routed by its key's slot)."""
    from _servers import Cluster

    from distbreaker._core import keys_for

    assert isinstance(redis_cluster, Cluster)
    services = [f"svc-{i}" for i in range(12)]
    assert len({redis_cluster.master_of(keys_for(prefix, s).state).port for s in services}) == 3
    client = await dba.connect_cluster(redis_cluster.url, timeout=2.0)
    try:
        admin = dba.Admin(client, prefix=prefix)
        for s in services:
            await admin.trip(s, for_=60, reason="cluster", actor="ops")
        assert await admin.list() == sorted(services)
        assert {(await admin.status(s)).state for s in services} == {State.FORCED_OPEN}
        snap = await admin.reset(services[0], reason="done", actor="ops")
        assert snap.state is State.CLOSED
        assert [t.to_state for t in await admin.history(services[0])] == [State.CLOSED, State.FORCED_OPEN]
    finally:
        await client.aclose()
