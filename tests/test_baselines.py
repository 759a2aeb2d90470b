"""A deterministic task spends no run on baselines once two runs of the head agree exactly."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoswarm.coordinator import baselines
from autoswarm.coordinator.noise import Run
from autoswarm.shared.models import ExperimentKind, ExperimentState, Verdict
from tests.test_judge import World, knobs_world, ok


@pytest.fixture
def world(redis_url: str, tmp_path: Path, task_dir_factory: Callable[..., Path]) -> Iterator[World]:
    """The knobs task, its head's three baselines queued, none run."""
    built = knobs_world(redis_url, tmp_path, task_dir_factory)
    yield built
    built.store.close()


def _kinds_run(world: World, leased: list[tuple[str, str, int]]) -> list[ExperimentKind]:
    records = world.store.get_experiments([experiment_id for _, experiment_id, _ in leased])
    return [record.kind for record in records]


def test_a_deterministic_task_runs_no_baseline_after_two_agree_exactly(world: World) -> None:
    """Two baselines that agree exactly make the head ready and withdraw the third; a change
    kept by a run and a replicate that agree exactly queues no baseline: the runs spent are
    two baselines, then one explore and one replicate per winner, one run per loser."""
    leased = [world.lease("w1"), world.lease("w2")]
    for lease in leased:
        world.finish(lease, ok(1.0))
    head = world.store.get_head(world.task_id, "cpu:test-2c")
    assert head is not None and head.ready
    alpha = world.submit(alpha="0.5", title="alpha")
    for worker, metric in (("w1", 0.5), ("w2", 0.5)):
        leased.append(world.lease(worker))
        world.finish(leased[-1], ok(metric))
    assert world.verdict(alpha) is Verdict.KEPT
    beta = world.submit(alpha="0.5", beta="2.0", title="beta")
    leased.append(world.lease("w3"))
    world.finish(leased[-1], ok(0.75))
    assert world.verdict(beta) is Verdict.DISCARDED
    kinds = _kinds_run(world, leased)
    assert kinds.count(ExperimentKind.BASELINE) == 2, kinds
    assert world.store.queue_depth(world.task_id) == 0


def test_the_baseline_left_queued_is_withdrawn_with_its_reason(world: World) -> None:
    """The head's third baseline, queued when the first two agreed exactly, ends unrun and
    says why."""
    for worker in ("w1", "w2"):
        world.run(worker, ok(1.0))
    head = world.head()
    third = world.scheduler.heads.baseline_ids(world.task_id, "cpu:test-2c", head)[2]
    record = world.store.get_experiment(third)
    assert record is not None and record.state is ExperimentState.DONE
    assert "agree exactly" in record.reason


def test_two_baselines_that_differ_leave_the_third_to_run(world: World) -> None:
    """A head whose first two runs differ is measured by all its baselines, as before."""
    world.run("w1", ok(1.0))
    world.run("w2", ok(1.01))
    leased = world.lease("w3")
    assert _kinds_run(world, [leased]) == [ExperimentKind.BASELINE]


def _runs(*groups: tuple[str, list[float]]) -> list[Run]:
    return [Run(f"{code}{i}", code, "", v) for code, values in groups for i, v in enumerate(values)]


def test_a_head_is_measured_once_two_runs_agree_exactly_on_a_class_without_noise() -> None:
    """Two equal runs of the head, every other code's runs equal too: no more baselines."""
    assert baselines.measured(_runs(("h", [1.0, 1.0]), ("c", [0.5, 0.5]), ("d", [2.0])), "h")


def test_one_run_or_two_that_differ_need_more_baselines() -> None:
    """A single run, or two runs of the head that differ at all, leave the head unmeasured."""
    assert not baselines.measured(_runs(("h", [1.0])), "h")
    assert not baselines.measured(_runs(("h", [1.0, 1.0 + 1e-12])), "h")


def test_a_class_that_showed_noise_anywhere_keeps_its_baselines() -> None:
    """Another code's runs that disagreed make the class noisy: equal head runs are luck."""
    assert not baselines.measured(_runs(("h", [1.0, 1.0]), ("c", [0.5, 0.51])), "h")


def test_a_task_that_declares_noise_keeps_its_baselines() -> None:
    """A task's declared `[metric] noise` is taken at its word, whatever the runs show."""
    assert not baselines.measured(_runs(("h", [1.0, 1.0])), "h", declared_noise=0.01)


def test_a_kept_change_whose_two_runs_differ_is_measured_by_baselines(world: World) -> None:
    """A head kept on a run and a replicate that differ (the task is not deterministic after
    all) is measured by its baselines, as on any noisy task."""
    for worker in ("w1", "w2"):
        world.run(worker, ok(1.0))
    alpha = world.submit(alpha="0.5", title="alpha")
    world.run("w1", ok(0.5))
    world.run("w2", ok(0.4999))
    assert world.verdict(alpha) is Verdict.KEPT
    assert _kinds_run(world, [world.lease("w3")]) == [ExperimentKind.BASELINE]
