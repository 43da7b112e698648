"""A NAT laboratory in Linux network namespaces, for tests of NAT traversal.

:func:`nat_lab` builds, with ``ip netns``, veth pairs and nftables::

    private_i (192.168.i.2) --LAN-- nat_i (192.168.i.1 | 172.20.i.2) --WAN-- public
                                    masquerade, no inbound                (172.20.i.1,
                                                                           10.200.0.1 on lo)

``public`` stands for the Internet: it routes between the NATs' WAN links
and holds :data:`PUBLIC_ADDR` for a relay or bootstrap node. Each ``nat_i``
masquerades its private side and forwards only what its private side
started (connection tracking), so nothing in ``private_i`` is reachable
from outside. With ``symmetric=True`` the masquerade picks a random port per
connection (``fully-random``): a symmetric NAT, where hole punching cannot
work; otherwise source ports are kept (endpoint-independent mapping).

Only private address ranges are used, and only inside the namespaces. Names
carry the process id and a counter, so concurrent runs do not collide; every
namespace (and with it every veth and nftables rule) is deleted on exit,
whatever happened. Needs root, ``ip`` (iproute2) and ``nft`` (nftables):
:func:`require_netns` skips without them, and fails under ``CI=true``.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import pytest

from praxis_grpc.testing.system_tools import require_tool

__all__ = ["PUBLIC_ADDR", "NatLab", "lab_names", "nat_lab", "require_netns"]

PUBLIC_ADDR = "10.200.0.1"
"""The public namespace's own address (on its loopback), reachable from every private one."""

_IP = shutil.which("ip") or "/usr/sbin/ip"
_SYSCTL = shutil.which("sysctl") or "/usr/sbin/sysctl"
_NFT = shutil.which("nft") or "/usr/sbin/nft"
_COMMAND_TIMEOUT = 10.0
_KILL_TIMEOUT = 5.0
_counter = itertools.count()


def require_netns() -> None:
    """Skip unless this process may build namespaces (root, ``ip``, ``nft``); under
    ``CI=true`` fail instead, since CI runs as root with both installed."""
    require_tool("ip", "iproute2")
    require_tool("nft", "nftables")
    reason = ""
    if os.geteuid() != 0:
        reason = "network namespace tests need root"
    elif subprocess.run([_IP, "netns", "list"], check=False, capture_output=True).returncode != 0:
        reason = "`ip netns` does not work here"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run them")
        pytest.skip(reason)


def _ip(*args: str) -> None:
    _run([_IP, *args])


