"""The config schema (distbreaker/_schema.py) and every check derived from it, without Redis.

What reaches Lua is proven on a real server in tests/lua/test_schema.py."""

from __future__ import annotations

import asyncio
import math
import re
from dataclasses import fields
from datetime import timedelta
from typing import Any

import pytest
import redis
import redis.asyncio

import distbreaker.asyncio as dba
from distbreaker import Admin, Breaker, BreakerConfig, ConfigError, _arg_checks, _schema
from distbreaker._reference import CFG_NAMES, DEFAULT_CFG, Cfg
from distbreaker._scripts import SCRIPTS
from distbreaker.admin import CONFIG_FIELDS

DAY = 86400.0
# An address nothing listens on: a check that talked to Redis would raise RedisUnavailableError.
DEAD = "redis://127.0.0.1:1/0"


def test_every_view_of_the_config_is_derived_from_the_schema() -> None:
    """BreakerConfig's defaults and ARGV, admin.CONFIG_FIELDS, Cfg and the Lua all list the same
    config values, in the same order, with the same defaults."""
    assert [f.name for f in _schema.FIELDS] == [name for _, name, _ in CONFIG_FIELDS]
    assert [f.lua for f in _schema.FIELDS] == [lua for lua, _, _ in CONFIG_FIELDS] == list(CFG_NAMES)
    defaults = {f.name: f.default for f in fields(BreakerConfig) if f.init}
    assert {f.name: f.default for f in _schema.FIELDS} == {f.name: defaults[f.name] for f in _schema.FIELDS}
    assert BreakerConfig()._lua == _schema.DEFAULT_ARGV == tuple(DEFAULT_CFG.argv())
    assert Cfg.defaults() == DEFAULT_CFG and DEFAULT_CFG.valid()
    assert BreakerConfig().fingerprint == DEFAULT_CFG.fingerprint == "2c25ae20ea"  # unchanged since 0.1
    for script in SCRIPTS.values():
        text = script.text.decode()
        assert "--@schema" not in text
        assert text.count("local CFG_NAMES = ") == 1 and _schema.lua_constants() in text
        assert text.count("local NCFG = ") == 1
        assert 0 < text.find(_schema.lua_head_constants()) < text.index("local K_STATE")  # before any fast path
        assert f"local DEFAULT_CFG = '{','.join(_schema.DEFAULT_ARGV)}'" in text


def test_no_hand_written_config_names_left_in_lua() -> None:
    """lua/_lib.lua holds the --@schema marker instead of the names, defaults and bounds."""
    from distbreaker._scripts import _lua_dir

    lib = (_lua_dir() / "_lib.lua").read_text()
    assert lib.count("\n--@schema\n") == 1
    assert "'idle_ttl_ms'" not in lib and "604800000" not in lib


def _bounds() -> list[tuple[str, Any, bool]]:
    """(field, value in BreakerConfig units, accepted) just inside and outside every bound."""
    out: list[tuple[str, Any, bool]] = []
    for f in _schema.FIELDS:
        if f.unit == "ms":
            out += [
                (f.name, f.low / 1000, True),
                (f.name, f.high / 1000, True),
                (f.name, (f.high + 1) / 1000, False),
                (f.name, 0.0004, False),
                (f.name, 0, False),
            ]
        elif f.unit == "count":
            out += [
                (f.name, f.low, True),
                (f.name, f.high, True),
                (f.name, f.high + 1, False),
                (f.name, f.low - 1, False),
                (f.name, 1.5, False),
            ]
        elif f.unit == "ratio":
            out += [
                (f.name, 1e-9, True),
                (f.name, 1, True),
                (f.name, 0.0, False),
                (f.name, math.nextafter(1.0, 2.0), False),
            ]
        else:
            out += [
                (f.name, 1, True),
                (f.name, f.high, True),
                (f.name, math.nextafter(1.0, 0.0), False),
                (f.name, math.nextafter(f.high, math.inf), False),
            ]
    return out


def _around(name: str, value: Any) -> dict[str, Any]:
    """Other fields set so that only `name`'s own bounds decide (the rules between fields hold)."""
    cfg: dict[str, Any] = {
        "buckets": 1,
        "window": 1.0,
        "open_duration": 0.001,
        "max_open_duration": 7 * DAY,
        "idle_ttl": 366 * DAY,
    }
    if name == "idle_ttl":
        cfg["window"] = 0.001
    if name == "window":
        cfg["buckets"] = 1
    return {**cfg, name: value}


@pytest.mark.parametrize(("name", "value", "accepted"), _bounds())
def test_bounds_of_every_field(name: str, value: Any, accepted: bool) -> None:
    """Each of the 13 values is accepted at its bounds and refused just outside, naming the field."""
    if accepted:
        BreakerConfig(**_around(name, value))
    else:
        with pytest.raises(ConfigError) as info:
            BreakerConfig(**_around(name, value))
        assert info.value.field == name


