"""The server a benchmark runs against: `--url`, or a private one started by the test harness."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def server(url: str | None) -> Iterator[str]:
    """`url`, or a private server started by tests/_servers.py (stopped on exit)."""
    if url:
        yield url
        return
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from _servers import Server, find_binary  # the test harness

    srv = Server(find_binary())
    srv.start()
    try:
        yield srv.url
    finally:
        srv.close()
