"""The raft backend over loopback sockets: groups of pysyncobj members in this
process, and member processes for what a process cannot do to itself (SIGKILL,
SIGSTOP)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from praxis_grpc.config import RaftConfig
from praxis_grpc.consensus import raft
from praxis_grpc.consensus.base import Consensus, ConsensusError
from praxis_grpc.consensus.raft import RaftConsensus
from tests.integration.helpers import free_addresses

T = TypeVar("T")

SECRET = "raft-test-secret"
ELECTION = 0.3
HEARTBEAT = 0.05


def open_fds() -> dict[str, str]:
    """This process's open file descriptors and what they refer to."""
    fds: dict[str, str] = {}
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor is gone
            fds[fd] = os.readlink(f"/proc/self/fd/{fd}")
    return fds


@pytest.fixture(autouse=True)
async def no_leaks() -> AsyncIterator[None]:
    """Every thread and file a test's members opened is gone after it."""
    gc.collect()  # what earlier tests left to the collector is not ours
    threads, fds = set(threading.enumerate()), open_fds()
    yield

    def leaks() -> tuple[list[str], list[str]]:
        # What pysyncobj leaves to the garbage collector is collected here,
        # not whenever the collector happens to run.
        gc.collect()
        now = open_fds()
        return (
            [thread.name for thread in set(threading.enumerate()) - threads],
            [f"{fd} -> {now[fd]}" for fd in now if fds.get(fd) != now[fd]],
        )

    try:
        await until(lambda: leaks() == ([], []), timeout=20)
    except TimeoutError:
        pytest.fail(f"leaked threads and fds: {leaks()}")


