"""The offline mutation proposer: constants found, one literal rewritten, learning, no repeats."""

from __future__ import annotations

import ast
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from autoswarm.coordinator.proposers.mutation import (
    MutationProposer,
    find_constants,
    perturbations,
)
from autoswarm.shared.models import HypothesisCreate, HypothesisSummary, ProposerContext, Verdict
from autoswarm.shared.task import Direction, MetricSpec, TaskSpec, hash_files, load_task
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Unsandboxed
from tests.task_helpers import write_task

REPO = Path(__file__).resolve().parents[1]

SAMPLE = '''"""A payload in Karpathy's style."""

import math

# ---------------------------------------------------------------------------
# Hyperparameters
# ---------------------------------------------------------------------------

LEARNING_RATE = 3e-4  # step size of the optimiser
BATCH_SIZE = 2**6  # rows per step
DEPTH: int = 3  # layers
SHIFT = -5  # bias of the output
WEIGHT_DECAY = 0.0  # off by default
TOKENS = 1_000_000  # training tokens
WINDOW = 3 * 1024  # bytes of context
LABEL = "naïve"; WARMUP = 0.25  # a non-ASCII string before a constant on one line
USE_BIAS = True  # a bool is not a number to move
NAME = "tiny"
SEED = 42  # never perturbed: a seed is not an idea
A = B = 7  # one literal, two names: skipped
TWICE = 1
TWICE = 2  # bound twice: which binding matters is unclear, skipped
lower_case = 5


def train():
    INNER = 3  # not module level
    return math.sqrt(LEARNING_RATE * INNER)


print("---")
print(f"score: {train():.6f}")
'''


def make_context(
    source: str,
    *,
    direction: Direction = Direction.MAXIMIZE,
    history: list[HypothesisSummary] | None = None,
    in_flight: list[HypothesisSummary] | None = None,
) -> ProposerContext:
    spec = TaskSpec(name="sample", metric=MetricSpec(name="score", direction=direction))
    return ProposerContext(
        task_id="sample",
        spec=spec,
        head_commit="c0ffee",
        head_files={"train.py": source},
        history=history or [],
        in_flight=in_flight or [],
    )


def summary(title: str, verdict: Verdict, delta: float | None, n: int = 0) -> HypothesisSummary:
    return HypothesisSummary(
        hypothesis_id=f"h{n}-{title}",
        title=title,
        proposer="mutation",
        verdict=verdict,
        delta=delta,
    )


def common_prefix_len(a: str, b: str) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def drain(proposer: MutationProposer, context: ProposerContext) -> list[HypothesisCreate]:
    out = []
    while (hypothesis := proposer.propose(context)) is not None:
        out.append(hypothesis)
        assert len(out) < 500, "the proposer never ran out"
    return out


def test_finds_module_level_numeric_constants() -> None:
    """Ints, floats, negatives and numeric expressions at module level; bools, seeds, locals not."""
    found = {c.name: c.value for c in find_constants(SAMPLE, "train.py")}
    assert found == {
        "LEARNING_RATE": 3e-4,
        "BATCH_SIZE": 64,
        "DEPTH": 3,
        "SHIFT": -5,
        "WEIGHT_DECAY": 0.0,
        "TOKENS": 1_000_000,
        "WINDOW": 3072,
        "WARMUP": 0.25,
        "SEED": 42,
    }
    labels = {h.title.split()[0] for h in drain(MutationProposer(), make_context(SAMPLE))}
    assert "SEED" not in labels
    assert labels == set(found) - {"SEED"}


def test_change_rewrites_only_the_constant_text() -> None:
    """Every byte outside the moved constant's literal is kept, comments and unicode included."""
    spans = {c.name: (c.start, c.end) for c in find_constants(SAMPLE)}
    for hypothesis in drain(MutationProposer(), make_context(SAMPLE)):
        assert hypothesis.change is not None
        new = hypothesis.change["train.py"]
        head = common_prefix_len(SAMPLE, new)
        tail = common_prefix_len(SAMPLE[::-1], new[::-1])
        start, end = spans[hypothesis.title.split()[0]]
        assert start <= head and len(SAMPLE) - tail <= end
        assert new.count("\n") == SAMPLE.count("\n")


