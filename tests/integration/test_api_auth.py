"""Tokens with roles and TLS on the public API (issue 13): each attack of the
issue against a node over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from praxis_grpc._gen.praxis.v1 import agent_service_pb2 as agent_pb
from praxis_grpc._gen.praxis.v1 import agent_service_pb2_grpc, task_service_pb2_grpc
from praxis_grpc._gen.praxis.v1 import task_service_pb2 as pb
from praxis_grpc.api.tokens import Role, add_token
from praxis_grpc.certs import init_ca, issue
from praxis_grpc.cli import main
from praxis_grpc.config import ConfigError, validate_config
from praxis_grpc.credentials import ClientCredentials
from praxis_grpc.node import Node, StartupError
from praxis_grpc.testing import make_config, running_node

Code = grpc.StatusCode


@dataclass(frozen=True)
class Tokens:
    file: Path
    admin: str
    reader: str
    alice: str
    bob: str


@pytest.fixture
def tokens(tmp_path: Path) -> Tokens:
    file = tmp_path / "tokens.yaml"
    return Tokens(
        file,
        admin=add_token(file, "ops", Role.ADMIN),
        reader=add_token(file, "grafana", Role.READER),
        alice=add_token(file, "alice", Role.CLIENT),
        bob=add_token(file, "bob", Role.CLIENT),
    )


@pytest.fixture
async def node(tmp_path: Path, tokens: Tokens) -> AsyncIterator[Node]:
    config = make_config(
        tmp_path / "node", metrics={"enabled": False}, api={"auth": {"tokens_file": tokens.file}}
    )
    async with running_node(config) as started:
        yield started


@dataclass
class Api:
    tasks: task_service_pb2_grpc.TaskServiceAsyncStub
    agent: agent_service_pb2_grpc.AgentServiceAsyncStub
    health: Any


@contextlib.asynccontextmanager
async def api(node: Node, credentials: ClientCredentials | None = None) -> AsyncIterator[Api]:
    presented = credentials or ClientCredentials()
    async with presented.aio_channel(node.endpoints.grpc) as channel:
        yield Api(
            task_service_pb2_grpc.TaskServiceStub(channel),
            agent_service_pb2_grpc.AgentServiceStub(channel),
            health_pb2_grpc.HealthStub(channel),
        )


def bearer(token: str) -> ClientCredentials:
    return ClientCredentials(token=token)


async def refused(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    return raised.value


def sleeper() -> pb.SubmitTaskRequest:
    return pb.SubmitTaskRequest(tool="sleep", arguments={"seconds": 30})


async def test_without_a_token_drain_cancel_and_list_are_unauthenticated(
    node: Node, tokens: Tokens
) -> None:
    async with api(node, bearer(tokens.alice)) as alice:
        task = (await alice.tasks.SubmitTask(sleeper())).task
    async with api(node) as anonymous:
        for call in (
            anonymous.agent.Drain(agent_pb.DrainRequest()),
            anonymous.tasks.CancelTask(pb.CancelTaskRequest(task_id=task.task_id)),
            anonymous.tasks.ListTasks(pb.ListTasksRequest()),
            anonymous.tasks.SubmitTask(sleeper()),
        ):
            error = await refused(call)
            assert error.code() is Code.UNAUTHENTICATED
            assert "authorization: Bearer" in (error.details() or "")
    async with api(node, bearer("praxis_not-a-token")) as forged:
        error = await refused(forged.tasks.ListTasks(pb.ListTasksRequest()))
        assert error.code() is Code.UNAUTHENTICATED
        assert "praxis_not-a-token" not in (error.details() or "")
    assert node.engine.accepting
    assert node.engine.get(task.task_id).state.name != "CANCELED"


async def test_a_reader_cannot_submit_or_drain_but_reads_every_task(
    node: Node, tokens: Tokens
) -> None:
    async with api(node, bearer(tokens.alice)) as alice:
        task = (await alice.tasks.SubmitTask(sleeper())).task
    async with api(node, bearer(tokens.reader)) as reader:
        error = await refused(reader.tasks.SubmitTask(sleeper()))
        assert error.code() is Code.PERMISSION_DENIED
        assert "'client'" in (error.details() or "")
        error = await refused(reader.agent.Drain(agent_pb.DrainRequest()))
        assert error.code() is Code.PERMISSION_DENIED
        assert "'admin'" in (error.details() or "")
        error = await refused(reader.tasks.CancelTask(pb.CancelTaskRequest(task_id=task.task_id)))
        assert error.code() is Code.PERMISSION_DENIED
        listed = await reader.tasks.ListTasks(pb.ListTasksRequest())
        assert [t.task_id for t in listed.tasks] == [task.task_id]
        assert listed.tasks[0].submitter == "alice"
        await reader.agent.GetAgent(agent_pb.GetAgentRequest())
        # Routing options and agent_id change nothing: same roles as their methods.
        targeted = pb.SubmitTaskRequest(tool="sleep", target_agent=node.agent_id)
        error = await refused(reader.tasks.SubmitTask(targeted))
        assert error.code() is Code.PERMISSION_DENIED
        own = await reader.agent.GetAgent(agent_pb.GetAgentRequest(agent_id=node.agent_id))
        assert own.agent.agent_id == node.agent_id
    async with api(node) as anonymous:
        error = await refused(anonymous.agent.GetAgent(agent_pb.GetAgentRequest(agent_id="x")))
        assert error.code() is Code.UNAUTHENTICATED
    assert node.engine.accepting


async def test_a_client_sees_and_cancels_only_its_own_tasks(node: Node, tokens: Tokens) -> None:
    async with api(node, bearer(tokens.alice)) as alice:
        task = (await alice.tasks.SubmitTask(sleeper())).task
        assert task.submitter == "alice"
        assert (await alice.tasks.GetTask(pb.GetTaskRequest(task_id=task.task_id))).task.task_id
    async with api(node, bearer(tokens.bob)) as bob:
        mine = (await bob.tasks.SubmitTask(sleeper())).task
        for call in (
            bob.tasks.GetTask(pb.GetTaskRequest(task_id=task.task_id)),
            bob.tasks.CancelTask(pb.CancelTaskRequest(task_id=task.task_id)),
        ):
            error = await refused(call)
            assert error.code() is Code.NOT_FOUND
        with pytest.raises(grpc.aio.AioRpcError) as watched:
            async for _ in bob.tasks.WatchTask(pb.WatchTaskRequest(task_id=task.task_id)):
                pass
        assert watched.value.code() is Code.NOT_FOUND
        listed = await bob.tasks.ListTasks(pb.ListTasksRequest())
        assert [t.task_id for t in listed.tasks] == [mine.task_id]
    assert node.engine.get(task.task_id).state.name == "WORKING"
    async with api(node, bearer(tokens.admin)) as admin:
        canceled = await admin.tasks.CancelTask(pb.CancelTaskRequest(task_id=task.task_id))
        assert canceled.task.submitter == "alice"
        listed = await admin.tasks.ListTasks(pb.ListTasksRequest())
        assert {t.task_id for t in listed.tasks} == {task.task_id, mine.task_id}
        await admin.agent.Drain(agent_pb.DrainRequest())
    assert not node.engine.accepting


async def test_a_client_cannot_reach_another_clients_task_through_its_id(
    node: Node, tokens: Tokens
) -> None:
    async with api(node, bearer(tokens.alice)) as alice:
        task = (await alice.tasks.SubmitTask(sleeper())).task
    async with api(node, bearer(tokens.bob)) as bob:
        error = await refused(
            bob.tasks.SubmitTask(
                pb.SubmitTaskRequest(tool="sleep", arguments={"seconds": 30}, task_id=task.task_id)
            )
        )
        assert error.code() is Code.ALREADY_EXISTS
        assert "alice" not in (error.details() or "")


async def test_health_is_open_by_default_and_closable(
    tmp_path: Path, node: Node, tokens: Tokens
) -> None:
    request = health_pb2.HealthCheckRequest()
    async with api(node) as anonymous:
        assert (await anonymous.health.Check(request)).status == 1
    config = make_config(
        tmp_path / "closed",
        metrics={"enabled": False},
        api={"auth": {"tokens_file": tokens.file, "open_health": False}},
    )
    async with running_node(config) as closed:
        async with api(closed) as anonymous:
            error = await refused(anonymous.health.Check(request))
            assert error.code() is Code.UNAUTHENTICATED
        async with api(closed, bearer(tokens.reader)) as reader:
            assert (await reader.health.Check(request)).status == 1


async def test_tokens_never_reach_logs_or_errors(
    node: Node, tokens: Tokens, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    details: list[str] = []
    for token in (tokens.reader, "praxis_wrong", tokens.alice):
        async with api(node, bearer(token)) as caller:
            for call in (
                caller.agent.Drain(agent_pb.DrainRequest()),
                caller.tasks.GetTask(pb.GetTaskRequest(task_id="nope")),
            ):
                error = await refused(call)
                details.append(f"{error.details()} {error.trailing_metadata()}")
    assert "refused /praxis.v1.AgentService/Drain" in caplog.text
    for secret in (tokens.reader, "praxis_wrong", tokens.alice):
        assert secret not in caplog.text
        assert all(secret not in text for text in details)
    assert repr(bearer(tokens.admin)).find(tokens.admin) == -1


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ("- {name: x, role: root, sha256: " + "a" * 64 + "}\n", "[0].role"),
        ("- {name: x, role: reader, sha256: praxis_pasted-token}\n", "[0].sha256"),
        ("{name: x}\n", "must be a list"),
        ("- [unclosed\n", "not a YAML file"),
    ],
)
async def test_a_bad_tokens_file_fails_the_start_naming_the_key(
    tmp_path: Path, content: str, named: str
) -> None:
    file = tmp_path / "tokens.yaml"
    file.write_text(content)
    config = make_config(tmp_path / "n", api={"auth": {"tokens_file": file}})
    with pytest.raises(StartupError) as raised:
        async with running_node(config):
            pass
    message = str(raised.value)
    assert message.startswith("api.auth.tokens_file: ")
    assert named in message
    assert "pasted-token" not in message


async def test_an_unreadable_tokens_file_fails_the_start(tmp_path: Path) -> None:
    config = make_config(tmp_path / "n", api={"auth": {"tokens_file": tmp_path / "absent"}})
    with pytest.raises(StartupError, match=r"api.auth.tokens_file: .*absent: cannot read"):
        async with running_node(config):
            pass


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    ca_dir = tmp_path / "ca"
    init_ca(ca_dir)
    issue(ca_dir, "node", ca_dir, hosts=["127.0.0.1", "localhost"])
    issue(ca_dir, "client", ca_dir)
    return ca_dir


async def _get_agent(node: Node, credentials: ClientCredentials) -> Any:
    async with api(node, credentials) as caller:
        return await caller.agent.GetAgent(agent_pb.GetAgentRequest(), timeout=5)


async def test_tls_handshake_needs_the_right_ca(tmp_path: Path, pki: Path) -> None:
    other = tmp_path / "other"
    init_ca(other)
    tls = {"cert": pki / "node.crt", "key": pki / "node.key"}
    config = make_config(tmp_path / "n", metrics={"enabled": False}, api={"tls": tls})
    async with running_node(config) as node:
        assert (await _get_agent(node, ClientCredentials(cacert=pki / "ca.crt"))).agent.agent_id
        for wrong in (ClientCredentials(cacert=other / "ca.crt"), ClientCredentials()):
            error = await refused(_get_agent(node, wrong))
            assert error.code() is Code.UNAVAILABLE


async def test_mutual_tls_refuses_a_client_without_a_certificate(
    tmp_path: Path, pki: Path, tokens: Tokens
) -> None:
    tls = {"cert": pki / "node.crt", "key": pki / "node.key", "client_ca": pki / "ca.crt"}
    config = make_config(
        tmp_path / "n",
        metrics={"enabled": False},
        api={"tls": tls, "auth": {"tokens_file": tokens.file}},
    )
    async with running_node(config) as node:
        ca = pki / "ca.crt"
        full = ClientCredentials(
            cacert=ca, cert=pki / "client.crt", key=pki / "client.key", token=tokens.reader
        )
        assert (await _get_agent(node, full)).agent.agent_id
        error = await refused(_get_agent(node, ClientCredentials(cacert=ca, token=tokens.reader)))
        assert error.code() is Code.UNAVAILABLE
        without_token = ClientCredentials(
            cacert=ca, cert=pki / "client.crt", key=pki / "client.key"
        )
        error = await refused(_get_agent(node, without_token))
        assert error.code() is Code.UNAUTHENTICATED


async def test_unreadable_tls_files_fail_the_start_naming_the_key(tmp_path: Path) -> None:
    tls = {"cert": tmp_path / "none.crt", "key": tmp_path / "none.key"}
    config = make_config(tmp_path / "n", api={"tls": tls})
    with pytest.raises(StartupError, match=r"^api\.tls\.cert: cannot read"):
        async with running_node(config):
            pass


async def test_the_cli_creates_a_token_and_presents_it_over_tls(
    tmp_path: Path, pki: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    file = tmp_path / "cli-tokens.yaml"
    assert main(["tokens", "add", "ops", "--role", "admin", "--file", str(file)]) == 0
    token = capsys.readouterr().out.strip()
    assert token.startswith("praxis_")
    tls = {"cert": pki / "node.crt", "key": pki / "node.key"}
    config = make_config(
        tmp_path / "n",
        metrics={"enabled": False},
        api={"tls": tls, "auth": {"tokens_file": file}},
    )
    async with running_node(config) as node:
        target = ["--target", node.endpoints.grpc, "--cacert", str(pki / "ca.crt")]
        assert await asyncio.to_thread(main, [*target, "--json", "task", "list"]) == 1
        refused = capsys.readouterr().err
        assert "UNAUTHENTICATED" in refused
        assert await asyncio.to_thread(main, [*target, "--token", token, "task", "list"]) == 0
        monkeypatch.setenv("PRAXIS_TOKEN", token)
        monkeypatch.setenv("PRAXIS_CACERT", str(pki / "ca.crt"))
        plain = ["--target", node.endpoints.grpc, "task", "list"]
        assert await asyncio.to_thread(main, plain) == 0
        assert token not in "".join(capsys.readouterr())


async def test_metrics_can_require_a_token(tmp_path: Path, tokens: Tokens) -> None:
    config = make_config(
        tmp_path / "n",
        metrics={"port": 0, "require_token": True},
        api={"auth": {"tokens_file": tokens.file}},
    )

    def status(address: str | None, headers: dict[str, str]) -> int:
        request = urllib.request.Request(f"http://{address}/metrics", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as exc:
            return exc.code

    async with running_node(config) as started:
        address = started.endpoints.metrics
        assert await asyncio.to_thread(status, address, {}) == 401
        wrong = {"Authorization": "Bearer praxis_nope"}
        assert await asyncio.to_thread(status, address, wrong) == 401
        right = {"Authorization": f"Bearer {tokens.reader}"}
        assert await asyncio.to_thread(status, address, right) == 200


def test_metrics_require_token_needs_the_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"metrics\.require_token needs api\.auth\.tokens_file"):
        validate_config({"metrics": {"require_token": True}})


def test_tls_on_a_node_with_peers_needs_the_cluster_section() -> None:
    """Peers would call the TLS port in plaintext: every delegation would fail."""
    tls = {"tls": {"cert": "node.crt", "key": "node.key"}}
    with pytest.raises(ConfigError, match=r"api\.tls on a node with peers .* needs cluster"):
        validate_config({"api": tls})
    validate_config({"api": tls, "p2p": {"enabled": False}})
