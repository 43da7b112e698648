"""Tests that need a program outside Python (Prometheus, Node.js, ...).

``scripts/test`` installs each of them (scripts/_system_tools.sh); a test
that needs one calls :func:`require_tool`, which skips without it except
under ``CI=true``, where a missing tool is a failure of the CI setup.
"""

from __future__ import annotations

import os
import shutil
import socket

import pytest


def require_tool(command: str, package: str) -> str:
    """The path of ``command``; skip (fail under CI=true) when it is missing.

    ``package`` names what installs it, for the message.
    """
    path = shutil.which(command) or next(
        (p for p in (f"/usr/bin/{command}", f"/usr/sbin/{command}") if os.access(p, os.X_OK)),
        None,
    )
    if path is None:
        message = f"{command} is not installed ({package})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; under CI scripts/test must install it")
        pytest.skip(message)
    return path


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now, for a program that cannot bind port 0
    and report it (the port may be taken again before the program binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])