def _run(argv: Sequence[str], stdin: str | None = None) -> str:
    done = subprocess.run(
        list(argv),
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=_COMMAND_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return done.stdout


def lab_names(prefix: str) -> list[str]:
    """The namespaces and root-namespace links whose names start with ``prefix``
    (what a lab leaves behind if its cleanup failed)."""
    namespaces = [line.split()[0] for line in _run([_IP, "netns", "list"]).splitlines() if line]
    links = [
        line.split(":")[1].strip().split("@")[0]
        for line in _run([_IP, "-o", "link", "show"]).splitlines()
        if line.count(":") >= 2
    ]
    return [name for name in [*namespaces, *links] if name.startswith(prefix)]


@dataclass
class NatLab:
    """A built laboratory (see the module docstring). Use :func:`nat_lab`."""

    prefix: str
    symmetric: bool
    public: str
    nats: list[str]
    privates: list[str]
    _processes: list[subprocess.Popen[Any]] = field(default_factory=list)

    @staticmethod
    def private_addr(index: int) -> str:
        """The address of private namespace ``index`` (0-based), behind its NAT."""
        return f"192.168.{index + 1}.2"

    @staticmethod
    def nat_wan_addr(index: int) -> str:
        """The public-side address of NAT ``index``: what the public side sees."""
        return f"172.20.{index + 1}.2"

    def popen(self, namespace: str, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` in ``namespace``; it is killed (by pid) when the lab closes.

        ``ip netns exec`` execs the command, so the returned pid is the command's own.
        """
        process = subprocess.Popen([_IP, "netns", "exec", namespace, *argv], **kwargs)
        self._processes.append(process)
        return process

    def run(self, namespace: str, argv: Sequence[str], timeout: float = 30.0) -> str:
        """Run ``argv`` in ``namespace`` to completion; its stdout. RuntimeError if it fails."""
        done = subprocess.run(
            [_IP, "netns", "exec", namespace, *argv],
            check=False,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv!r} in {namespace} failed: {done.stderr.strip()[-2000:]}")
        return done.stdout

    def python(self, namespace: str, code: str, timeout: float = 30.0) -> str:
        """Run Python ``code`` in ``namespace``; its stdout."""
        return self.run(namespace, [sys.executable, "-c", code], timeout=timeout)

    def close(self) -> None:
        """Kill every process started here, then delete every namespace. Idempotent."""
        for process in self._processes:
            if process.poll() is None:
                process.kill()
        for process in self._processes:
            with suppress(subprocess.TimeoutExpired):
                process.wait(_KILL_TIMEOUT)
            for pipe in (process.stdin, process.stdout, process.stderr):
                if pipe is not None:
                    pipe.close()
        self._processes.clear()
        # A namespace takes its veth ends (and so their peers) and nft tables with it.
        for namespace in [*self.privates, *self.nats, self.public]:
            subprocess.run([_IP, "netns", "delete", namespace], check=False, capture_output=True)


@contextmanager
def nat_lab(private_count: int = 2, *, symmetric: bool = False) -> Iterator[NatLab]:
    """Build the laboratory, yield it, and tear it down even if building or the body fails."""
    prefix = f"px{os.getpid()}x{next(_counter)}"
    lab = NatLab(
        prefix=prefix,
        symmetric=symmetric,
        public=f"{prefix}pub",
        nats=[f"{prefix}nat{i}" for i in range(private_count)],
        privates=[f"{prefix}prv{i}" for i in range(private_count)],
    )
    try:
        _build(lab)
        yield lab
    finally:
        lab.close()


def _build(lab: NatLab) -> None:
    public = lab.public
    _ip("netns", "add", public)
    _in(public, _IP, "link", "set", "lo", "up")
    _in(public, _IP, "addr", "add", f"{PUBLIC_ADDR}/32", "dev", "lo")
    _in(public, _SYSCTL, "-qw", "net.ipv4.ip_forward=1")
    for index, (nat, private) in enumerate(zip(lab.nats, lab.privates, strict=True)):
        subnet = index + 1
        wan, lan = f"{lab.prefix}w{index}", f"{lab.prefix}l{index}"
        _ip("netns", "add", nat)
        _ip("netns", "add", private)
        _in(nat, _IP, "link", "set", "lo", "up")
        _in(private, _IP, "link", "set", "lo", "up")
        _link(wan, public, f"172.20.{subnet}.1", nat, lab.nat_wan_addr(index))
        _link(lan, nat, f"192.168.{subnet}.1", private, lab.private_addr(index))
        _in(nat, _SYSCTL, "-qw", "net.ipv4.ip_forward=1")
        _run(
            [_IP, "netns", "exec", nat, _NFT, "-f", "-"],
            stdin=_nat_rules(wan + "b", lan + "a", lab.symmetric),
        )


def _link(name: str, gateway_ns: str, gateway: str, client_ns: str, client: str) -> None:
    """A veth pair ``<name>a`` (in ``gateway_ns``, at ``gateway``) -- ``<name>b``
    (in ``client_ns``, at ``client``, routing everything via ``gateway``); /24s."""
    _ip(
        "link",
        "add",
        f"{name}a",
        "netns",
        gateway_ns,
        "type",
        "veth",
        "peer",
        f"{name}b",
        "netns",
        client_ns,
    )
    for namespace, end, addr in ((gateway_ns, "a", gateway), (client_ns, "b", client)):
        _in(namespace, _IP, "addr", "add", f"{addr}/24", "dev", f"{name}{end}")
        _in(namespace, _IP, "link", "set", f"{name}{end}", "up")
    _in(client_ns, _IP, "route", "add", "default", "via", gateway)


def _in(namespace: str, *argv: str) -> None:
    _run([_IP, "netns", "exec", namespace, *argv])


def _nat_rules(wan: str, lan: str, symmetric: bool) -> str:
    """Masquerade LAN -> WAN; forward only replies inbound; nothing addressed to the NAT itself
    from the WAN side but replies (so no port on it answers the public side either)."""
    mapping = " fully-random" if symmetric else ""
    return f"""
table ip praxis_nat {{
    chain postrouting {{
        type nat hook postrouting priority srcnat; policy accept;
        oifname "{wan}" masquerade{mapping}
    }}
    chain forward {{
        type filter hook forward priority filter; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wan}" accept
    }}
    chain input {{
        type filter hook input priority filter; policy accept;
        iifname "{wan}" ct state new drop
    }}
}}
"""
