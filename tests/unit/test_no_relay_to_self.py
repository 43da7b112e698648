"""A standby whose latest leadership view names itself (a raft member that
stepped down for want of a quorum: its own old claim is still the latest it
applied) holds task calls until it learns the next coordinator; it never
relays them to itself. In-memory peers and consensus: no sockets."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from praxis_grpc.tasks.model import Submission, TaskState
from praxis_grpc.testing import ExecutionLog
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.peer_nodes import PeerCluster
from tests.integration.helpers import until


async def test_a_standby_naming_itself_holds_instead_of_relaying_to_itself(
    tmp_path: Path,
) -> None:
    group, cluster, log = MemoryConsensusGroup(), PeerCluster(), ExecutionLog()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(cluster.aclose)
        await cluster.add_group(group, ["a", "b", "c"], log, tmp_path)
        a, b = cluster.nodes["a"], cluster.nodes["b"]
        assert a.ha is not None
        assert b.ha is not None
        group.elect("a")
        await until(lambda: a.ha is not None and a.ha.leading)
        cluster.share_cards()
        group.isolate("a", keeps_claim=True)
        await until(lambda: a.ha is not None and not a.ha.leading)
        assert a.ha.leadership().leader_id == "a"
        assert not a.ha.leadership().is_self

        submitted = asyncio.ensure_future(
            a.dispatcher.submit(Submission("work", {"seconds": 0, "key": "k"}), wait=True)
        )
        stack.callback(submitted.cancel)
        relayed_errors = a.metrics.forwarded_submissions_total.labels("error")
        held = a.metrics.task_calls_held
        await until(lambda: held._value.get() == 1 or relayed_errors._value.get() > 0)
        assert relayed_errors._value.get() == 0, "the standby relayed a call to itself"

        group.elect("b")
        await until(lambda: b.ha is not None and b.ha.leading)
        group.rejoin("a")
        task, _ = await asyncio.wait_for(submitted, 10)
        assert task.state is TaskState.COMPLETED
        assert log.count("k") == 1
        assert relayed_errors._value.get() == 0
