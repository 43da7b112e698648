"""Tests that need a program outside Python (Prometheus, Node.js, ...).

``scripts/test`` installs each of them (scripts/_system_tools.sh); a test
that needs one calls :func:`require_tool`, which skips without it except
under ``CI=true``, where a missing tool is a failure of the CI setup.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
from pathlib import Path

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


def npm_install(package_dir: Path, cache_root: Path, timeout: float = 300) -> Path:
    """``npm ci`` the package at ``package_dir`` into a directory under
    ``cache_root`` keyed by its lockfile, once; return its ``node_modules``
    (put it in ``NODE_PATH``). Skips without npm, except under CI=true.

    Raises:
        subprocess.CalledProcessError: npm failed (its output is attached).
    """
    npm = require_tool("npm", "apt-get install npm")
    lock = (package_dir / "package-lock.json").read_bytes()
    target = cache_root / hashlib.sha256(lock).hexdigest()[:16]
    modules = target / "node_modules"
    if (target / ".installed").exists():
        return modules
    target.mkdir(parents=True, exist_ok=True)
    for name in ("package.json", "package-lock.json"):
        shutil.copyfile(package_dir / name, target / name)
    subprocess.run(
        [npm, "ci", "--no-audit", "--no-fund", "--ignore-scripts"],
        cwd=target,
        check=True,
        capture_output=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    (target / ".installed").touch()
    return modules
