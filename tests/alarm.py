"""A hang guard for tests of inputs that used to block or spin: SIGALRM fails the test after
`seconds` with `message` (a bound, not a timing assertion: the old code never returned)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def hang_guard(seconds: int, message: str) -> Iterator[None]:
    def fail(*_: Any) -> None:
        raise AssertionError(message)

    old = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
