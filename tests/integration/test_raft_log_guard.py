"""pysyncobj members in lock step (no tick threads, elections only when a test
starts one) over loopback sockets, with a network that drops, records and
redelivers messages: what the raft backend's log does when a follower receives
a stale AppendEntries, and after the leader then fails.

See praxis_grpc/consensus/_raft_receiver.py for the rule under test.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from pysyncobj import (  # type: ignore[import-untyped,unused-ignore]
    FAIL_REASON,
    SyncObj,
    SyncObjConf,
    SyncObjConsumer,
    replicated,
)

from praxis_grpc.consensus._raft_member import campaign_now, close_pipe
from praxis_grpc.consensus._raft_receiver import ReceiverRuleTransport
from tests.integration.helpers import free_addresses

_replicated: Callable[[Callable[..., Any]], Any] = replicated


class Register(SyncObjConsumer):  # type: ignore[misc]  # pysyncobj is untyped
    """A replicated dict, written by key."""

    def __init__(self) -> None:
        self.applied: list[str] = []  # every key applied, in order (not replicated)
        super().__init__()
        self.data: dict[str, str] = {}

    @_replicated
    def put(self, key: str, value: str) -> None:
        self.data[key] = value
        self.applied.append(key)


class Network:
    """Loopback links that can be cut one way (messages dropped on arrival, the
    connection kept, as a firewall that drops packets does) and that record
    every AppendEntries a member receives."""

    def __init__(self) -> None:
        self.cut: set[tuple[str, str]] = set()  # (from, to)
        self.appends: dict[str, list[tuple[Any, dict[str, Any]]]] = {}
        self.links: dict[str, Any] = {}
        self.dropped: list[tuple[str, str]] = []  # (from, message type)
        self.held: dict[tuple[str, str], list[tuple[Any, Any]]] = {}  # (from, to): queued

    def hold(self, sender: str, to: str) -> None:
        """Queue what ``sender`` sends ``to`` until :meth:`release`: a slow link."""
        self.held.setdefault((sender, to), [])

    def release(self, sender: str, to: str, limit: int | None = None) -> int:
        """Deliver, in order, what the link queued (the first ``limit``
        messages if given); returns how many messages."""
        queued = self.held[(sender, to)]
        queued, self.held[(sender, to)] = queued[:limit], queued[len(queued[:limit]) :]
        for node, message in queued:
            ReceiverRuleTransport._onMessageReceived(self.links[to], node, message)
        return len(queued)

    def queued(self, sender: str, to: str, kind: str) -> int:
        return sum(1 for _, m in self.held.get((sender, to), []) if m.get("type") == kind)

    def answered(self, sender: str, to: str, count: int) -> bool:
        """Whether ``sender`` has answered ``count`` append entries on the held link to ``to``."""
        return self.queued(sender, to, "next_node_idx") >= count

    def isolate(self, address: str, others: Sequence[str]) -> None:
        for other in others:
            self.cut |= {(address, other), (other, address)}

    def redeliver(self, to: str, sender: Any, message: dict[str, Any]) -> None:
        """Hand ``to`` a message again, as a duplicating network or a resend would."""
        ReceiverRuleTransport._onMessageReceived(self.links[to], sender, message)

    def transport(self) -> type[ReceiverRuleTransport]:
        network = self

        class Link(ReceiverRuleTransport):
            def __init__(self, syncobj: Any, self_node: Any, other_nodes: Any) -> None:
                super().__init__(syncobj, self_node, other_nodes)
                network.links[self_node.address] = self
                network.appends[self_node.address] = []

            def _onMessageReceived(self, node: Any, message: Any) -> None:
                to = self._selfNode.address
                if (node.address, to) in network.cut:
                    if isinstance(message, dict):
                        network.dropped.append((node.address, str(message.get("type"))))
                    return
                if (held := network.held.get((node.address, to))) is not None:
                    held.append((node, message))
                    return
                if isinstance(message, dict) and message.get("type") == "append_entries":
                    network.appends[to].append((node, message))
                super()._onMessageReceived(node, message)

        return Link


class Group:
    """Three members ticked by the test; none campaigns unless told to, or
    unless its election timeout (``elections``, seconds) runs out."""

    def __init__(self, root: Path, elections: Sequence[float] = (300, 300, 300)) -> None:
        self.network = Network()
        self.addresses = free_addresses(3)
        self.registers = [Register() for _ in self.addresses]
        self.members: list[Any] = []
        self.alive: list[Any] = []
        for index, address in enumerate(self.addresses):
            conf = SyncObjConf(
                autoTick=False,
                appendEntriesUseBatch=False,
                appendEntriesPeriod=0.05,
                raftMinTimeout=elections[index],
                raftMaxTimeout=2 * elections[index],
                leaderFallbackTimeout=600,
                connectionTimeout=600,
                connectionRetryTime=0.05,
                dynamicMembershipChange=False,
                journalFile=str(root / f"journal-{index}"),
                useFork=False,
            )
            member = SyncObj(
                address,
                [peer for peer in self.addresses if peer != address],
                conf,
                consumers=[self.registers[index]],
                transportClass=self.network.transport(),
            )
            self.members.append(member)
            self.alive.append(member)

    def tick_until(self, done: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"not within {timeout:g}s: {what}")
            for member in self.alive:
                member.doTick(0.001)

    def campaign(self, index: int) -> None:
        """Make member ``index`` win an election (the others must vote for it)."""
        member = self.members[index]
        self.tick_until(
            lambda: all(member.isNodeConnected(peer) for peer in member.otherNodes),
            "connected",
        )
        campaign_now(member)
        self.tick_until(
            lambda: (
                member._isLeader()
                and all(m.raftCommitIndex == last_index(member) for m in self.reachable(index))
            ),
            f"member {index} leads and its peers have its log",
        )

    def reachable(self, index: int) -> list[Any]:
        source = self.addresses[index]
        return [
            member
            for member, address in zip(self.members, self.addresses, strict=True)
            if member in self.alive and (source, address) not in self.network.cut
        ]

    def put(self, index: int, key: str, outcomes: dict[str, int]) -> None:
        def done(result: Any, error: int) -> None:
            outcomes[key] = error

        self.registers[index].put(key, key, callback=done)

    def crash(self, index: int) -> None:
        member = self.members[index]
        self.alive.remove(member)
        member.destroy()
        close_pipe(member)

    def close(self) -> None:
        for member in list(self.alive):
            self.crash(self.members.index(member))


def last_index(member: Any) -> int:
    return int(member._SyncObj__raftLog[-1][1])


@contextlib.contextmanager
def running(group: Group) -> Iterator[Group]:
    try:
        yield group
    finally:
        group.close()


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    with running(Group(tmp_path)) as group:
        yield group


def test_a_stale_append_never_drops_committed_entries_so_the_next_leader_has_them(
    group: Group,
) -> None:
    """The issue's scenario. A leads; C is cut off, so each write commits on A
    and B alone. B then receives again the AppendEntries that carried the
    first write (same prevLogIdx, fewer entries than B holds), and A fails
    before it sends anything more. B wins the next election with C's vote.

    With pysyncobj's own handler B drops the later writes from its log on
    that resend (although it has applied them), so they are missing from the
    new leader's log and C never receives them: acknowledged writes lost, and
    B and C hold different state.
    """
    a, b, c = 0, 1, 2
    group.campaign(a)
    group.network.isolate(group.addresses[c], group.addresses[:2])
    acknowledged: dict[str, int] = {}
    appends_to_b = group.network.appends[group.addresses[b]]
    appends_to_b.clear()
    group.put(a, "first", acknowledged)
    group.tick_until(lambda: "first" in acknowledged, "first write acknowledged")
    sender, stale = next((n, m) for n, m in appends_to_b if m.get("entries"))
    for key in ("second", "third"):
        group.put(a, key, acknowledged)
    group.tick_until(
        lambda: len(acknowledged) == 3 and "third" in group.registers[b].data,
        "B applied every write",
    )
    assert set(acknowledged.values()) == {FAIL_REASON.SUCCESS}
    held = last_index(group.members[b])
    assert held > stale["prevLogIdx"] + len(stale["entries"])

    group.network.cut.add((group.addresses[a], group.addresses[b]))  # A is about to fail
    group.network.redeliver(group.addresses[b], sender, stale)
    assert last_index(group.members[b]) == held, "B truncated entries it had applied"

    group.crash(a)
    group.network.cut.clear()
    group.campaign(b)
    group.tick_until(
        lambda: group.members[c].raftLastApplied == last_index(group.members[b]),
        "C applied the new leader's log",
    )
    assert group.registers[c].data == group.registers[b].data
    assert set(group.registers[c].data) == set(acknowledged)


def test_an_uncommitted_entry_is_replaced_by_the_next_leaders_log(group: Group) -> None:
    """The guard keeps Raft's rule for real conflicts: a write only the cut-off
    leader holds is deleted from its log when it rejoins the new leader's group."""
    a, b = 0, 1
    group.campaign(a)
    group.network.isolate(group.addresses[a], group.addresses[1:])
    outcomes: dict[str, int] = {}
    before = last_index(group.members[a])
    group.put(a, "lost", outcomes)
    group.tick_until(lambda: last_index(group.members[a]) > before, "A appended its write")
    group.campaign(b)
    group.put(b, "kept", outcomes)
    group.tick_until(lambda: outcomes.get("kept") is not None, "the new leader's write")
    assert outcomes["kept"] == FAIL_REASON.SUCCESS

    group.network.cut.clear()
    group.tick_until(
        lambda: group.members[a].raftLastApplied == last_index(group.members[b]),
        "A applied the new leader's log",
    )
    assert group.registers[a].data == {"kept": "kept"}
    assert outcomes.get("lost") != FAIL_REASON.SUCCESS


