"""`on_transition` and `on_call` hooks of one breaker (no I/O).

Rules (README "Observability", docs/observability.md):

- A hook gets one frozen dataclass: `Transition` or `CallDetails`.
- A hook that raises is logged (rate-limited, with its traceback) and never raised into the
  protected call; the next hook still runs.
- `on_transition` fires once per transition per breaker object, whether this process made the
  transition (seen in its script's reply) or learnt it from pub/sub, whichever comes first: the
  key is (generation entered, server time of the transition), which both carry.
- The sync `Breaker` runs hooks inline, on the thread that learnt of the event (the calling
  thread, or the pub/sub listener thread); a coroutine function is refused with `TypeError`
  when the breaker is built.
- The asyncio `Breaker` calls sync hooks inline too; a coroutine function (or any hook that
  returns an awaitable) is scheduled as a task on the running loop, never awaited on the call
  path. The tasks are kept referenced until done; `await breaker.close()` waits for them.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Union

from ._log import LIMITED
from ._model import CallDetails, Outcome, Reporter, State, Transition

if TYPE_CHECKING:
    from .errors import CircuitOpenError

__all__ = ["CallHook", "Hooks", "HookArg", "TransitionHook"]

TransitionHook = Callable[[Transition], None | Awaitable[None]]
CallHook = Callable[[CallDetails], None | Awaitable[None]]
HookArg = Union[Callable[[Any], Any], Iterable[Callable[[Any], Any]], None]  # noqa: UP007 (a runtime alias)

_SEEN = 64  # transitions remembered for de-duplication (reply vs pub/sub)
_STATES: dict[str, State] = {s.value: s for s in State}


def _is_async(hook: object) -> bool:
    return inspect.iscoroutinefunction(hook) or inspect.iscoroutinefunction(getattr(hook, "__call__", None))  # noqa: B004 (its __call__ method)


def _callables(name: str, value: HookArg, asynchronous: bool) -> tuple[Callable[[Any], Any], ...]:
    if value is None:
        return ()
    hooks = (value,) if callable(value) else tuple(value)
    for hook in hooks:
        if not callable(hook):
            raise TypeError(f"{name} must be a callable or an iterable of callables, got {hook!r}")
        if not asynchronous and _is_async(hook):
            raise TypeError(
                f"{name} hook {hook!r} is a coroutine function: the sync Breaker runs hooks "
                "inline; pass a plain function, or use distbreaker.asyncio.Breaker"
            )
    return hooks


class Hooks(Reporter):
    """The hooks of one breaker and what they have seen (a `Reporter` of the breaker).

    Args:
        on_transition: callables given a `Transition`.
        on_call: callables given a `CallDetails`.
        asynchronous: True for the asyncio shell (awaitables become tasks).
    """

    __slots__ = ("on_transition", "on_call", "asynchronous", "_lock", "_seen", "_tasks")

    def __init__(self, on_transition: HookArg, on_call: HookArg, *, asynchronous: bool) -> None:
        self.on_transition = _callables("on_transition", on_transition, asynchronous)
        self.on_call = _callables("on_call", on_call, asynchronous)
        self.asynchronous = asynchronous
        self._lock = threading.Lock()
        self._seen: OrderedDict[tuple[int, int], None] = OrderedDict()
        self._tasks: set[asyncio.Task[Any]] = set()

    def __bool__(self) -> bool:
        return bool(self.on_transition or self.on_call)

    def transition(self, transition: Transition, ms: int) -> None:
        """Run the `on_transition` hooks unless this transition (server time `ms`) was seen."""
        key = (transition.generation, ms)
        with self._lock:
            if key in self._seen:
                return
            self._seen[key] = None
            if len(self._seen) > _SEEN:
                self._seen.popitem(last=False)
        for hook in self.on_transition:
            self._fire(hook, transition, "on_transition")

    def transitions(self, service: str, made: Sequence[Transition], ms: int) -> None:
        """This process made `made`: run the `on_transition` hooks for each not seen yet."""
        if self.on_transition:
            for t in made:
                self.transition(t, ms)

    def call(
        self,
        service: str,
        outcome: Outcome,
        duration: float,
        slow: bool,
        state: State | None,
        exc: BaseException | None,
    ) -> None:
        """Run the `on_call` hooks for a finished call."""
        if self.on_call:
            self.run_call(CallDetails(service, outcome, duration, slow, "unknown" if state is None else state, exc))

    def rejected(self, service: str, err: CircuitOpenError) -> None:
        """Run the `on_call` hooks for a rejected call."""
        if self.on_call:
            self.run_call(CallDetails(service, Outcome.REJECTED, 0.0, False, _STATES.get(err.state, err.state), err))

    def run_call(self, details: CallDetails) -> None:
        """Run the `on_call` hooks."""
        for hook in self.on_call:
            self._fire(hook, details, "on_call")

    def _fire(self, hook: Callable[[Any], Any], arg: object, kind: str) -> None:
        try:
            result = hook(arg)
        except Exception:
            _failed(hook, kind)
            return
        if result is not None and inspect.isawaitable(result):
            self._schedule(result, hook, kind)

    def _schedule(self, awaitable: Awaitable[Any], hook: Callable[[Any], Any], kind: str) -> None:
        loop = None
        if self.asynchronous:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                pass
        if loop is None:
            close = getattr(awaitable, "close", None)
            if close is not None:
                close()  # never "coroutine was never awaited"
            LIMITED.log(
                logging.ERROR,
                ("hook-async", kind, id(hook)),
                "%s hook %r returned an awaitable, which this breaker cannot run (the sync Breaker "
                "runs plain functions only); ignored",
                kind,
                hook,
            )
            return
        task = loop.create_task(_guarded(awaitable, hook, kind))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @property
    def pending(self) -> int:
        """Hook tasks not finished yet (asyncio)."""
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for the hook tasks scheduled so far (and those they schedule)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)


async def _guarded(awaitable: Awaitable[Any], hook: Callable[[Any], Any], kind: str) -> None:
    try:
        await awaitable
    except Exception:
        _failed(hook, kind)


def _failed(hook: Callable[[Any], Any], kind: str) -> None:
    LIMITED.log(
        logging.ERROR, ("hook", kind, id(hook)), "%s hook %r raised; ignored", kind, hook, burst=5, exc_info=True
    )
