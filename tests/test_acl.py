"""Roles: the ACL users docs/operations.md gives (a worker, and an operator for the CLI and
Admin) run what their role needs, and the worker cannot run what it must not: no Lua of its own,
no trip/disable/reset/config, no other prefix's keys (issue 14 item 14).

The lines are read from docs/operations.md: the Redis Functions pair on servers that have
Functions (Redis >= 7.0, Valkey >= 7.2), the EVALSHA pair otherwise (Redis 6.2 in CI, where the
Function-only tests skip)."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import redis
from _servers import Cluster, ServerFactory

import distbreaker.asyncio as dba
from distbreaker import AccessDeniedError, Admin, Breaker, BreakerConfig, State, connect, use_functions
from distbreaker._functions import LIBRARY_NAME
from distbreaker._scripts import FUNCTIONS, SCRIPTS
from distbreaker.errors import DistbreakerError

ROOT = Path(__file__).resolve().parent.parent
PREFIX = "acl-test"  # docs' users are written for the prefix "distbreaker"; these are the same rules
OTHER = f"{PREFIX}:team2"  # another prefix that starts with this one
CLI = [sys.executable, "-m", "distbreaker_cli.app"]


def _doc_users() -> list[list[str]]:
    """Every ``ACL SETUSER`` line of docs/operations.md, as rules for PREFIX."""
    text = (ROOT / "docs" / "operations.md").read_text()
    section = text[text.index("## ACL: least privilege") : text.index("## When Redis is down")]
    users = []
    for line in re.findall(r"^ACL SETUSER .*$", section, re.MULTILINE):
        rules = line.split()[3:]
        rules = [re.sub(r"^>(\w+)_PASSWORD$", lambda m: f">{m.group(1).lower()}-pw", r) for r in rules]
        users.append([r.replace("distbreaker:", f"{PREFIX}:") if r[:1] in "~&" else r for r in rules])
    return users


USERS = _doc_users()  # [functions worker, functions operator, 6.2 worker, 6.2 operator]


class Setup(NamedTuple):
    url: str  # no user
    functions: bool  # the server has Redis Functions (the worker role is enforced)
    admin: redis.Redis  # the default user

    def user(self, name: str) -> str:
        return self.url.replace("redis://", f"redis://{name}:{name}-pw@")

    def connect(self, name: str, **kw: Any) -> Any:
        return connect(self.user(name), timeout=1, functions=self.functions, **kw)


class Boom(Exception):
    pass


def boom() -> None:
    raise Boom


def test_docs_give_both_pairs() -> None:
    assert len(USERS) == 4
    worker, operator = USERS[0], USERS[1]
    assert "+fcall" in worker and not {"+eval", "+evalsha", "+script", "+function", "+@scripting"} & set(worker)
    assert f"~{PREFIX}:{{*}}:op" in operator and f"~{PREFIX}:{{*}}:op" not in worker
    assert not [r for r in worker + operator if r.startswith("~") and not r.startswith(f"~{PREFIX}:{{")]


@pytest.fixture
def setup(redis_server_factory: ServerFactory) -> Iterator[Setup]:
    server = redis_server_factory()
    admin = server.client()
    version = tuple(int(p) for p in str(admin.info("server")["redis_version"]).split(".")[:2])
    functions = version >= (7, 0)
    worker, operator = USERS[:2] if functions else USERS[2:]
    admin.execute_command("ACL", "SETUSER", "worker", *worker)
    admin.execute_command("ACL", "SETUSER", "operator", *operator)
    url = f"redis://127.0.0.1:{server.port}/0"
    if functions:  # deployment: the operator loads the library
        with connect(url.replace("redis://", "redis://operator:operator-pw@"), timeout=1) as op:
            assert Admin(op, prefix=PREFIX).load_functions() == LIBRARY_NAME
    yield Setup(url, functions, admin)
    admin.close()


@pytest.fixture
def functions_only(setup: Setup) -> Setup:
    if not setup.functions:
        pytest.skip("the server has no Redis Functions (Redis < 7.0): the worker role needs EVAL there")
    return setup


def _wait(predicate: Any, what: str, limit: float = 5) -> None:
    deadline = time.monotonic() + limit
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.005)


def test_worker_user_runs_the_call_paths(setup: Setup, caplog: pytest.LogCaptureFixture) -> None:
    """Calls (closed path, failures, a trip by the thresholds), the half-open probe, pub/sub,
    batched flushes, snapshot: all as `worker` (FCALL where the server has Functions); the
    startup eviction check's NOPERM (CONFIG) is ignored silently."""
    caplog.set_level(logging.WARNING, logger="distbreaker")
    client, other = setup.connect("worker"), setup.connect("worker")
    cfg = BreakerConfig(
        minimum_calls=2, failure_rate_threshold=0.6, open_duration=0.1, max_staleness=60, redis_timeout=1
    )
    watcher = Breaker("svc", client, cfg, prefix=PREFIX)
    actor = Breaker("svc", other, cfg, prefix=PREFIX, listen=False)
    batched = Breaker("batched", other, cfg, prefix=PREFIX, listen=False, mode="batched", flush_interval=60)
    try:
        assert actor._core.scripts is (FUNCTIONS if setup.functions else SCRIPTS)
        assert watcher.call(int, 1) == 1
        listener = watcher._listener
        assert listener is not None
        _wait(listener.ready.is_set, "the listener subscribes")
        for _ in range(2):
            with pytest.raises(Boom):
                actor.call(boom)
        assert actor.snapshot().state is State.OPEN
        _wait(lambda: watcher._core.view.state is State.OPEN, "the watcher learns OPEN through pub/sub")
        time.sleep(0.15)  # open_duration: the next call is a half-open probe
        assert actor.call(int, 2) == 2  # the half-open probe (a lease) closes it
        assert actor.snapshot().state is State.CLOSED
        for i in range(10):
            batched.call(int, i)
        batched.flush()
        assert batched.snapshot().calls == 10
        assert Admin(other, prefix=PREFIX).status("batched").calls == 10  # status: a read, as a worker
        assert actor._core.backoff == 0 and batched._core.backoff == 0
        assert not [r for r in caplog.records if r.name == "distbreaker"], caplog.text
        if setup.functions:  # FCALL did it all: no script was ever cached
            assert setup.admin.execute_command("SCRIPT", "EXISTS", SCRIPTS["record"].sha) == [0]
    finally:
        for b in (watcher, actor, batched):
            b.close()
        client.close()
        other.close()