def test_a_member_cut_off_and_back_does_not_depose_a_healthy_leader(tmp_path: Path) -> None:
    """Pre-vote (Raft thesis §9.6). C, whose election timeout is the only short
    one, is cut off while A leads and B follows; its timeout runs out again and
    again. Once it is back it follows A in A's term: it never raised its term,
    so nothing it sends deposes A. Without pre-vote each timeout raised C's term
    and its first vote request after the heal made A step down."""
    a, b, c = 0, 1, 2
    with running(Group(tmp_path, elections=(300, 300, 0.3))) as group:
        group.campaign(a)
        leader, cut_off = group.members[a], group.members[c]
        term = leader.raftCurrentTerm
        group.network.isolate(group.addresses[c], group.addresses[:2])
        written: dict[str, int] = {}
        group.put(a, "during the cut", written)

        def campaigns() -> int:
            kinds = {"request_vote", "pre_vote"}
            dropped = group.network.dropped
            return sum(
                1 for sender, kind in dropped if sender == group.addresses[c] and kind in kinds
            )

        group.tick_until(
            lambda: bool(written) and campaigns() >= 2 * 2, "C's election timeout ran out twice"
        )
        assert written["during the cut"] == FAIL_REASON.SUCCESS
        group.network.cut.clear()
        group.tick_until(
            lambda: not leader._isLeader() or cut_off.raftLastApplied == last_index(leader),
            "C caught up with A, or A lost office",
        )
        assert leader._isLeader()
        assert [m.raftCurrentTerm for m in group.members] == [term] * 3
        assert (
            group.registers[c].data
            == group.registers[b].data
            == {"during the cut": "during the cut"}
        )


