"""The SWIM state machine on a virtual clock (testing.swim_sim): deterministic, no sockets."""

from __future__ import annotations

import random

import pytest

from praxis_grpc.membership import (
    Ack,
    Claim,
    Gossip,
    Membership,
    MembershipConfig,
    Message,
    Payload,
    Ping,
    PingReq,
    PushPull,
    State,
)
from praxis_grpc.membership.codec import decode_message, encode_message
from praxis_grpc.membership.config import suspicion_timeout
from praxis_grpc.testing.swim_keys import Ed25519Keys, SimKeys
from praxis_grpc.testing.swim_sim import SwimSimulation

CONFIG = MembershipConfig()


def cluster(n: int, **options: object) -> SwimSimulation:
    sim = SwimSimulation(seed=7, **options)  # type: ignore[arg-type]
    sim.add_nodes(n)
    return sim


def dead_verdicts(sim: SwimSimulation) -> list[tuple[str, str]]:
    verdicts: list[tuple[str, str]] = []
    sim.observers.append(
        lambda observer, member, state: (
            verdicts.append((observer, member)) if state is State.DEAD else None
        )
    )
    return verdicts


def test_probe_and_ack_keep_a_healthy_cluster_alive() -> None:
    sim = cluster(5)
    suspicions: list[str] = []
    sim.observers.append(lambda o, m, s: suspicions.append(m) if s is not State.ALIVE else None)
    sim.run_for(30.0)
    assert suspicions == []
    assert all(node.sent > 0 and node.received > 0 for node in sim.nodes.values())
    assert all(node.membership.health == 0 for node in sim.nodes.values())


def test_indirect_probe_saves_a_member_whose_direct_path_is_lost() -> None:
    sim = cluster(6)
    suspected: list[str] = []
    sim.observers.append(lambda o, m, s: suspected.append(m) if s is not State.ALIVE else None)
    # n0 and n1 cannot reach each other directly, but every helper reaches both:
    # ping-req must vouch for them, so neither is ever suspected.
    original = sim._cut
    sim._cut = lambda a, b: {a, b} == {"n0", "n1"} or original(a, b)  # type: ignore[method-assign]
    sim.run_for(30.0)
    assert suspected == []
    assert sim.nodes["n1"].membership.incarnation == 1


def test_silent_member_is_suspected_then_declared_dead_by_all() -> None:
    sim = cluster(8)
    sim.run_for(2.0)
    sim.kill("n3", refuse=False)
    start = sim.now
    assert sim.run_until(
        lambda: sim.agree("n3", State.SUSPECT) or sim.agree("n3", State.DEAD), limit=10
    )
    assert sim.run_until(lambda: sim.agree("n3", State.DEAD), limit=60)
    # Silence is never certain: nobody may declare it dead before a suspicion timeout.
    first_dead = min(
        t for node in sim.nodes.values() for m, (s, t) in node.states.items() if m == "n3"
    )
    assert first_dead - start >= suspicion_timeout(CONFIG, 8)
    assert all(
        node.states["n3"][0] is State.DEAD for name, node in sim.nodes.items() if name != "n3"
    )


def test_suspected_member_refutes_with_a_higher_incarnation() -> None:
    sim = cluster(5)
    sim.run_for(1.0)
    target = sim.nodes["n2"].membership
    before = target.incarnation
    accuser = sim.nodes["n0"].membership
    accuser.receive(sim.now, "n1", Gossip(()))  # nothing: baseline
    accuser._table.accuse(sim.now, "n2", State.SUSPECT, "test")
    assert accuser.state_of("n2") is State.SUSPECT
    assert sim.run_until(
        lambda: sim.agree("n2", State.ALIVE) and target.incarnation > before, limit=5
    )
    sim.run_for(30.0)
    assert sim.agree("n2", State.ALIVE)


