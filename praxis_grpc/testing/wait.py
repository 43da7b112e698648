"""Wait on a condition with a deadline instead of sleeping and hoping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def eventually(
    probe: Callable[[], T | None], timeout: float = 10.0, interval: float = 0.05, what: str = ""
) -> T:
    """Call ``probe`` until it returns something truthy; return that value.

    Exceptions raised by ``probe`` count as "not yet" until the deadline, when
    the last one is re-raised inside the ``TimeoutError``'s context.

    Raises:
        TimeoutError: the condition did not hold within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            value = probe()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() > deadline:
            raise TimeoutError(f"condition not met within {timeout:g}s: {what}") from last_error
        time.sleep(interval)