@pytest.mark.parametrize("name", ["slow_call_duration", "redis_timeout", "max_staleness"])
def test_bounds_of_the_worker_durations(name: str) -> None:
    """The durations a worker keeps for itself have an upper bound too (and any value > 0 below it)."""
    high, _ = _schema.LOCAL_DURATIONS[name]
    assert getattr(BreakerConfig(**{name: high}), name) == high
    assert getattr(BreakerConfig(**{name: 1e-6}), name) == 1e-6
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{name: high * 1.0001})
    assert info.value.field == name


NOT_NONE = [
    f.name
    for f in fields(BreakerConfig)
    if f.init
    and f.name
    not in (
        "consecutive_failures",
        "slow_call_duration",
        "failure_predicate",
        "result_predicate",
        "half_open_failure_rate_threshold",
        "minimum_failing_workers",
    )
]


@pytest.mark.parametrize("name", NOT_NONE)
def test_none_is_a_config_error_where_it_does_not_mean_off(name: str) -> None:
    """window=None (and every other field but the two that None turns off): ConfigError, not TypeError."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{name: None})
    assert info.value.field == name


def test_none_turns_off_what_it_may() -> None:
    c = BreakerConfig(consecutive_failures=None, slow_call_duration=None)
    assert c.consecutive_failures is None and c._lua[4] == "0"


DURATIONS = [f.name for f in _schema.FIELDS if f.unit == "ms"] + list(_schema.LOCAL_DURATIONS)
BAD = [math.inf, -math.inf, math.nan, float("1e999"), 10**400, -1, True, "10", b"10", [10]]


@pytest.mark.parametrize("name", DURATIONS)
@pytest.mark.parametrize("value", BAD, ids=lambda v: repr(v)[:20])
def test_bad_durations_are_config_errors(name: str, value: Any) -> None:
    """inf, nan, 10**400, negative, bool or text: ConfigError naming the field (never OverflowError)."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{name: value})
    assert info.value.field == name


@pytest.mark.parametrize("name", [f.name for f in _schema.FIELDS if f.unit != "ms"])
@pytest.mark.parametrize("value", BAD, ids=lambda v: repr(v)[:20])
def test_bad_numbers_are_config_errors(name: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        BreakerConfig(**{name: value})
    assert info.value.field == name


def test_idle_ttl_shorter_than_window_is_refused() -> None:
    """issue 14 item 4: idle_ttl=1, window=60 let a busy breaker expire while in use."""
    with pytest.raises(ConfigError) as info:
        BreakerConfig(idle_ttl=1, window=60)
    assert info.value.field == "idle_ttl" and "window" in str(info.value)
    assert BreakerConfig(idle_ttl=60, window=60).idle_ttl == 60.0
    with pytest.raises(ConfigError) as info:
        BreakerConfig().replace(window=timedelta(hours=2), idle_ttl=timedelta(hours=1))
    assert info.value.field == "idle_ttl"


def test_rules_between_fields() -> None:
    with pytest.raises(ConfigError) as info:
        BreakerConfig(window=0.005, buckets=10)
    assert info.value.field == "window"
    with pytest.raises(ConfigError) as info:
        BreakerConfig(open_duration=60, max_open_duration=30)
    assert info.value.field == "max_open_duration"


def test_buckets_of_the_issue_are_refused() -> None:
    """issue 14 item 6: buckets=8000 broke `unpack` mid-write, 10**6 blocked the server 3.4 s."""
    for buckets in (8000, 10_000, 10**5, 10**6):
        with pytest.raises(ConfigError, match="buckets") as info:
            BreakerConfig(buckets=buckets, window=60, minimum_calls=2)
        assert info.value.field == "buckets"
    assert BreakerConfig(buckets=1000, window=60).buckets == 1000


def test_cfg_valid_is_the_schema() -> None:
    """The reference model refuses what the schema refuses (non-integral counts included)."""
    assert Cfg.from_argv(
        ["0.5", "10", "60000", "1000", "0", "1.0", "30000", "2.0", "600000", "1", "1", "10000", "604800000"]
    ).valid()
    for i, text in (
        (3, "1001"),
        (3, "1.5"),
        (2, "1.5"),
        (0, "0.0"),
        (7, "100.5"),
        (12, "59999"),
        (8, "29999"),
        (12, "nan"),
        (12, "inf"),
    ):
        values = list(_schema.DEFAULT_ARGV)
        values[i] = text
        assert not Cfg.from_argv(values).valid(), (CFG_NAMES[i], text)


# -- for_ of trip/disable ------------------------------------------------------------------------

BAD_FOR = [math.inf, math.nan, float("1e999"), 10**400, -1, 0, _schema.FOR_MAX + 1, True, "10", timedelta(days=367)]


@pytest.mark.parametrize("value", BAD_FOR, ids=lambda v: repr(v)[:20])
def test_for_is_checked_by_the_shared_validator(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        _arg_checks.duration(value)
    assert info.value.field == "for_"


def test_for_accepts_up_to_its_bound() -> None:
    assert _arg_checks.duration(None) is None
    assert _arg_checks.duration(_schema.FOR_MAX) == _schema.FOR_MAX
    assert _arg_checks.duration(timedelta(minutes=5)) == 300.0


@pytest.mark.parametrize("value", BAD_FOR, ids=lambda v: repr(v)[:20])
@pytest.mark.parametrize("op", ["trip", "disable"])
def test_every_trip_path_refuses_a_bad_for_before_redis(op: str, value: Any) -> None:
    """Breaker, asyncio Breaker and Admin: ConfigError, not OverflowError, with Redis unreachable."""
    b = Breaker("svc", redis.Redis.from_url(DEAD), listen=False)
    with pytest.raises(ConfigError) as info:
        getattr(b, op)(for_=value, actor="t")
    assert info.value.field == "for_"
    admin = Admin(redis.Redis.from_url(DEAD))
    with pytest.raises(ConfigError) as info:
        getattr(admin, op)("svc", for_=value, actor="t")
    assert info.value.field == "for_"

    async def main() -> None:
        ab = dba.Breaker("svc", redis.asyncio.Redis.from_url(DEAD), listen=False)
        with pytest.raises(ConfigError) as info:
            await getattr(ab, op)(for_=value, actor="t")
        assert info.value.field == "for_"

    asyncio.run(main())


# -- Admin.set_config checks before Redis -----------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("buckets", 10_000),
        ("buckets", 0),
        ("idle_ttl", 1e14),
        ("idle_ttl", math.inf),
        ("window", None),
        ("window", 10**400),
        ("minimum_calls", "20"),
        ("backoff_multiplier", 1000.0),
        ("half_open_max_calls", 101),
    ],
)
def test_set_config_checks_each_value_before_redis(name: str, value: Any) -> None:
    """A value out of bounds is refused before Admin talks to Redis (unreachable here)."""
    with pytest.raises(ConfigError) as info:
        Admin(redis.Redis.from_url(DEAD)).set_config("svc", actor="t", **{name: value})
    assert info.value.field == name