def test_member_that_hears_it_is_dead_refutes_at_once() -> None:
    sim = cluster(4)
    node = sim.nodes["n1"].membership
    dead = sim.keys.signer("n0").sign  # n0 accuses n1, correctly signed
    claim = Claim(State.DEAD, "n1", node.incarnation, "n0")
    claim = Claim(
        claim.kind, claim.member, claim.incarnation, claim.accuser, "", dead(claim.body())
    )
    node.receive(sim.now, "n0", Gossip((claim,)))
    assert node.incarnation == claim.incarnation + 1
    assert node.state_of("n1") is State.ALIVE


def test_a_member_held_dead_by_one_node_alone_is_told_when_it_talks_to_it() -> None:
    # n0 alone holds n1 dead (the verdict's broadcasts were used up before any
    # reached n1): n1 still probes n0, and hears of the verdict from n0 itself.
    sim = cluster(5)
    sim.run_for(2.0)
    n0, n1 = sim.nodes["n0"].membership, sim.nodes["n1"].membership
    accused = n1.incarnation
    n0.seed(sim.now, (signed(sim.keys, Claim(State.DEAD, "n1", accused, "n0")),))
    assert n0.state_of("n1") is State.DEAD  # adopted, not re-broadcast
    assert sim.run_until(lambda: n0.state_of("n1") is State.ALIVE, limit=5.0)
    assert n1.incarnation == accused + 1
    assert sim.agree("n1", State.ALIVE)


def test_a_member_held_dead_is_told_at_most_once_per_probe_interval() -> None:
    keys = SimKeys()
    sent: list[tuple[str, Message]] = []
    node = standalone("a", keys, sent)
    node.receive(0.0, "b", Gossip((signed(keys, Claim(State.ALIVE, "b", 1, "b", "/b")),)))
    verdict = signed(keys, Claim(State.DEAD, "b", 1, "a"))
    node.seed(0.0, (verdict,))
    sent.clear()
    for at in (1.0, 1.1, 1.2, 1.0 + CONFIG.probe_interval):
        node.receive(at, "b", Ping(7, "a"))
    told = [m for to, m in sent if to == "b" and isinstance(m, Gossip)]
    assert told == [Gossip((verdict,)), Gossip((verdict,))]


def test_left_member_is_marked_left_not_dead() -> None:
    sim = cluster(6)
    sim.run_for(1.0)
    sim.nodes["n4"].membership.leave(sim.now)
    assert sim.run_until(lambda: sim.nodes["n4"].membership.pending_broadcasts == 0, limit=10)
    sim.kill("n4", refuse=False)
    assert sim.run_until(lambda: sim.agree("n4", State.LEFT), limit=10)
    sim.run_for(20.0)
    assert sim.agree("n4", State.LEFT)


def test_a_leave_waits_until_the_queue_is_sent() -> None:
    sim = cluster(6)
    sim.run_for(1.0)
    leaving = sim.nodes["n4"].membership
    assert not leaving.leave_spread  # nothing to spread before a leave
    leaving.leave(sim.now)
    assert not leaving.leave_spread  # five members alive to tell
    assert sim.run_until(lambda: leaving.leave_spread, limit=10)
    sim.kill("n4", refuse=False)
    assert sim.run_until(lambda: sim.agree("n4", State.LEFT), limit=10)


def test_a_member_with_nobody_alive_to_tell_has_spread_its_leave_at_once() -> None:
    """Issue 11 (suite time): a node whose peers had all stopped, or that was
    alone, waited its whole leave timeout (2 s) on every stop, because it
    waited for its queue to drain and nobody is there to send it to."""
    alone = cluster(1)
    alone.run_for(1.0)
    membership = alone.nodes["n0"].membership
    membership.leave(alone.now)
    alone.run_for(10.0)
    assert membership.pending_broadcasts > 0  # never sent: what the stop waited for
    assert membership.leave_spread

    sim = cluster(3)
    sim.run_for(1.0)
    for name in ("n1", "n2"):
        sim.nodes[name].membership.leave(sim.now)
    assert sim.run_until(lambda: sim.agree("n1", State.LEFT, ["n0"]), limit=10)
    assert sim.run_until(lambda: sim.agree("n2", State.LEFT, ["n0"]), limit=10)
    last = sim.nodes["n0"].membership
    last.leave(sim.now)
    assert last.pending_broadcasts > 0  # their LEFT claims: gossiped to nobody
    assert last.leave_spread