def test_every_change_parses_and_moves_one_constant() -> None:
    """Each proposed file parses and differs from the head in exactly one constant's value."""
    head = {c.name: c.value for c in find_constants(SAMPLE)}
    hypotheses = drain(MutationProposer(seed=3), make_context(SAMPLE))
    assert len(hypotheses) > 50
    for hypothesis in hypotheses:
        assert hypothesis.change is not None
        new = hypothesis.change["train.py"]
        ast.parse(new)
        moved = {c.name: c.value for c in find_constants(new)}
        assert moved.keys() == head.keys()
        assert sum(moved[name] != head[name] for name in head) == 1


def test_titles_read_like_a_change() -> None:
    """Titles are "NAME old -> new" in the file's own notation, with the context filled in."""
    source = "LEARNING_RATE = 3e-4\nBATCH_SIZE = 2**6\n"
    hypotheses = drain(MutationProposer(), make_context(source))
    titles = {h.title for h in hypotheses}
    assert "LEARNING_RATE 3e-4 -> 6e-4" in titles
    assert "LEARNING_RATE 3e-4 -> 1.5e-4" in titles
    assert "BATCH_SIZE 2**6 -> 2**7" in titles
    first = hypotheses[0]
    assert first.proposer == "mutation"
    assert first.task_id == "sample"
    assert first.parent_commit == "c0ffee"
    assert first.rationale


def test_never_proposes_the_same_content_twice() -> None:
    """Draining one proposer gives distinct contents, then None."""
    proposer = MutationProposer(seed=7)
    context = make_context(SAMPLE)
    contents = [h.change["train.py"] for h in drain(proposer, context) if h.change]
    assert len(contents) == len(set(contents))
    assert SAMPLE not in contents
    assert proposer.propose(context) is None


def test_skips_contents_already_in_the_history() -> None:
    """A content whose hash the history holds is not proposed, even by a fresh proposer."""
    source = "LEARNING_RATE = 3e-4\n"
    first = MutationProposer(seed=0).propose(make_context(source))
    assert first is not None and first.change is not None
    known = HypothesisSummary(
        hypothesis_id="h1",
        title="an idea from a human",
        proposer="human",
        verdict=Verdict.DISCARDED,
        change_hash=hash_files({p: c.encode() for p, c in first.change.items()}),
    )
    later = drain(MutationProposer(seed=0), make_context(source, history=[known]))
    assert first.change not in [h.change for h in later]
    assert len(later) == 7


def test_widens_steps_only_when_base_steps_are_spent_then_stops() -> None:
    """A float goes x2, x0.5, x1.25, x0.8 first, then x4, x0.25, x10, x0.1, then None."""
    titles = [h.title for h in drain(MutationProposer(seed=1), make_context("SCALE = 1.0\n"))]
    new_values = [float(t.rsplit(" ", 1)[1]) for t in titles]
    assert sorted(new_values[:4]) == [0.5, 0.8, 1.25, 2.0]
    assert sorted(new_values[4:]) == [0.1, 0.25, 4.0, 10.0]


def test_positive_ints_stay_at_least_one() -> None:
    """A count or size is never pushed to zero or below; a zero only moves up."""
    for value in (1, 2, 3, 5, 64, 1000):
        assert all(new >= 1 for new, _ in perturbations(value))
    assert all(new > 0 for new, _ in perturbations(0))
    assert all(new > 0 for new, _ in perturbations(0.0))
    assert all(new < 0 for new, _ in perturbations(-5))


def test_fractions_stay_between_zero_and_one() -> None:
    """A decay like 0.95 moves by its distance to 1 (0.9, 0.975), never to 1 or past it."""
    for value in (0.05, 0.5, 0.9, 0.95, 0.999):
        assert all(0 < new < 1 for new, _ in perturbations(value, fraction=True))
    base = [new for new, widened in perturbations(0.95, fraction=True) if not widened]
    assert sorted(round(new, 6) for new in base) == [0.9, 0.9375, 0.96, 0.975]
    titles = {h.title for h in drain(MutationProposer(), make_context("ADAM_BETA2 = 0.95\n"))}
    assert "ADAM_BETA2 0.95 -> 0.975" in titles
    assert all(float(t.rsplit(" ", 1)[1]) < 1 for t in titles)
    assert "THRESHOLD 0.5 -> 1.0" in {
        h.title for h in drain(MutationProposer(), make_context("THRESHOLD = 0.5\n"))
    }


