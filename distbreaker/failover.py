"""Moved to `distbreaker.toolkit.failover`; this older import path re-exports its public names."""

from .toolkit.failover import *  # noqa: F403
from .toolkit.failover import __all__ as __all__
