"""The `distbreaker` command line (click)."""

import os
import signal
import sys


def _interrupted_early(signum, frame):  # type: ignore[no-untyped-def]
    os.write(2, b"Interrupted\n")
    os._exit(130)  # nothing was started yet: nothing to stop


# Run as the `distbreaker` command (or `python -m distbreaker_cli.app`): a Ctrl-C while its
# modules are still being imported (the first few hundred ms) ends it quietly with 130 instead
# of a KeyboardInterrupt traceback; `app.main()` restores the usual handler. Imported as a
# library, nothing changes. (First thing, before any other import: imports are the window.)
if (
    sys.argv
    and os.path.basename(sys.argv[0]) in ("distbreaker", "-m")
    and signal.getsignal(signal.SIGINT) is signal.default_int_handler
):
    try:
        signal.signal(signal.SIGINT, _interrupted_early)
    except ValueError:  # not the main thread
        pass


def _restore_interrupt() -> None:
    """Python's Ctrl-C handler again (KeyboardInterrupt), once the command is about to run."""
    if signal.getsignal(signal.SIGINT) is _interrupted_early:
        signal.signal(signal.SIGINT, signal.default_int_handler)
