"""Moved to `distbreaker.toolkit.httpx`; this older import path re-exports its public names."""

from .toolkit.httpx import *  # noqa: F403
from .toolkit.httpx import __all__ as __all__
