"""pytest fixtures for code that uses a breaker: ``breaker_clock`` and ``fake_breaker``.

Installed with distbreaker and loaded by pytest automatically (entry point ``pytest11``,
name ``distbreaker``; turn it off with ``-p no:distbreaker``). Importing it costs nothing
beyond distbreaker itself: fakeredis is imported only when a test uses ``fake_breaker``.

Example:

```python
def test_rejects_when_open(fake_breaker, breaker_clock):
    payments = fake_breaker("payments", minimum_calls=2)
    ...
    breaker_clock.advance(30)
```
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .testing import FakeBreakerFactory, FrozenClock

__all__ = ["breaker_clock", "fake_breaker"]


@pytest.fixture
def breaker_clock() -> FrozenClock:
    """A `distbreaker.testing.FrozenClock` for this test, at `distbreaker.testing.EPOCH`."""
    from .testing import FrozenClock

    return FrozenClock()


@pytest.fixture
def fake_breaker(breaker_clock: FrozenClock) -> FakeBreakerFactory:
    """``fake_breaker(service="svc", **config_fields) -> Breaker`` on this test's fake Redis.

    Every breaker it makes shares one new fakeredis server and ``breaker_clock``; its
    ``.redis`` is that client and ``.clock`` the clock.
    """
    from .testing import FakeBreakerFactory

    return FakeBreakerFactory(breaker_clock)