def depose_with_writes_of_its_own(
    group: Group, old: int, new: int
) -> tuple[dict[str, int], list[str]]:
    """``old`` leads, is cut off and appends three writes; ``new`` is elected
    by the rest and commits five, so its log is the longer one. Returns the
    writes' outcomes so far and the keys committed."""
    group.campaign(old)
    group.network.isolate(
        group.addresses[old], [a for a in group.addresses if a != group.addresses[old]]
    )
    outcomes: dict[str, int] = {}
    deposed, leader = group.members[old], group.members[new]
    before = last_index(deposed)
    for key in ("lost-1", "lost-2", "lost-3"):
        group.put(old, key, outcomes)
    group.tick_until(lambda: last_index(deposed) == before + 3, "the old leader appended")
    group.campaign(new)
    kept = [f"kept-{i}" for i in range(5)]
    for key in kept:
        group.put(new, key, outcomes)
    group.tick_until(lambda: all(key in outcomes for key in kept), "the new leader's writes")
    assert {outcomes[key] for key in kept} == {FAIL_REASON.SUCCESS}
    assert last_index(leader) > last_index(deposed)
    return outcomes, kept


def test_a_deposed_leader_with_writes_of_its_own_catches_up_with_a_pipelining_leader(
    group: Group,
) -> None:
    """Issue 10's stuck member. A leads and is cut off; it appends writes no
    one else holds. B is elected and commits more than A ever held. After the
    heal B sends A two append entries per round trip of A's (a busy leader
    sends after every write it applies and at every heartbeat, and a loaded
    follower answers slower than that).

    pysyncobj's leader moves its next index for A past everything it sent, so
    the second message of each round asks A about B's last entry, which A
    lacks, and A's answer to it (its own last entry + 1) undoes the step back
    the refusal of the first message earned: B never reaches the entries A
    and B share, and A applies nothing while B leads (in the nemesis run,
    until the leader compacted its log and sent a snapshot). A refusal now
    names A's commit index + 1, whatever message it answers, so the next
    message matches.
    """
    a, b = 0, 1
    net, address = group.network, group.addresses
    deposed, leader = group.members[a], group.members[b]
    outcomes, kept = depose_with_writes_of_its_own(group, a, b)
    net.hold(address[b], address[a])
    net.hold(address[a], address[b])
    net.cut.clear()
    for _ in range(8):
        if deposed.raftLastApplied == last_index(leader):
            break
        group.tick_until(
            lambda: net.queued(address[b], address[a], "append_entries") >= 2,
            "B sent A two append entries",
        )
        answers = net.release(address[b], address[a])  # one answer each
        group.tick_until(
            functools.partial(net.answered, address[a], address[b], answers), "A answered each"
        )
        net.release(address[a], address[b])
    assert deposed.raftLastApplied == last_index(leader), "A applied nothing of B's log"
    assert group.registers[a].data == group.registers[b].data == {key: key for key in kept}
    assert not {key for key, error in outcomes.items() if error == FAIL_REASON.SUCCESS} - set(kept)


