"""The nemesis checker's reading of GetAgent samples, without a cluster."""

from __future__ import annotations

import pytest

from bench._nemesis_check import coordinator_gaps, recovered_at
from bench._nemesis_workload import Sample


def lead(at: float, node: str) -> Sample:
    return Sample(at, node, "coordinator", node)


def follow(at: float, node: str, leader: str) -> Sample:
    return Sample(at, node, "standby", node, leader)


def silent(at: float, node: str) -> Sample:
    return Sample(at, node)


def steady(until: float, leader: str = "a") -> list[Sample]:
    samples = []
    moment = 0.0
    while moment < until:
        samples += [lead(moment, leader)] + [
            follow(moment, node, leader) for node in "abc" if node != leader
        ]
        moment += 0.1
    return samples


def test_a_coordinator_named_by_a_majority_leaves_no_gap() -> None:
    assert coordinator_gaps(steady(2.0), 0.0, 1.9, fresh=0.4) == []
    assert recovered_at(steady(2.0), 0.5, 1.9, fresh=0.4) == 0.0


def test_standbys_naming_a_silent_coordinator_do_not_count() -> None:
    samples = steady(1.0)
    moment = 1.0
    while moment < 2.0:
        samples += [silent(moment, "a"), follow(moment, "b", "a"), follow(moment, "c", "a")]
        moment += 0.1
    samples += steady(3.0, leader="b")[30:]
    gaps = coordinator_gaps(samples, 0.0, 2.9, fresh=0.4)
    assert len(gaps) == 1
    assert gaps[0] == pytest.approx(1.0, abs=0.05)
    assert recovered_at(samples, 1.0, 2.9, fresh=0.4) == pytest.approx(1.0, abs=0.05)


def test_a_coordinator_only_itself_believes_in_is_no_coordinator() -> None:
    samples = [lead(t / 10, "a") for t in range(20)] + [
        follow(t / 10, node, "b") for t in range(20) for node in "bc"
    ]
    assert coordinator_gaps(samples, 0.0, 1.9, fresh=0.4) == [pytest.approx(1.9, abs=0.05)]
    assert recovered_at(samples, 0.0, 1.9, fresh=0.4) is None


def test_samples_older_than_fresh_name_nobody() -> None:
    samples = [lead(0.0, "a"), follow(0.0, "b", "a"), follow(0.0, "c", "a")]
    gaps = coordinator_gaps(samples, 0.0, 1.0, fresh=0.4)
    assert gaps == [pytest.approx(0.6, abs=0.05)]
