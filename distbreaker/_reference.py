"""A pure-Python reference model of the breaker state machine.

It follows `docs/state-machine.md` line by line, and is meant to be read next to it: each
method names the spec step it implements. `tests/lua/test_model.py` runs the real Lua scripts
and this model in lock-step and asserts that every reply field agrees. Because it is proven
equal to the scripts, it is also what `on_redis_error="local"` runs in-process while Redis is
unreachable (imported only then).

The model holds one breaker (one hash and its event stream). `cfg` is the config of the client
that makes the calls; assigning another `Cfg` to it models a worker with a different config
(its fingerprint replaces the stored one: `pf`/`pt`, and a new bucket layout clears the
window). Operator calls (`operator=True`) pass no config and use the stored one, else the
defaults; `control(..., "config", ...)` sets or clears the fleet-wide overrides `ov`.
"""

from __future__ import annotations

import math
from dataclasses import astuple, dataclass, field, fields
from typing import Any

from . import _schema
from ._reply import COMMON

__all__ = [
    "CFG_NAMES",
    "CLOSED",
    "DEFAULT_CFG",
    "DISABLED",
    "FORCED_OPEN",
    "HALF_OPEN",
    "OPEN",
    "Cfg",
    "Event",
    "Model",
    "Reply",
    "TRANSITIONS",
    "lean",
]

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
FORCED_OPEN = "forced_open"
DISABLED = "disabled"
FORCED_STATES = (FORCED_OPEN, DISABLED)
MAX_UNTIL_AHEAD_MS = 366 * 86_400_000  # control.lua refuses a forced state's expiry beyond this
# The transition table (lua/_lib.lua `allowed`): the (from, to) pairs a transition may make.
TRANSITIONS = frozenset(
    {
        (CLOSED, OPEN),
        (CLOSED, FORCED_OPEN),
        (CLOSED, DISABLED),
        (CLOSED, CLOSED),
        (OPEN, HALF_OPEN),
        (OPEN, FORCED_OPEN),
        (OPEN, DISABLED),
        (OPEN, CLOSED),
        (HALF_OPEN, OPEN),
        (HALF_OPEN, CLOSED),
        (HALF_OPEN, FORCED_OPEN),
        (HALF_OPEN, DISABLED),
        (FORCED_OPEN, CLOSED),
        (FORCED_OPEN, FORCED_OPEN),
        (FORCED_OPEN, DISABLED),
        (DISABLED, CLOSED),
        (DISABLED, FORCED_OPEN),
        (DISABLED, DISABLED),
    }
)


@dataclass(frozen=True, slots=True)
class Cfg:
    """The config values, in the spec's order and units (ms for every duration; 0 = off)."""

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
    half_open_failure_rate_threshold: float = 0.0
    minimum_failing_workers: int = 0

    @property
    def bucket_ms(self) -> int:
        """Width of one bucket: `floor(window_ms / buckets)`."""
        return self.window_ms // self.buckets

    def argv(self) -> list[str]:
        """The config ARGV as the client passes them (`_schema.Field.text`)."""
        return [f.text(v) for f, v in zip(_schema.FIELDS, astuple(self))]

    @property
    def fingerprint(self) -> str:
        """A short hash of `argv()` (what a client sends as ARGV 2)."""
        return _schema.fingerprint(self.argv())

    @classmethod
    def from_argv(cls, values: list[str]) -> Cfg:
        """Parse the config values as text (the stored `cfg`/`cc`); integral ones become ints
        (a fraction or a non-finite number stays a float, which `valid()` refuses). A list
        stored before the last values existed (13 long) takes their defaults."""
        out: list[Any] = []
        if _schema.FIELDS_0_1 <= len(values) < len(_schema.FIELDS):
            values = [*values, *_schema.DEFAULT_ARGV[len(values) :]]
        for f, text in zip(_schema.FIELDS, values, strict=True):
            v = float(text)
            out.append(int(v) if f.integral and v.is_integer() else v)
        return cls(*out)

    @classmethod
    def defaults(cls) -> Cfg:
        """The defaults of `BreakerConfig`, in the scripts' units."""
        return cls.from_argv(list(_schema.DEFAULT_ARGV))

    def valid(self) -> bool:
        """The checks the scripts make on a config (`parse_cfg`, generated from the schema):
        every value within its field's bounds, then the rules between fields."""
        values = dict(zip((f.name for f in _schema.FIELDS), astuple(self)))
        if not all(f.accepts(values[f.name]) for f in _schema.FIELDS):
            return False
        return _schema.broken_rule(values) is None


