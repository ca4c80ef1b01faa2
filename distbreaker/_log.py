"""Rate-limited logging under the ``distbreaker`` logger.

A breaker must never write a line per call: a dead Redis, a flapping breaker or a hook that
raises every time would otherwise flood the application's logs. Every message the library
logs goes through `LIMITED`, which keeps a small token bucket per key: `burst` lines at once,
then one more every `every` seconds; what it drops is counted and reported on the next line
of the same key ("... [12 similar messages suppressed]").
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Hashable, Sequence

from ._model import Reporter, Transition

__all__ = ["LIMITED", "LOG", "LogReporter", "OUTAGE", "OUTAGE_REMINDER", "Outage", "RateLimitedLogger", "log"]

log = logging.getLogger("distbreaker")

OUTAGE_REMINDER = 60.0  # seconds between two "Redis still unreachable" lines of this process
_MAX_KEYS = 4096  # keys kept before the oldest are forgotten (services are unbounded)


class RateLimitedLogger:
    """Log through `logger`, at most `burst` lines per key at once, then one per `every` seconds.

    Args:
        logger: where lines go.
        clock: monotonic seconds (tests pass their own).
    """

    def __init__(self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic) -> None:
        self.logger = logger
        self.clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[Hashable, list[float]] = {}  # key -> [tokens, last refill, suppressed]

    def log(
        self,
        level: int,
        key: Hashable,
        msg: str,
        *args: object,
        every: float = OUTAGE_REMINDER,
        burst: int = 1,
        exc_info: bool = False,
    ) -> bool:
        """Log ``msg % args`` at `level` unless `key` ran out of tokens; True when a line was written."""
        if not self.logger.isEnabledFor(level):
            return False
        now = self.clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) >= _MAX_KEYS:
                    self._buckets.pop(next(iter(self._buckets)))
                bucket = self._buckets[key] = [float(burst), now, 0.0]
            else:
                bucket[0] = min(float(burst), bucket[0] + (now - bucket[1]) / every)
                bucket[1] = now
            if bucket[0] < 1.0:
                bucket[2] += 1
                return False
            bucket[0] -= 1.0
            suppressed, bucket[2] = int(bucket[2]), 0.0
        if suppressed:
            msg += f" [{suppressed} similar message{'s' if suppressed > 1 else ''} suppressed]"
        self.logger.log(level, msg, *args, exc_info=exc_info)
        return True

    def warning(self, key: Hashable, msg: str, *args: object, every: float = OUTAGE_REMINDER, burst: int = 1) -> bool:
        """`log` at WARNING."""
        return self.log(logging.WARNING, key, msg, *args, every=every, burst=burst)

    def reset(self, key: Hashable) -> None:
        """Forget `key`: its next line is written at once (e.g. the next outage after a recovery)."""
        with self._lock:
            self._buckets.pop(key, None)

    def clear(self) -> None:
        """Forget every key (tests)."""
        with self._lock:
            self._buckets.clear()
        OUTAGE.down = False


class Outage:
    """Redis outages as this process sees them, one state: up, down (unreachable, timing out,
    busy...), or refusing writes (out of memory, read-only) while it still answers reads.

    One warning when it goes down, one when the kind of outage changes, a reminder at most every
    `OUTAGE_REMINDER` seconds while it lasts, one warning when it ends. A read that answers does
    not end an outage of writes (under OOM reads succeed while records fail: that is one state,
    not a flap); a write does. A flapping Redis is bounded by `LIMITED` (3 lines at once, then
    one a minute, for each message).
    """

    def __init__(self, limited: RateLimitedLogger) -> None:
        self.limited = limited
        self._lock = threading.Lock()
        self.down = False
        self.writes_only = False  # down means: writes refused, reads answer
        self._since = self._last = 0.0
        self._errors = 0

    def failed(self, msg: str, *args: object, writes: bool = False) -> None:
        """A breaker's Redis operation failed (an outage error): ``msg % args`` says which and why;
        `writes`: Redis refused a write (OOM, READONLY) and may still answer reads."""
        now = self.limited.clock()
        with self._lock:
            self._errors += 1
            if not self.down:
                self.down, self.writes_only, self._since, self._last, self._errors = True, writes, now, now, 1
                line = "redis-down"
            elif writes != self.writes_only:
                self.writes_only, self._last = writes, now
                line = "redis-change"
            elif now - self._last >= OUTAGE_REMINDER:
                self._last, line = now, "redis-still"
            else:
                return
            errors, took = self._errors, now - self._since
        if line != "redis-still":
            self.limited.warning(line, msg, *args, burst=3)
        else:
            self.limited.warning(
                "redis-still",
                "Redis still unavailable after %.0f s (%d errors); last: " + msg,
                took,
                errors,
                *args,
                burst=1,
            )

    def recovered(self, msg: str, *args: object, wrote: bool = True) -> None:
        """A breaker that had failed got a reply again (`wrote`: from a call that wrote)."""
        now = self.limited.clock()
        with self._lock:
            if not self.down or (self.writes_only and not wrote):
                return
            self.down = False
            took, errors = now - self._since, self._errors
        self.limited.warning("redis-up", msg + " (after %.1f s and %d errors)", *args, took, errors, burst=3)


LIMITED = RateLimitedLogger(log)
OUTAGE = Outage(LIMITED)


class LogReporter(Reporter):
    """The log lines of what a breaker reports: each transition this process made, at INFO
    (rate-limited per service: 20 at once, then one every 3 s). Stateless: one for all breakers."""

    __slots__ = ()

    def transitions(self, service: str, made: Sequence[Transition], ms: int) -> None:
        for t in made:
            LIMITED.log(
                logging.INFO,
                ("transition", service),
                "breaker %r: %s -> %s (%s)",
                service,
                t.from_state.value,
                t.to_state.value,
                t.cause or "no cause",
                every=3.0,
                burst=20,
            )


LOG = LogReporter()
