"""``target_agent``: placement on one named agent only (router, request
fingerprint, wire), and the owner's refusal of a dispatch meant for another."""

from __future__ import annotations

import pytest

from praxis_grpc._gen.praxis.peer.v1 import peer_service_pb2
from praxis_grpc._gen.praxis.v1 import task_service_pb2
from praxis_grpc.errors import FailedPrecondition, NotFound, ResourceExhausted, Unavailable
from praxis_grpc.tasks.model import Submission
from praxis_grpc.wire_input import submission_fields, submission_from_proto
from tests.unit.test_router import LOCAL, card, router


def test_the_plan_is_the_target_alone_however_loaded_the_others_are() -> None:
    busy = card("busy", in_flight=3, queued=5)
    r = router([card(LOCAL), card("idle"), card("idle2"), busy])
    for _ in range(20):
        assert [c.agent_id for c in r.plan("sleep", target_agent="busy")] == ["busy"]
    # The preference is ignored with a target.
    assert [c.agent_id for c in r.plan("sleep", "", "idle", target_agent="busy")] == ["busy"]
    assert [c.agent_id for c in r.plan("sleep", target_agent=LOCAL)] == [LOCAL]


def test_an_unknown_target_is_not_found_naming_the_field() -> None:
    with pytest.raises(NotFound) as raised:
        router([card("a")]).plan("sleep", target_agent="nobody")
    assert raised.value.message.startswith("target_agent: ")
    assert "'nobody'" in raised.value.message


@pytest.mark.parametrize(
    ("target", "tool", "tags", "says"),
    [
        (card("t", ("echo",)), "sleep", (), "does not offer tool 'sleep'; it offers: echo"),
        (card("t", tags=("eu",)), "sleep", ("gpu", "eu"), "with tags ['gpu']"),
        (card("t", draining=True), "sleep", (), "is draining"),
        (card("t", role="coordinator"), "sleep", (), "coordinates and runs no tasks"),
    ],
)
def test_a_target_that_cannot_take_the_task_is_a_failed_precondition(
    target: object, tool: str, tags: tuple[str, ...], says: str
) -> None:
    capable = card("other", (tool,), tags=tags)
    with pytest.raises(FailedPrecondition) as raised:
        router([capable, target]).plan(tool, tags, target_agent="t")  # type: ignore[list-item]
    assert raised.value.message.startswith("target_agent: agent n-t (t) ")
    assert says in raised.value.message


def test_a_saturated_target_is_resource_exhausted_with_a_hint() -> None:
    full = card("t", in_flight=4, queued=10)
    with pytest.raises(ResourceExhausted) as raised:
        router([card("idle"), full]).plan("sleep", target_agent="t")
    assert raised.value.message == "target_agent: agent n-t (t) is saturated (14/14 tasks)"
    assert raised.value.retry_after > 0


def test_a_target_without_an_address_is_unavailable() -> None:
    with pytest.raises(Unavailable, match=r"target_agent: .* publishes no address"):
        router([card("t", grpc=False)]).plan("sleep", target_agent="t")


def test_a_lost_target_is_not_replaced_by_another_agent() -> None:
    """A re-dispatch away from a lost owner excludes it: a targeted task then
    has nowhere to go (it waits for its agent), never another agent."""
    with pytest.raises(FailedPrecondition, match="not a candidate here"):
        router([card("idle"), card("t")]).plan("sleep", exclude=("t",), target_agent="t")


def test_the_target_is_part_of_the_request() -> None:
    plain = Submission("sleep", {"seconds": 1})
    targeted = Submission("sleep", {"seconds": 1}, target_agent="t")
    assert targeted.fingerprint() != plain.fingerprint()
    assert (
        targeted.fingerprint()
        != Submission(**{**vars(targeted), "target_agent": "u"}).fingerprint()
    )
    # Fingerprints stored before the field existed stay valid.
    assert plain.fingerprint() == Submission("sleep", {"seconds": 1}).fingerprint()
    # Tagged: never confused with a submitter of the same name.
    assert (
        targeted.fingerprint() != Submission("sleep", {"seconds": 1}, submitter="t").fingerprint()
    )


def test_the_target_crosses_the_wire_both_ways() -> None:
    request = task_service_pb2.SubmitTaskRequest(tool="sleep", target_agent="t")
    submission = submission_from_proto(request, 1024)
    assert submission.target_agent == "t"
    spec = peer_service_pb2.TaskSpec(**submission_fields(submission))
    assert spec.target_agent == "t"
    assert submission_from_proto(spec, 1024) == submission


def test_an_overlong_target_is_invalid_naming_the_field() -> None:
    from praxis_grpc.errors import InvalidArgument

    request = task_service_pb2.SubmitTaskRequest(tool="sleep", target_agent="x" * 257)
    with pytest.raises(InvalidArgument) as raised:
        submission_from_proto(request, 1024)
    assert raised.value.field == "target_agent"


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["agent", "--via", "127.0.0.1:1"], "--via needs --agent"),
        (["agent", "--agent", ""], "--agent must name an agent id"),
        (["agent", "--via", "entry", "--agent", "x"], "--via 'entry' is not host:port"),
        (["submit", "echo", "--via", "127.0.0.1:1"], "--via needs --agent"),
        (["status", "127.0.0.1:1", "--agent", "x"], "give no TARGET with it"),
        (["status", "--via", "127.0.0.1:1"], "--via needs --agent"),
    ],
)
def test_bad_via_usage_exits_2_naming_the_flag(
    argv: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from praxis_grpc.cli import main

    assert main(argv) == 2
    assert says in capsys.readouterr().err


def test_prefer_and_agent_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    from praxis_grpc.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["submit", "echo", "--prefer", "a", "--agent", "b"])
    assert exited.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_agent_names_resolve_to_ids_through_the_cards() -> None:
    from types import SimpleNamespace

    from praxis_grpc.cli import UsageError
    from praxis_grpc.cli.agent import agent_ids

    cards = [
        SimpleNamespace(agent_id="id-a", name="alpha"),
        SimpleNamespace(agent_id="id-b1", name="beta"),
        SimpleNamespace(agent_id="id-b2", name="beta"),
    ]
    client = SimpleNamespace(list_cards=lambda: cards)
    assert agent_ids(client, ["alpha", "id-b2", "ghost"]) == ["id-a", "id-b2", "ghost"]
    with pytest.raises(UsageError, match="'beta' names 2 agents: give an id"):
        agent_ids(client, ["beta"])
