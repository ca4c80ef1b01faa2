"""Moved to `distbreaker.toolkit.health`; this older import path re-exports its public names."""

from .toolkit.health import *  # noqa: F403
from .toolkit.health import __all__ as __all__
