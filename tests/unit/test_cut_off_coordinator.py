"""The majority side of a partition of the coordinator serves without waiting
for the cut-off node: the next coordinator does not place tasks on it, though
its card (role coordinator, nothing in flight) is still known and it answers
nothing. In-memory peers and consensus: no sockets."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from praxis_grpc.tasks.model import Submission, TaskState
from praxis_grpc.testing import ExecutionLog
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.peer_nodes import PeerCluster
from tests.integration.helpers import until


async def test_the_next_coordinator_places_nothing_on_a_cut_off_one(tmp_path: Path) -> None:
    group, cluster, log = MemoryConsensusGroup(), PeerCluster(), ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        await cluster.add_group(group, ["a", "b", "c"], log, tmp_path)
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        group.elect("a")
        await until(lambda: a.ha is not None and a.ha.leading)
        cluster.share_cards()  # everyone knows a as the coordinator
        # a is cut off: its packets are dropped, so calls to it hang (no
        # refusal, no reset), and the group elects b. b still holds a's card,
        # the idlest of all since a coordinator runs nothing.
        for other in ("b", "c"):
            cluster.network.delay(other, "a", 3600.0)
        group.isolate("a")
        group.elect("b")
        await until(lambda: b.ha is not None and b.ha.leading)
        assert b.directory.get("a") is not None
        # preferred_agent stands in for P2C's pick of the idle card.
        task, _ = await asyncio.wait_for(
            b.dispatcher.submit(
                Submission("work", {"seconds": 0, "key": "k"}, preferred_agent="a"), wait=True
            ),
            10,
        )
        assert task.state is TaskState.COMPLETED
        assert task.owner_agent_id == "c"
        assert log.count("k") == 1
