"""Name where a socket was opened when the garbage collector finds it unclosed.

A socket nobody closed is reported ("ResourceWarning: unclosed <socket.socket
…>") when the collector reaches it, often during a later, unrelated test, and
pytest can say where it was opened only under tracemalloc, which makes the
suite several times slower. This plugin records the opening stack of each
stdlib socket (trio's and asyncio's sockets are stdlib sockets too), forgets it
when the socket is closed, and puts it into the report of one left open.
"""

from __future__ import annotations

import socket
import sys
import traceback
from typing import Any

import pytest

_origins: dict[int, str] = {}  # id(socket) -> its opening stack, while open
_init = socket.socket.__init__
_real_close = socket.socket._real_close  # type: ignore[attr-defined]
_detach = socket.socket.detach


def _recording_init(self: socket.socket, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    frames = traceback.extract_stack(limit=24)[:-1]
    frames = [f for f in frames if "/_pytest/" not in f.filename and "/pluggy/" not in f.filename]
    _origins[id(self)] = "".join(traceback.format_list(frames[-12:]))


def _forgetting_close(self: socket.socket, *args: Any, **kwargs: Any) -> None:
    _origins.pop(id(self), None)
    _real_close(self, *args, **kwargs)


def _forgetting_detach(self: socket.socket) -> int:
    _origins.pop(id(self), None)
    return _detach(self)


@pytest.hookimpl(trylast=True)  # wraps the hook pytest's unraisable plugin installs
def pytest_configure(config: pytest.Config) -> None:
    socket.socket.__init__ = _recording_init  # type: ignore[method-assign]
    socket.socket._real_close = _forgetting_close  # type: ignore[attr-defined]
    socket.socket.detach = _forgetting_detach  # type: ignore[method-assign,assignment]
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        target = unraisable.object
        origin = _origins.pop(id(target), None) if isinstance(target, socket.socket) else None
        if origin is not None:
            message = unraisable.err_msg or "Exception ignored in"
            unraisable = type(unraisable)(  # sys.UnraisableHookArgs, a struct sequence
                (
                    unraisable.exc_type,
                    unraisable.exc_value,
                    unraisable.exc_traceback,
                    f"{message} a socket opened at\n{origin}",
                    target,
                )
            )
        previous(unraisable)

    sys.unraisablehook = hook


def pytest_unconfigure(config: pytest.Config) -> None:
    socket.socket.__init__ = _init  # type: ignore[method-assign]
    socket.socket._real_close = _real_close  # type: ignore[attr-defined]
    socket.socket.detach = _detach  # type: ignore[method-assign]
