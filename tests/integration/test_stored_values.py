"""What a node stores it can always return: results checked at completion,
damaged rows reported instead of failing reads, responses within the message
limit. Over a real loopback socket, with a standard client that must parse
every response."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc._gen.praxis.v1 import task_service_pb2_grpc, types_pb2
from praxis_grpc.config import Config
from praxis_grpc.identity import load_or_create_identity
from praxis_grpc.node import Node
from praxis_grpc.tasks.json_values import MAX_JSON_DEPTH
from praxis_grpc.tasks.model import Task, TaskError, TaskState
from praxis_grpc.tasks.sqlite_store import SqliteTaskStore
from praxis_grpc.testing import (
    TEST_BUILTINS,
    ReturningTool,
    make_config,
    running_node,
    worker_pool,
)
from praxis_grpc.testing.memory_consensus import MemoryConsensusGroup
from praxis_grpc.testing.memory_mesh import MemoryMesh
from praxis_grpc.tools.base import JSON, Tool
from praxis_grpc.tools.registry import ToolRegistry, build_registry
from praxis_grpc.tools.workers import WorkerPool
from tests.integration.helpers import NodeGroup, stub, until

MiB = 1024 * 1024
COMPLETED, FAILED = types_pb2.TASK_STATE_COMPLETED, types_pb2.TASK_STATE_FAILED


def struct(values: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(values)
    return message


def nested(depth: int) -> dict[str, Any]:
    """A JSON object ``depth`` containers deep (the object itself is level 1)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def bad_result(arguments: JSON) -> JSON:
    kind = arguments["kind"]
    if kind == "huge_int":
        return {"value": 2**1100}
    if kind == "deep":
        return {"value": nested(MAX_JSON_DEPTH)}  # one level more than allowed
    if kind == "large":
        return {"blob": "x" * int(arguments["size"])}
    return {"fine": True}


def tools(config: Config, workers: WorkerPool, *extra: Tool) -> ToolRegistry:
    builtins = build_registry(TEST_BUILTINS, None, config.sandbox_root, workers)
    return ToolRegistry([*(builtins.get(name) for name in builtins.names()), *extra])


@pytest.fixture
async def node(tmp_path: Path, workers: WorkerPool) -> AsyncIterator[Node]:
    config = make_config(tmp_path / "node", tasks={"max_result_bytes": 64 * 1024})
    registry = tools(config, workers, ReturningTool(bad_result))
    async with running_node(config, tools=registry) as started:
        yield started


@pytest.fixture
async def client(node: Node) -> AsyncIterator[task_service_pb2_grpc.TaskServiceAsyncStub]:
    async with grpc.aio.insecure_channel(node.endpoints.grpc) as channel:
        yield task_service_pb2_grpc.TaskServiceStub(channel)


async def every_task(client: task_service_pb2_grpc.TaskServiceAsyncStub) -> list[types_pb2.Task]:
    """Every page of ListTasks (each must be answered and parsed)."""
    tasks: list[types_pb2.Task] = []
    token = ""
    while True:
        page = await client.ListTasks(pb.ListTasksRequest(page_token=token))
        tasks.extend(page.tasks)
        token = page.next_page_token
        if not token:
            return tasks


@pytest.mark.parametrize(
    ("kind", "reason", "detail"),
    [
        ("huge_int", "RESULT_INVALID", "result.value: integer is too large"),
        ("deep", "RESULT_INVALID", f"nested more than {MAX_JSON_DEPTH} levels deep"),
        ("large", "RESULT_TOO_LARGE", "the limit is 65536 bytes (tasks.max_result_bytes)"),
    ],
)
async def test_a_result_that_cannot_round_trip_fails_its_task(
    client: task_service_pb2_grpc.TaskServiceAsyncStub, kind: str, reason: str, detail: str
) -> None:
    arguments = struct({"kind": kind, "size": 70_000})
    good = await client.SubmitTask(
        pb.SubmitTaskRequest(tool="returns", arguments=struct({"kind": "ok"}), wait=True)
    )
    response = await client.SubmitTask(
        pb.SubmitTaskRequest(tool="returns", arguments=arguments, wait=True)
    )
    task = response.task
    assert task.state == FAILED
    assert task.error.reason == reason
    assert detail in task.error.message
    assert not task.HasField("result")
    fetched = await client.GetTask(pb.GetTaskRequest(task_id=task.task_id))
    assert fetched.task == task
    listed = {t.task_id: t for t in await every_task(client)}
    assert listed[task.task_id] == task
    assert listed[good.task.task_id].state == COMPLETED


