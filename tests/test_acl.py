"""Least privilege: the ACL users README gives (a worker, and an operator for the CLI's writes)
run the suite's core paths, and the worker user cannot run what it must not."""

from __future__ import annotations

import logging
import time

import pytest
import redis

import distbreaker.asyncio as dba
from _servers import ServerFactory
from distbreaker import AccessDeniedError, Admin, Breaker, BreakerConfig, State, connect

PREFIX = "acl-test"  # README's users are written for a prefix; these are the same rules

# The README's users (section "Least privilege"), with <prefix> = PREFIX.
WORKER_RULES = ["on", ">worker-pw", "resetkeys", "resetchannels", f"~{PREFIX}:*", f"&{PREFIX}:events",
                "-@all", "+evalsha", "+eval", "+hget", "+hmget", "+hset", "+hdel", "+pexpire", "+type",
                "+xadd", "+publish", "+time", "+subscribe"]
OPERATOR_RULES = [*(r.replace("worker-pw", "operator-pw") for r in WORKER_RULES),
                  "+scan", "+xrevrange", "+exists", "+del", "+info", "+config|get", "+ping"]


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


@pytest.fixture
def server_url(redis_server_factory: ServerFactory) -> str:
    server = redis_server_factory()
    admin = server.client()
    admin.execute_command("ACL", "SETUSER", "worker", *WORKER_RULES)
    admin.execute_command("ACL", "SETUSER", "operator", *OPERATOR_RULES)
    return f"redis://127.0.0.1:{server.port}/0"


def _url(url: str, user: str) -> str:
    return url.replace("redis://", f"redis://{user}:{user}-pw@")


def test_worker_user_runs_the_call_paths(server_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """Calls, trip/open, reset, probes, pub/sub, batched flushes, snapshot: all as `worker`; the
    startup eviction check's NOPERM (CONFIG) is ignored silently."""
    caplog.set_level(logging.WARNING, logger="distbreaker")
    client = connect(_url(server_url, "worker"), timeout=0.5)
    other = connect(_url(server_url, "worker"), timeout=0.5)
    cfg = BreakerConfig(minimum_calls=2, failure_rate_threshold=0.6, open_duration=0.1, max_staleness=60,
                        redis_timeout=0.5)
    watcher = Breaker("svc", client, cfg, prefix=PREFIX)
    actor = Breaker("svc", other, cfg, prefix=PREFIX, listen=False)
    batched = Breaker("batched", other, cfg, prefix=PREFIX, listen=False, mode="batched", flush_interval=60)
    try:
        assert watcher.call(int, 1) == 1
        assert watcher._listener is not None
        deadline = time.monotonic() + 5
        while not watcher._listener.ready.is_set():
            assert time.monotonic() < deadline
            time.sleep(0.005)
        for _ in range(2):
            with pytest.raises(Boom):
                actor.call(boom)
        assert actor.snapshot().state is State.OPEN
        deadline = time.monotonic() + 3
        while watcher._core.view.state is not State.OPEN:  # learnt through pub/sub
            assert time.monotonic() < deadline
            time.sleep(0.005)
        time.sleep(0.15)
        assert actor.call(int, 2) == 2  # the half-open probe (a lease) closes it
        assert actor.snapshot().state is State.CLOSED
        actor.trip(reason="acl")
        actor.reset(reason="acl")
        for i in range(10):
            batched.call(int, i)
        batched.flush()
        assert batched.snapshot().calls == 10
        assert actor._core.backoff == 0 and batched._core.backoff == 0
        assert not [r for r in caplog.records if r.name == "distbreaker"], caplog.text
    finally:
        for b in (watcher, actor, batched):
            b.close()
        client.close()
        other.close()


async def test_worker_user_asyncio(server_url: str) -> None:
    client = dba.connect(_url(server_url, "worker"), timeout=0.5)
    b = dba.Breaker("async-svc", client, BreakerConfig(redis_timeout=0.5), prefix=PREFIX)
    try:
        assert await b.call(int, 4) == 4
        assert (await b.snapshot()).calls == 1
    finally:
        await b.close()
        await client.aclose()


def test_worker_user_cannot_do_more(server_url: str) -> None:
    r = redis.Redis.from_url(_url(server_url, "worker"), socket_timeout=1)
    try:
        for command in (("FLUSHDB",), ("KEYS", "*"), ("CONFIG", "SET", "maxmemory", "1"), ("SCAN", "0"),
                        ("DEL", f"{PREFIX}:{{svc}}"), ("SCRIPT", "FLUSH"), ("GET", "other:key")):
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command(*command)
        with pytest.raises(redis.exceptions.NoPermissionError):  # a key outside the prefix, even in a script
            r.execute_command("EVAL", "return redis.call('GET', KEYS[1])", 1, "other:key")
        with pytest.raises(AccessDeniedError):
            Admin(connect(_url(server_url, "worker"), timeout=1), prefix=PREFIX).list()
    finally:
        r.close()


def test_operator_user_runs_the_cli_paths(server_url: str) -> None:
    """status, list, history, trip/disable/reset, config set/clear, doctor: as `operator`."""
    client = connect(_url(server_url, "operator"), timeout=1)
    admin = Admin(client, prefix=PREFIX)
    worker = Breaker("op-svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
    try:
        worker.call(int, 1)
        assert admin.list() == ["op-svc"]
        assert admin.status("op-svc").calls == 1
        admin.trip("op-svc", for_=60, reason="op", actor="alice")
        admin.disable("op-svc", for_=60, reason="op", actor="alice")
        admin.reset("op-svc", reason="op", actor="alice")
        assert len(admin.history("op-svc")) >= 3
        admin.set_config("op-svc", actor="alice", open_duration=5)
        admin.clear_config("op-svc", actor="alice")
        assert admin.config("op-svc") is not None
        checks = {c.name: c for c in admin.doctor(pings=2)}
        assert all(c.status != "FAIL" and not c.denied for c in checks.values()), checks
    finally:
        worker.close()
        client.close()