async def until(probe: Callable[[], T | None], timeout: float = 5.0, what: str = "") -> T:
    """Poll ``probe`` until it returns something truthy, within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not (value := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g}s: {what}")
        await asyncio.sleep(0.01)
    return value


async def until_snapshot(
    member: Consensus, check: Callable[[dict[str, bytes]], bool], timeout: float = 5.0
) -> dict[str, bytes]:
    deadline = time.monotonic() + timeout
    while not check(snapshot := dict(await member.snapshot())):
        if time.monotonic() > deadline:
            raise TimeoutError(f"snapshot never matched; it has {len(snapshot)} keys")
        await asyncio.sleep(0.01)
    return snapshot


def member_config(address: str, addresses: Sequence[str], **fields: Any) -> RaftConfig:
    settings: dict[str, Any] = {
        "address": address,
        "peers": [peer for peer in addresses if peer != address],
        "secret": SECRET,
        "election_timeout": ELECTION,
        "heartbeat": HEARTBEAT,
    }
    settings.update(fields)
    return RaftConfig(**settings)


def new_member(root: Path, index: int, addresses: Sequence[str], **fields: Any) -> RaftConsensus:
    return RaftConsensus(
        member_config(addresses[index], addresses, **fields),
        agent_id=f"agent-{index}",
        grpc_address=f"127.0.0.1:{7000 + index}",
        data_dir=root / f"member-{index}",
    )


@contextlib.asynccontextmanager
async def raft_group(
    root: Path,
    size: int = 3,
    *,
    addresses: Sequence[str] | None = None,
    settings: Sequence[dict[str, Any]] | None = None,
) -> AsyncIterator[list[RaftConsensus]]:
    """Start ``size`` members, picking fresh ports again if one was taken meanwhile."""
    for attempt in range(3):
        chosen = list(addresses) if addresses else free_addresses(size)
        members = [
            new_member(root, i, chosen, **(settings[i] if settings else {})) for i in range(size)
        ]
        try:
            for member in members:
                await member.start()
        except ConsensusError as exc:
            for member in members:
                await member.aclose()
            if addresses or attempt == 2 or "raft.address" not in str(exc):
                raise
            continue
        try:
            yield members
        finally:
            for member in members:
                await member.aclose()
        return


def leader_agreed(members: Sequence[Consensus]) -> Consensus | None:
    """The leader if exactly one member leads and all agree on who and in which term."""
    views = [member.leadership() for member in members]
    leaders = [member for member, view in zip(members, views, strict=True) if view.is_self]
    agreed = {(view.leader_id, view.leader_address, view.term) for view in views}
    return leaders[0] if len(leaders) == 1 and len(agreed) == 1 else None


async def agreed_leader(members: Sequence[RaftConsensus], timeout: float = 10) -> RaftConsensus:
    leader = await until(lambda: leader_agreed(members), timeout, "one agreed leader")
    assert isinstance(leader, RaftConsensus)
    return leader


async def commit_all(
    members: Sequence[RaftConsensus],
    writes: Sequence[tuple[str, bytes | None]],
    batch: int = 1,
) -> None:
    """Commit ``writes`` in order, ``batch`` at a time, on whichever member leads;
    on the next leader if leadership moves meanwhile (the writes are idempotent)."""
    pending = list(writes)
    while pending:
        leader = await agreed_leader(members)
        term = leader.leadership().term
        chunk, pending = pending[:batch], pending[batch:]
        results = await asyncio.gather(
            *(leader.commit(key, value, term=term) for key, value in chunk),
            return_exceptions=True,
        )
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, ConsensusError):
                raise result
        failed = zip(chunk, results, strict=True)
        pending = [write for write, result in failed if result is not None] + pending


async def test_commit_reaches_every_member(tmp_path: Path) -> None:
    async with raft_group(tmp_path) as members:
        await commit_all(members, [("a", b"1"), ("b", b"\x00\xff"), ("a", None)])

        assert await (await agreed_leader(members)).snapshot() == {"b": b"\x00\xff"}
        for member in members:
            await until_snapshot(member, lambda s: s == {"b": b"\x00\xff"})


async def test_single_member_group_leads_alone(tmp_path: Path) -> None:
    async with raft_group(tmp_path, size=1) as (member,):
        await until(lambda: member.leadership().is_self, what="sole member leads")
        await member.commit("k", b"v", term=member.leadership().term)
        assert await member.snapshot() == {"k": b"v"}


async def test_leader_stopping_mid_way_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    async with raft_group(tmp_path) as members, asyncio.timeout(60):
        leader = await agreed_leader(members)
        first_term = leader.leadership().term
        alive = list(members)
        acknowledged: list[str] = []
        stopping: asyncio.Task[None] | None = None
        for i in range(200):
            key = f"key-{i:03}"
            if i == 100:
                # The stop starts while the next commit is in flight on the same leader.
                alive.remove(leader)
                stopping = asyncio.create_task(leader.aclose())
            while True:
                with contextlib.suppress(ConsensusError):  # includes NotLeader
                    await leader.commit(key, key.encode(), term=leader.leadership().term)
                    acknowledged.append(key)
                    break
                leader = await agreed_leader(alive)
        assert stopping is not None
        await stopping

        assert leader.leadership().term > first_term
        assert len(acknowledged) == 200
        for member in alive:
            snapshot = await until_snapshot(member, lambda s: len(s) >= len(acknowledged))
            assert sorted(snapshot) == acknowledged


async def test_a_suspected_dead_leader_is_succeeded_at_once_by_one_chosen_follower(
    tmp_path: Path,
) -> None:
    # With a 1 s election timeout, either follower could win after a second;
    # only suspect() makes the lowest-addressed one campaign at once.
    settings = [{"election_timeout": 1.0, "heartbeat": 0.1}] * 3
    async with raft_group(tmp_path, settings=settings) as members, asyncio.timeout(60):
        leader = await agreed_leader(members)
        seen = leader.leadership()
        first, second = sorted((m for m in members if m is not leader), key=lambda m: m._address)
        assert not await leader.suspect(seen, "not against itself")
        assert not await second.suspect(seen, "not the chosen follower: no split vote")

        async def no_handover() -> None:
            return None

        leader._resign = no_handover  # type: ignore[method-assign]  # it dies, as under kill -9
        await leader.aclose()
        assert await first.suspect(seen, "its port refuses connections")

        successor = await agreed_leader([first, second])
        assert successor is first
        assert successor.leadership().term > seen.term
        assert not await second.suspect(seen, "that term is over")


async def test_whole_group_restart_keeps_the_state(tmp_path: Path) -> None:
    addresses = free_addresses(3)
    async with raft_group(tmp_path, addresses=addresses) as members:
        await commit_all(members, [(f"key-{i}", bytes([i])) for i in range(20)])
        await commit_all(members, [("key-0", None)])
        leader = await agreed_leader(members)
        term = leader.leadership().term
        before = dict(await leader.snapshot())
        assert len(before) == 19

    async with raft_group(tmp_path, addresses=addresses) as members:
        leader = await agreed_leader(members)

        assert leader.leadership().term > term
        assert await leader.snapshot() == before
        for member in members:
            await until_snapshot(member, lambda s: s == before)


@pytest.mark.filterwarnings(
    # pysyncobj 0.3.17 leaves the dump it streamed to a lagging member to the garbage collector.
    "ignore:Exception ignored in.*/raft/dump'"
)
async def test_log_compaction_dump_catches_up_a_member_and_survives_restart(
    tmp_path: Path,
) -> None:
    # pysyncobj compacts its log into the dump once it holds more than 5000 entries.
    addresses = free_addresses(3)
    async with raft_group(tmp_path, addresses=addresses) as members, asyncio.timeout(90):
        leader = await agreed_leader(members)
        index = next(i for i, member in enumerate(members) if member is not leader)
        await members[index].aclose()
        rest = [member for member in members if member is not members[index]]
        await commit_all(rest, [(f"k{i}", b"v") for i in range(5200)], batch=200)
        await until(
            lambda: all((tmp_path / f"member-{members.index(m)}/raft/dump").exists() for m in rest),
            timeout=10,
            what="the running members wrote their dumps",
        )
        returning = new_member(tmp_path, index, addresses)
        await returning.start()
        try:
            await until_snapshot(returning, lambda s: len(s) == 5200, timeout=20)
        finally:
            await returning.aclose()
        await commit_all(rest, [("last", b"v")])

    async with raft_group(tmp_path, addresses=addresses) as members:
        leader = await agreed_leader(members)
        snapshot = await leader.snapshot()

        assert len(snapshot) == 5201
        assert snapshot["last"] == b"v"
        for member in members:
            await until_snapshot(member, lambda s: len(s) == 5201)


def test_secret_is_required(tmp_path: Path) -> None:
    address = "127.0.0.1:1"
    empty = tmp_path / "empty"
    empty.write_text(" \n")

    with pytest.raises(ConsensusError, match=r"ha\.consensus\.raft\.secret\b"):
        new_member(tmp_path, 0, [address], secret="")
    with pytest.raises(ConsensusError, match=r"ha\.consensus\.raft\.secret_file .* is empty"):
        new_member(tmp_path, 0, [address], secret="", secret_file=empty)
    with pytest.raises(ConsensusError, match=r"ha\.consensus\.raft\.secret_file .*cannot read"):
        new_member(tmp_path, 0, [address], secret_file=tmp_path / "missing")


def test_timing_pysyncobj_refuses_is_refused_by_the_config(tmp_path: Path) -> None:
    # pysyncobj needs heartbeat * 3 < election timeout; the config says so first.
    with pytest.raises(ValidationError, match="heartbeat must be less than a third"):
        new_member(tmp_path, 0, ["127.0.0.1:1"], election_timeout=0.75, heartbeat=0.25)


async def test_members_with_different_secrets_do_not_form_a_group(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"  {SECRET}\n")
    settings: list[dict[str, Any]] = [
        {"secret": "", "secret_file": secret_file},  # stripped: same secret as the next
        {},
        {"secret": "another-secret"},
    ]
    async with raft_group(tmp_path, settings=settings) as members:
        pair, outsider = members[:2], members[2]
        await commit_all(pair, [("k", b"v")])
        with pytest.raises(TimeoutError):
            await until(lambda: outsider.leadership().known, timeout=5 * ELECTION)

        assert await outsider.snapshot() == {}


async def test_no_two_members_share_a_secret_so_no_leader(tmp_path: Path) -> None:
    settings: list[dict[str, Any]] = [{"secret": f"secret-{i}"} for i in range(3)]
    async with raft_group(tmp_path, settings=settings) as members:
        with pytest.raises(TimeoutError):
            await until(lambda: any(m.leadership().known for m in members), timeout=5 * ELECTION)


@pytest.mark.parametrize("checked_by", ["probe", "pysyncobj"])
async def test_raft_port_in_use_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, checked_by: str
) -> None:
    if checked_by == "pysyncobj":  # as if the port was taken right after the probe
        monkeypatch.setattr(raft, "check_bindable", lambda address: None)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        member = new_member(tmp_path, 0, [address])

        with pytest.raises(ConsensusError, match=r"ha\.consensus\.raft\.address"):
            await member.start()
        await member.aclose()


async def test_one_data_dir_serves_one_member(tmp_path: Path) -> None:
    async with raft_group(tmp_path, size=1) as (member,):
        twin = new_member(tmp_path, 0, free_addresses(1))
        with pytest.raises(ConsensusError, match="in use"):
            await twin.start()
        await twin.aclose()
        await until(lambda: member.leadership().is_self, what="the first member still runs")


# Member processes: a raft member driven by JSON lines on stdin; it reports its
# leadership and the outcome of each request as JSON lines on stdout.
MEMBER_PROCESS = """
import asyncio, json, sys
from pathlib import Path
from praxis_grpc.config import RaftConfig
from praxis_grpc.consensus.base import ConsensusError, NotLeader
from praxis_grpc.consensus.raft import RaftConsensus

