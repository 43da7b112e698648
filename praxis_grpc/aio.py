"""Small asyncio helpers shared by the components that own background work."""

from __future__ import annotations

import asyncio

__all__ = ["cancelling"]


def cancelling() -> bool:
    """True when the current asyncio task itself is being cancelled.

    A call to another node can end with ``CancelledError`` although its
    caller was not cancelled (grpc.aio cancels the calls of a channel that is
    closed; a relay abandoned for a new coordinator is cancelled on purpose);
    this tells that apart from the caller's own cancellation.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
