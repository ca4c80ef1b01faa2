"""The reporters every breaker has: its OpenTelemetry metrics and the log. The core knows only
the `Reporter` base class (`_model`); the shells hand it these, and it adds the user's hooks."""

from __future__ import annotations

from ._log import LOG
from ._model import Reporter
from ._otel import INSTRUMENTS

__all__ = ["standard_reporters"]


def standard_reporters() -> tuple[Reporter, ...]:
    """New reporters for one breaker: metrics (per breaker) and the log (shared)."""
    return (INSTRUMENTS.reporter(), LOG)
