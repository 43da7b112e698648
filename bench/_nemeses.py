"""The faults the nemesis suite injects into a running active-passive cluster.

Each nemesis picks its victim by role when it starts (the coordinator, or
the first standby by name), injects the fault, and undoes it in
:meth:`stop`; :attr:`hold` is how long the trial leaves the fault in place.
``start`` and ``stop`` block (call them through ``asyncio.to_thread``), and
each is bounded: a kill waits for the reaping, a restart for readiness and a
whole cluster (``launch_timeout``). The trial calls ``stop`` even when
something failed after ``start``, so no node stays paused or cut off.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field

from bench._ha_cluster import HaMesh, agent_view, coordinator, restart
from bench._nemesis_net import Cut
from praxis_grpc.launcher import LaunchError, NodeProcess

_REAP_TIMEOUT = 10.0

NEMESES = (
    "kill-coordinator",
    "kill-standby",
    "pause-coordinator-short",
    "pause-coordinator-long",
    "pause-standby",
    "partition-coordinator",
)
"""Every nemesis, in the order a run goes through them."""


def pick(mesh: HaMesh, role: str, launch_timeout: float) -> NodeProcess:
    """The coordinator, or the first standby by name, once the cluster has one coordinator."""
    lead = coordinator(mesh, launch_timeout)
    if role == "coordinator":
        return next(node for node in mesh.nodes if node.name == lead.name)
    for node in sorted(mesh.nodes, key=lambda n: n.name):
        if node.name != lead.name and agent_view(node).role == "standby":
            return node
    raise LaunchError(f"no standby besides {lead.name}")


@dataclass
class Nemesis:
    """One fault: ``start`` injects it into a victim of ``role``, ``stop`` undoes it.

    Attributes:
        name: One of :data:`NEMESES`.
        role: ``coordinator`` or ``standby``.
        hold: Seconds between start and stop.
        victim: The node hit (set by start).
        injected_at: time.monotonic() right before the fault (0 before start).
        undone_at: time.monotonic() right before it was undone (0 before stop).
    """

    name: str
    role: str
    hold: float
    launch_timeout: float
    victim: NodeProcess | None = field(default=None, init=False)
    injected_at: float = field(default=0.0, init=False)
    undone_at: float = field(default=0.0, init=False)

    def start(self, mesh: HaMesh) -> None:
        """Pick the victim and inject the fault."""
        self.victim = pick(mesh, self.role, self.launch_timeout)
        self.injected_at = time.monotonic()
        self._inject(mesh, self.victim)

    def stop(self, mesh: HaMesh) -> None:
        """Undo the fault (no-op if start never picked a victim)."""
        if self.victim is not None:
            self.undone_at = time.monotonic()
            self._undo(mesh, self.victim)

    def _inject(self, mesh: HaMesh, victim: NodeProcess) -> None:
        raise NotImplementedError

    def _undo(self, mesh: HaMesh, victim: NodeProcess) -> None:
        raise NotImplementedError


class Kill(Nemesis):
    """SIGKILL the victim; stop starts it again from its config and waits for a whole cluster."""

    def _inject(self, mesh: HaMesh, victim: NodeProcess) -> None:
        victim.process.kill()
        victim.process.wait(_REAP_TIMEOUT)

    def _undo(self, mesh: HaMesh, victim: NodeProcess) -> None:
        if victim in mesh.nodes:
            restart(mesh, victim, self.launch_timeout)


class Pause(Nemesis):
    """SIGSTOP the victim; stop sends SIGCONT."""

    def _inject(self, mesh: HaMesh, victim: NodeProcess) -> None:
        victim.process.send_signal(signal.SIGSTOP)

    def _undo(self, mesh: HaMesh, victim: NodeProcess) -> None:
        if victim.process.poll() is None:
            victim.process.send_signal(signal.SIGCONT)


@dataclass
class Partition(Nemesis):
    """Drop every packet to and from the victim (see :mod:`bench._nemesis_net`); stop heals.

    :attr:`injected_at` is the moment the rule was in, not when the command
    was sent: until nft returns (after ``ss`` has checked the victim's
    sockets) the victim still serves, and a call it answers then is no leak.

    Attributes:
        leaks: What got through the cut (:meth:`Cut.leaks`, read before the
            heal); empty when the cut held.
    """

    cut: Cut | None = None
    leaks: list[str] = field(default_factory=list)

    def _inject(self, mesh: HaMesh, victim: NodeProcess) -> None:
        if self.cut is None:
            raise LaunchError("the partition nemesis needs a Cut (root, nft, cgroup2)")
        self.cut.isolate(victim.name, victim.pid)
        self.injected_at = time.monotonic()

    def _undo(self, mesh: HaMesh, victim: NodeProcess) -> None:
        if self.cut is not None:
            try:
                self.leaks = self.cut.leaks()
            finally:
                self.cut.heal()


def make(name: str, hold: float, launch_timeout: float, cut: Cut | None) -> Nemesis:
    """The nemesis called ``name`` (one of :data:`NEMESES`)."""
    if name == "kill-coordinator":
        return Kill(name, "coordinator", hold, launch_timeout)
    if name == "kill-standby":
        return Kill(name, "standby", hold, launch_timeout)
    if name.startswith("pause-coordinator"):
        return Pause(name, "coordinator", hold, launch_timeout)
    if name == "pause-standby":
        return Pause(name, "standby", hold, launch_timeout)
    if name == "partition-coordinator":
        return Partition(name, "coordinator", hold, launch_timeout, cut)
    raise ValueError(f"unknown nemesis {name!r}; one of {', '.join(NEMESES)}")
