"""The operator commands: status, trip, disable, reset, history, config, doctor.

Each command is a few lines over `distbreaker.Admin`; errors go up to the one boundary in
`app.py`. Human output on stdout, notes and warnings on stderr, `--json`: one document.
"""

from __future__ import annotations

import fnmatch
import sys
import time
from typing import Any

import click
from redis.exceptions import RedisError

from distbreaker import Admin, Snapshot, State
from distbreaker._action_steps import check_control
from distbreaker._arg_checks import actor_or_default, check_reason
from distbreaker._core import keys_for, validate_service
from distbreaker.admin import FleetConfig, close_matches, quorum_unreported
from distbreaker.bulkhead import bulkhead_names
from distbreaker.errors import (
    AccessDeniedError,
    DistbreakerError,
    RedisUnavailableError,
    UnknownServiceError,
    redact,
)

from .completion import complete_services
from .context import CliError, Context, global_options
from .exits import ExitStatus
from .failures import exit_for
from .output import (
    ago,
    check_lines,
    config_changes,
    config_table,
    dumps,
    dumps_status,
    fleet_config_dict,
    history_table,
    local_clock,
    safe,
    snapshot_dict,
    state_text,
    table,
    transition_dict,
    utc,
)
from .params import FOR_DURATION, SETTING, Finite, format_duration

__all__ = ["COMMANDS"]

DISAGREE_WINDOW = 600.0  # a config fingerprint change this recent is reported (workers disagree)
INTERVAL_MAX = 3600.0  # status --watch --interval: at most an hour between refreshes

pass_ctx = click.make_pass_decorator(Context)
actor_option = click.option(
    "--actor", metavar="NAME", default=None, help="Who makes the change (default: the OS user)."
)


# -- status ---------------------------------------------------------------------------------
Found = list[tuple[Snapshot, FleetConfig]]
Broken = dict[str, CliError]


def _collect(
    admin: Admin, services: tuple[str, ...], states: frozenset[str] = frozenset()
) -> tuple[Found, Broken, list[str]]:
    """Every breaker that reads, the ones that do not (one bad key never hides the others),
    and the names given that no breaker has (globs that match none included).

    Names may be globs (``partner-*``, ``pay?ents``, ``[ab]*``: fnmatch over the listed
    breakers); `states` keeps only breakers in those states. Redis unreachable or access
    denied ends the whole command: nothing could be read.
    """
    found: Found = []
    broken: Broken = {}
    names, unknown = _resolve(admin, services) if services else ([], [])
    if not services:  # every breaker: inspect_all lists them (valid names) and reads them
        result = admin.inspect_all()
        found = result.breakers
        broken.update((name, exit_for(exc)) for name, exc in result.broken.items())
    elif len(names) == 1:  # one breaker: Admin.status, plain reads (its errors are the command's)
        try:
            found.append(admin.inspect(names[0]))
        except UnknownServiceError:
            if not _is_glob(names[0]) and names[0] in services:
                unknown.append(names[0])
            # listed by SCAN, then gone (expired or deleted): skip it
        except (RedisUnavailableError, AccessDeniedError):
            raise
        except DistbreakerError as exc:
            if unknown:
                broken[names[0]] = exit_for(exc)
            else:
                raise
    elif names:  # many: pipelined plain reads, no script per breaker (Admin.inspect_all)
        valid = []
        for name in names:
            try:
                valid.append(validate_service(name))
            except DistbreakerError as exc:  # a name no breaker can have: it hides no other
                broken[name] = exit_for(exc)
        result = admin.inspect_all(valid)
        found = result.breakers
        broken.update((name, exit_for(exc)) for name, exc in result.broken.items())
        unknown += [name for name in result.missing if name in services]
    if states:
        found = [(snap, cfg) for snap, cfg in found if snap.state.value in states]
    unknown.sort(key=services.index)  # as given
    return found, broken, unknown


def _is_glob(name: str) -> bool:
    return any(c in name for c in "*?[")


