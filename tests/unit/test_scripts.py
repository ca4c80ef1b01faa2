"""The loader's hot-field reads (distbreaker/_scripts.py, `hot_reads`): every script reads every
hot field exactly once, and a fast path uses only the fields its head read (the others are nil
until the library begins, and a fast path that used one would take it for absent)."""

from __future__ import annotations

import re

import pytest

from distbreaker._scripts import HEAD_NEEDS, HOT_FIELDS, NAMES, SCRIPTS, _lua_dir, hot_reads

HMGET = re.compile(r"^(?:local )?((?:H_\w+, )*H_\w+) = unpack\(redis\.call\('HMGET', K_STATE, ([^)]*)\)\)$", re.M)
LIB_START = "-- distbreaker/_lib.lua:"
REST = "-- the hot fields the fast path did not read"
DECLARED = re.compile(r"^local (?:H_\w+, )*H_\w+\s*--")


def reads(text: str) -> list[tuple[list[str], list[str]]]:
    """Each generated read of the hot fields: (the locals assigned, the fields asked for)."""
    return [
        ([v[2:] for v in names.split(", ")], [f.strip(" '") for f in fields.split(",")])
        for names, fields in HMGET.findall(text)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_script_reads_every_hot_field_once_into_its_local(name: str) -> None:
    text = SCRIPTS[name].text.decode()
    found = reads(text)
    assert found and all(names == fields for names, fields in found), found
    every = [f for _, fields in found for f in fields]
    assert sorted(every) == sorted(HOT_FIELDS)
    assert set(HEAD_NEEDS) <= set(found[0][1])
    assert len(found) == 1 or text.index(found[1][1][0]) < text.index(LIB_START)  # before the library


@pytest.mark.parametrize("name", NAMES)
def test_a_fast_path_uses_only_the_fields_its_head_read(name: str) -> None:
    text = SCRIPTS[name].text.decode()
    first = reads(text)[0][1]
    start = text.index("\n", text.index("local H_st,"))  # after the head's read
    end = text.find(REST)
    fast = text[start : end if end >= 0 else text.index(LIB_START)]
    code = "\n".join(
        line.split("--")[0] for line in fast.splitlines() if not DECLARED.match(line)
    )  # (no comments, no declaration of the unread fields)
    used = set(re.findall(r"\bH_(\w+)", code))
    assert used <= set(first), sorted(used - set(first))


def test_the_common_calls_read_fewer_fields() -> None:
    """acquire's fast path reads `st g fp xr`; record's the window and the hot config too (15);
    read and control read all 21 in the head."""
    assert reads(SCRIPTS["acquire"].text.decode())[0][1] == list(HEAD_NEEDS)
    assert len(reads(SCRIPTS["record"].text.decode())[0][1]) == 15
    assert all(len(reads(SCRIPTS[n].text.decode())) == 1 for n in ("read", "control"))


@pytest.mark.parametrize(
    "line,error",
    [
        (b"--@fast-path-reads st tc nope", "unknown or repeated"),
        (b"--@fast-path-reads st tc tc", "unknown or repeated"),
        (b"--@fast-path-reads st\n--@fast-path-reads g", "more than one"),
    ],
)
def test_a_bad_fast_path_reads_line_is_refused_at_load(line: bytes, error: str) -> None:
    with pytest.raises(RuntimeError, match=error):
        hot_reads(b"-- x\n" + line + b"\n--@lib\n", "x")


def test_the_head_has_one_read_marker() -> None:
    assert (_lua_dir() / "_head.lua").read_text().count("\n--@head-read\n") == 1
