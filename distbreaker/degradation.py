"""Moved to `distbreaker.toolkit.degradation`; this older import path re-exports its public names."""

from .toolkit.degradation import *  # noqa: F403
from .toolkit.degradation import __all__ as __all__
