"""A pure-Python reference model of the breaker state machine.

It follows `docs/state-machine.md` line by line, and is meant to be read next to it: each
method names the spec step it implements. `tests/lua/test_model.py` runs the real Lua scripts
and this model in lock-step and asserts that every reply field agrees.

The model holds one breaker (one hash and its event stream) and one fixed config. The config
fingerprint is never changed during a model's life, so the "config changed, clear the window"
rule of the spec is not modelled.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, field, fields

__all__ = [
    "CLOSED",
    "DISABLED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "OPEN",
    "Cfg",
    "Event",
    "Model",
    "Reply",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
DISABLED = "disabled"
FORCED_STATES = (FORCED_OPEN, DISABLED)


@dataclass(frozen=True, slots=True)
class Cfg:
    """The 13 config values, in the spec's order and units (ms for every duration)."""

    failure_rate_threshold: float
    minimum_calls: int
    window_ms: int
    buckets: int
    consecutive_failures: int
    slow_call_rate_threshold: float
    open_duration_ms: int
    backoff_multiplier: float
    max_open_duration_ms: int
    half_open_max_calls: int
    half_open_successes: int
    probe_timeout_ms: int
    idle_ttl_ms: int

    @property
    def bucket_ms(self) -> int:
        """Width of one bucket: `floor(window_ms / buckets)`."""
        return self.window_ms // self.buckets

    def argv(self) -> list[str]:
        """The 13 config ARGV as the client passes them: ints as decimals, floats with `repr()`."""
        return [repr(v) if isinstance(v, float) else str(v) for v in astuple(self)]


@dataclass(frozen=True, slots=True)
class Reply:
    """The 18 fields every script returns, in the spec's order.

    `leases` and `half_open_successes` describe the half-open probes: both are 0 in any other
    state, and `leases` counts only leases that have not expired (`exp > now`).
    """

    state: str
    generation: int
    now: int
    open_until: int
    calls: int
    failures: int
    slow: int
    consecutive: int
    forced_until: int
    reason: str
    actor: str
    open_count: int
    transitions: str
    cause: str
    lease: str
    retry_at: int
    leases: int
    half_open_successes: int

    @classmethod
    def names(cls) -> list[str]:
        """The field names, in reply order."""
        return [f.name for f in fields(cls)]


@dataclass(frozen=True, slots=True)
class Event:
    """One entry of the events stream: `{ts, from, to, cause, actor, gen}`."""

    ts: int
    from_: str
    to: str
    cause: str
    actor: str
    gen: int


