"""A client reaches an agent behind NAT through any member: ``target_agent``
places a task on it, ``GetAgent`` with ``agent_id`` describes it, and the CLI's
``--via``/``--agent`` do both. On loopback with in-process nodes: the worker's
gRPC endpoint cannot be dialed (it advertises 127.0.0.2, where nothing
listens), so the member reaches it over ``/praxis/peer/1.0.0`` through a
relay (as in test_relay_tasks.py; in real NAT: tests/e2e/test_nat_process.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from praxis_grpc._gen.praxis.v1 import types_pb2
from praxis_grpc.cli import main
from praxis_grpc.client import PraxisClient
from tests.integration.test_relay_tasks import circuit_addrs, p2p, start, until


async def test_a_natted_agent_is_reached_through_any_member(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        relay = await start(
            stack,
            tmp_path / "relay",
            tools={"builtins": ["echo", "text_analyzer"]},
            p2p=p2p(relay_service=True),
        )
        seed = relay.p2p_addrs[:1]
        worker = await start(
            stack,
            tmp_path / "worker",
            api={"advertise_host": "127.0.0.2"},
            tools={"builtins": ["text_analyzer"]},
            p2p=p2p(bootstrap_nodes=seed, relays=seed, reachability="private"),
        )
        await until(lambda: circuit_addrs(relay, worker.agent_id))
        entry, natted = relay.endpoints.grpc, worker.agent_id

        with PraxisClient(entry) as client:
            # The entry node offers the tool too: only the target decides.
            for index in range(3):
                done = await asyncio.to_thread(
                    client.submit,
                    "text_analyzer",
                    {"text": f"targeted {index}"},
                    wait=True,
                    target_agent=natted,
                )
                assert done.task.state == types_pb2.TASK_STATE_COMPLETED, done.task
                assert done.task.owner_agent_id == natted
                assert done.task.target_agent == natted

            described = await asyncio.to_thread(client.get_agent, natted)
            assert (described.agent_id, described.name) == (natted, "worker")
            assert described.reachability == types_pb2.REACHABILITY_PRIVATE
            for own in ("", relay.agent_id):  # this node itself, not asked over the mesh
                assert (await asyncio.to_thread(client.get_agent, own)).agent_id == relay.agent_id

            refusals: list[tuple[grpc.StatusCode, str, Callable[..., Any], Any, Any]] = [
                (grpc.StatusCode.NOT_FOUND, "agent_id: ", client.get_agent, ("ghost",), {}),
                (
                    grpc.StatusCode.NOT_FOUND,
                    "target_agent: ",
                    client.submit,
                    ("echo", {}),
                    {"target_agent": "ghost"},
                ),
                (
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "target_agent: ",
                    client.submit,
                    ("echo", {}),
                    {"target_agent": natted},
                ),
            ]
            for code, field, call, args, kwargs in refusals:
                with pytest.raises(grpc.RpcError) as refused:
                    await asyncio.to_thread(call, *args, **kwargs)
                assert refused.value.code() is code
                assert (refused.value.details() or "").startswith(field)

        capsys.readouterr()
        argv = ["--json", "agent", "--via", entry, "--agent", natted]
        assert await asyncio.to_thread(main, argv) == 0
        assert json.loads(capsys.readouterr().out)["name"] == "worker"
        text = '{"text": "through the CLI"}'
        argv = ["--json", "submit", "text_analyzer", "--args", text, "--wait"]
        assert await asyncio.to_thread(main, [*argv, "--via", entry, "--agent", natted]) == 0
        assert json.loads(capsys.readouterr().out)["owner_agent_id"] == natted
        argv = ["--json", "status", "--via", entry, "--agent", "worker"]  # by name
        assert await asyncio.to_thread(main, argv) == 0
        [node] = json.loads(capsys.readouterr().out)["nodes"]
        assert (node["target"], node["agent_id"], node["health"]) == (entry, natted, "SERVING")
        assert node["agent"]["reachability"] == "REACHABILITY_PRIVATE"