async def test_worker_user_asyncio(setup: Setup) -> None:
    client = dba.connect(setup.user("worker"), timeout=1, functions=setup.functions)
    b = dba.Breaker("async-svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX)
    try:
        assert await b.call(int, 4) == 4
        assert (await b.snapshot()).calls == 1
    finally:
        await b.close()
        await client.aclose()


async def test_asyncio_roles(functions_only: Setup) -> None:
    """distbreaker.asyncio: the worker records through FCALL and is refused trip/reset (Breaker
    and Admin), nothing written; the operator's asyncio Admin trips and resets through FCALL."""
    setup = functions_only
    worker = dba.connect(setup.user("worker"), timeout=1, functions=True)
    operator = dba.connect(setup.user("operator"), timeout=1, functions=True)
    b = dba.Breaker("async-roles", worker, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
    try:
        assert await b.call(int, 1) == 1
        before = _state(setup, "async-roles")
        for attempt in (
            lambda: b.trip(reason="x"),
            lambda: b.reset(),
            lambda: dba.Admin(worker, prefix=PREFIX).trip("async-roles"),
        ):
            with pytest.raises(AccessDeniedError):
                await attempt()
            assert _state(setup, "async-roles") == before
        admin = dba.Admin(operator, prefix=PREFIX)
        assert (await admin.trip("async-roles", reason="op")).state is State.FORCED_OPEN
        assert (await admin.reset("async-roles")).state is State.CLOSED
        assert setup.admin.execute_command("SCRIPT", "EXISTS", SCRIPTS["control"].sha) == [0]  # FCALL
    finally:
        await b.close()
        await worker.aclose()
        await operator.aclose()


def test_worker_user_cannot_do_more(setup: Setup) -> None:
    r = redis.Redis.from_url(setup.user("worker"), socket_timeout=1)
    try:
        for command in (
            ("FLUSHDB",),
            ("KEYS", "*"),
            ("CONFIG", "SET", "maxmemory", "1"),
            ("SCAN", "0"),
            ("DEL", f"{PREFIX}:{{svc}}"),
            ("SCRIPT", "FLUSH"),
            ("GET", "other:key"),
            ("HSET", f"{OTHER}:{{svc}}", "st", "open"),
            ("HGET", f"{PREFIX}:{{svc}}:op", "x"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command(*command)
        if not setup.functions:  # a key outside the prefix, even in a script
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command("EVAL", "return redis.call('GET', KEYS[1])", 1, "other:key")
        with pytest.raises(AccessDeniedError):
            Admin(setup.connect("worker"), prefix=PREFIX).list()
    finally:
        r.close()


def test_worker_runs_no_lua_of_its_own(functions_only: Setup) -> None:
    """EVAL, EVALSHA, SCRIPT, FUNCTION LOAD/DELETE/FLUSH: all denied to the worker."""
    setup = functions_only
    sha = setup.admin.script_load("return 1")
    r = redis.Redis.from_url(setup.user("worker"), socket_timeout=1)
    try:
        for command in (
            ("EVAL", "return 1", 0),
            ("EVALSHA", sha, 0),
            ("EVAL_RO", "return 1", 0),
            ("SCRIPT", "LOAD", "return 1"),
            ("FUNCTION", "LOAD", "#!lua name=mine\nredis.register_function('mine', function() end)"),
            ("FUNCTION", "DELETE", LIBRARY_NAME),
            ("FUNCTION", "FLUSH"),
        ):
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command(*command)
        assert setup.admin.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME)  # still there
    finally:
        r.close()


def _state(setup: Setup, service: str) -> tuple[dict[bytes, bytes], int]:
    return (setup.admin.hgetall(f"{PREFIX}:{{{service}}}"), setup.admin.xlen(f"{PREFIX}:{{{service}}}:events"))


def test_worker_cannot_trip_disable_reset_or_reconfigure(functions_only: Setup) -> None:
    """Through the Breaker, Admin and a hand-made FCALL of `control`: AccessDeniedError (or a
    refusal) and nothing written, whatever third key the worker names."""
    setup = functions_only
    client = setup.connect("worker")
    breaker = Breaker("svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
    admin = Admin(client, prefix=PREFIX)
    try:
        breaker.call(int, 1)
        before = _state(setup, "svc")
        attempts = [
            lambda: breaker.trip(reason="x"),
            lambda: breaker.reset(reason="x"),
            lambda: admin.trip("svc", reason="x"),
            lambda: admin.disable("svc", for_=60),
            lambda: admin.reset("svc"),
            lambda: admin.set_config("svc", actor="w", minimum_calls=1),
            lambda: admin.clear_config("svc", actor="w"),
        ]
        for attempt in attempts:
            with pytest.raises(AccessDeniedError):
                attempt()
            assert _state(setup, "svc") == before
        control = FUNCTIONS["control"].function
        state, events = f"{PREFIX}:{{svc}}", f"{PREFIX}:{{svc}}:events"
        r = redis.Redis.from_url(setup.user("worker"), socket_timeout=1)
        try:
            for keys in ((state, events), (state, events, f"{state}:ids"), (state, events, state)):
                with pytest.raises(redis.exceptions.ResponseError, match="control needs KEYS"):
                    r.execute_command("FCALL", control, len(keys), *keys, "", "", "trip", "0", "forged", "w")
                assert _state(setup, "svc") == before
            with pytest.raises(redis.exceptions.NoPermissionError):
                r.execute_command("FCALL", control, 3, state, events, f"{state}:op", "", "", "trip", "0", "f", "w")
            assert _state(setup, "svc") == before
        finally:
            r.close()
        assert breaker.snapshot().state is State.CLOSED
    finally:
        breaker.close()
        client.close()


def test_worker_without_functions_is_told_to_connect_with_them(functions_only: Setup) -> None:
    """The worker user on a client made without functions=True: the EVALSHA denial says what to do."""
    setup = functions_only
    with connect(setup.user("worker"), timeout=1) as client:
        b = Breaker("svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
        with pytest.raises(AccessDeniedError, match=r"functions=True"):
            b.call(int, 1)
        b.close()


def test_worker_cannot_reach_another_prefix(setup: Setup) -> None:
    client = setup.connect("worker")
    b = Breaker("svc", client, BreakerConfig(redis_timeout=1), prefix=OTHER, listen=False)
    try:
        with pytest.raises(AccessDeniedError):
            b.call(int, 1)
        assert setup.admin.exists(f"{OTHER}:{{svc}}") == 0
    finally:
        b.close()
        client.close()


def test_operator_user_runs_the_cli_paths(setup: Setup) -> None:
    """status, list, history, trip/disable/reset, config set/clear, doctor: as `operator`, both
    through FCALL (control names the :op key) and through the CLI's default EVALSHA."""
    for functions in {setup.functions, False}:
        client = connect(setup.user("operator"), timeout=1, functions=functions)
        admin = Admin(client, prefix=PREFIX)
        worker = Breaker("op-svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
        try:
            worker.call(int, 1)
            assert admin.list() == ["op-svc"]
            assert admin.status("op-svc").calls >= 1
            assert admin.trip("op-svc", for_=60, reason="op", actor="alice").state is State.FORCED_OPEN
            assert admin.disable("op-svc", for_=60, reason="op", actor="alice").state is State.DISABLED
            assert admin.reset("op-svc", reason="op", actor="alice").state is State.CLOSED
            worker.trip(reason="op")
            worker.reset(reason="op")
            assert len(admin.history("op-svc")) >= 5
            admin.set_config("op-svc", actor="alice", open_duration=5)
            admin.clear_config("op-svc", actor="alice")
            assert admin.config("op-svc") is not None
            checks = {c.name: c for c in admin.doctor(pings=2)}
            assert all(c.status != "FAIL" and not c.denied for c in checks.values()), checks
        finally:
            worker.close()
            client.close()


def test_library_missing_worker_is_told_and_operator_reloads(functions_only: Setup) -> None:
    """After FUNCTION FLUSH: the worker's call raises AccessDeniedError naming load-functions
    (nothing counted, the function not run); `distbreaker load-functions` as the operator puts it
    back; a user allowed FUNCTION LOAD reloads it by itself."""
    setup = functions_only
    client = setup.connect("worker")
    b = Breaker("svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
    ran: list[int] = []
    warm = Breaker("warm", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
    try:
        setup.admin.flushall()  # keeps functions: the worker goes on
        assert warm.call(int, 1) == 1 and warm.snapshot().calls == 1
        setup.admin.flushall()
        setup.admin.execute_command("FUNCTION", "FLUSH")
        with pytest.raises(AccessDeniedError, match="load-functions") as info:
            b.call(ran.append, 1)
        assert "worker-pw" not in str(info.value)
        assert ran == [] and setup.admin.exists(f"{PREFIX}:{{svc}}") == 0
        proc = subprocess.run(
            [*CLI, "--url", setup.user("operator"), "load-functions"],
            capture_output=True,
            check=False,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        assert LIBRARY_NAME in proc.stderr and "operator-pw" not in proc.stderr + proc.stdout
        assert b.call(int, 1) == 1
        assert b.snapshot().calls == 1
    finally:
        b.close()
        warm.close()
        client.close()
    setup.admin.execute_command("FUNCTION", "FLUSH")
    op = setup.connect("operator")
    try:
        assert Breaker("svc2", op, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False).call(int, 1) == 1
        assert setup.admin.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME)
    finally:
        op.close()


def test_library_missing_falls_back_to_evalsha_when_allowed(functions_only: Setup) -> None:
    """A worker user with FCALL and EVALSHA but no FUNCTION LOAD (the Redis 6.2 lines +fcall),
    functions=True, library missing: the call runs through EVALSHA and is counted."""
    setup = functions_only
    setup.admin.execute_command(
        "ACL", "SETUSER", "legacy", *[r.replace("worker-pw", "legacy-pw") for r in USERS[2]], "+fcall"
    )
    setup.admin.execute_command("FUNCTION", "FLUSH")
    client = setup.connect("legacy")
    b = Breaker("svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
    try:
        assert b.call(int, 1) == 1
        assert b.snapshot().calls == 1
        assert setup.admin.execute_command("FUNCTION", "LIST") == []
    finally:
        b.close()
        client.close()


def test_doctor_role(functions_only: Setup) -> None:
    """doctor --role: each documented user passes its own role; the worker fails the operator
    role (what is missing), the operator fails the worker role's limits (what it can run)."""
    setup = functions_only

    def checks(user: str, role: str) -> dict[str, Any]:
        with setup.connect(user) as client:
            return {c.name: c for c in Admin(client, prefix=PREFIX).doctor(pings=2, role=role)}

    worker = checks("worker", "worker")
    assert worker["role"].status == "PASS" and worker["role-limits"].status == "PASS", worker
    operator = checks("operator", "operator")
    assert operator["role"].status == "PASS" and operator["role-limits"].status == "PASS", operator
    wrong = checks("worker", "operator")
    assert wrong["role"].status == "FAIL" and wrong["role"].denied
    assert "FUNCTION LOAD" in wrong["role"].detail and "FCALL control" in wrong["role"].detail
    loose = checks("operator", "worker")
    assert loose["role-limits"].status == "FAIL"
    for name in ("EVAL", "EVALSHA", "FUNCTION LOAD", "FCALL control"):
        assert name in loose["role-limits"].detail
    proc = subprocess.run(
        [*CLI, "--url", setup.user("worker"), "--prefix", PREFIX, "doctor", "--role", "operator", "--pings", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    assert proc.returncode == 77, proc.stdout + proc.stderr
    assert "worker-pw" not in proc.stdout + proc.stderr


def test_no_functions_is_said_plainly(setup: Setup) -> None:
    """Redis 6.2: functions=True and load-functions fail with one clear message (not the
    library's text); with Functions, the test checks nothing."""
    if setup.functions:
        pytest.skip("the server has Redis Functions")
    with connect(setup.url, timeout=1, functions=True) as client:
        b = Breaker("svc", client, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
        with pytest.raises(DistbreakerError, match="no Redis Functions") as info:
            b.call(int, 1)
        assert "register_function" not in str(info.value)
        with pytest.raises(DistbreakerError, match="no Redis Functions") as info:
            Admin(client, prefix=PREFIX).load_functions()
        assert "register_function" not in str(info.value)
        b.close()


def test_functions_on_every_cluster_master(redis_cluster: Cluster) -> None:
    """load_functions reaches every master; a breaker on a functions client calls through FCALL
    and reloads the library on a master that lost it."""
    from distbreaker import connect_cluster

    rc = use_functions(connect_cluster(redis_cluster.url, timeout=1))
    # the masters now (other tests of the session may have failed some over)
    masters = [redis.Redis(host=n.host, port=n.port, socket_timeout=2) for n in rc.get_primaries()]
    assert len(masters) == len(redis_cluster.masters)
    if tuple(int(p) for p in str(masters[0].info("server")["redis_version"]).split(".")[:2]) < (7, 0):
        rc.close()
        pytest.skip("the server has no Redis Functions (Redis < 7.0)")
    try:
        assert Admin(rc, prefix=PREFIX).load_functions() == LIBRARY_NAME
        for r in masters:
            assert r.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME), r
        services = [f"svc{i}" for i in range(12)]  # spread over the three masters' slots
        for r in masters:
            r.execute_command("FUNCTION", "FLUSH")
        for service in services:
            b = Breaker(service, rc, BreakerConfig(redis_timeout=1), prefix=PREFIX, listen=False)
            try:
                assert b.call(int, 1) == 1
                assert b.snapshot().calls == 1
            finally:
                b.close()
        for r in masters:
            assert r.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME), r
    finally:
        for service in [f"svc{i}" for i in range(12)]:
            rc.delete(f"{PREFIX}:{{{service}}}", f"{PREFIX}:{{{service}}}:events")
        rc.close()
        for r in masters:
            r.close()


async def test_asyncio_admin_loads_functions(functions_only: Setup) -> None:
    setup = functions_only
    setup.admin.execute_command("FUNCTION", "FLUSH")
    client = dba.connect(setup.user("operator"), timeout=1)
    try:
        assert await dba.Admin(client, prefix=PREFIX).load_functions() == LIBRARY_NAME
        assert setup.admin.execute_command("FUNCTION", "LIST", "LIBRARYNAME", LIBRARY_NAME)
    finally:
        await client.aclose()
