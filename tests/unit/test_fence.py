"""The fence: which fencing tokens a node admits, and what it remembers."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from praxis_grpc.errors import FailedPrecondition
from praxis_grpc.ha.fence import Fence


def test_a_coordinator_admits_its_own_term_when_it_takes_office(tmp_path: Path) -> None:
    path = tmp_path / "fencing"
    fence = Fence(path)
    fence.admit(3, observed_term=3)  # a dispatch of the coordinator of term 3
    fence.take_office(7)
    assert fence.highest == 7
    # Its predecessor's dispatch is refused by the new coordinator itself,
    # even by a restarted one.
    for current in (fence, Fence(path)):
        assert current.highest == 7
        with pytest.raises(FailedPrecondition, match="fencing_token 3 is older than term 7"):
            current.admit(3, observed_term=7)
    fence.admit(7, observed_term=7)


def test_a_dispatch_without_a_token_or_with_an_old_one_is_refused(tmp_path: Path) -> None:
    fence = Fence(tmp_path / "fencing")
    with pytest.raises(FailedPrecondition, match="fencing_token is missing"):
        fence.admit(0, observed_term=0)
    fence.admit(4, observed_term=4)
    with pytest.raises(FailedPrecondition, match="fencing_token is missing"):
        fence.admit(0, observed_term=4)
    with pytest.raises(FailedPrecondition, match="fencing_token 3 is older than term 4"):
        fence.admit(3, observed_term=4)
    # A term the node has seen the group reach deposes older coordinators
    # before any of its dispatches arrived.
    with pytest.raises(FailedPrecondition, match="fencing_token 4 is older than term 5"):
        fence.admit(4, observed_term=5)
    assert fence.highest == 4


def test_a_token_the_group_never_reached_is_refused_and_not_remembered(tmp_path: Path) -> None:
    path = tmp_path / "fencing"
    fence = Fence(path)
    fence.admit(2, observed_term=2)
    with pytest.raises(FailedPrecondition, match="newer than term 2"):
        fence.admit(2**64 - 1, observed_term=2)
    assert fence.highest == 2
    assert Fence(path).highest == 2
    fence.admit(3, observed_term=3)  # the real next coordinator still gets through
    assert Fence(path).highest == 3


def test_taking_office_replaces_a_token_that_was_never_a_term(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "fencing"
    path.write_text(f"{2**64 - 1}\n")  # poisoned before tokens were checked
    fence = Fence(path)
    with caplog.at_level(logging.WARNING, logger="praxis_grpc.ha.fence"):
        fence.take_office(9)
    assert "never a term of this group" in caplog.text
    assert Fence(path).highest == 9
    fence.admit(9, observed_term=9)


def test_a_corrupt_fence_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "fencing"
    path.write_text("not a number\n")
    with pytest.raises(ValueError, match="not a fencing token"):
        Fence(path)