def test_a_deposed_leader_catches_up_with_a_leader_that_writes_on_every_tick(
    group: Group,
) -> None:
    """The same stall over plain links: B takes a write on every tick, so it
    sends A a message on every tick, before it reads A's answer to the one
    before. With pysyncobj's refusals A applied nothing in 3,000 ticks (27 s
    measured); now it catches up within a few."""
    a, b = 0, 1
    deposed, leader = group.members[a], group.members[b]
    outcomes, kept = depose_with_writes_of_its_own(group, a, b)
    target = last_index(leader)
    group.network.cut.clear()
    for tick in range(200):
        if deposed.raftLastApplied >= target:
            break
        group.put(b, f"busy-{tick}", outcomes)
        for member in group.alive:
            member.doTick(0.001)
    assert deposed.raftLastApplied >= target, "A applied nothing of B's log"
    assert {key: key for key in kept}.items() <= group.registers[a].data.items()
    assert not [key for key in group.registers[a].applied if key.startswith("lost")]


def test_a_deposed_leader_installs_the_snapshot_without_applying_its_own_writes(
    group: Group,
) -> None:
    """The end of issue 10's stall: the leader has compacted its log past
    everything the deposed leader A holds, so A gets a snapshot. pysyncobj
    handles each snapshot chunk but the last like a heartbeat and commits up
    to its own log end, whose tail is A's writes of the old term: A applied
    them (and their callers heard SUCCESS for writes the group never
    committed) before the last chunk replaced its state. Chunks now commit
    nothing; the snapshot is reached one chunk per tick here, as a large
    snapshot spread over several reads is in production.
    """
    a, b = 0, 1
    net, address = group.network, group.addresses
    deposed, leader = group.members[a], group.members[b]
    outcomes, kept = depose_with_writes_of_its_own(group, a, b)
    leader.forceLogCompaction()
    group.tick_until(
        lambda: leader._SyncObj__raftLog[0][1] > deposed.raftCommitIndex + 1,
        "B compacted its log past A's commit index",
    )
    net.hold(address[b], address[a])
    net.cut.clear()
    for _ in range(40):
        if deposed.raftLastApplied == last_index(leader):
            break
        group.tick_until(lambda: bool(net.held[(address[b], address[a])]), "B sent A something")
        net.release(address[b], address[a], limit=1)
        for member in group.alive:
            member.doTick(0.001)
    assert deposed.raftLastApplied == last_index(leader), "A did not catch up"
    assert group.registers[a].data == {key: key for key in kept}
    assert not [key for key in group.registers[a].applied if key.startswith("lost")]
    assert not {key for key, error in outcomes.items() if error == FAIL_REASON.SUCCESS} - set(kept)
