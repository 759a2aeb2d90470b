"""Queued explores re-derived onto a head that moved before any worker took them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoswarm.coordinator.hypotheses import build_context
from autoswarm.shared.models import ExperimentKind, ExperimentState, Verdict
from tests.test_judge import World, knobs_world, ok


@pytest.fixture
def world(redis_url: str, tmp_path: Path, task_dir_factory: Callable[..., Path]) -> Iterator[World]:
    """The knobs task with its head measured at 1.0 (minimised; three baselines)."""
    built = knobs_world(redis_url, tmp_path, task_dir_factory)
    for worker, metric in (("w1", 1.0), ("w2", 1.01), ("w3", 0.99)):
        built.run(worker, ok(metric))
    yield built
    built.store.close()


def keep_alpha(world: World) -> str:
    """ALPHA 1.0 -> 0.5 explored, replicated and kept; the new head's commit."""
    world.run("w1", ok(0.5))
    world.run("w2", ok(0.5))
    return world.head()


def test_a_queued_explore_is_rederived_onto_the_head_that_moved(world: World) -> None:
    """beta, queued on the old head when alpha is kept, runs on the new head as its own
    explore (alpha's change in it), and its old experiment is withdrawn unrun."""
    alpha = world.submit(alpha="0.5", title="alpha")
    beta = world.submit(beta="0.5", title="beta")
    old = world.store.get_hypothesis(beta)
    assert old is not None and old.experiment_id
    head = keep_alpha(world)
    assert world.verdict(alpha) is Verdict.KEPT
    hyp = world.store.get_hypothesis(beta)
    assert hyp is not None and hyp.verdict is Verdict.PENDING
    assert hyp.experiment_id != old.experiment_id
    withdrawn = world.store.get_experiment(old.experiment_id)
    assert withdrawn is not None and withdrawn.state is ExperimentState.DONE
    assert "re-derived onto it" in withdrawn.reason
    now = world.store.get_experiment(hyp.experiment_id or "")
    assert now is not None and now.kind is ExperimentKind.EXPLORE
    assert now.parent_commit == head and now.state is ExperimentState.QUEUED
    files = world.scheduler.reads.lineage(world.task_id).files_at(now.code_commit or "")
    assert b"ALPHA = 0.5" in files["train.py"] and b"BETA = 0.5" in files["train.py"]
    leased = world.lease("w3")
    for n in range(3):  # the new head's baselines come first
        if leased[1] == now.experiment_id:
            break
        world.finish(leased, ok(0.5))
        leased = world.lease(f"b{n}")
    assert leased[1] == now.experiment_id
    world.finish(leased, ok(0.25))  # better than the new head where it ran: replicated there
    world.run("w4", ok(0.25))
    assert world.verdict(beta) is Verdict.KEPT
    context = build_context(world.scheduler.reads, world.task_id)
    assert not context.in_flight


def test_a_queued_explore_whose_constant_the_head_changed_is_withdrawn(world: World) -> None:
    """ALPHA 1.0 -> 2.0, queued when ALPHA 1.0 -> 0.5 is kept, conflicts with the new head:
    withdrawn before it runs, its hypothesis a conflict waiting for code on the new head."""
    world.submit(alpha="0.5", title="alpha")
    other = world.submit(alpha="2.0", title="alpha up")
    old = world.store.get_hypothesis(other)
    assert old is not None and old.experiment_id
    keep_alpha(world)
    hyp = world.store.get_hypothesis(other)
    assert hyp is not None and hyp.verdict is Verdict.CONFLICT and hyp.needs_code
    assert "before it ran" in hyp.reason
    withdrawn = world.store.get_experiment(old.experiment_id)
    assert withdrawn is not None and withdrawn.state is ExperimentState.DONE
    assert world.store.queue_depth(world.task_id) == 0
