"""One nemesis trial on a running cluster: workload, fault, heal, audit.

A trial (:func:`run_trial`):

1. starts the workload (:func:`bench._nemesis_workload.run_workload`) and
   the GetAgent sampler, and lets them run ``warmup`` seconds;
2. injects the nemesis, holds it ``nemesis.hold`` seconds, undoes it (always,
   also when something failed in between); a partition also starts a
   :func:`bench._nemesis_workload.probe` through the majority side once the
   cut is in (its acknowledgement: when that side served again), and every
   nemesis one through every node once it is undone (when the cluster
   served again; none within ``launch_timeout`` is an error, so the next
   trial gets a fresh cluster);
3. keeps the workload going ``after`` seconds, then stops it (each client
   finishes the key it holds) and the sampler;
4. waits (``launch_timeout``) for one coordinator with every other node a
   standby: if that never comes, the trial records it as an error and the
   caller starts a fresh cluster for the next trial;
5. audits every acknowledged task (:func:`bench._nemesis_check.audit`) and
   measures the time without a coordinator from the samples.

:class:`NemesisMesh` is the cluster: an :class:`bench._ha_cluster.HaMesh`
whose every node process (also when restarted) joins its own cgroup at once
when a :class:`bench._nemesis_net.Cut` is given, so it can be cut off.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc

from bench._ha_cluster import HaMesh
from bench._nemeses import Nemesis, Partition
from bench._nemesis_check import Audit, audit, coordinator_gaps, recovered_at
from bench._nemesis_net import Cut, CutError
from bench._nemesis_workload import (
    TOOL,
    Submission,
    distinct,
    error_code,
    probe,
    run_workload,
    sample_roles,
    tally,
)
from praxis_grpc.launcher import LaunchError, NodeProcess
from praxis_grpc.testing.counting import RunLog, install_counting_tools


@dataclass
class NemesisMesh(HaMesh):
    """A 3-node active-passive HaMesh offering the counting tool; nodes join ``cut``'s cgroups."""

    cut: Cut | None = None
    _addresses: dict[str, str] = field(default_factory=dict)

    def spawned(self, node: NodeProcess) -> None:
        """Move the fresh process into its cgroup before it opens a socket."""
        if self.cut is not None:
            self.cut.adopt(node.name, node.pid)

    def targets(self) -> list[tuple[str, str]]:
        """(name, gRPC address) of every node, in node order.

        A node being restarted is not ready yet: its old address stands in
        (refused, so callers move on to the next node).
        """
        for node in self.nodes:
            if "grpc" in node.info:
                self._addresses[node.name] = node.grpc
        return [(node.name, self._addresses[node.name]) for node in self.nodes]


def base_config(tools_dir: str) -> dict[str, Any]:
    """Node config: the counting tool and quick card/peer expiry, as the e2e tests use."""
    return {
        "tools": {"builtins": ["echo"], "contracts_dir": tools_dir},
        "cards": {"heartbeat": "500ms", "ttl": "5s"},
        "p2p": {"disconnect_grace": "500ms", "rendezvous": ""},
        "tasks": {"max_concurrency": 16},
    }


def install_tool(root: Any) -> str:
    """Install the non-idempotent counting tool under ``root``; its contracts dir."""
    return str(install_counting_tools(root, {TOOL: False}))


@dataclass(frozen=True)
class Settings:
    """How each trial runs (seconds unless said otherwise)."""

    clients: int = 8
    limit: int = 100_000
    warmup: float = 1.0
    after: float = 1.5
    task_seconds: float = 0.05
    rpc_timeout: float = 8.0
    give_up: float = 30.0
    settle_timeout: float = 60.0
    launch_timeout: float = 60.0
    sample_interval: float = 0.1
    fresh: float = 0.4


@dataclass
class TrialResult:
    """What one trial saw (seconds; a partition's moments count from when its rule was in).

    ``served_s``: from the end of the nemesis (a killed node restarted, a
    paused one continued, a cut healed) until the probe sent through every
    node was acknowledged. ``majority_ack_s``: until the majority
    probe's key was acknowledged (None: not a partition, or never).
    ``failed_messages``: every failed call's node, code and message
    (:func:`bench._nemesis_workload.tally`). ``victim_acks_in_cut``:
    submissions started during the cut that the cut-off node acknowledged
    before the heal (a leak the workload saw);
    ``cut_leaks``: sockets of the victim that received during the cut
    (:meth:`bench._nemesis_net.Cut.leaks`).
    """

    nemesis: str
    number: int
    hold_s: float
    victim: str = ""
    submitted: int = 0
    failed_calls: dict[str, int] = field(default_factory=dict)
    failed_messages: Counter[str] = field(default_factory=Counter)
    audit: Audit = field(default_factory=Audit)
    outage_s: float = 0.0
    recovered_s: float | None = None
    served_s: float | None = None
    majority_ack_s: float | None = None
    victim_acks_in_cut: int = 0
    cut_leaks: list[str] = field(default_factory=list)
    error: str = ""


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


