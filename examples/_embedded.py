"""Where the examples find a Redis: ``DISTBREAKER_URL``, else a private embedded server.

The embedded server is the one `distbreaker demo` starts (the `valkey-server` of the `demo`
extra, else `redis-server`/`valkey-server` on PATH), started and stopped by the demo's own
helpers: 127.0.0.1, a free port, no persistence, stopped by pid when the block ends, and on
Linux killed by the kernel if this process dies first (even by SIGKILL).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def redis_url() -> Iterator[str]:
    """Yield ``$DISTBREAKER_URL`` when set; otherwise start an embedded server for the block."""
    url = os.environ.get("DISTBREAKER_URL", "").strip()
    if url:
        yield url
        return
    from distbreaker_cli.context import CliError
    from distbreaker_cli.demo import EmbeddedServer, find_server

    directory = Path(tempfile.mkdtemp(prefix="distbreaker-example-"))
    server: EmbeddedServer | None = None
    try:
        binary, label = find_server()
        server = EmbeddedServer(binary, label, directory)
        server.start()  # stops what it started on failure; dies with this process (PR_SET_PDEATHSIG)
    except BaseException as exc:  # a signal during the start too: nothing may outlive us
        if server is not None:
            server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        if isinstance(exc, CliError):
            raise SystemExit(f"error: {exc.message} (or set DISTBREAKER_URL)") from None
        raise
    try:
        assert server.proc is not None
        print(f"started {label} (pid {server.proc.pid}) on {server.url}", file=sys.stderr, flush=True)
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
        try:
            print(f"stopped {label}", file=sys.stderr, flush=True)
        except OSError:  # the terminal is gone (SIGHUP)
            pass


def status_command(url: str, prefix: str) -> str:
    """The `distbreaker status` command line that shows these breakers (password redacted)."""
    from distbreaker.errors import redact

    return f"distbreaker --url {redact(url)} --prefix {prefix} status"