def test_refused_connection_is_certain_evidence() -> None:
    sim = cluster(6)
    sim.run_for(1.0)
    sim.kill("n5", refuse=True)
    start = sim.now
    assert sim.run_until(lambda: sim.agree("n5", State.DEAD), limit=30)
    first = min(node.states["n5"][1] for name, node in sim.nodes.items() if name != "n5")
    assert first - start < CONFIG.probe_interval * 2 + 0.1  # first contact, no suspicion timeout
    assert {node.states["n5"][0] for name, node in sim.nodes.items() if name != "n5"} == {
        State.DEAD
    }


def test_older_incarnation_never_overrides_a_newer_one() -> None:
    keys = SimKeys()
    sent: list[tuple[str, Message]] = []
    node = standalone("a", keys, sent)
    alive = [signed(keys, Claim(State.ALIVE, "b", inc, "b", "/b")) for inc in (1, 2, 3)]
    node.receive(0.0, "b", Gossip((alive[2],)))
    node.receive(0.0, "b", Gossip((alive[0], alive[1])))
    assert [m.incarnation for m in node.members() if m.member == "b"] == [3]
    stale_dead = signed(keys, Claim(State.SUSPECT, "b", 2, "a"))
    node.receive(0.0, "a", Gossip((stale_dead,)))
    assert node.state_of("b") is State.ALIVE
    node.receive(0.0, "c", Gossip((signed(keys, Claim(State.DEAD, "b", 3, "a")),)))
    assert node.state_of("b") is State.DEAD
    node.receive(0.0, "b", Gossip((alive[2],)))  # same incarnation cannot revive it
    assert node.state_of("b") is State.DEAD
    node.receive(0.0, "b", Gossip((signed(keys, Claim(State.ALIVE, "b", 4, "b", "/b")),)))
    assert node.state_of("b") is State.ALIVE


def test_forged_claims_are_ignored() -> None:
    keys = Ed25519Keys()
    sent: list[tuple[str, Message]] = []
    node = standalone("a", keys, sent)
    for member in ("b", "c", "m"):
        node.receive(0.0, member, Gossip((signed(keys, Claim(State.ALIVE, member, 1, member)),)))
    # m (a member) signs a "dead" claim naming b as the accuser of c, and one naming c itself.
    forger = keys.signer("m")
    for claim in (Claim(State.DEAD, "c", 1, "b"), Claim(State.LEFT, "c", 1, "c")):
        forged = Claim(claim.kind, claim.member, 1, claim.accuser, "", forger.sign(claim.body()))
        node.receive(0.0, "m", Gossip((forged,)))
    # ... an alive claim for b at a higher incarnation, and b's payload.
    fake_alive = Claim(State.ALIVE, "b", 9, "b")
    node.receive(
        0.0, "m", Gossip((Claim(State.ALIVE, "b", 9, "b", "", forger.sign(fake_alive.body())),))
    )
    payload = Payload("b", "card", 1, b"evil")
    node.receive(0.0, "m", Gossip((Payload("b", "card", 1, b"evil", forger.sign(payload.body())),)))
    # ... and an unsigned suspicion.
    node.receive(0.0, "m", Gossip((Claim(State.SUSPECT, "c", 1, "m"),)))
    assert node.state_of("c") is State.ALIVE
    assert [m.incarnation for m in node.members() if m.member == "b"] == [1]
    assert node.payload("b", "card") is None
    # The same claim correctly signed by its accuser counts.
    node.receive(0.0, "b", Gossip((signed(keys, Claim(State.DEAD, "c", 1, "b")),)))
    assert node.state_of("c") is State.DEAD


