"""The operator commands: status, trip, disable, reset, history, config, doctor.

Each command is a few lines over `distbreaker.Admin`; errors go up to the one boundary in
`app.py`. Human output on stdout, notes and warnings on stderr, `--json`: one document.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click

from distbreaker import Admin, Snapshot, State
from distbreaker._actions import check_control
from distbreaker._ops import actor_or_default, check_reason
from distbreaker.admin import FleetConfig
from distbreaker.errors import (
    AccessDeniedError,
    DistbreakerError,
    RedisUnavailableError,
    UnknownServiceError,
    redact,
)

from .context import CliError, Context, global_options
from .exits import ExitStatus
from .failures import exit_for
from .output import (
    ago,
    check_lines,
    config_changes,
    config_table,
    dumps,
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
actor_option = click.option("--actor", metavar="NAME", default=None,
                            help="Who makes the change (default: the OS user).")


# -- status ---------------------------------------------------------------------------------
Found = list[tuple[Snapshot, FleetConfig]]
Broken = dict[str, CliError]


def _collect(admin: Admin, services: tuple[str, ...]) -> tuple[Found, Broken]:
    """Every breaker that reads, and the ones that do not (one bad key never hides the others).

    Redis unreachable or access denied ends the whole command: nothing could be read.
    """
    names = list(services) or admin.list()
    found, broken = [], {}
    for name in names:
        try:
            found.append(admin.inspect(name))
        except UnknownServiceError:
            if services:
                raise
            # listed by SCAN, then gone (expired or deleted): skip it
        except (RedisUnavailableError, AccessDeniedError):
            raise
        except DistbreakerError as exc:  # WRONGTYPE, corrupt state or config, a script's refusal
            if len(names) == 1 and services:
                raise
            broken[name] = exit_for(exc)
    return found, broken


def _broken_error(broken: Broken, total: int) -> CliError:
    what = "; ".join(f"{name}: {err.format_message()}" for name, err in broken.items())
    return CliError(f"{len(broken)} of {total} breakers could not be read: {what}", ExitStatus.ERROR)


def _disagreements(found: list[tuple[Snapshot, FleetConfig]]) -> dict[str, str]:
    out = {}
    for snap, cfg in found:
        if cfg.changed_within(DISAGREE_WINDOW) and cfg.fingerprint_changed_at is not None:
            out[snap.service] = (
                f"{snap.service}: workers' config changed {ago(cfg.server_time - cfg.fingerprint_changed_at)} "
                f"({cfg.previous_fingerprint} -> {cfg.fingerprint}); do all its workers pass the same config?")
    return out


def _status_doc(found: list[tuple[Snapshot, FleetConfig]], warnings: dict[str, str]) -> list[dict[str, Any]]:
    docs = []
    for snap, cfg in found:
        doc = snapshot_dict(snap, cfg)
        doc["config"]["workers_disagree"] = snap.service in warnings
        docs.append(doc)
    return docs


def _show_status(obj: Context, admin: Admin, services: tuple[str, ...], *, watching: bool) -> tuple[Found, Broken]:
    """Print the breakers; returns them and the ones that could not be read (for the caller)."""
    found, broken = _collect(admin, services)
    warnings = _disagreements(found)
    if obj.json:
        docs = _status_doc(found, warnings)
        obj.out(json.dumps(docs) if watching else dumps(docs))
        return found, broken
    if watching and obj.tty:
        click.clear()
    if watching:
        obj.out(click.style(f"{local_clock()}  distbreaker status  {redact(obj.url)}  prefix {obj.prefix}  "
                            "(Ctrl-C to stop)", dim=True))
    if found:
        obj.out(table([s for s, _ in found], width=obj.width()))
    elif not broken:
        obj.note(f"no breakers under prefix {obj.prefix!r}")
    for text in warnings.values():
        obj.warn(safe(text))
    return found, broken


@click.command()
@click.argument("services", nargs=-1, metavar="[SERVICE]...")
@click.option("--watch", "-w", is_flag=True, help="Refresh until Ctrl-C (exit 0).")
@click.option("--interval", type=Finite(0.05, INTERVAL_MAX), default=2.0, show_default=True,
              help="Seconds between refreshes with --watch (0.05 to 3600).")
@click.option("--count", type=click.IntRange(min=1), default=None,
              help="With --watch: stop after this many refreshes.")
@global_options
@pass_ctx
def status(obj: Context, services: tuple[str, ...], watch: bool, interval: float, count: int | None) -> None:
    """Show breakers: state, failures and slow calls in the window, time left open, who forced
    them and why, the last transition and its cause (every breaker when none is named).

    With --json: a list with one object per breaker (fields of Snapshot, plus "config");
    with --watch --json: one such list per line, per refresh.

    A breaker that cannot be read (a key of another type, corrupt data) does not hide the
    others: they are shown, it is named on stderr, and the exit code is 1.
    """
    admin = obj.admin()
    if not watch:
        found, broken = _show_status(obj, admin, services, watching=False)
        if broken:
            raise _broken_error(broken, len(found) + len(broken))
        return
    shown = 0
    try:
        while count is None or shown < count:
            try:
                for name, err in _show_status(obj, admin, services, watching=True)[1].items():
                    obj.note(f"{local_clock()}  Error: {name}: {err.format_message()}")
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


def _act(obj: Context, service: str, action: str, **kwargs: Any) -> None:
    # Every argument is checked before anything is sent (a refused one changes nothing).
    _, kwargs["reason"], kwargs["actor"] = check_control(action, kwargs.get("for_"), kwargs.get("reason", ""),
                                                         kwargs.get("actor"))
    admin = obj.admin()
    unreadable = None
    try:
        before: Snapshot | None = admin.status(service)
    except UnknownServiceError:
        before = None
    except (RedisUnavailableError, AccessDeniedError):
        raise
    except DistbreakerError as exc:  # corrupt or foreign data: reset rewrites it, trip overwrites it
        before, unreadable = None, exit_for(exc).format_message()
    after: Snapshot = getattr(admin, action)(service, **kwargs)
    if obj.json:
        obj.out(dumps({"service": service, "action": action, "existed": before is not None or bool(unreadable),
                       "before": None if before is None else before.state.value,
                       "after": snapshot_dict(after)}))
    else:
        old = before.state.value if before else "closed"
        change = f"{state_text(old)} -> {state_text(after.state)}"
        if after.state in (State.FORCED_OPEN, State.DISABLED):
            change += f" {_forced_until(after)}"
        who = ": ".join(p for p in (kwargs["actor"], kwargs.get("reason", "")) if p)
        verb = {"trip": "tripped", "disable": "disabled", "reset": "reset"}[action]
        obj.out(f"{service}: {verb} ({change})" + (f", by {safe(who)}" if who else ""))
    if unreadable:
        obj.note(f"note: the breaker's data could not be read before ({unreadable}); it was rewritten")
    elif before is None:
        obj.note(f"note: no worker has used {service!r} yet; the breaker was created in this state "
                 "and workers start with it")


def _forcing_command(action: str, doc: str) -> Any:
    @click.command(name=action, help=doc)
    @click.argument("service")
    @click.option("--for", "for_", type=FOR_DURATION, default=None, metavar="DURATION",
                  help="How long (90s, 10m, 2h, 1h30m); default until reset.")
    @click.option("--reason", required=True, help="Why (recorded in the events stream).")
    @actor_option
    @global_options
    @pass_ctx
    def command(obj: Context, service: str, for_: float | None, reason: str, actor: str | None) -> None:
        _act(obj, service, action, for_=for_, reason=reason, actor=actor)

    return command


trip = _forcing_command(
    "trip", "Force SERVICE open fleet-wide: every worker rejects its calls (within its max_staleness, "
            "at once with pub/sub) until --for elapses or a reset.")
disable = _forcing_command(
    "disable", "Force SERVICE closed fleet-wide: calls always run (outcomes are still counted) until "
               "--for elapses or a reset.")


@click.command()
@click.argument("service")
@click.option("--reason", default="", help="Why (recorded in the events stream).")
@actor_option
@global_options
@pass_ctx
def reset(obj: Context, service: str, reason: str, actor: str | None) -> None:
    """Return SERVICE to closed fleet-wide, with an empty window, clearing a trip or disable."""
    _act(obj, service, "reset", reason=reason, actor=actor)


# -- history --------------------------------------------------------------------------------
@click.command()
@click.argument("service")
@click.option("-n", "count", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="How many events, newest first.")
@global_options
@pass_ctx
def history(obj: Context, service: str, count: int) -> None:
    """Show the last transitions of SERVICE (and config changes, shown with from = to)."""
    admin = obj.admin()
    events, skipped = admin.events(service, n=count)
    if not events and not skipped and not admin.exists(service):
        raise UnknownServiceError(service)
    if obj.json:
        obj.out(dumps([transition_dict(t) for t in events]))
    elif events:
        obj.out(history_table(events, width=obj.width()))
    else:
        obj.note(f"{service}: no transitions recorded")
    if skipped:
        obj.note(f"note: skipped {skipped} of the last {count} entries of the events stream: they are not "
                 "distbreaker events (another writer's, or damaged)")


# -- config ---------------------------------------------------------------------------------
@click.command()
@click.argument("service")
@click.option("--set", "settings", type=SETTING, multiple=True, metavar="NAME=VALUE",
              help="Override a value fleet-wide (repeatable), in BreakerConfig units: "
                   "minimum_calls=20, failure_rate_threshold=0.4, open_duration=30s, window=2m, "
                   "consecutive_failures=off.")
@click.option("--clear", is_flag=True, help="Remove every override (with --set: replace them all).")
@click.option("--reason", default="", help="Why (recorded with the actor in the events stream).")
@actor_option
@global_options
@pass_ctx
def config(obj: Context, service: str, settings: tuple[tuple[str, Any], ...], clear: bool, reason: str,
           actor: str | None) -> None:
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
    if settings:
        after = admin.set_config(service, actor=actor, replace=clear, reason=reason, **dict(settings))
    elif clear:
        after = admin.clear_config(service, actor=actor, reason=reason)
    elif before is None:
        raise UnknownServiceError(service)
    else:
        after = before
    changed = bool(settings or clear)
    if obj.json:
        obj.out(dumps({"service": service, "changed": changed, **fleet_config_dict(after)}))
    elif changed:
        what = ", ".join(config_changes(before, after)) or "nothing in force changed"
        verb = "overrides cleared" if clear and not settings else "config set"
        obj.out(f"{service}: {verb} ({what}); workers apply it at their next call")
    else:
        obj.out(config_table(after, width=obj.width()))
        line = safe(f"fingerprint {after.fingerprint or '-'}")
        if after.previous_fingerprint and after.fingerprint_changed_at is not None:
            line += safe(f" (replaced {after.previous_fingerprint} "
                         f"{ago(after.server_time - after.fingerprint_changed_at)})")
        obj.note(line)
    if changed and before is None:
        obj.note(f"note: no worker has used {service!r} yet; the overrides apply when workers start")


# -- doctor ---------------------------------------------------------------------------------
@click.command()
@click.option("--pings", type=click.IntRange(min=1, max=1000), default=20, show_default=True,
              help="PINGs for the latency figures.")
@click.option("--role", type=click.Choice(["worker", "operator"]), default=None,
              help="Check the URL's user against this role (docs/operations.md): what it needs, what it must not run.")
@global_options
@pass_ctx
def doctor(obj: Context, pings: int, role: str | None) -> None:
    """Check this Redis for breakers: server version, Lua scripts, the ACL permissions the breaker
    needs, maxmemory-policy, round-trip latency. Exit 1 on a FAIL (77 for an ACL denial)."""
    checks = obj.admin().doctor(pings=pings, role=role)
    fails = [c for c in checks if c.status == "FAIL"]
    warns = [c for c in checks if c.status == "WARN"]
    if obj.json:
        obj.out(dumps({"url": redact(obj.url), "prefix": obj.prefix, "ok": not fails,
                       "checks": [{"name": c.name, "status": c.status, "detail": c.detail} for c in checks]}))
    else:
        obj.out(check_lines(checks))
    if fails:
        code = ExitStatus.NO_PERMISSION if all(c.denied for c in fails) else ExitStatus.ERROR
        raise CliError(f"doctor: {len(fails)} FAIL, {len(warns)} WARN on {redact(obj.url)} (prefix {obj.prefix!r})",
                       code)
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


COMMANDS = (status, trip, disable, reset, history, config, doctor, load_functions)