def run_trial(
    mesh: NemesisMesh, nemesis: Nemesis, log: RunLog, prefix: str, number: int, settings: Settings
) -> TrialResult:
    """Run one trial (see the module doc); errors end up in the result."""
    result = TrialResult(nemesis.name, number, nemesis.hold)
    asyncio.run(_trial(mesh, nemesis, log, prefix, settings, result))
    return result


async def _trial(
    mesh: NemesisMesh,
    nemesis: Nemesis,
    log: RunLog,
    prefix: str,
    s: Settings,
    result: TrialResult,
) -> None:
    stop, sampling = asyncio.Event(), asyncio.Event()
    sampler = asyncio.create_task(
        sample_roles(mesh.targets, sampling, interval=s.sample_interval, rpc_timeout=0.3)
    )
    workload = asyncio.create_task(
        run_workload(
            mesh.targets,
            log,
            prefix,
            stop,
            clients=s.clients,
            limit=s.limit,
            task_seconds=s.task_seconds,
            rpc_timeout=s.rpc_timeout,
            give_up=s.give_up,
        )
    )
    majority: asyncio.Task[Submission] | None = None
    served: asyncio.Task[Submission] | None = None
    healed = 0.0
    try:
        await asyncio.sleep(s.warmup)
        try:
            await asyncio.to_thread(nemesis.start, mesh)
            if isinstance(nemesis, Partition) and nemesis.victim is not None:
                majority = asyncio.create_task(
                    probe(
                        mesh.targets,
                        nemesis.victim.name,
                        log,
                        f"{prefix}-majority",
                        task_seconds=s.task_seconds,
                        rpc_timeout=s.rpc_timeout,
                        give_up=s.give_up,
                    )
                )
            await asyncio.sleep(nemesis.hold)
        finally:
            await asyncio.to_thread(nemesis.stop, mesh)
            healed = time.monotonic()  # a kill's restart is part of undoing it
            served = asyncio.create_task(
                probe(
                    mesh.targets,
                    "",
                    log,
                    f"{prefix}-served",
                    task_seconds=s.task_seconds,
                    rpc_timeout=s.rpc_timeout,
                    give_up=s.launch_timeout,
                )
            )
        await asyncio.sleep(s.after)
    except (LaunchError, CutError, OSError, grpc.RpcError) as exc:
        result.error = f"nemesis: {_error(exc)}"
    finally:
        stop.set()
        submissions = await workload
        probes = {
            name: await task
            for name, task in (("majority", majority), ("served", served))
            if task is not None
        }
        submissions += probes.values()
        await asyncio.to_thread(_wait_whole, mesh, s.launch_timeout, result)
        sampling.set()
        samples = await sampler
    began = nemesis.injected_at or time.monotonic()
    ended = nemesis.undone_at or began
    result.victim = nemesis.victim.name if nemesis.victim else ""
    result.submitted = len(submissions)
    for submission in submissions:
        for error in submission.errors:
            code = error_code(error)
            result.failed_calls[code] = result.failed_calls.get(code, 0) + 1
        result.failed_messages.update(tally(submission.errors))
    last = max(sample.at for sample in samples) if samples else ended
    result.outage_s = max(coordinator_gaps(samples, began, last, s.fresh), default=0.0)
    result.recovered_s = recovered_at(samples, ended, last, s.fresh)
    after = probes.get("served")
    if after is not None and after.task_id:
        result.served_s = after.acked_at - healed
    elif after is not None:
        why = distinct(tally(after.errors)) if after.errors else "no answer"
        result.error = result.error or (
            f"after the nemesis: nothing acknowledged within {s.launch_timeout:g} s ({why})"
        )
    if isinstance(nemesis, Partition):
        after_cut = [sub for sub in submissions if sub.task_id and sub.attempt_started >= began]
        first = probes.get("majority")
        if first is not None and first.task_id:
            result.majority_ack_s = first.acked_at - began
        result.victim_acks_in_cut = sum(
            sub.acked_by == result.victim and sub.acked_at < ended for sub in after_cut
        )
        result.cut_leaks = nemesis.leaks
    reference = _reference(mesh)
    try:
        result.audit = await audit(
            mesh.targets,
            reference,
            submissions,
            log,
            prefix,
            settle_timeout=s.settle_timeout,
            rpc_timeout=s.rpc_timeout,
        )
    except grpc.aio.AioRpcError as exc:
        result.error = result.error or f"audit: {exc.code().name} {exc.details()}"


def _wait_whole(mesh: NemesisMesh, timeout: float, result: TrialResult) -> None:
    try:
        mesh.wait_coordinator(timeout)
    except LaunchError as exc:
        result.error = result.error or f"after the nemesis: {_error(exc)}"


def _reference(mesh: NemesisMesh) -> str:
    """The coordinator's name, or the first live node's when there is none."""
    roles = mesh.roles()
    leaders = [name for name, role in roles.items() if role == "coordinator"]
    if len(leaders) == 1:
        return leaders[0]
    return next((n.name for n in mesh.nodes if n.process.poll() is None), mesh.nodes[0].name)


@contextlib.contextmanager
def cut_if_possible(run_id: str, wanted: bool) -> Any:
    """A :class:`Cut` for the run (None if not ``wanted``); closed on exit."""
    if not wanted:
        yield None
        return
    cut = Cut(run_id)
    try:
        yield cut
    finally:
        cut.close()