def test_each_signed_claim_is_verified_once() -> None:
    keys = SimKeys()
    calls: list[str] = []

    class Counting:
        def verify(self, signer: str, data: bytes, signature: bytes) -> bool:
            calls.append(signer)
            return keys.verify(signer, data, signature)

    node = Membership(
        "a",
        address="/a",
        incarnation=1,
        config=CONFIG,
        transport=Recorder([]),
        signer=keys.signer("a"),
        verifier=Counting(),
        events=Events(),
        rng=random.Random(1),
    )
    node.receive(0.0, "b", Gossip((signed(keys, Claim(State.ALIVE, "b", 1, "b")),)))
    node.receive(0.0, "c", Gossip((signed(keys, Claim(State.ALIVE, "c", 1, "c")),)))
    suspect = signed(keys, Claim(State.SUSPECT, "c", 1, "b"))
    for _ in range(5):
        node.receive(0.0, "b", Gossip((suspect,)))
        node.receive(0.0, "b", PushPull((suspect,), reply=True))
    assert calls == ["b", "c", "b"]


def test_payload_versions_reach_every_node_once_despite_loss() -> None:
    sim = cluster(40, loss=0.05)
    got: dict[str, list[int]] = {}
    sim.payload_observers.append(lambda o, p: got.setdefault(o, []).append(p.version))
    origin = sim.nodes["n7"].membership
    origin.publish(sim.now, "status", 1, b"load=0.1")
    sim.run_for(0.05)
    origin.publish(sim.now, "status", 2, b"load=0.9")
    assert sim.run_until(
        lambda: all(
            node.payloads.get(("n7", "status"), (0,))[0] == 2
            for n, node in sim.nodes.items()
            if n != "n7"
        ),
        limit=10,
    )
    assert all(versions == sorted(set(versions)) for versions in got.values())
    assert all(sim.nodes[n].membership.payload("n7", "status").data == b"load=0.9" for n in got)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not above"):
        origin.publish(sim.now, "status", 2, b"again")


def test_pause_shorter_than_the_suspicion_timeout_removes_nobody() -> None:
    sim = cluster(20, loss=0.01)
    verdicts = dead_verdicts(sim)
    sim.run_for(2.0)
    sim.pause("n9")
    sim.run_for(suspicion_timeout(CONFIG, 20) * 0.8)
    sim.resume("n9")
    sim.run_for(60.0)
    assert verdicts == []
    assert sim.agree("n9", State.ALIVE)


def test_paused_member_is_removed_and_rejoins_after_resume_with_a_higher_incarnation() -> None:
    sim = cluster(10)
    sim.run_for(1.0)
    sim.pause("n4")
    assert sim.run_until(lambda: sim.agree("n4", State.DEAD), limit=60)
    sim.resume("n4")
    # n4 hears of its death (probes and syncs) and refutes; dead members come back only
    # with a higher incarnation.
    assert sim.run_until(lambda: sim.agree("n4", State.ALIVE), limit=120)
    assert sim.nodes["n4"].membership.incarnation > 1


def test_a_probe_that_must_connect_first_does_not_suspect_a_member_that_answers() -> None:
    # Every pair must connect before its first message, and connecting takes longer than
    # the probe timeout and the probe interval (a dial on a starved machine): the ping's
    # timeout starts once the connection is open, so nobody is suspected.
    sim = cluster(20, connect_delay=1.0)
    suspicions: list[tuple[str, str]] = []
    sim.observers.append(lambda o, m, s: None if s is State.ALIVE else suspicions.append((o, m)))
    sim.run_for(60.0)
    assert suspicions == []
    assert all(sim.connected("n0", f"n{i}") for i in range(1, 20))  # every member was probed


def test_a_member_never_connected_to_is_still_found_dead_when_paused() -> None:
    # A paused member accepts no connection: the probe counts as unanswered after
    # connect_timeout, and the member is still declared dead by everyone.
    sim = cluster(10, connect_delay=1.0)
    sim.pause("n4")
    assert sim.run_until(lambda: sim.agree("n4", State.DEAD), limit=60)


