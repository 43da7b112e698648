"""Small asyncio helpers shared by the components that own background work."""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

__all__ = ["cancelling", "resumed"]

T = TypeVar("T")


def cancelling() -> bool:
    """True when the current asyncio task itself is being cancelled.

    A call to another node can end with ``CancelledError`` although its
    caller was not cancelled (grpc.aio cancels the calls of a channel that is
    closed; a relay abandoned for a new coordinator is cancelled on purpose);
    this tells that apart from the caller's own cancellation.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


@types.coroutine
def resumed(coro: Coroutine[Any, Any, T], awaiting: Any) -> Generator[Any, Any, T]:
    """Await ``coro`` from where its first step (``coro.send(None)``, run
    outside any task) stopped, yielding ``awaiting``: what the task awaiting
    this sees is what it would see awaiting ``coro`` from the start (each
    future ``coro`` waits on, then the values and exceptions, cancellation
    included, sent back into it). Closing this closes ``coro``."""
    value = awaiting
    while True:
        try:
            sent = yield value
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # thrown in by the task: passed on
            try:
                value = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                value = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