def emit(**fields):
    sys.stdout.write(json.dumps(fields) + "\\n")
    sys.stdout.flush()

async def main():
    spec = json.loads(sys.argv[1])
    member = RaftConsensus(
        RaftConfig(**spec["config"]), agent_id=spec["agent_id"],
        grpc_address=spec["grpc_address"], data_dir=Path(spec["data_dir"]))
    await member.start()

    async def report():
        async for view in member.watch():
            emit(event="leadership", leader_id=view.leader_id, term=view.term,
                 is_self=view.is_self)

    reporting = asyncio.create_task(report())
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        request = json.loads(line)
        if request["op"] == "commit":
            try:
                await member.commit(request["key"], b"v", term=request["term"])
                outcome = "ok"
            except NotLeader:
                outcome = "not_leader"
            except ConsensusError:
                outcome = "error"
            emit(id=request["id"], outcome=outcome)
        else:
            emit(id=request["id"], keys=sorted(await member.snapshot()))
    await member.aclose()
    await reporting

asyncio.run(main())
"""


class MemberProcess:
    """A raft member in its own process, so the test can kill or stop it."""

    def __init__(self, process: asyncio.subprocess.Process, agent_id: str) -> None:
        self.process = process
        self.agent_id = agent_id
        self.view: dict[str, Any] = {"leader_id": "", "term": 0, "is_self": False}
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = itertools.count()
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def spawn(cls, root: Path, index: int, addresses: Sequence[str]) -> MemberProcess:
        config = member_config(addresses[index], addresses).model_dump(mode="json")
        spec = {
            "config": config,
            "agent_id": f"agent-{index}",
            "grpc_address": f"127.0.0.1:{7000 + index}",
            "data_dir": str(root / f"member-{index}"),
        }
        with open(root / f"member-{index}.log", "ab") as log:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                MEMBER_PROCESS,
                json.dumps(spec),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
            )
        return cls(process, f"agent-{index}")

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            message = json.loads(line)
            if message.get("event") == "leadership":
                self.view = message
            elif (reply := self._replies.pop(message["id"], None)) is not None:
                reply.set_result(message)
        for reply in self._replies.values():
            reply.set_exception(ConnectionError(f"{self.agent_id} exited"))

    async def request(self, op: str, **fields: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        request_id = next(self._ids)
        reply = asyncio.get_running_loop().create_future()
        self._replies[request_id] = reply
        self.process.stdin.write(json.dumps({"op": op, "id": request_id, **fields}).encode())
        self.process.stdin.write(b"\n")
        await self.process.stdin.drain()
        return await asyncio.wait_for(reply, 15)

    async def commit(self, key: str) -> str:
        outcome: str = (await self.request("commit", key=key, term=self.view["term"]))["outcome"]
        return outcome

    async def keys(self) -> list[str]:
        keys: list[str] = (await self.request("snapshot"))["keys"]
        return keys

    def signal(self, signum: int) -> None:
        if self.process.returncode is None:
            self.process.send_signal(signum)

    async def close(self) -> None:
        self.signal(signal.SIGCONT)
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), 10)
        except TimeoutError:
            self.signal(signal.SIGKILL)
            await self.process.wait()
        await self._reading


@contextlib.asynccontextmanager
async def process_group(root: Path) -> AsyncIterator[list[MemberProcess]]:
    addresses = free_addresses(3)
    members: list[MemberProcess] = []
    try:
        for index in range(3):
            members.append(await MemberProcess.spawn(root, index, addresses))
        yield members
    finally:
        for member in members:
            await member.close()


def process_leader(members: Sequence[MemberProcess], above: int = 0) -> MemberProcess | None:
    """The member that leads in a term above ``above``, once every given member agrees."""
    views = [(m.view["leader_id"], m.view["term"]) for m in members]
    leaders = [m for m in members if m.view["is_self"] and m.view["term"] > above]
    return leaders[0] if len(leaders) == 1 and len(set(views)) == 1 else None


async def test_killed_leader_fails_over_keeping_every_acknowledged_write(tmp_path: Path) -> None:
    async with process_group(tmp_path) as members, asyncio.timeout(90):
        leader = await until(lambda: process_leader(members), 20, "a leader")
        first_term = leader.view["term"]
        alive = list(members)
        acknowledged: list[str] = []
        for i in range(200):
            key = f"key-{i:03}"
            if i == 100:
                alive.remove(leader)
                in_flight = asyncio.create_task(leader.commit(key))
                await asyncio.sleep(0.002)
                leader.signal(signal.SIGKILL)
                with contextlib.suppress(ConnectionError):
                    if await in_flight == "ok":
                        acknowledged.append(key)
                leader = await until(lambda: process_leader(alive, first_term), 10, "failover")
                if acknowledged[-1] == key:
                    continue
            while (outcome := await leader.commit(key)) != "ok":
                assert outcome in {"not_leader", "error"}
                leader = await until(lambda: process_leader(alive, first_term), 10, "failover")
            acknowledged.append(key)

        for member in alive:
            keys = await member.keys()
            while len(keys) < len(acknowledged):
                await asyncio.sleep(0.05)
                keys = await member.keys()
            assert keys == acknowledged


async def test_sigstopped_leader_cannot_write_after_it_resumes(tmp_path: Path) -> None:
    async with process_group(tmp_path) as members, asyncio.timeout(90):
        old = await until(lambda: process_leader(members), 20, "a leader")
        old_term = old.view["term"]
        assert await old.commit("before") == "ok"

        old.signal(signal.SIGSTOP)
        rest = [member for member in members if member is not old]
        new = await until(lambda: process_leader(rest, old_term), 10, "a new leader")
        assert await new.commit("after") == "ok"
        # Queued while it is stopped: read first thing when it resumes, in its old term.
        stale = asyncio.create_task(old.request("commit", key="stale", term=old_term))
        await asyncio.sleep(0.1)
        old.signal(signal.SIGCONT)

        # It still believed it led, so the write went out and the replicated
        # state machine refused it: the group had committed a newer claim.
        assert (await stale)["outcome"] == "not_leader"
        assert await new.commit("marker") == "ok"
        for member in members:
            keys = await member.keys()
            while "marker" not in keys:
                await asyncio.sleep(0.05)
                keys = await member.keys()
            assert keys == ["after", "before", "marker"]
        await until(lambda: process_leader(members, old_term), 10, "the resumed member follows")
        assert not old.view["is_self"]
