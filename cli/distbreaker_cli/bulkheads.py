"""`distbreaker bulkheads`: the fleet-wide bulkheads under the prefix (in use / max).

A command of its own (not a section of `status`, whose read path is the breakers'; `status`
only counts them): one SCAN and two pipelines of plain reads, no script, through
`distbreaker.bulkhead.bulkheads` (the reader the exporter uses too). Errors go up to the one
boundary in `app.py`.
"""

from __future__ import annotations

import fnmatch

import click

from distbreaker.bulkhead import BulkheadState
from distbreaker.bulkhead import bulkheads as read_bulkheads

from .context import Context, global_options
from .output import dumps, safe

__all__ = ["bulkheads"]

pass_ctx = click.make_pass_decorator(Context)


def _dict(s: BulkheadState) -> dict[str, object]:
    return {
        "name": s.name,
        "in_use": s.in_use,
        "max_concurrent": s.max_concurrent,
        "next_expiry": None if s.next_expiry is None else round(s.next_expiry, 3),
        "lease_timeout": s.lease_timeout,
    }


@click.command()
@click.argument("names", nargs=-1, metavar="[NAME|GLOB]...")
@global_options
@pass_ctx
def bulkheads(obj: Context, names: tuple[str, ...]) -> None:
    """Show the fleet-wide bulkheads: slots in use (live leases) of the limit of the last grant,
    when the earliest lease expires, and the lease timeout of the last grant (every bulkhead
    used in the last 7 days when none is named; NAME may be a glob).

    With -o json: a list of {"name", "in_use", "max_concurrent", "next_expiry" (seconds or
    null), "lease_timeout" (seconds or null)}.
    """
    found = read_bulkheads(obj.client(), obj.prefix)
    if names:
        found = [s for s in found if any(fnmatch.fnmatchcase(s.name, n) for n in names)]
    if obj.json:
        obj.out(dumps([_dict(s) for s in found]))
        return
    if not found:
        obj.note(f"no bulkheads under prefix {safe(obj.prefix)!r}")
        return
    rows = [
        (
            safe(s.name),
            str(s.in_use),
            "-" if s.max_concurrent is None else str(s.max_concurrent),
            "-" if s.next_expiry is None else f"{s.next_expiry:.1f}s",
            "-" if s.lease_timeout is None else f"{s.lease_timeout:g}s",
        )
        for s in found
    ]
    if not obj.no_headers:
        rows.insert(0, ("BULKHEAD", "IN USE", "MAX", "NEXT EXPIRY", "LEASE TIMEOUT"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    sep = "\t" if obj.output == "plain" else "  "
    for row in rows:
        obj.out(sep.join(cell.ljust(w) if sep == "  " else cell for cell, w in zip(row, widths)).rstrip())