CFG_NAMES: tuple[str, ...] = tuple(f.name for f in fields(Cfg))
if CFG_NAMES != tuple(f.lua for f in _schema.FIELDS):
    raise RuntimeError("_reference.Cfg's fields must be _schema.FIELDS' lua names, in order")
DEFAULT_CFG = Cfg.defaults()


@dataclass(frozen=True, slots=True)
class Reply:
    """The 18 fields every script returns, in the spec's order: the names and order of
    `_reply.COMMON` (checked below; `_reply` holds the positions the client reads).

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


if tuple(Reply.names()) != COMMON:  # one layout: the model's fields are the reply's positions
    raise AssertionError(f"_reference.Reply fields {Reply.names()} differ from _reply.COMMON {COMMON}")


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
    `events` lists every entry of the stream, untrimmed (transitions, and config changes with
    from = to); `exists` tells whether the key has been created (every script but `read`
    creates it). The stored config is `fp` (fingerprint), `stored` (the `cfg` field: 15 texts,
    overrides applied), `cc` (the client config as passed), `ov` (overrides, name -> text, in
    config order), `pf`/`pt` (the fingerprint replaced last, and when; `pt` 0 = never).

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
    hf: int = 0
    hn: int = 0
    # minimum_failing_workers: the failing clients `wc`, least recent first: [client, epoch]
    wc: list[tuple[str, int]] = field(default_factory=list)
    lt: int | None = None
    lf: str | None = None
    lc: str | None = None
    la: str | None = None
    fp: str | None = None
    stored: list[str] | None = None
    cc: list[str] | None = None
    ov: dict[str, str] = field(default_factory=dict)
    pf: str | None = None
    pt: int = 0
    # The TTL rule: `xr` = when the next refresh of the keys' expiry is due (None = absent);
    # `expires` = the expiry the last refresh set (script clock, ms); `refreshed` = the last
    # call refreshed it.
    xr: int | None = None
    expires: int = 0
    refreshed: bool = field(default=False, init=False, repr=False)
    exists: bool = False
    events: list[Event] = field(default_factory=list)
    # Scratch of the current script call: its clock, its config, its transitions, the last cause.
    now: int = field(default=0, init=False)
    eff: Cfg = field(default=DEFAULT_CFG, init=False, repr=False)
    # What the last call did on the rarer config paths, for test statistics.
    notes: list[str] = field(default_factory=list, init=False, repr=False)
    # read.lua's extra fields as the last read saw them (see `_extras`).
    extras: tuple[int, str, str, int, str, str, str, str, str, str, int, int] = field(
        default=(0, "", "", 0, "", "", "", "", "", "", 0, 0), init=False, repr=False
    )
    _moves: list[str] = field(default_factory=list, init=False, repr=False)
    _cause: str = field(default="", init=False, repr=False)
    _touch: bool = field(default=False, init=False, repr=False)

    # ---------------------------------------------------------------- scripts

    def record(
        self, now_ms: int, gen: int, successes: int, failures: int, slow: int, lease: str = "", client: str = ""
    ) -> Reply:
        """record.lua: add a batch of outcomes admitted under generation `gen`, reported by
        `client` ("" = not said; a batched flush or a sync record with the quorum on says it).

        A stale generation only releases the lease. In `closed`/`disabled` the outcomes are
        counted, a failed or slow one makes `client` a failing client while
        minimum_failing_workers is on (and `closed` runs the trip check); in `half_open` they
        are probe results; in `open`/`forced_open` they are ignored.
        """
        self._begin(now_ms)
        if gen != self.g:  # stale: no count, no transition
            self._release(lease)
        elif self.st in (CLOSED, DISABLED):
            self._count(successes, failures, slow)
            if client and (failures > 0 or slow > 0) and self.eff.minimum_failing_workers > 0:
                self._note_failing(client)
            if self.st == CLOSED:
                cause = self._trip_cause()
                if cause:
                    self._transition(OPEN, cause)
        elif self.st == HALF_OPEN:
            self._release(lease)
            self._probe_verdict(successes, failures, slow)
        # open, forced_open: nothing
        self._save(create=True)
        return self._reply()

    def acquire(self, now_ms: int, *, config_sent: bool = False) -> Reply:
        """acquire.lua: admit (closed, disabled), deny (open, forced_open) or lease a probe.

        A worker's call that brings no config (`config_sent` False, the common call) admits
        without reading the window or the config when `admits_unread`.

        In `half_open`, expired leases are dropped; a lease `"<g>:<hn+1>"` is granted while
        fewer than `half_open_max_calls` are live, else the caller is told the earliest expiry.
        """
        if not config_sent and self.admits_unread(now_ms):  # (acquire.lua's fast path: `st g fp xr` read, nothing else)
            self._begin_call(now_ms)
            return self._reply()
        self._begin(now_ms)
        lease, retry_at = "", 0
        if self.st == OPEN:
            retry_at = self.ou
        elif self.st == FORCED_OPEN:
            retry_at = self.fu
        elif self.st == HALF_OPEN:
            self.hl = {lease: exp for lease, exp in self.hl.items() if exp > self.now}
            if len(self.hl) < self.eff.half_open_max_calls:
                self.hn += 1
                lease = f"{self.g}:{self.hn}"
                self.hl[lease] = self.now + self.eff.probe_timeout_ms
            else:
                retry_at = min(self.hl.values())
        self._save(create=True)
        return self._reply(lease=lease, retry_at=retry_at)

    def control(
        self,
        now_ms: int,
        op: str,
        until_ms: int = 0,
        reason: str = "",
        actor: str = "",
        *,
        operator: bool = False,
    ) -> Reply:
        """control.lua: `trip` (-> forced_open), `disable` (-> disabled), `reset` (-> closed),
        `config` (set the overrides `reason` = `"name=value;..."`, or clear them with `""`).

        `until_ms` is the absolute expiry of a forced state (`0` = none); reset and config
        ignore it. A config whose overrides would make the stored config invalid, or an
        `until_ms` below 0 or more than 366 days ahead, raises `ValueError` before anything
        changes (the script fails and writes nothing).
        """
        if until_ms < 0 or until_ms - now_ms > MAX_UNTIL_AHEAD_MS:
            raise ValueError(f"until must be 0 or at most 366 days from now, got {until_ms}")
        if op == "config":
            if not operator:
                raise ValueError("the model runs `config` as operators do (no client config)")
            given = parse_overrides(reason)
            base = self.cc or DEFAULT_CFG.argv()
            values = [given.get(name, text) for name, text in zip(CFG_NAMES, base)]
            new = Cfg.from_argv(values)
            if not new.valid():
                raise ValueError(f"overrides {reason!r} make the config invalid: {new}")
        self._begin(now_ms, operator=operator)
        suffix = f": {reason}" if reason else ""
        if op == "config":
            self._set_overrides(given, base, values, actor)
        elif op == "trip":
            self._transition(FORCED_OPEN, f"manual trip by {actor}{suffix}", actor, until=until_ms, reason=reason)
        elif op == "disable":
            self._transition(DISABLED, f"manual disable by {actor}{suffix}", actor, until=until_ms, reason=reason)
        elif op == "reset":
            self._transition(CLOSED, f"manual reset by {actor}{suffix}", actor, by_reset=True)
        else:
            raise ValueError(f"unknown op {op!r}")
        self._save(create=True)
        return self._reply()

    def read(self, now_ms: int, *, operator: bool = False) -> Reply:
        """read.lua (called with its ARGV 3 = "1"): expiry and rotation only.

        When the key does not exist nothing is written, so the rotation (and the config the
        caller passed) is not kept; `extras` still shows what this call saw.
        """
        kept = (self.be, self.fp, self.stored, self.cc, self.pf, self.pt)
        self._begin(now_ms, operator=operator)
        self._save(create=False)
        reply = self._reply()
        self.extras = self._extras()
        if not self.exists:
            self.be, self.fp, self.stored, self.cc, self.pf, self.pt = kept
        return reply

    def _extras(self) -> tuple[int, str, str, int, str, str, str, str, str, str, int, int]:
        """read.lua's fields 19-30: exists, cfg, fp, lt, lf, lc, la, ov, cc, pf, pt, failing
        clients."""
        return (
            int(self.exists),
            ",".join(self.stored) if self.stored else "",
            self.fp or "",
            self.lt or 0,
            self.lf or "",
            self.lc or "",
            self.la or "",
            ";".join(f"{n}={v}" for n, v in self.ov.items()),
            ",".join(self.cc) if self.cc else "",
            self.pf or "",
            self.pt,
            self.failing_clients(),
        )

    # ---------------------------------------------------------------- steps

    def admits_unread(self, now_ms: int) -> bool:
        """Whether a worker's acquire admits without reading the window or the config: the
        breaker is closed, the worker's fingerprint stored and the refresh not due (`now < xr`:
        no expiry, rotation or refresh to do). It then writes nothing, and a config deleted by
        hand is asked for (NOCONFIG) by the next call that reads it, not by this one."""
        return (
            self.exists
            and self.st == CLOSED
            and self.fp == self.cfg.fingerprint
            and self.xr is not None
            and now_ms < self.xr
        )

    def _begin_call(self, now_ms: int) -> None:
        """What every call starts with: its time, and nothing made yet."""
        self.now = now_ms
        self._moves = []
        self._cause = ""
        self._touch = False
        self.refreshed = False
        self.notes = []

    def _begin(self, now_ms: int, *, operator: bool = False) -> None:
        """Steps 1-3: take `now` and the config, run lazy expiry, then rotation."""
        self._begin_call(now_ms)
        self._config(operator)
        self._expire()
        self._rotate()

    def _config(self, operator: bool) -> None:
        """The config of this call (ARGV section): an operator uses the stored one (else the
        defaults); a client uses its own with the overrides applied, and stores it when its
        fingerprint differs from the stored one (clearing the window on a new bucket layout).
        """
        if operator:
            self.eff = Cfg.from_argv(self.stored) if self.stored else DEFAULT_CFG
            return
        given = self.cfg.argv()
        values = [self.ov.get(name, text) for name, text in zip(CFG_NAMES, given)]
        if self.ov and not Cfg.from_argv(values).valid():
            self.notes.append("overrides ignored: invalid with this client config")
            values = given
        self.eff = Cfg.from_argv(values)
        if self.fp == self.cfg.fingerprint and self.stored is not None:
            return
        # a new fingerprint, or the stored config was lost (NOCONFIG asked for it again)
        old = Cfg.from_argv(self.stored) if self.stored else DEFAULT_CFG
        self._touch = True
        if self.fp is not None and self.fp != self.cfg.fingerprint:
            self.pf, self.pt = self.fp, self.now
        self.fp, self.cc = self.cfg.fingerprint, given
        if self.be is not None and (old.bucket_ms, old.buckets) != (
            self.eff.bucket_ms,
            self.eff.buckets,
        ):
            self.notes.append("client config: new bucket layout" + ("" if self.stored else " (after defaults)"))
            self._clear_window()
        self.stored = values

    def _set_overrides(self, given: dict[str, str], base: list[str], values: list[str], actor: str) -> None:
        """control.lua's `config`: store the overrides and the merged config at once; a new
        bucket layout clears the window; log an event with from = to and the same generation.
        """
        old, new = self.eff, Cfg.from_argv(values)
        self._touch = True
        if self.cc is None:  # no client config stored: the fingerprint no longer names one
            self.fp = None
        self.ov = {name: given[name] for name in CFG_NAMES if name in given}
        self.cc, self.stored = base, values
        self.eff = new
        if (old.bucket_ms, old.buckets) != (new.bucket_ms, new.buckets):
            self.notes.append("overrides: new bucket layout")
            self._clear_window()
        shown = ", ".join(f"{n}={v}" for n, v in self.ov.items())
        cause = f"config set by {actor}: {shown}" if shown else f"config cleared by {actor}"
        self.events.append(Event(self.now, self.st, self.st, cause, actor, self.g))

    def _expire(self) -> None:
        """Step 2, lazy expiry of a forced state with an expiry, or of `open`."""
        if self.st in FORCED_STATES and self.fu > 0 and self.now >= self.fu:
            self._transition(CLOSED, f"{self.st} expired")
        elif self.st == OPEN and self.now >= self.ou:
            self._transition(HALF_OPEN, "open_duration elapsed")

    def _rotate(self) -> None:
        """Step 3, rotation of the bucket ring to epoch `E = floor(now / bucket_ms)`."""
        n = self.eff.buckets
        e_now = self.now // self.eff.bucket_ms
        if self.be is None:
            self.be = e_now
        elif e_now <= self.be:  # same bucket, or a clock that went back
            pass
        elif e_now - self.be >= n:  # the whole window has expired
            self._touch = True
            self._clear_window()
        else:
            self._touch = True
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
        """ "Window cleared": totals, current bucket and ring emptied, `be = E`."""
        self.tc = self.tf = self.ts = 0
        self.c0 = self.f0 = self.s0 = 0
        self.ring.clear()
        self.be = self.now // self.eff.bucket_ms
        self.wc = []

    # ---------------------------------------------------------------- quorum

    def _live_failing(self) -> list[tuple[str, int]]:
        """`wc` entries whose epoch is in the window (epoch > be - buckets), in order."""
        assert self.be is not None
        return [(c, e) for c, e in self.wc if e > self.be - self.eff.buckets]

    def failing_clients(self) -> int:
        """The distinct clients with a failed or slow outcome in the window."""
        return len(self._live_failing()) if self.be is not None else 0

    def _note_failing(self, client: str) -> None:
        """`client` failed now: expired entries dropped, it moves to the end (most recent), the
        least recent dropped past `MAX_FAILING_CLIENTS`."""
        assert self.be is not None
        kept = [(c, e) for c, e in self._live_failing() if c != client]
        kept.append((client, self.be))
        self.wc = kept[-_schema.MAX_FAILING_CLIENTS :]

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
        """The trip check of `closed`, first match wins; `""` when the breaker stays closed.
        With minimum_failing_workers on, a match trips only when that many clients fail."""
        cfg = self.eff
        cause = ""
        if cfg.consecutive_failures > 0 and self.cx >= cfg.consecutive_failures:
            cause = f"consecutive_failures {self.cx} >= {cfg.consecutive_failures}"
        elif self.tc >= cfg.minimum_calls and self.tf / self.tc >= cfg.failure_rate_threshold:
            rate = self.tf / self.tc
            cause = "failure_rate %.2f >= %.2f over %d calls" % (
                rate,
                cfg.failure_rate_threshold,
                self.tc,
            )
        elif self.tc >= cfg.minimum_calls and self.ts > 0 and self.ts / self.tc >= cfg.slow_call_rate_threshold:
            rate = self.ts / self.tc
            cause = "slow_call_rate %.2f >= %.2f over %d calls" % (
                rate,
                cfg.slow_call_rate_threshold,
                self.tc,
            )
        if cause and cfg.minimum_failing_workers > 0:
            fw = self.failing_clients()
            if fw < cfg.minimum_failing_workers:
                return ""
            cause += f" from {fw} failing clients"
        return cause

    def _probe_verdict(self, successes: int, failures: int, slow: int) -> None:
        """`half_open`: probe results. Off (half_open_failure_rate_threshold 0): a failed or
        slow probe reopens, `half_open_successes` successes close. By rate x: a slow probe
        counts as failed; over n = half_open_max_calls probes, reopen once failed / n >= x,
        close once (n - succeeded) / n < x (the verdict as soon as it is certain)."""
        cfg = self.eff
        x = cfg.half_open_failure_rate_threshold
        if x == 0:
            if failures > 0 or slow > 0:
                self._transition(OPEN, "probe failed" if failures > 0 else "probe slow")
            else:
                self.hs += successes
                if self.hs >= cfg.half_open_successes:
                    self._transition(CLOSED, f"{self.hs} probe{'' if self.hs == 1 else 's'} succeeded")
            return
        bad = min(successes + failures, failures + slow)
        self.hs += successes + failures - bad
        self.hf += bad
        n = cfg.half_open_max_calls
        if self.hf / n >= x:
            self._transition(OPEN, "%d of %d probes failed, %.2f >= %.2f" % (self.hf, n, self.hf / n, x))
        elif (n - self.hs) / n < x:
            self._transition(CLOSED, "%d of %d probes succeeded, failure rate < %.2f" % (self.hs, n, x))

    def _release(self, lease: str) -> None:
        """Remove a half-open lease from `hl` (no-op for `""` or an unknown id)."""
        if lease:
            self.hl.pop(lease, None)

    def _open_duration(self) -> int:
        """Backoff: `floor(min(open * multiplier ^ min(oc - 1, 64), max_open_duration))`."""
        cfg = self.eff
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
        if (frm, to) not in TRANSITIONS:
            raise ValueError(f"transition {frm} -> {to} is not allowed")
        self.g += 1
        self.st = to
        self._touch = True
        self.lt, self.lf, self.lc, self.la = self.now, frm, cause, actor
        if to == OPEN:
            self.oc += 1
            self.oa = self.now
            self.ou = self.now + self._open_duration()
            self._clear_window()
            self.cx = 0
        elif to == HALF_OPEN:
            self.hl = {}
            self.hs = self.hf = 0
        elif to == CLOSED and (frm == HALF_OPEN or by_reset):
            self._clear_window()
            self.oc = 0
            self.cx = 0
            self.hl = {}
            self.hs = self.hf = 0
        # closed on expiry of a forced state: the window is kept.
        if frm in FORCED_STATES or by_reset:
            self.fu, self.fr, self.fa = 0, "", ""
        if to in FORCED_STATES:
            self.fu, self.fr, self.fa = until, reason, actor
        self.events.append(Event(self.now, frm, to, cause, actor, self.g))
        self._moves.append(f"{frm}>{to}")
        self._cause = cause

    def _save(self, *, create: bool) -> None:
        """The TTL rule (save() in _lib.lua): a script that saves refreshes the expiry of both
        keys when it creates the key, makes a transition, rotates, stores a config, or when
        the refresh is due (`xr` absent or passed). The expiry is `idle_ttl`, never earlier
        than open_until (open) or a forced state's expiry; `xr = min(now + min(bucket_ms,
        idle_ttl // 2), end of the current bucket)`. A read of a key that does not exist creates
        nothing."""
        if not self.exists:
            if not create:
                return
            self.exists = True
            self._touch = True
        if self._touch or self.xr is None or self.now >= self.xr:
            ttl = self.eff.idle_ttl_ms
            life = ttl
            if self.st == OPEN:
                life = max(life, self.ou - self.now)
            if self.st in FORCED_STATES and self.fu > 0:
                life = max(life, self.fu - self.now)
            self.expires = self.now + life
            # never later than the end of the current bucket (the record fast path's only check)
            assert self.be is not None
            self.xr = min(self.now + min(self.eff.bucket_ms, ttl // 2), (self.be + 1) * self.eff.bucket_ms)
            self.refreshed = True

    def drop_config(self) -> None:
        """Someone deleted the stored config fields (`cfg cc q*`) and left `fp`: the next worker
        call is asked for its config (NOCONFIG) and stores it again; operators use the defaults."""
        self.stored = None
        self.cc = None

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
            reason=self.fr
            if self.st in (FORCED_OPEN, DISABLED)
            else (self.lc or "")
            if self.st in (OPEN, HALF_OPEN)
            else "",
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


def lean(reply: Reply) -> bool:
    """record.lua and acquire.lua answer with the lean reply (`_reply.LEAN`: state, generation,
    now) when the call made no transition and leaves the breaker closed (acquire: admitted, no
    lease); with the full reply otherwise (control and read: always the full one)."""
    return reply.state == CLOSED and not reply.transitions


def bare(reply: Reply, generation: int) -> bool:
    """record.lua answers with the bare reply (`now` alone, an integer) when it would answer
    lean and the breaker's generation is `generation`, the one the call sent."""
    return lean(reply) and reply.generation == generation


def parse_overrides(text: str) -> dict[str, str]:
    """control.lua's `config` argument `"name=value;name=value"` (`""` = none) -> name -> text."""
    out: dict[str, str] = {}
    for part in filter(None, text.split(";")):
        name, sep, value = part.partition("=")
        if not sep or name not in CFG_NAMES or not value:
            raise ValueError(f"config override must be name=value with a config name, got {part!r}")
        float(value)
        out[name] = value
    return out