def test_a_ping_sent_again_on_a_new_connection_is_timed_from_then() -> None:
    # The transport held a stream (ready), but the connection under it broke and the
    # ping went out only on a new one: the probe's timeout restarts at connected().
    keys, sent = SimKeys(), list[tuple[str, Message]]()
    node = standalone("a", keys, sent)
    node.receive(0.0, "b", Gossip((signed(keys, Claim(State.ALIVE, "b", 1, "b", "/b")),)))
    node.receive(0.0, "c", Gossip((signed(keys, Claim(State.ALIVE, "c", 1, "c", "/c")),)))
    node.start(0.0)
    sent_at = 0.0
    while not any(isinstance(m, Ping) for _, m in sent):
        sent_at = node.next_deadline()
        node.tick(sent_at)
    target, ping = next((to, m) for to, m in sent if isinstance(m, Ping))
    node.connected(sent_at + 0.2, target)
    node.tick(sent_at + CONFIG.probe_timeout + 0.01)  # the first timeout has passed
    assert not any(isinstance(m, PingReq) for _, m in sent)
    assert isinstance(ping, Ping)
    node.receive(sent_at + 0.3, target, Ack(ping.seq, ()))
    node.tick(sent_at + 2 * CONFIG.probe_interval)
    assert not any(isinstance(m, PingReq) for _, m in sent)
    assert node.state_of(target) is State.ALIVE


def test_partition_heals_when_a_reconnect_syncs_state() -> None:
    sim = cluster(8)
    sim.run_for(1.0)
    left, right = [f"n{i}" for i in range(4)], [f"n{i}" for i in range(4, 8)]
    sim.partition(left, right)
    assert sim.run_until(lambda: sim.agree("n6", State.DEAD, among=left), limit=60)
    assert sim.agree("n1", State.DEAD, among=right)
    sim.heal()
    # Like Serf's reconnect: the adaptor joins whoever discovery finds again. Each side
    # hears it was declared dead, refutes with a higher incarnation, and the sides merge.
    sim.nodes["n0"].membership.join(sim.now, ["n5"])
    assert sim.run_until(lambda: all(sim.agree(m, State.ALIVE) for m in sim.nodes), limit=30)


def test_join_through_a_seed_spreads_the_newcomer() -> None:
    sim = cluster(10, wire=True)
    sim.run_for(1.0)
    sim.add_node("late", seeds=("n0",))
    assert sim.run_until(lambda: sim.agree("late", State.ALIVE), limit=10)
    assert len(sim.nodes["late"].membership.members()) == 11


def test_codec_round_trips_and_rejects_garbage() -> None:
    keys = SimKeys()
    items = (
        signed(keys, Claim(State.ALIVE, "b", 3, "b", "/ip4/1")),
        signed(keys, Payload("b", "k", 2, b"\x00x")),
    )
    for message in (Ping(5, "b", items), Ack(6, items), Gossip(items), PushPull(items, reply=True)):
        assert decode_message(encode_message(message)) == message
    data = encode_message(Ping(5, "b", items))
    for bad in (data[:-1], data + b"x", b"\x09" + data[1:], b""):
        with pytest.raises(ValueError, match="membership"):
            decode_message(bad)


def test_config_rejects_bad_values_naming_the_key() -> None:
    with pytest.raises(ValueError, match=r"membership\.probe_timeout"):
        MembershipConfig(probe_interval=0.5, probe_timeout=0.5)
    with pytest.raises(ValueError, match=r"membership\.gossip_fanout"):
        MembershipConfig(gossip_fanout=0)


class Recorder:
    def __init__(self, sent: list[tuple[str, Message]]) -> None:
        self.sent = sent

    def send(self, to: str, message: Message) -> None:
        self.sent.append((to, message))

    def ready(self, to: str) -> bool:
        return True


class Events:
    def on_member(self, member: str, state: State, incarnation: int, address: str) -> None:
        pass

    def on_payload(self, payload: Payload) -> None:
        pass


def standalone(
    name: str, keys: SimKeys | Ed25519Keys, sent: list[tuple[str, Message]]
) -> Membership:
    return Membership(
        name,
        address=f"/{name}",
        incarnation=1,
        config=CONFIG,
        transport=Recorder(sent),
        signer=keys.signer(name),
        verifier=keys,
        events=Events(),
        rng=random.Random(1),
    )


def signed(keys: SimKeys | Ed25519Keys, item: Claim | Payload) -> Claim | Payload:
    from dataclasses import replace

    return replace(item, signature=keys.signer(item.signer).sign(item.body()))