async def test_calculator_with_a_result_beyond_a_double_answers_and_stays_readable(
    client: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    # Was: UNKNOWN "OverflowError: int too large to convert to float", then
    # the same for every GetTask and ListTasks. The calculator may refuse the
    # expression itself (TOOL_ERROR); either way the task fails cleanly.
    for expression in ("2**1100", "1" * 1000):
        response = await client.SubmitTask(
            pb.SubmitTaskRequest(
                tool="calculator", arguments=struct({"expression": expression}), wait=True
            )
        )
        assert response.task.state == FAILED
        assert response.task.error.reason in ("RESULT_INVALID", "TOOL_ERROR")
        fetched = await client.GetTask(pb.GetTaskRequest(task_id=response.task.task_id))
        assert fetched.task.error == response.task.error
    assert len(await every_task(client)) == 2


async def test_echo_of_arguments_at_the_depth_limit_fails_cleanly(
    client: task_service_pb2_grpc.TaskServiceAsyncStub,
) -> None:
    # echo wraps its arguments one level deeper: arguments at the limit give a
    # result beyond it, which is refused at completion, not stored.
    response = await client.SubmitTask(
        pb.SubmitTaskRequest(tool="echo", arguments=struct(nested(MAX_JSON_DEPTH)), wait=True)
    )
    assert response.task.state == FAILED
    assert response.task.error.reason == "RESULT_INVALID"
    assert "result.echo.a.a" in response.task.error.message
    shallower = await client.SubmitTask(
        pb.SubmitTaskRequest(tool="echo", arguments=struct(nested(MAX_JSON_DEPTH - 1)), wait=True)
    )
    assert shallower.task.state == COMPLETED
    ids = {t.task_id for t in await every_task(client)}
    assert ids == {response.task.task_id, shallower.task.task_id}


T0 = datetime(2024, 1, 1, tzinfo=UTC)


def stored(n: int, state: TaskState = TaskState.COMPLETED, **fields: Any) -> Task:
    values: dict[str, Any] = {
        "task_id": f"00000000-0000-4000-8000-{n:012d}",
        "tool": "echo",
        "arguments": {"n": n},
        "state": state,
        "created_at": T0 + timedelta(seconds=n),
        "updated_at": T0 + timedelta(seconds=n),
        "owner_agent_id": "agent-old",
        "origin_agent_id": "agent-old",
        "timeout": 60.0,
    }
    if state is TaskState.COMPLETED:
        values["result"] = {"echo": {"n": n}}
    values.update(fields)
    return Task(**values)


def damage(path: Path, task_id: str, column: str, text: str) -> None:
    """Overwrite one JSON column the way an older version (or a disk fault) left it."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(f"UPDATE tasks SET {column} = ? WHERE task_id = ?", (text, task_id))


def deep_json(depth: int) -> str:
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


async def test_rows_an_older_version_stored_are_listed_with_a_marker(tmp_path: Path) -> None:
    config = make_config(tmp_path / "node")
    tasks = [
        stored(1),
        stored(2),  # result 2**1100 as a JSON number (calculator, older version)
        stored(3),  # arguments 33 deep (echo, older version)
        stored(4, TaskState.FAILED, error=TaskError("TOOL_ERROR", "boom")),  # bad JSON
        stored(5, TaskState.SUBMITTED),  # unfinished, arguments damaged: must not run
        stored(6),
    ]
    with closing(SqliteTaskStore(config.store_path)) as store:
        for task in tasks:
            store.insert(task)
    ids = [task.task_id for task in tasks]
    damage(config.store_path, ids[1], "result", '{"result":' + str(2**1100) + "}")
    damage(config.store_path, ids[2], "arguments", deep_json(33))
    damage(config.store_path, ids[2], "result", '{"echo":' + deep_json(33) + "}")
    damage(config.store_path, ids[3], "arguments", '{"text": "unterminated')
    damage(config.store_path, ids[4], "arguments", "[1, 2")
    async with (
        running_node(config) as node,
        grpc.aio.insecure_channel(node.endpoints.grpc) as channel,
    ):
        client = task_service_pb2_grpc.TaskServiceStub(channel)
        listed = {task.task_id: task for task in await every_task(client)}
        assert sorted(listed) == ids
        for task_id in ids:
            fetched = await client.GetTask(pb.GetTaskRequest(task_id=task_id))
            assert fetched.task == listed[task_id]
    good, huge, deep, invalid, unfinished, last = (listed[task_id] for task_id in ids)
    assert good.result == struct({"echo": {"n": 1}})
    assert not good.HasField("error")
    assert last.state == COMPLETED
    assert last.arguments == struct({"n": 6})

    assert huge.state == COMPLETED
    assert not huge.HasField("result")
    assert huge.arguments == struct({"n": 2})
    assert huge.error.reason == "STORED_VALUE_UNREADABLE"
    assert "result.result: integer is too large" in huge.error.message

    assert deep.state == COMPLETED
    assert not deep.HasField("arguments")
    assert not deep.HasField("result")
    assert deep.error.reason == "STORED_VALUE_UNREADABLE"
    assert "arguments.a" in deep.error.message
    assert "result.echo.a" in deep.error.message

    assert invalid.state == FAILED
    assert not invalid.HasField("arguments")
    assert invalid.error.reason == "STORED_VALUE_UNREADABLE"
    assert "arguments: the stored value is not valid JSON" in invalid.error.message
    assert "the task's own error: TOOL_ERROR: boom" in invalid.error.message

    # Recovery did not run it on placeholder arguments: it failed it.
    assert unfinished.state == FAILED
    assert unfinished.attempt == 0
    assert unfinished.error.reason == "STORED_VALUE_UNREADABLE"


async def test_list_pages_fit_the_message_limit(tmp_path: Path) -> None:
    # Was: RESOURCE_EXHAUSTED "Sent message larger than max" (no praxis-error)
    # once a page held more than 4 MiB: three tasks with 1 MB arguments.
    config = make_config(tmp_path / "node")
    assert config.api.max_message_bytes == 4 * MiB
    async with (
        running_node(config) as node,
        grpc.aio.insecure_channel(node.endpoints.grpc) as channel,
    ):
        client = task_service_pb2_grpc.TaskServiceStub(channel)
        submitted = []
        for n in range(3):
            arguments = struct({"text": str(n) * 1_000_000})
            response = await client.SubmitTask(
                pb.SubmitTaskRequest(tool="echo", arguments=arguments, wait=True)
            )
            assert response.task.state == COMPLETED
            submitted.append(response.task.task_id)
        pages = []
        token = ""
        while True:
            page = await client.ListTasks(pb.ListTasksRequest(page_token=token))
            assert page.ByteSize() <= config.api.max_message_bytes
            pages.append([task.task_id for task in page.tasks])
            token = page.next_page_token
            if not token:
                break
    assert len(pages) > 1
    assert [task_id for page in pages for task_id in page] == submitted[::-1]


async def test_a_task_larger_than_any_response_is_sent_without_its_values(
    tmp_path: Path,
) -> None:
    # Only a store written under larger limits holds such a task.
    config = make_config(
        tmp_path / "node",
        api={"max_message_bytes": 256 * 1024},
        tasks={"max_argument_bytes": 64 * 1024, "max_result_bytes": 64 * 1024},
    )
    huge = stored(2, arguments={"text": "y" * 300_000}, result={"echo": {"text": "y" * 300_000}})
    with closing(SqliteTaskStore(config.store_path)) as store:
        for task in (stored(1), huge, stored(3)):
            store.insert(task)
    async with (
        running_node(config) as node,
        grpc.aio.insecure_channel(node.endpoints.grpc) as channel,
    ):
        client = task_service_pb2_grpc.TaskServiceStub(channel)
        fetched = (await client.GetTask(pb.GetTaskRequest(task_id=huge.task_id))).task
        listed = await every_task(client)
    assert fetched.state == COMPLETED
    assert not fetched.HasField("arguments")
    assert not fetched.HasField("result")
    assert fetched.error.reason == "STORED_VALUE_TOO_LARGE"
    assert "api.max_message_bytes" in fetched.error.message
    assert [task.task_id for task in listed] == [stored(n).task_id for n in (3, 2, 1)]
    assert listed[1] == fetched
    assert listed[0].arguments == struct({"n": 3})


async def start_member(
    nodes: NodeGroup,
    root: Path,
    name: str,
    mesh: MemoryMesh,
    *extra: Tool,
    group: MemoryConsensusGroup | None = None,
    **sections: Any,
) -> Node:
    """Start a node of an in-memory mesh offering the test built-ins and ``extra``."""
    config = make_config(
        root / name, name=name, metrics={"enabled": False}, agent={"name": name}, **sections
    )
    identity = load_or_create_identity(config.key_file)
    workers = await nodes.stack.enter_async_context(worker_pool())
    node = Node(
        config,
        identity=identity,
        tools=tools(config, workers, *extra),
        discovery=mesh.member(identity.agent_id),
        consensus=None if group is None else group.member,
    )
    return await nodes.started(name, node)


async def test_a_result_the_entry_node_cannot_store_fails_its_record(tmp_path: Path) -> None:
    # The owner (other limits, or an older version) completed the task; the
    # entry node that delegated it records it FAILED rather than store it.
    mesh = MemoryMesh()
    async with contextlib.AsyncExitStack() as stack:
        nodes = NodeGroup(stack=stack)
        entry = await start_member(
            nodes, tmp_path, "entry", mesh, tasks={"max_result_bytes": 64 * 1024}
        )
        owner = await start_member(nodes, tmp_path, "owner", mesh, ReturningTool(bad_result))
        await nodes.converged()
        request = pb.SubmitTaskRequest(
            tool="returns", arguments=struct({"kind": "large", "size": 100_000}), wait=True
        )
        async with stub(entry) as client:
            task = (await client.SubmitTask(request)).task
            fetched = (await client.GetTask(pb.GetTaskRequest(task_id=task.task_id))).task
        async with stub(owner) as client:
            at_owner = (await client.GetTask(pb.GetTaskRequest(task_id=task.task_id))).task
    assert task.owner_agent_id == owner.agent_id
    assert at_owner.state == COMPLETED
    assert task.state == FAILED
    assert task.error.reason == "RESULT_TOO_LARGE"
    assert f"agent {owner.agent_id} returned a result of" in task.error.message
    assert fetched == task


async def test_a_standby_relaying_list_tasks_pages_within_the_limit(tmp_path: Path) -> None:
    # A standby answers ListTasks with the coordinator's page, re-encoded:
    # the limit applies where each response is built.
    mesh, group = MemoryMesh(), MemoryConsensusGroup()
    ha = {
        "mode": "active-passive",
        "consensus": {"backend": "raft", "raft": {"address": "127.0.0.1:1", "secret": "test"}},
    }
    async with contextlib.AsyncExitStack() as stack:
        nodes = NodeGroup(stack=stack)
        a = await start_member(nodes, tmp_path, "a", mesh, group=group, ha=ha)
        b = await start_member(nodes, tmp_path, "b", mesh, group=group, ha=ha)
        await nodes.converged()
        group.elect(a.agent_id)
        await until(lambda: a.role == "coordinator" and b.role == "standby")
        async with stub(b) as client:
            submitted = []
            for n in range(3):
                request = pb.SubmitTaskRequest(
                    tool="echo", arguments=struct({"text": str(n) * 1_000_000}), wait=True
                )
                submitted.append((await client.SubmitTask(request)).task.task_id)
            listed = await every_task(client)
    assert [task.task_id for task in listed] == submitted[::-1]
    assert all(task.state == COMPLETED for task in listed)
