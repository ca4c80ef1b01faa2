"""Exit codes of the `distbreaker` command (documented in README and --help)."""

from __future__ import annotations

from enum import IntEnum


class ExitStatus(IntEnum):
    OK = 0
    ERROR = 1  # unexpected error
    USAGE = 2  # bad arguments (click's own)
    UNKNOWN_SERVICE = 3
    CORRUPT = 65  # a breaker's data in Redis is corrupt; reset rewrites it (sysexits EX_DATAERR)
    UNAVAILABLE = 69  # Redis unreachable or timed out (sysexits EX_UNAVAILABLE)
    NO_PERMISSION = 77  # authentication or ACL denied (sysexits EX_NOPERM)
    INTERRUPTED = 130  # Ctrl-C