def test_learns_which_direction_paid_off_by_metric_direction() -> None:
    """The same deltas favour raising when the metric is maximised, lowering when minimised."""
    history = [summary("X 1.0 -> 2.0", Verdict.DISCARDED, +0.01, n) for n in range(12)]
    history += [summary("X 1.0 -> 0.5", Verdict.DISCARDED, -0.01, n) for n in range(12)]
    for seed in range(5):
        up = MutationProposer(seed).propose(make_context("X = 1.0\n", history=history))
        down = MutationProposer(seed).propose(
            make_context("X = 1.0\n", direction=Direction.MINIMIZE, history=history)
        )
        assert up is not None and down is not None
        assert float(up.title.rsplit(" ", 1)[1]) > 1.0
        assert float(down.title.rsplit(" ", 1)[1]) < 1.0


def test_pushes_on_after_a_kept_change() -> None:
    """After a kept change the same constant moves the same way again; the rationale says why."""
    history = [
        summary("LR 1e-3 -> 2e-3", Verdict.KEPT, +0.012, 1),
        summary("DEPTH 4 -> 5", Verdict.DISCARDED, -0.02, 2),
        summary("LR 2e-3 -> 4e-3", Verdict.KEPT, +0.004, 3),
    ]
    source = "LR = 4e-3\nDEPTH = 4\nWIDTH = 64\n"
    for seed in range(5):
        hypothesis = MutationProposer(seed).propose(make_context(source, history=history))
        assert hypothesis is not None
        assert hypothesis.title == "LR 4e-3 -> 8e-3"
        assert "paid off twice: +0.012, +0.004" in hypothesis.rationale


def test_spreads_over_arms_while_one_is_in_flight() -> None:
    """With raising X in flight, the next proposal lowers it instead of raising it again."""
    in_flight = [summary("X 1.0 -> 2.0", Verdict.PENDING, None)]
    for seed in range(5):
        hypothesis = MutationProposer(seed).propose(make_context("X = 1.0\n", in_flight=in_flight))
        assert hypothesis is not None
        assert float(hypothesis.title.rsplit(" ", 1)[1]) < 1.0


def test_nothing_to_move_is_none() -> None:
    """A file without numeric constants (or one that does not parse) gives None."""
    assert MutationProposer().propose(make_context("NAME = 'x'\nprint(NAME)\n")) is None
    assert MutationProposer().propose(make_context("X = (\n")) is None


# ---- a keep/discard loop through the real runner ------------------------------------------

TOY_TOML = """
[task]
name = "toy"
editable = ["train.py"]
protected = []
budget_s = 10

[metric]
name = "score"
direction = "maximize"
"""
TOY_TRAIN = """import math

STEP_SIZE = 0.01  # the best is 0.2
WIDTH = 4  # the best is 12

score = -math.log(STEP_SIZE / 0.2) ** 2 - ((WIDTH - 12) / 8) ** 2
print("---")
print(f"score: {score:.6f}")
"""


@dataclass
class LoopOutcome:
    baseline: float
    best: float
    history: list[HypothesisSummary]


