"""Short form of the nemesis suite (the long form is ``python -m bench.nemesis``).

One trial of each nemesis on a fresh 3-node raft cluster of real node
processes: 4 closed-loop clients submit non-idempotent counting tasks, each
with its own idempotency key, resent with the same key through any node until
acknowledged; the nemesis hits, heals, and the checker audits every
acknowledged task on every node, every node's store and the execution log.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from bench._nemeses import NEMESES, make
from bench._nemesis_net import unavailable
from bench._nemesis_trial import (
    NemesisMesh,
    Settings,
    TrialResult,
    base_config,
    cut_if_possible,
    install_tool,
    run_trial,
)
from praxis_grpc.config import RaftConfig
from praxis_grpc.testing.counting import RunLog

pytestmark = [pytest.mark.e2e, pytest.mark.nemesis]

ELECTION = RaftConfig().election_timeout
HOLDS = {
    "kill-coordinator": 1.0,
    "kill-standby": 1.0,
    "pause-coordinator-short": ELECTION / 2,
    "pause-coordinator-long": ELECTION * 5,
    "pause-standby": 2.0,
    "partition-coordinator": 3.0,
}
SHORT = Settings(
    clients=4,
    warmup=1.0,
    after=1.5,
    give_up=10.0,
    settle_timeout=20.0,
    launch_timeout=20.0,
)


def trial(root: Path, name: str) -> TrialResult:
    log = RunLog(root / "executions.log")
    tools = install_tool(root / "tools")
    partition = name == "partition-coordinator"
    with cut_if_possible(uuid.uuid4().hex[:8], partition) as cut:
        mesh = NemesisMesh(
            root / "cluster", 3, base_config(tools), mode="active-passive", backend="raft", cut=cut
        )
        mesh.start(60)
        try:
            return run_trial(mesh, make(name, HOLDS[name], 20.0, cut), log, name, 1, SHORT)
        finally:
            mesh.stop()


@pytest.mark.parametrize("name", NEMESES)
def test_one_trial_loses_nothing_and_runs_nothing_twice(tmp_path: Path, name: str) -> None:
    if name == "partition-coordinator" and (why := unavailable()):
        pytest.skip(f"cannot cut a node off: {why}")
    result = trial(tmp_path, name)
    found = result.audit
    print(
        f"{name}: victim {result.victim}, {found.acknowledged} acknowledged of "
        f"{result.submitted}, outcomes {found.outcomes}, lost {found.lost[:3]}, executed twice "
        f"{found.executed_twice[:3]}, keys with two tasks {found.keys_with_two_tasks[:3]}, "
        f"answers differ {len(found.answers_differ)} {found.answers_differ[:3]}, without a "
        f"coordinator {result.outage_s:.2f} s, recovered {result.recovered_s}, served "
        f"{result.served_s}, majority ack "
        f"{result.majority_ack_s}, failed calls {result.failed_calls}, error {result.error!r}"
    )
    assert result.error == ""
    assert found.acknowledged > 0
    assert found.lost == []
    assert found.keys_with_two_tasks == []
    assert found.completed_unrun == []
    assert found.executed_twice == []
    assert result.cut_leaks == []
    assert result.victim_acks_in_cut == 0