@dataclass
class Model:
    """One breaker: the hash fields of the spec as attributes, and the operations on them.

    Attribute names are the hash field names. The ring of finished buckets `r<i>` is the dict
    `ring` (slot -> (calls, failures, slow)); the half-open leases `hl` are the ordered dict
    `hl` (lease id -> expiry ms; expired ones stay until `acquire` drops them); `be`, `lt`,
    `lf`, `lc`, `la` are `None` while absent.
    `events` lists every transition made (the stream, untrimmed); `exists` tells whether the
    key has been created (every script but `read` creates it).

    Each public method is one script call: it sets `now`, runs lazy expiry, then rotation, then
    the operation, and returns the `Reply`.
    """

    cfg: Cfg
    st: str = CLOSED
    g: int = 0
    oa: int = 0
    ou: int = 0
    oc: int = 0
    fu: int = 0
    fr: str = ""
    fa: str = ""
    be: int | None = None
    c0: int = 0
    f0: int = 0
    s0: int = 0
    tc: int = 0
    tf: int = 0
    ts: int = 0
    ring: dict[int, tuple[int, int, int]] = field(default_factory=dict)
    cx: int = 0
    hl: dict[str, int] = field(default_factory=dict)
    hs: int = 0
    hn: int = 0
    lt: int | None = None
    lf: str | None = None
    lc: str | None = None
    la: str | None = None
    exists: bool = False
    events: list[Event] = field(default_factory=list)
    # Scratch of the current script call: its clock, its transitions and the last cause.
    now: int = field(default=0, init=False)
    _moves: list[str] = field(default_factory=list, init=False, repr=False)
    _cause: str = field(default="", init=False, repr=False)

    # ---------------------------------------------------------------- scripts

    def record(
        self, now_ms: int, gen: int, successes: int, failures: int, slow: int, lease: str = ""
    ) -> Reply:
        """record.lua: add a batch of outcomes admitted under generation `gen`.

        A stale generation only releases the lease. In `closed`/`disabled` the outcomes are
        counted (and `closed` runs the trip check); in `half_open` they are probe results; in
        `open`/`forced_open` they are ignored.
        """
        self._begin(now_ms)
        self.exists = True
        if gen != self.g:  # stale: no count, no transition
            self._release(lease)
        elif self.st in (CLOSED, DISABLED):
            self._count(successes, failures, slow)
            if self.st == CLOSED:
                cause = self._trip_cause()
                if cause:
                    self._transition(OPEN, cause)
        elif self.st == HALF_OPEN:
            self._release(lease)
            if failures > 0 or slow > 0:
                self._transition(OPEN, "probe failed" if failures > 0 else "probe slow")
            else:
                self.hs += successes
                if self.hs >= self.cfg.half_open_successes:
                    self._transition(CLOSED, f"{self.hs} probes succeeded")
        # open, forced_open: nothing
        return self._reply()

    def acquire(self, now_ms: int) -> Reply:
        """acquire.lua: admit (closed, disabled), deny (open, forced_open) or lease a probe.

        In `half_open`, expired leases are dropped; a lease `"<g>:<hn+1>"` is granted while
        fewer than `half_open_max_calls` are live, else the caller is told the earliest expiry.
        """
        self._begin(now_ms)
        self.exists = True
        if self.st in (CLOSED, DISABLED):
            return self._reply()
        if self.st == OPEN:
            return self._reply(retry_at=self.ou)
        if self.st == FORCED_OPEN:
            return self._reply(retry_at=self.fu)
        # half_open
        self.hl = {lease: exp for lease, exp in self.hl.items() if exp > self.now}
        if len(self.hl) < self.cfg.half_open_max_calls:
            self.hn += 1
            lease = f"{self.g}:{self.hn}"
            self.hl[lease] = self.now + self.cfg.probe_timeout_ms
            return self._reply(lease=lease)
        return self._reply(retry_at=min(self.hl.values()))

    def control(
        self, now_ms: int, op: str, until_ms: int = 0, reason: str = "", actor: str = ""
    ) -> Reply:
        """control.lua: `trip` (-> forced_open), `disable` (-> disabled), `reset` (-> closed).

        `until_ms` is the absolute expiry of a forced state (`0` = none); reset ignores it.
        """
        self._begin(now_ms)
        self.exists = True
        suffix = f": {reason}" if reason else ""
        if op == "trip":
            self._transition(
                FORCED_OPEN, f"manual trip by {actor}{suffix}", actor, until=until_ms, reason=reason
            )
        elif op == "disable":
            self._transition(
                DISABLED, f"manual disable by {actor}{suffix}", actor, until=until_ms, reason=reason
            )
        elif op == "reset":
            self._transition(CLOSED, f"manual reset by {actor}{suffix}", actor, by_reset=True)
        else:
            raise ValueError(f"unknown op {op!r}")
        return self._reply()

    def read(self, now_ms: int) -> Reply:
        """read.lua (called with its ARGV 3 = "1"): expiry and rotation only.

        When the key does not exist nothing is written, so the rotation is not kept.
        """
        be = self.be
        self._begin(now_ms)
        reply = self._reply()
        if not self.exists:
            self.be = be
        return reply

    # ---------------------------------------------------------------- steps

    def _begin(self, now_ms: int) -> None:
        """Steps 1-3: take `now`, run lazy expiry, then rotation."""
        self.now = now_ms
        self._moves = []
        self._cause = ""
        self._expire()
        self._rotate()

    def _expire(self) -> None:
        """Step 2, lazy expiry of a forced state with an expiry, or of `open`."""
        if self.st in FORCED_STATES and self.fu > 0 and self.now >= self.fu:
            self._transition(CLOSED, f"{self.st} expired")
        elif self.st == OPEN and self.now >= self.ou:
            self._transition(HALF_OPEN, "open_duration elapsed")

    def _rotate(self) -> None:
        """Step 3, rotation of the bucket ring to epoch `E = floor(now / bucket_ms)`."""
        n = self.cfg.buckets
        e_now = self.now // self.cfg.bucket_ms
        if self.be is None:
            self.be = e_now
        elif e_now <= self.be:  # same bucket, or a clock that went back
            pass
        elif e_now - self.be >= n:  # the whole window has expired
            self._clear_window()
        else:
            if self.c0 > 0:
                self.ring[self.be % n] = (self.c0, self.f0, self.s0)
            else:
                self.ring.pop(self.be % n, None)
            for epoch in range(self.be - n + 1, e_now - n + 1):
                calls, failures, slow = self.ring.pop(epoch % n, (0, 0, 0))
                self.tc -= calls
                self.tf -= failures
                self.ts -= slow
            self.c0 = self.f0 = self.s0 = 0
            self.be = e_now

    def _clear_window(self) -> None:
        """"Window cleared": totals, current bucket and ring emptied, `be = E`."""
        self.tc = self.tf = self.ts = 0
        self.c0 = self.f0 = self.s0 = 0
        self.ring.clear()
        self.be = self.now // self.cfg.bucket_ms

    def _count(self, successes: int, failures: int, slow: int) -> None:
        """Add a batch to the current bucket and the totals; update consecutive failures."""
        self.c0 += successes + failures
        self.f0 += failures
        self.s0 += slow
        self.tc += successes + failures
        self.tf += failures
        self.ts += slow
        # A batch is taken as its successes first, then its failures.
        self.cx = failures if successes > 0 else self.cx + failures

    def _trip_cause(self) -> str:
        """The trip check of `closed`, first match wins; `""` when the breaker stays closed."""
        cfg = self.cfg
        if cfg.consecutive_failures > 0 and self.cx >= cfg.consecutive_failures:
            return f"consecutive_failures {self.cx} >= {cfg.consecutive_failures}"
        if self.tc >= cfg.minimum_calls and self.tf / self.tc >= cfg.failure_rate_threshold:
            rate = self.tf / self.tc
            return "failure_rate %.2f >= %.2f over %d calls" % (
                rate,
                cfg.failure_rate_threshold,
                self.tc,
            )
        if (
            self.tc >= cfg.minimum_calls
            and self.ts > 0
            and self.ts / self.tc >= cfg.slow_call_rate_threshold
        ):
            rate = self.ts / self.tc
            return "slow_call_rate %.2f >= %.2f over %d calls" % (
                rate,
                cfg.slow_call_rate_threshold,
                self.tc,
            )
        return ""

    def _release(self, lease: str) -> None:
        """Remove a half-open lease from `hl` (no-op for `""` or an unknown id)."""
        if lease:
            self.hl.pop(lease, None)

    def _open_duration(self) -> int:
        """Backoff: `floor(min(open * multiplier ^ min(oc - 1, 64), max_open_duration))`."""
        cfg = self.cfg
        try:
            grown = cfg.open_duration_ms * cfg.backoff_multiplier ** min(self.oc - 1, 64)
        except OverflowError:  # Lua's `^` gives inf here, which min() then caps
            grown = math.inf
        return math.floor(min(grown, cfg.max_open_duration_ms))

    def _transition(
        self,
        to: str,
        cause: str,
        actor: str = "",
        *,
        until: int = 0,
        reason: str = "",
        by_reset: bool = False,
    ) -> None:
        """The one transition function: bump `g`, apply the entry rules, log the event."""
        frm = self.st
        self.g += 1
        self.st = to
        self.lt, self.lf, self.lc, self.la = self.now, frm, cause, actor
        if to == OPEN:
            self.oc += 1
            self.oa = self.now
            self.ou = self.now + self._open_duration()
            self._clear_window()
            self.cx = 0
        elif to == HALF_OPEN:
            self.hl = {}
            self.hs = 0
        elif to == CLOSED and (frm == HALF_OPEN or by_reset):
            self._clear_window()
            self.oc = 0
            self.cx = 0
            self.hl = {}
            self.hs = 0
        # closed on expiry of a forced state: the window is kept.
        if frm in FORCED_STATES or by_reset:
            self.fu, self.fr, self.fa = 0, "", ""
        if to in FORCED_STATES:
            self.fu, self.fr, self.fa = until, reason, actor
        self.events.append(Event(self.now, frm, to, cause, actor, self.g))
        self._moves.append(f"{frm}>{to}")
        self._cause = cause

    def _reply(self, *, lease: str = "", retry_at: int = 0) -> Reply:
        """The 18-field reply, taken after the operation."""
        return Reply(
            state=self.st,
            generation=self.g,
            now=self.now,
            open_until=self.ou if self.st == OPEN else 0,
            calls=self.tc,
            failures=self.tf,
            slow=self.ts,
            consecutive=self.cx,
            forced_until=self.fu,
            reason=self.fr,
            actor=self.fa,
            open_count=self.oc,
            transitions=";".join(self._moves),
            cause=self._cause,
            lease=lease,
            retry_at=retry_at,
            leases=self._live_leases(),
            half_open_successes=self.hs if self.st == HALF_OPEN else 0,
        )

    def _live_leases(self) -> int:
        """Reply field 17: leases with `exp > now` while `half_open`, else 0.

        The spec leaves `hl` (and `hs`) in place when half_open is left for a forced state,
        and only `acquire` prunes expired leases; the reply counts what is live right now.
        """
        if self.st != HALF_OPEN:
            return 0
        return sum(1 for exp in self.hl.values() if exp > self.now)