def keep_or_discard(
    runner: Runner, task_dir: Path, scratch: Path, proposer: MutationProposer, experiments: int
) -> LoopOutcome:
    """AutoResearch's loop in miniature: run the head, keep each change that beats it by more
    than the task's min_effect, discard the rest."""
    spec = load_task(task_dir)
    head_dir = scratch / "head"
    shutil.copytree(task_dir, head_dir)
    baseline = runner.run(head_dir, spec)
    assert baseline.status == "ok" and baseline.metric is not None, baseline.error
    best = baseline.metric
    history: list[HypothesisSummary] = []
    for n in range(experiments):
        head_files = {path: (head_dir / path).read_text() for path in spec.editable}
        context = ProposerContext(
            task_id=spec.name,
            spec=spec,
            head_commit=f"head-{sum(h.verdict is Verdict.KEPT for h in history)}",
            head_files=head_files,
            head_metric=best,
            history=history,
        )
        hypothesis = proposer.propose(context)
        if hypothesis is None or hypothesis.change is None:
            break
        candidate_dir = scratch / f"experiment-{n}"
        shutil.copytree(head_dir, candidate_dir)
        for path, content in hypothesis.change.items():
            (candidate_dir / path).write_text(content)
        result = runner.run(candidate_dir, spec)
        delta = None if result.metric is None else result.metric - best
        if result.status != "ok" or result.metric is None:
            verdict = Verdict.CRASHED
        elif spec.is_better(result.metric, best) and abs(result.metric - best) > spec.min_effect:
            verdict = Verdict.KEPT
        else:
            verdict = Verdict.DISCARDED
        history.append(
            HypothesisSummary(
                hypothesis_id=f"h{n}",
                title=hypothesis.title,
                proposer=hypothesis.proposer,
                verdict=verdict,
                delta=delta,
                metric=result.metric,
                change_hash=hash_files({p: c.encode() for p, c in hypothesis.change.items()}),
            )
        )
        if verdict is Verdict.KEPT:
            assert result.metric is not None
            best = result.metric
            shutil.rmtree(head_dir)
            candidate_dir.rename(head_dir)
    return LoopOutcome(baseline.metric, best, history)


def make_runner(tmp_path: Path) -> Runner:
    return Runner(work_root=tmp_path / "work", cache_root=tmp_path / "cache", sandbox=Unsandboxed())


def test_improves_a_toy_task_through_the_runner(tmp_path: Path) -> None:
    """On a task with a known optimum, kept changes move the score up within 15 experiments."""
    task_dir = write_task(tmp_path / "toy", {"task.toml": TOY_TOML, "train.py": TOY_TRAIN})
    outcome = keep_or_discard(
        make_runner(tmp_path), task_dir, tmp_path / "scratch", MutationProposer(seed=0), 15
    )
    assert outcome.best > outcome.baseline
    assert sum(h.verdict is Verdict.KEPT for h in outcome.history) >= 2


def test_moves_judged_on_an_earlier_head_come_last() -> None:
    """A move already judged ("X 1.0 -> 2.0", on another head) waits until every other is spent."""
    history = [summary("X 1.0 -> 2.0", Verdict.DISCARDED, -0.5)]
    titles = [
        h.title for h in drain(MutationProposer(), make_context("X = 1.0\n", history=history))
    ]
    assert len(titles) == 8
    assert titles[-1] == "X 1.0 -> 2.0"


def test_a_move_not_reproduced_though_its_runs_gained_is_tried_again_on_a_later_head() -> None:
    """ "X 1.0 -> 2.0" not reproduced although its two runs averaged a gain: on a later head it
    is among the base steps again, not last; one whose runs lost waits until the end."""
    for delta, place in ((0.5, range(4)), (-0.5, [7])):
        history = [summary("X 1.0 -> 2.0", Verdict.NOT_REPRODUCED, delta)]
        context = make_context("X = 1.0\n", history=history)
        titles = [h.title for h in drain(MutationProposer(), context)]
        assert len(titles) == 8
        assert titles.index("X 1.0 -> 2.0") in place


@pytest.mark.slow
def test_improves_the_sharpe_task_through_the_runner(tmp_path: Path) -> None:
    """On the shipped fast task, 15 experiments through the real runner beat the baseline."""
    outcome = keep_or_discard(
        make_runner(tmp_path),
        REPO / "tasks" / "sharpe",
        tmp_path / "scratch",
        MutationProposer(),
        15,
    )
    spec = load_task(REPO / "tasks" / "sharpe")
    assert outcome.best > outcome.baseline + spec.min_effect
    kept = [h for h in outcome.history if h.verdict is Verdict.KEPT]
    assert kept and all(h.delta is not None and h.delta > spec.min_effect for h in kept)
