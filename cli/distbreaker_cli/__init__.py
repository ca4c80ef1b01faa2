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
AS_COMMAND = bool(sys.argv) and os.path.basename(sys.argv[0]) in ("distbreaker", "-m")
if AS_COMMAND and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
    try:
        signal.signal(signal.SIGINT, _interrupted_early)
    except ValueError:  # not the main thread
        pass

# Run as the command, redis is imported as where OpenTelemetry's SDK is not installed (distbreaker
# needs only its API): redis-py 8 imports the SDK, if it finds it, only to know whether its own
# metrics could be turned on (`redis.observability.providers.OTEL_AVAILABLE`), which the command
# never does, and that import is ~40 ms of every start (docs/scaling.md, "Many breakers"). A None
# in sys.modules makes that one import fail (an ImportError, what redis-py expects without the
# SDK); it is removed again at once, so the SDK itself stays importable. Not when the SDK is
# already imported (auto-instrumentation) or redis is; imported as a library, nothing changes.
if AS_COMMAND and not {"redis", "opentelemetry.sdk.metrics"} & sys.modules.keys():
    sys.modules["opentelemetry.sdk.metrics"] = None  # type: ignore[assignment]
    try:
        import redis  # noqa: F401
    finally:
        del sys.modules["opentelemetry.sdk.metrics"]


def _restore_interrupt() -> None:
    """Python's Ctrl-C handler again (KeyboardInterrupt), once the command is about to run."""
    if signal.getsignal(signal.SIGINT) is _interrupted_early:
        signal.signal(signal.SIGINT, signal.default_int_handler)
