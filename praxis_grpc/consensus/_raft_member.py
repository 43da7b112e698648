"""The raft member's process-level pieces that are not Raft: its journal
directory lock, the bind check, and the handles into pysyncobj 0.3.17's
private state that the backend needs (its tick thread, its wake-up pipe and
dump files that ``destroy()`` leaves open, its election deadline).

Kept apart from :mod:`praxis_grpc.consensus.raft` so that module reads as the
backend's contract; like :mod:`._raft_receiver`, the private handles are tied
to the pinned pysyncobj version.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from praxis_grpc.consensus.base import ConsensusError

__all__ = [
    "SyncObjHandle",
    "campaign_now",
    "check_bindable",
    "close_dump_files",
    "close_pipe",
    "lock_dir",
    "tick_thread",
]


class SyncObjHandle(Protocol):
    """The part of ``pysyncobj.SyncObj`` the raft backend uses (pysyncobj is untyped)."""

    @property
    def raftCurrentTerm(self) -> int: ...
    def _isLeader(self) -> bool: ...
    def waitBinded(self) -> None: ...
    def addOnTickCallback(self, callback: Callable[[], None]) -> None: ...
    def transferLeadership(self) -> None: ...
    def destroy(self) -> None: ...
    def _doDestroy(self) -> None: ...


def lock_dir(directory: Path) -> int:
    """Create the journal directory and lock it against a second member."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConsensusError(f"data_dir: cannot create {directory} ({exc})") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        os.close(fd)
        raise ConsensusError(f"data_dir: {directory} is in use by another raft member") from exc
    return fd


def check_bindable(address: str) -> None:
    """Fail early, with the reason, if the raft address cannot be listened on."""
    host, port = address.rsplit(":", 1)
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        family, kind, proto, _, sockaddr = min(infos, key=lambda i: i[0] != socket.AF_INET)
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(sockaddr)
    except OSError as exc:
        raise ConsensusError(
            f"ha.consensus.raft.address {address}: cannot listen there ({exc})"
        ) from exc


# pysyncobj 0.3.17 (pinned) keeps these private: the tick thread, which
# destroy() stops without a non-blocking join, the wake-up pipe and dump
# transfer files that destroy() leaves open, and the election deadline.


def campaign_now(node: SyncObjHandle) -> None:
    """Make a follower's next tick start an election (as Raft's TimeoutNow
    does); call on pysyncobj's thread."""
    if hasattr(node, "_SyncObj__raftElectionDeadline"):
        node._SyncObj__raftElectionDeadline = 0


def tick_thread(node: SyncObjHandle) -> threading.Thread | None:
    thread = getattr(node, "_SyncObj__thread", None)
    return thread if isinstance(thread, threading.Thread) else None


def close_pipe(node: SyncObjHandle) -> None:
    notifier = getattr(node, "_SyncObj__pipeNotifier", None)
    for name in ("_PipeNotifier__pipeR", "_PipeNotifier__pipeW"):
        fd = getattr(notifier, name, None)
        if isinstance(fd, int):
            with contextlib.suppress(OSError):
                os.close(fd)


def close_dump_files(node: SyncObjHandle) -> None:
    """Close the dump files a snapshot transfer to or from a peer left open
    (a peer that went away mid-transfer, or this member closing during one)."""
    serializer = getattr(node, "_SyncObj__serializer", None)
    transmissions = getattr(serializer, "_Serializer__transmissions", None)
    files = (
        [t.get("file") for t in transmissions.values()] if isinstance(transmissions, dict) else []
    )
    files.append(getattr(serializer, "_Serializer__incomingTransmissionFile", None))
    for file in files:
        if isinstance(file, io.IOBase):
            with contextlib.suppress(OSError):
                file.close()
