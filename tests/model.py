"""The reference model of the breaker state machine lives in the package
(`distbreaker/_reference.py`): `on_redis_error="local"` runs it in-process while Redis is
unreachable, and `tests/lua/test_model.py` proves it equal to the Lua scripts."""

from __future__ import annotations

from distbreaker._reference import *  # noqa: F403
from distbreaker._reference import __all__ as __all__  # noqa: F401