def _resolve(admin: Admin, services: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """The breakers to read for `services` (names and globs), and the globs that matched none."""
    listed = admin.list() if any(_is_glob(s) for s in services) else []
    names: list[str] = []
    unknown: list[str] = []
    for pattern in services:
        if _is_glob(pattern):
            matched = fnmatch.filter(listed, pattern)
            if not matched:
                unknown.append(pattern)
            names += [m for m in matched if m not in names]
        elif pattern not in names:
            names.append(pattern)
    return names, unknown


def _unknown_error(
    admin: Admin | None, names: list[str], tail: str = "distbreaker status lists the breakers"
) -> CliError:
    """Exit 3 naming the unknown services, with the closest existing names (difflib)."""
    hints = []
    listed: list[str] | None = None
    for name in names:
        if admin is None or _is_glob(name):
            continue
        try:
            listed = admin.list() if listed is None else listed
        except DistbreakerError:
            break
        close = close_matches(name, listed)
        if close:
            hints.append(f"did you mean {' or '.join(repr(c) for c in close[:2])}?")
    what = ", ".join(repr(n) for n in names)
    text = f"no breaker named {what}" if len(names) == 1 else f"no breakers named {what}"
    hint = f"; {' '.join(hints)}" if hints else ""
    return CliError(f"{text}{hint} ({tail})", ExitStatus.UNKNOWN_SERVICE)


def _broken_error(broken: Broken, total: int) -> CliError:
    what = "; ".join(f"{name}: {err.format_message()}" for name, err in broken.items())
    return CliError(f"{len(broken)} of {total} breakers could not be read: {what}", ExitStatus.ERROR)


def _disagreements(found: list[tuple[Snapshot, FleetConfig]]) -> dict[str, str]:
    out = {}
    for snap, cfg in found:
        if cfg.changed_within(DISAGREE_WINDOW) and cfg.fingerprint_changed_at is not None:
            out[snap.service] = (
                f"{snap.service}: workers' config changed {ago(cfg.server_time - cfg.fingerprint_changed_at)} "
                f"({cfg.previous_fingerprint} -> {cfg.fingerprint}); do all its workers pass the same config?"
            )
    return out


def _show_status(
    obj: Context, admin: Admin, services: tuple[str, ...], *, watching: bool, states: frozenset[str] = frozenset()
) -> tuple[Found, Broken, list[str]]:
    """Print the breakers; returns them, the ones that could not be read and the names no
    breaker has (for the caller)."""
    found, broken, unknown = _collect(admin, services, states)
    warnings = _disagreements(found)
    if obj.json:
        obj.out(dumps_status(found, warnings, lines=watching))
        return found, broken, unknown
    if watching and obj.tty:
        click.clear()
    if watching:
        obj.out(
            click.style(
                f"{local_clock()}  distbreaker status  {redact(obj.url)}  prefix {obj.prefix}  (Ctrl-C to stop)",
                dim=True,
            )
        )
    if found:
        obj.out(table([s for s, _ in found], width=obj.width(), headers=not obj.no_headers, output=obj.output))
    elif not broken and not unknown:
        which = f" in state {', '.join(sorted(states))}" if states else ""
        matching = f" matching {' '.join(services)}" if services else ""
        obj.note(f"no breakers{matching}{which} under prefix {obj.prefix!r}")
    for text in warnings.values():
        obj.warn(safe(text))
    if not services:
        _bulkheads_note(obj)
    return found, broken, unknown


def _bulkheads_note(obj: Context) -> None:
    """The fleet view says that bulkheads exist (one line on stderr, like the view's other
    notes; none without bulkheads). One SCAN for their keys, nothing read: their use is
    `distbreaker bulkheads`. Not with -o json: its one document is a list of breakers, and a
    key for bulkheads would change that shape (`distbreaker bulkheads -o json` has them)."""
    n = len(bulkhead_names(obj.client(), obj.prefix))
    if n:
        obj.note(f"{n} bulkhead{'' if n == 1 else 's'}: see `distbreaker bulkheads`")


def _states(ctx: click.Context, param: click.Parameter, value: str | None) -> frozenset[str]:
    if not value:
        return frozenset()
    wanted = frozenset(v.strip().lower() for v in value.split(",") if v.strip())
    known = [s.value for s in State]
    bad = sorted(wanted - set(known))
    if bad or not wanted:
        raise click.BadParameter(f"{value!r}: states are {', '.join(known)} (comma-separated)")
    return wanted


@click.command()
@click.argument("services", nargs=-1, metavar="[SERVICE|GLOB]...", shell_complete=complete_services)
@click.option(
    "--state",
    "states",
    callback=_states,
    metavar="STATE[,STATE]",
    help="Only breakers in these states: closed, open, half_open, forced_open, disabled.",
)
@click.option("--watch", "-w", is_flag=True, help="Refresh until Ctrl-C (exit 0).")
@click.option(
    "--interval",
    type=Finite(0.05, INTERVAL_MAX),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes with --watch (0.05 to 3600).",
)
@click.option("--count", type=click.IntRange(min=1), default=None, help="With --watch: stop after this many refreshes.")
@global_options
@pass_ctx
def status(
    obj: Context, services: tuple[str, ...], states: frozenset[str], watch: bool, interval: float, count: int | None
) -> None:
    """Show breakers: state, failures and slow calls in the window, time left open, who forced
    them and why, the last transition and its cause (every breaker when none is named).

    SERVICE may be a glob (quote it: 'partner-*'). On a Redis Cluster node the breakers of
    every master are listed.

    With -o json: a list with one object per breaker (fields of Snapshot, plus "config");
    with --watch -o json: one such list per line, per refresh. -o wide: nothing cut, plus the
    generation and the forced expiry; -o plain: the same, tab-separated.

    With no SERVICE, a line on stderr says how many bulkheads there are, if any (not with
    -o json); `distbreaker bulkheads` shows them.

    A breaker that cannot be read (a key of another type, corrupt data) does not hide the
    others: they are shown, it is named on stderr, and the exit code is 1. Named services
    that do not exist do not hide the others either: they are named on stderr, exit 3.
    """
    admin = obj.admin()
    if not watch:
        found, broken, unknown = _show_status(obj, admin, services, watching=False, states=states)
        if broken and unknown:
            obj.note(f"Error: {_broken_error(broken, len(found) + len(broken)).format_message()}")
        if unknown:
            raise _unknown_error(admin, unknown)
        if broken:
            raise _broken_error(broken, len(found) + len(broken))
        return
    shown = 0
    try:
        while count is None or shown < count:
            try:
                _, broken, unknown = _show_status(obj, admin, services, watching=True, states=states)
                for name, err in broken.items():
                    obj.note(f"{local_clock()}  Error: {name}: {err.format_message()}")
                if unknown:
                    obj.note(f"{local_clock()}  Error: {_unknown_error(None, unknown).format_message()}")
            except RedisUnavailableError as exc:
                if not shown:
                    raise
                obj.note(f"{local_clock()}  Error: {exc} (retrying every {interval:g}s)")
            shown += 1
            if count is None or shown < count:
                time.sleep(interval)
    except KeyboardInterrupt:
        obj.note("")  # end the ^C line
    # Ctrl-C is the way to stop watching: exit 0


# -- trip / disable / reset -----------------------------------------------------------------
def _forced_until(snap: Snapshot) -> str:
    if snap.forced_until is None:
        return "until reset"
    left = snap.forced_until - snap.server_time
    return f"for {format_duration(left)} (until {utc(snap.forced_until)} UTC)"


def _forced_by(snap: Snapshot) -> str:
    """``forced_open by bob: INC-7, for 9m (until ... UTC)``: a forced state and who set it."""
    who = ": ".join(p for p in (snap.actor, snap.reason) if p) or "unknown"
    return safe(f"{snap.state.value} by {who}, {_forced_until(snap)}")


def _act(obj: Context, service: str, action: str, *, create: bool = False, force: bool = False, **kwargs: Any) -> None:
    # Every argument is checked before anything is sent (a refused one changes nothing).
    _, kwargs["reason"], kwargs["actor"] = check_control(
        action, kwargs.get("for_"), kwargs.get("reason", ""), kwargs.get("actor")
    )
    admin = obj.admin()
    unreadable = None
    try:
        before: Snapshot | None = admin.status(service)
    except UnknownServiceError:
        before = None
        if not create:
            raise _unknown_error(admin, [service], f"--create {action}s a breaker no worker has used yet") from None
    except (RedisUnavailableError, AccessDeniedError):
        raise
    except DistbreakerError as exc:  # corrupt or foreign data: reset rewrites it, trip overwrites it
        before, unreadable = None, exit_for(exc).format_message()
    replaced = None
    if before is not None and before.state in (State.FORCED_OPEN, State.DISABLED):
        replaced = _forced_by(before)
        if action != "reset" and before.actor != kwargs["actor"] and not force:
            raise CliError(
                f"{service} is already {replaced}; --force replaces it (or reset it first)", ExitStatus.ERROR
            )
    after: Snapshot = getattr(admin, action)(service, **kwargs)
    if obj.json:
        obj.out(
            dumps(
                {
                    "service": service,
                    "action": action,
                    "existed": before is not None or bool(unreadable),
                    "before": None if before is None else before.state.value,
                    "replaced": None if before is None or replaced is None else snapshot_dict(before),
                    "after": snapshot_dict(after),
                }
            )
        )
    else:
        old = before.state.value if before else "closed"
        change = f"{state_text(old)} -> {state_text(after.state)}"
        if after.state in (State.FORCED_OPEN, State.DISABLED):
            change += f" {_forced_until(after)}"
        who = ": ".join(p for p in (kwargs["actor"], kwargs.get("reason", "")) if p)
        verb = {"trip": "tripped", "disable": "disabled", "reset": "reset"}[action]
        obj.out(f"{service}: {verb} ({change})" + (f", by {safe(who)}" if who else ""))
    if replaced:
        obj.warn(f"{service}: {'cleared' if action == 'reset' else 'replaced'} {replaced}")
    _check_expiry(obj, service, after)
    if unreadable:
        obj.note(f"note: the breaker's data could not be read before ({unreadable}); it was rewritten")
    elif before is None:
        obj.note(
            f"note: no worker has used {service!r} yet; the breaker was created (--create) in this state "
            "and workers start with it"
        )


def _check_expiry(obj: Context, service: str, after: Snapshot) -> None:
    """Warn when the breaker's keys expire (idle_ttl) before its forced state ends: without
    traffic the forced state would end early, the breaker coming back closed."""
    if after.forced_until is None or after.state not in (State.FORCED_OPEN, State.DISABLED):
        return
    try:
        ttl_ms = int(obj.client().pttl(keys_for(obj.prefix, service).state))
    except (RedisError, ValueError, TypeError):
        return
    left = after.forced_until - after.server_time
    if 0 <= ttl_ms / 1000.0 < left - 1.0:
        obj.warn(
            f"{service}'s keys expire in {format_duration(ttl_ms / 1000.0)} (its idle_ttl), before "
            f"the {after.state.value} ends in {format_duration(left)}: unless workers' calls keep it alive, "
            f"the breaker then disappears and comes back closed (raise it: distbreaker config {service} "
            "--set idle_ttl=...)"
        )


def _reason(action: str, reason: str | None, no_reason: bool) -> str:
    """--reason, required on trip and disable unless --no-reason; never empty."""
    if no_reason:
        if reason:
            raise CliError(f"{action}: --reason and --no-reason exclude each other", ExitStatus.USAGE)
        return ""
    if reason is None:
        raise CliError(
            f"{action} needs --reason TEXT (why: an incident id, a ticket); --no-reason to go without one",
            ExitStatus.USAGE,
        )
    if not reason.strip():
        raise CliError(f"{action}: --reason is empty; give a reason (an incident id) or --no-reason", ExitStatus.USAGE)
    return reason


create_option = click.option(
    "--create", is_flag=True, help="Act even if no worker has used SERVICE yet (the breaker is created)."
)


def _forcing_command(action: str, doc: str) -> Any:
    @click.command(name=action, help=doc)
    @click.argument("service", shell_complete=complete_services)
    @click.option(
        "--for",
        "for_",
        type=FOR_DURATION,
        default=None,
        metavar="DURATION",
        help="How long (90s, 10m, 2h, 1h30m); default until reset.",
    )
    @click.option("--reason", default=None, help="Why (recorded in the events stream); required.")
    @click.option("--no-reason", is_flag=True, help="Go without a reason.")
    @click.option("--force", is_flag=True, help="Replace a forced state another operator set.")
    @create_option
    @actor_option
    @global_options
    @pass_ctx
    def command(
        obj: Context,
        service: str,
        for_: float | None,
        reason: str | None,
        no_reason: bool,
        force: bool,
        create: bool,
        actor: str | None,
    ) -> None:
        _act(
            obj,
            service,
            action,
            create=create,
            force=force,
            for_=for_,
            reason=_reason(action, reason, no_reason),
            actor=actor,
        )

    return command


trip = _forcing_command(
    "trip",
    "Force SERVICE open fleet-wide: every worker rejects its calls (within its max_staleness, "
    "at once with pub/sub) until --for elapses or a reset. A forced state another operator "
    "set is replaced only with --force (yours is replaced, with a warning naming it).",
)
disable = _forcing_command(
    "disable",
    "Force SERVICE closed fleet-wide: calls always run (outcomes are still counted) until "
    "--for elapses or a reset. A forced state another operator set is replaced only with --force.",
)


@click.command()
@click.argument("service", shell_complete=complete_services)
@click.option("--reason", default="", help="Why (recorded in the events stream).")
@create_option
@actor_option
@global_options
@pass_ctx
def reset(obj: Context, service: str, reason: str, create: bool, actor: str | None) -> None:
    """Return SERVICE to closed fleet-wide, with an empty window, clearing a trip or disable
    (a warning names the forced state it cleared)."""
    _act(obj, service, "reset", create=create, reason=reason, actor=actor)


# -- delete ---------------------------------------------------------------------------------
@click.command()
@click.argument("service", shell_complete=complete_services)
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@global_options
@pass_ctx
def delete(obj: Context, service: str, yes: bool) -> None:
    """Delete SERVICE's breaker from Redis: its state, config overrides, events stream and batch
    ids (a typo's breaker, or one no longer used). A worker that calls it again starts a new,
    closed breaker. Asks first on a terminal; --yes to skip (required when stdin is not one)."""
    admin = obj.admin()
    if not admin.exists(service):
        raise _unknown_error(admin, [service])
    if not yes:
        if not sys.stdin.isatty():
            raise CliError(f"delete {service}: stdin is not a terminal to confirm on; pass --yes", ExitStatus.USAGE)
        if not click.confirm(
            f"Delete breaker {service!r} and its events (prefix {obj.prefix!r})?", default=False, err=True
        ):
            raise CliError("not deleted", ExitStatus.ERROR)
    deleted = admin.delete(service)
    if obj.json:
        obj.out(dumps({"service": service, "action": "delete", "deleted": deleted}))
    else:
        obj.out(f"{service}: deleted" if deleted else f"{service}: already gone")


# -- history --------------------------------------------------------------------------------
@click.command()
@click.argument("service", shell_complete=complete_services)
@click.option(
    "-n",
    "count",
    type=click.IntRange(min=1, max=1000),
    default=20,
    show_default=True,
    help="How many events, newest first.",
)
@global_options
@pass_ctx
def history(obj: Context, service: str, count: int) -> None:
    """Show the last transitions of SERVICE (and config changes, shown with from = to)."""
    admin = obj.admin()
    events, skipped = admin.events(service, n=count)
    if not events and not skipped and not admin.exists(service):
        raise _unknown_error(admin, [service])
    if obj.json:
        obj.out(dumps([transition_dict(t) for t in events]))
    elif events:
        obj.out(history_table(events, width=obj.width(), headers=not obj.no_headers, output=obj.output))
    else:
        obj.note(f"{service}: no transitions recorded")
    if skipped:
        obj.note(
            f"note: skipped {skipped} of the last {count} entries of the events stream: they are not "
            "distbreaker events (another writer's, or damaged)"
        )


# -- config ---------------------------------------------------------------------------------
@click.command()
@click.argument("service", shell_complete=complete_services)
@click.option(
    "--set",
    "settings",
    type=SETTING,
    multiple=True,
    metavar="NAME=VALUE",
    help="Override a value fleet-wide (repeatable), in BreakerConfig units: "
    "minimum_calls=20, failure_rate_threshold=0.4, open_duration=30s, window=2m, "
    "consecutive_failures=off.",
)
@click.option("--clear", is_flag=True, help="Remove every override (with --set: replace them all).")
@click.option("--reason", default="", help="Why (recorded with the actor in the events stream).")
@click.option("--create", is_flag=True, help="Set overrides for a breaker no worker has used yet.")
@actor_option
@global_options
@pass_ctx
def config(
    obj: Context,
    service: str,
    settings: tuple[tuple[str, Any], ...],
    clear: bool,
    reason: str,
    create: bool,
    actor: str | None,
) -> None:
    """Show or change the config of SERVICE in force fleet-wide.

    Overrides win over the config workers pass, apply to every worker's next call, survive
    restarts, and are recorded in the events stream. Without options: the config in force,
    as workers pass it, and the overrides.
    """
    if settings or clear:  # checked before anything is sent
        actor, reason = actor_or_default(actor), check_reason(reason)
    admin = obj.admin()
    try:
        before: FleetConfig | None = admin.config(service)
    except UnknownServiceError:
        before = None
        if not settings or not create:
            if not settings:
                raise _unknown_error(admin, [service]) from None
            raise _unknown_error(
                admin, [service], "--create sets overrides for a breaker no worker has used yet"
            ) from None
    after: FleetConfig | None = before
    if settings:
        after = admin.set_config(service, actor=actor, replace=clear, reason=reason, **dict(settings))
    elif clear:
        after = admin.clear_config(service, actor=actor, reason=reason)
    assert after is not None  # an unknown breaker without --set raised above
    changed = bool(settings or clear)
    if obj.json:
        obj.out(dumps({"service": service, "changed": changed, **fleet_config_dict(after)}))
    elif changed:
        what = ", ".join(config_changes(before, after)) or "nothing in force changed"
        verb = "overrides cleared" if clear and not settings else "config set"
        obj.out(f"{service}: {verb} ({what}); workers apply it at their next call")
    else:
        obj.out(config_table(after, width=obj.width(), headers=not obj.no_headers, output=obj.output))
        line = safe(f"fingerprint {after.fingerprint or '-'}")
        if after.previous_fingerprint and after.fingerprint_changed_at is not None:
            line += safe(
                f" (replaced {after.previous_fingerprint} {ago(after.server_time - after.fingerprint_changed_at)})"
            )
        obj.note(line)
        if after.client is not None and quorum_unreported(after.client, after.overrides):
            obj.warn(
                f"minimum_failing_workers {after.overrides['minimum_failing_workers']} is an override while the "
                "workers have it off: they do not say which of them fail, so the quorum holds every trip back; "
                f"'distbreaker config {service} --clear' removes it (set it in the workers' BreakerConfig instead)"
            )
    if changed and before is None:
        obj.note(f"note: no worker has used {service!r} yet; the overrides apply when workers start")


# -- doctor ---------------------------------------------------------------------------------
@click.command()
@click.option(
    "--pings",
    type=click.IntRange(min=1, max=1000),
    default=20,
    show_default=True,
    help="PINGs for the latency figures.",
)
@click.option(
    "--role",
    type=click.Choice(["worker", "operator"]),
    default=None,
    help="Check the URL's user against this role (docs/operations.md): what it needs, what it must not run.",
)
@global_options
@pass_ctx
def doctor(obj: Context, pings: int, role: str | None) -> None:
    """Check this Redis for breakers: server version, Lua scripts, the ACL permissions the breaker
    needs, maxmemory-policy, round-trip latency. Exit 1 on a FAIL (77 for an ACL denial)."""
    checks = obj.admin().doctor(pings=pings, role=role)
    fails = [c for c in checks if c.status == "FAIL"]
    warns = [c for c in checks if c.status == "WARN"]
    if obj.json:
        obj.out(
            dumps(
                {
                    "url": redact(obj.url),
                    "prefix": obj.prefix,
                    "ok": not fails,
                    "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks],
                }
            )
        )
    else:
        obj.out(check_lines(checks))
    if fails:
        code = ExitStatus.NO_PERMISSION if all(c.denied for c in fails) else ExitStatus.ERROR
        raise CliError(
            f"doctor: {len(fails)} FAIL, {len(warns)} WARN on {redact(obj.url)} (prefix {obj.prefix!r})", code
        )
    obj.note(f"doctor: ok ({len(warns)} WARN) on {redact(obj.url)}, prefix {obj.prefix!r}")


# -- load-functions -------------------------------------------------------------------------
@click.command("load-functions")
@global_options
@pass_ctx
def load_functions(obj: Context) -> None:
    """Load distbreaker's Redis Functions library (every master of a Cluster): workers with the
    worker role of docs/operations.md may not load it themselves (after FUNCTION FLUSH, a restart)."""
    name = obj.admin().load_functions()
    obj.note(f"load-functions: {name} loaded on {redact(obj.url)}")


COMMANDS = (status, trip, disable, reset, delete, history, config, doctor, load_functions)