def test_set_config_checks_the_service_name_before_redis() -> None:
    with pytest.raises(ConfigError) as info:
        Admin(redis.Redis.from_url(DEAD)).set_config("no spaces", minimum_calls=3)
    assert info.value.field == "service"


# -- Breaker options --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"listen": "no"}, "listen"),
        ({"listen": 1}, "listen"),
        ({"listen": None}, "listen"),
        ({"clock": 5}, "clock"),
        ({"clock": "time"}, "clock"),
    ],
)
def test_breaker_options_are_checked(kwargs: dict[str, Any], field: str) -> None:
    """listen must be a bool and clock None or a callable, in both Breakers (ConfigError naming it)."""
    with pytest.raises(ConfigError) as info:
        Breaker("svc", redis.Redis.from_url(DEAD), **kwargs)
    assert info.value.field == field
    with pytest.raises(ConfigError) as info:
        dba.Breaker("svc", redis.asyncio.Redis.from_url(DEAD), **kwargs)
    assert info.value.field == field


def test_lua_constants_follow_the_schema() -> None:
    """The generated Lua names every field's bounds in its error text."""
    text = _schema.lua_constants()
    for f in _schema.FIELDS:
        assert f"fail('{f.lua} must be {f.range_text()}, got '" in text
    for rule in _schema.RELATIONS:
        a, b = _schema.by_name(rule.field).lua, _schema.by_name(rule.other).lua
        assert f"fail('{a} must be >= {b}')" in text


def test_configuration_page_documents_every_bound() -> None:
    """docs/configuration.md's "valid" column states each upper bound the schema holds."""
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "configuration.md").read_text()
    rows = {
        line.split(" | ")[0][3:-1]: line.split(" | ")[-1]
        for line in page.splitlines()
        if line.startswith("| `") and line.count(" | ") == 4
    }  # the Fields table

    def shown(value: float) -> str:
        if value == 10**9:
            return "10⁹"
        return _schema.human_ms(value) if isinstance(value, int) and value >= 1000 * 60 else f"{value:g}"

    for f in _schema.FIELDS:
        high = _schema.human_ms(f.high) if f.unit == "ms" else shown(f.high)
        assert high in rows[f.name], (f.name, high, rows[f.name])
    for name, (high_s, _) in _schema.LOCAL_DURATIONS.items():
        words = "60 seconds" if high_s == 60 else _schema.human_ms(high_s * 1000)
        assert words in rows[name], (name, words, rows[name])
    assert "| `for_` of `trip` / `disable` | 366 days |" in page and _schema.FOR_MAX == 366 * DAY


def test_the_record_fast_path_reads_no_given_config() -> None:
    """record.lua's fast path runs before the library, on the stored hot config: a call that
    brings its config (ARGV past the 7 own arguments) takes the general path, so the fast path
    names no ARGV index past 9 and knows the config's size only as the head's generated NCFG."""
    from distbreaker._scripts import _lua_dir

    assert f"local NCFG = {len(_schema.FIELDS)} " in _schema.lua_head_constants()
    record = (_lua_dir() / "record.lua").read_text()
    fast = record.split("--@lib")[0]
    assert "local CFG = 9 " in fast and "if #ARGV == CFG and " in fast
    code = "\n".join(line.split("--")[0] for line in fast.splitlines())  # (no comments)
    assert not re.search(r"ARGV\[(1[0-9]|2[0-9]|CFG)", code)
