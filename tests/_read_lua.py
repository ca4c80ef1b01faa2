"""The oracle of the plain reads: one breaker read by read.lua, as an operator.

`Admin.status` / `config` / `inspect` ran read.lua until they were moved to the plain reads of
`_bulk` (issue 15 item 1: the script's server time); the tests that check a plain read
(`Admin.inspect`, `Admin.inspect_all`, the exporter) against the scripts compare it with this:
the same script (ARGV ``'' '' '1'``: the server's time, no config, create nothing), its texts
decoded as `_bulk.reply` gives them, then read by the same `Admin._decode`. read.lua *stores*
the lazy steps it applies (a plain read does not).
"""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from distbreaker import Admin, Snapshot, UnknownServiceError
from distbreaker._action_steps import Operator, read_steps
from distbreaker._core import text
from distbreaker._reply import EXISTS
from distbreaker._scripts import drive, scripts_for
from distbreaker.admin import FleetConfig
from distbreaker.errors import translate


def read_lua(client: Any, prefix: str, service: str) -> tuple[Snapshot, FleetConfig]:
    """`Admin.inspect` of `service` through read.lua (sync client).

    Raises:
        UnknownServiceError: read.lua found no breaker (and created nothing).
        CorruptStateError, BackendError: read.lua's refusal, translated.
    """
    try:
        reply = drive(client, read_steps(Operator(prefix, service, scripts_for(client))))
    except ResponseError as exc:
        raise translate(exc, service) from exc
    if not int(reply[EXISTS]):
        raise UnknownServiceError(service)
    typed = [text(v) if isinstance(v, bytes) else v for v in reply]  # (its numbers are ints already)
    return Admin(client, prefix=prefix)._decode(service, typed)


def server_ms(r: Any) -> int:
    """The server's clock (TIME) in ms, as the scripts and the plain reads take it."""
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000
