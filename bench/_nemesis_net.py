"""Network partitions of node processes that all listen on 127.0.0.1.

Nodes on loopback share one network namespace, and a node's outgoing
connections (dispatches, Raft, libp2p, etcd) leave from ephemeral ports, so
rules matched by the node's own ports would miss half its traffic. Instead
every node process is put in its own cgroup (v2) right after it is spawned,
long before it opens a socket: a socket belongs to the cgroup its process was
in when the socket was created. :meth:`Cut.isolate` then loads one nftables
table whose ``input`` and ``output`` chains DROP (not reject) every packet
whose local socket is in the victim's cgroup: sent by it, or addressed to it;
open connections included, whoever dialled. The victim is cut from every
other node, from etcd and from the test's clients alike. :meth:`Cut.heal`
deletes the table; TCP retransmits what was dropped.

The cut is checked, not assumed: :meth:`Cut.isolate` refuses to cut a node
with a socket outside its cgroup, and :meth:`Cut.leaks`, called before the
heal, compares every socket of the victim with the moment the rule went in:
a socket that received a segment during the cut (the kernel's per-socket
``segs_in``, read with ``ss -i``) or that lies outside the cgroup is a leak.

Needs root, ``nft`` and a cgroup2 hierarchy mounted under ``/sys/fs/cgroup``
(nft resolves a cgroup path below that directory); :func:`unavailable` says
why not. :meth:`Cut.close` deletes the table and every cgroup it created,
also after a failure; the run's cgroups are named after the run, so two
runs never touch each other's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

_SYSFS = Path("/sys/fs/cgroup")
_NFT_TIMEOUT = 10.0
_RMDIR_WAIT = 5.0


class CutError(RuntimeError):
    """The partition could not be set up, applied or verified."""


def _cgroup2_root() -> Path | None:
    with open("/proc/self/mounts") as mounts:
        for line in mounts:
            fields = line.split()
            if len(fields) > 2 and fields[2] == "cgroup2":
                mount = Path(fields[1])
                if mount == _SYSFS or _SYSFS in mount.parents:
                    return mount
    return None


def unavailable() -> str | None:
    """Why this machine cannot cut a node off (None: it can)."""
    if os.geteuid() != 0:
        return "not root"
    if shutil.which("nft") is None:
        return "nft is not installed (apt-get install nftables)"
    if _cgroup2_root() is None:
        return "no cgroup2 hierarchy under /sys/fs/cgroup"
    return None


def _nft(script: str) -> None:
    done = subprocess.run(
        ["nft", "-f", "-"],
        input=script.encode(),
        capture_output=True,
        check=False,
        timeout=_NFT_TIMEOUT,
    )
    if done.returncode != 0:
        raise CutError(f"nft failed: {done.stderr.decode(errors='replace').strip()}")


class Cut:
    """Per-node cgroups and the nftables table that isolates one of them.

    Not thread-safe: one driver thread calls every method.
    """

    def __init__(self, run_id: str) -> None:
        root = _cgroup2_root()
        reason = unavailable()
        if root is None or reason:
            raise CutError(f"cannot cut nodes off: {reason}")
        slug = re.sub(r"[^A-Za-z0-9_]", "_", run_id)
        self._root = root
        self._group = root / f"praxis-nemesis-{slug}"
        self._table = f"praxis_nemesis_{slug}"
        self._group.mkdir(exist_ok=True)
        self._applied = False
        self._victim: tuple[str, int] | None = None
        self._received: dict[str, int] = {}

    def _path(self, name: str) -> Path:
        return self._group / name

    def adopt(self, name: str, pid: int) -> None:
        """Move the just-spawned process ``pid`` (node ``name``) into the node's cgroup.

        Call it right after spawning, before the node opens sockets: sockets
        opened earlier would stay outside and escape the cut (:meth:`isolate`
        checks).
        """
        path = self._path(name)
        path.mkdir(exist_ok=True)
        (path / "cgroup.procs").write_text(f"{pid}\n")

    def isolate(self, name: str, pid: int) -> None:
        """Drop every packet to or from node ``name``'s sockets until :meth:`heal`.

        Raises:
            CutError: a socket of ``pid`` lies outside the node's cgroup, or
                nft refused the rules.
        """
        outside = self._outside(name, pid)
        if outside:
            raise CutError(f"{name} has a socket outside its cgroup: {outside[0]}")
        nft_path = self._path(name).relative_to(_SYSFS)
        level = len(self._path(name).relative_to(self._root).parts)
        match = f'socket cgroupv2 level {level} "{nft_path}" drop'
        _nft(
            f"table inet {self._table} {{\n"
            f"  chain output {{ type filter hook output priority -10; {match}; }}\n"
            f"  chain input {{ type filter hook input priority -10; {match}; }}\n"
            "}\n"
        )
        self._applied = True
        # nft returns once the ruleset is committed: from here on no segment
        # reaches the victim's sockets, so their counters must stand still.
        self._victim = (name, pid)
        self._received = {ino: s.segs_in for ino, s in _sockets(pid).items()}

    def leaks(self) -> list[str]:
        """What got through the cut since :meth:`isolate` (call it before
        :meth:`heal`): each socket of the victim that received segments
        during the cut or lies outside its cgroup. Empty: the cut held."""
        if self._victim is None:
            return []
        name, pid = self._victim
        found = self._outside(name, pid)
        for ino, socket in _sockets(pid).items():
            grew = socket.segs_in - self._received.get(ino, 0)
            if grew > 0:
                found.append(f"{socket.line} received {grew} segment(s) during the cut")
        return found

    def heal(self) -> None:
        """Remove the cut (no-op without one)."""
        self._victim = None
        if self._applied:
            _nft(f"delete table inet {self._table}\n")
            self._applied = False

    def close(self) -> None:
        """Heal, then remove every cgroup of this run (its processes go back to the root)."""
        try:
            self.heal()
        finally:
            for path in [*sorted(p for p in self._group.iterdir() if p.is_dir()), self._group]:
                self._remove(path)

    def _remove(self, path: Path) -> None:
        deadline = time.monotonic() + _RMDIR_WAIT
        while path.exists():
            procs = path / "cgroup.procs"
            with contextlib.suppress(OSError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(OSError):
                        (self._root / "cgroup.procs").write_text(f"{pid}\n")
            try:
                path.rmdir()
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def _outside(self, name: str, pid: int) -> list[str]:
        """The sockets of ``pid`` that lie outside node ``name``'s cgroup."""
        expected = "/" + str(self._path(name).relative_to(self._root))
        return [s.line for s in _sockets(pid).values() if s.cgroup != expected]


@dataclass(frozen=True)
class _Socket:
    line: str
    """Local and peer address, state."""
    cgroup: str
    segs_in: int


def _sockets(pid: int) -> dict[str, _Socket]:
    """The TCP sockets of process ``pid`` by inode (``ss -tinpe``: each socket
    on one line, its TCP info on the next, indented)."""
    listing = subprocess.run(
        ["ss", "-tanpei"], capture_output=True, text=True, check=False, timeout=_NFT_TIMEOUT
    ).stdout
    found: dict[str, _Socket] = {}
    ino = ""
    for line in listing.splitlines():
        if line[:1].isspace():
            segs = re.search(r"\bsegs_in:(\d+)", line)
            if ino and segs:
                found[ino] = dataclasses.replace(found[ino], segs_in=int(segs.group(1)))
            continue
        ino = ""
        inode = re.search(r"\bino:(\d+)", line)
        if f"pid={pid}," not in line or inode is None:
            continue
        ino = inode.group(1)
        fields = line.split()
        cgroup = re.search(r"cgroup:(\S+)", line)
        found[ino] = _Socket(
            f"{fields[0]} {fields[3]} -> {fields[4]}", cgroup.group(1) if cgroup else "?", 0
        )
    return found
