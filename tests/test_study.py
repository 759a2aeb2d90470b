"""The study proposer: Optuna over the constants, readable, never repeating, read back from
the history alone, walled off from values the task cannot use."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from autoswarm.coordinator.proposers.mutation import find_constants
from autoswarm.coordinator.proposers.space import Scale, build_space
from autoswarm.coordinator.proposers.study import MAX_MOVES, StudyProposer, read_trials
from autoswarm.shared.models import HypothesisCreate, HypothesisSummary, ProposerContext, Verdict
from autoswarm.shared.task import Direction, MetricSpec, TaskSpec, hash_files
from tests.cli_helpers import invoke
from tests.task_helpers import write_task
from tests.test_cli import Served, served  # noqa: F401  (the fixture)
from tests.test_mutation import TOY_TOML, TOY_TRAIN, keep_or_discard, make_runner

SOURCE = """import math

LEARNING_RATE = 3e-4  # step size
BATCH_SIZE = 2**6  # rows per step
DEPTH = 4  # layers
ADAM_BETA2 = 0.95  # second-moment decay
THRESHOLD = 0.5  # smallest signal worth a position
SKIP = 0  # days left out
SEED = 42  # never moved

print("---")
print(f"score: {math.log(LEARNING_RATE) + DEPTH:.6f}")
"""
MOVE = re.compile(r"^(?P<name>[A-Z][A-Z0-9_]*) (?P<old>\S+) -> (?P<new>\S+)$")


def make_context(
    source: str = SOURCE,
    *,
    history: list[HypothesisSummary] | None = None,
    in_flight: list[HypothesisSummary] | None = None,
    head_metric: float | None = 1.0,
) -> ProposerContext:
    spec = TaskSpec(name="sample", metric=MetricSpec(name="score", direction=Direction.MAXIMIZE))
    return ProposerContext(
        task_id="sample",
        spec=spec,
        head_commit="c0ffee",
        head_files={"train.py": source},
        head_metric=head_metric,
        history=history or [],
        in_flight=in_flight or [],
    )


def judged(
    hypothesis: HypothesisCreate, n: int, verdict: Verdict, metric: float | None
) -> HypothesisSummary:
    """A proposal as the history lists it once the judge has decided it."""
    assert hypothesis.change is not None
    return HypothesisSummary(
        hypothesis_id=f"h{n}",
        title=hypothesis.title,
        proposer=hypothesis.proposer,
        verdict=verdict,
        metric=metric,
        delta=None if metric is None else metric - 1.0,
        change_hash=hash_files({p: c.encode() for p, c in hypothesis.change.items()}),
        rationale=hypothesis.rationale,
    )


def values_of(hypothesis: HypothesisCreate) -> dict[str, float]:
    assert hypothesis.change is not None
    return {c.name: c.value for c in find_constants(hypothesis.change["train.py"])}


def propose_many(count: int, metric: float = 0.5) -> list[HypothesisCreate]:
    """`count` proposals, each judged (discarded at `metric`) before the next is asked for."""
    history: list[HypothesisSummary] = []
    out = []
    for n in range(count):
        hypothesis = StudyProposer(seed=1).propose(make_context(history=history))
        assert hypothesis is not None
        out.append(hypothesis)
        history.append(judged(hypothesis, n, Verdict.DISCARDED, metric + n / 100))
    return out


def test_never_proposes_a_content_twice_nor_one_in_the_history_or_in_flight() -> None:
    """Over 30 judged proposals every content is new, and a content a human has in flight is
    not proposed again."""
    contents = [h.change["train.py"] for h in propose_many(30) if h.change]
    assert len(set(contents)) == 30
    assert SOURCE not in contents
    first = StudyProposer(seed=2).propose(make_context())
    assert first is not None and first.change is not None
    theirs = HypothesisSummary(
        hypothesis_id="h-human",
        title="an idea from a human",
        proposer="human",
        verdict=Verdict.PENDING,
        change_hash=hash_files({p: c.encode() for p, c in first.change.items()}),
    )
    again = StudyProposer(seed=2).propose(make_context(in_flight=[theirs]))
    assert again is not None and again.change != first.change


def test_titles_name_each_move_in_the_files_own_notation() -> None:
    """Titles read "NAME old -> new, ..." with at most 3 moves, each as the file writes
    numbers (2**k for a power of two), and only the named constants change."""
    head = {c.name: c.value for c in find_constants(SOURCE)}
    for hypothesis in propose_many(12):
        moves = [MOVE.match(part) for part in hypothesis.title.split(", ")]
        assert all(moves), hypothesis.title
        assert 1 <= len(moves) <= 3
        values = values_of(hypothesis)
        moved = {m["name"] for m in moves if m}
        assert {name for name in head if values[name] != head[name]} == moved
        for m in moves:
            assert m is not None
            if m["name"] == "BATCH_SIZE":
                assert m["old"] == "2**6" and re.fullmatch(r"2\*\*\d+", m["new"])
        assert "SEED" not in moved
        assert hypothesis.proposer == "optuna" and hypothesis.parent_commit == "c0ffee"


def test_scales_follow_values_and_names() -> None:
    """A learning rate on a log scale, a BETA on its distance to 1, a power of two by its
    exponent, a count as an int; proposed values keep type, sign and (0, 1) for a decay."""
    scales = {d.label: d.scale for d in build_space(find_constants(SOURCE), [])}
    assert scales["LEARNING_RATE"] is Scale.LOG
    assert scales["ADAM_BETA2"] is Scale.DECAY
    assert scales["BATCH_SIZE"] is Scale.POWER_OF_TWO
    assert scales["DEPTH"] is Scale.INT_LOG
    for hypothesis in propose_many(20):
        values = values_of(hypothesis)
        assert values["LEARNING_RATE"] > 0
        assert 0 < values["ADAM_BETA2"] < 1
        batch = int(values["BATCH_SIZE"])
        assert batch == values["BATCH_SIZE"] and batch & (batch - 1) == 0
        assert isinstance(values["DEPTH"], int) and values["DEPTH"] >= 1


def test_a_restarted_proposer_reads_the_same_study_from_the_history() -> None:
    """Its memory is the history: trials read back hold the proposed values, and two fresh
    proposers given the same history propose the same change."""
    proposals = propose_many(8)
    history = [judged(h, n, Verdict.DISCARDED, 0.5) for n, h in enumerate(proposals)]
    labels = [c.name for c in find_constants(SOURCE) if c.name != "SEED"]
    trials = read_trials(make_context(history=history), labels)
    assert [dict(t.measured.values) for t in trials] == [
        {k: v for k, v in values_of(h).items() if k != "SEED"} for h in proposals
    ]
    one = StudyProposer(seed=5).propose(make_context(history=history))
    other = StudyProposer(seed=5).propose(make_context(history=history))
    assert one is not None and other is not None
    assert (one.title, one.change) == (other.title, other.change)


def test_a_value_that_scores_exactly_zero_or_crashes_walls_off_its_side() -> None:
    """THRESHOLD 0.5 -> 4.0 scored exactly 0.0 and DEPTH 4 -> 30 crashed: later proposals keep
    THRESHOLD below 4.0 (halfway on its scale, ~1.41) and DEPTH below 30."""
    history = [
        HypothesisSummary(
            hypothesis_id="h1",
            title="THRESHOLD 0.5 -> 4.0",
            proposer="optuna",
            verdict=Verdict.DISCARDED,
            metric=0.0,
            delta=-1.0,
        ),
        HypothesisSummary(
            hypothesis_id="h2", title="DEPTH 4 -> 30", proposer="optuna", verdict=Verdict.CRASHED
        ),
    ]
    seen_threshold, seen_depth = [], []
    for seed in range(25):
        hypothesis = StudyProposer(seed=seed).propose(make_context(history=history))
        assert hypothesis is not None
        values = values_of(hypothesis)
        seen_threshold.append(values["THRESHOLD"])
        seen_depth.append(values["DEPTH"])
    assert max(seen_threshold) < 1.42
    assert max(seen_depth) < 30
    assert max(seen_threshold) > 0.5 or max(seen_depth) > 4  # it still moves up, short of it


def test_improves_a_toy_task_through_the_runner(tmp_path: Path) -> None:
    """On a task with a known optimum, kept changes move the score up within 15 experiments."""
    task_dir = write_task(tmp_path / "toy", {"task.toml": TOY_TOML, "train.py": TOY_TRAIN})
    outcome = keep_or_discard(
        make_runner(tmp_path),
        task_dir,
        tmp_path / "scratch",
        StudyProposer(seed=0),  # type: ignore[arg-type]
        15,
    )
    assert outcome.best > outcome.baseline
    assert sum(h.verdict is Verdict.KEPT for h in outcome.history) >= 1


def test_a_better_configuration_that_was_never_kept_is_proposed_again_on_the_head() -> None:
    """A change measured at 1.5 (head 1.0) that conflicted with a head that moved meanwhile
    is proposed again, its own moves made on the current head, before anything new (and, while
    it waits for code, implementing it); once."""
    first = StudyProposer(seed=3).propose(make_context())
    assert first is not None
    moves = {m["name"]: m["new"] for m in map(MOVE.match, first.title.split(", ")) if m}
    other = next(name for name in ("DEPTH", "THRESHOLD", "SKIP") if name not in moves)
    line = next(line for line in SOURCE.splitlines() if line.startswith(f"{other} = "))
    moved_head = SOURCE.replace(line, f"{other} = 7")
    lost = judged(first, 1, Verdict.CONFLICT, 1.5)
    again = StudyProposer(seed=3).propose(make_context(moved_head, history=[lost]))
    assert again is not None
    assert set(again.title.split(", ")) == set(first.title.split(", "))
    assert values_of(again)[other] == 7
    assert again.rationale.startswith("Proposed back to the best configuration measured")
    waiting = make_context(moved_head).model_copy(update={"pending": [lost]})
    implemented = StudyProposer(seed=3).propose(waiting)  # waiting for code: implemented
    assert implemented is not None and implemented.implements == lost.hypothesis_id
    assert implemented.change == again.change
    twice = [lost, judged(again, 2, Verdict.CONFLICT, 1.5)]
    third = StudyProposer(seed=3).propose(make_context(moved_head, history=twice))
    assert third is not None and not third.rationale.startswith("Proposed back")


def test_propose_with_the_optuna_proposer(request: pytest.FixtureRequest) -> None:
    """`autoswarm propose --proposer optuna`: offline, two hypotheses whose titles name their
    moves, submitted as the optuna proposer's."""
    coordinator: Served = request.getfixturevalue("served")
    before = {h["hypothesis_id"] for h in coordinator.hypotheses()}
    answer = invoke("propose", "--task", coordinator.task_id, "--proposer", "optuna",
                    "--max-hypotheses", "2", "--queue-ahead", "50", "--join", coordinator.url,
                    "--token", coordinator.token("proposer", "optuna"))  # fmt: skip
    assert answer.exit_code == 0, answer.output
    new = [h for h in coordinator.hypotheses() if h["hypothesis_id"] not in before]
    assert len(new) == 2
    for hyp in new:
        assert all(MOVE.match(part) for part in hyp["title"].split(", ")), hyp["title"]
        assert hyp["proposer"] == "optuna"


def test_a_hostile_history_under_its_name_only_steers_the_search() -> None:
    """Titles and `Values:` lines it cannot use (a sign flip, 1e308, 2**64, nan, junk) under
    its name change no constant's type or sign and never crash it."""
    hostile = [
        ("DEPTH 4 -> 99999999999999999999", Verdict.DISCARDED, 2.0,
         "Values: DEPTH=-5, LEARNING_RATE=1e308, BATCH_SIZE=3, ADAM_BETA2=7, SKIP=-3"),
        ("junk, X -> , LEARNING_RATE 3e-4 -> -1", Verdict.KEPT, 1e300,
         "Values: =, a=b, LEARNING_RATE=nan, THRESHOLD=2**64"),
        ("BATCH_SIZE 2**6 -> 2**64", Verdict.CRASHED, None, ""),
    ]  # fmt: skip
    history = [
        HypothesisSummary(
            hypothesis_id=f"x{n}", title=t, proposer="optuna", verdict=v, metric=m, rationale=r
        )
        for n, (t, v, m, r) in enumerate(hostile)
    ]
    for seed in range(5):
        hypothesis = StudyProposer(seed=seed).propose(make_context(history=history))
        assert hypothesis is not None
        values = values_of(hypothesis)
        assert isinstance(values["DEPTH"], int) and values["DEPTH"] >= 1
        assert values["LEARNING_RATE"] > 0 and 0 < values["ADAM_BETA2"] < 1
        assert (
            values["SKIP"] >= 0 and int(values["BATCH_SIZE"]) & (int(values["BATCH_SIZE"]) - 1) == 0
        )


def test_a_proposal_withdrawn_unrun_is_implemented_again_where_the_head_left_its_constants() -> (
    None
):
    """Two proposals withdrawn as conflicts when the head moved (DEPTH 4 -> 5): the one moving
    only other constants is proposed again, implementing it; the one moving DEPTH is not."""
    head = SOURCE.replace("DEPTH = 4", "DEPTH = 5")

    def withdrawn(n: int, title: str) -> HypothesisSummary:
        return HypothesisSummary(
            hypothesis_id=f"w{n}", title=title, proposer="optuna", verdict=Verdict.CONFLICT
        )

    pending = [
        withdrawn(1, "DEPTH 4 -> 8, SKIP 0 -> 3"),
        withdrawn(2, "SKIP 0 -> 2, THRESHOLD 0.5 -> 0.8"),
    ]
    context = make_context(head).model_copy(update={"pending": pending})
    first = StudyProposer(seed=0).propose(context)
    assert first is not None
    assert first.implements == "w2" and first.title == "SKIP 0 -> 2, THRESHOLD 0.5 -> 0.8"
    assert values_of(first)["DEPTH"] == 5
    context = context.model_copy(update={"pending": pending[:1]})
    second = StudyProposer(seed=0).propose(context)
    assert second is not None and second.implements is None


def test_on_a_task_without_noise_new_moves_start_from_the_best_configuration_measured() -> None:
    """Two proposals measured above the head by gains too small to keep (1.01, 1.02): on a
    task that has shown no noise the next proposal is the better one's configuration with at
    most MAX_MOVES constants moved on top; on a noisy task, moves start from the head."""
    history: list[HypothesisSummary] = []
    for n, metric in enumerate((1.02, 1.01)):
        hypothesis = StudyProposer(seed=4).propose(make_context(history=history))
        assert hypothesis is not None
        history.append(judged(hypothesis, n, Verdict.DISCARDED, metric))
    best = values_of_summary(history[0])
    quiet = make_context(history=history).model_copy(update={"head_std": 0.0})
    proposal = StudyProposer(seed=4).propose(quiet)
    assert proposal is not None
    values = values_of(proposal)
    differs = [name for name, value in values.items() if best.get(name, value) != value]
    assert 1 <= len(differs) <= MAX_MOVES
    noisy = make_context(history=history).model_copy(update={"head_std": 0.01})
    from_head = StudyProposer(seed=4).propose(noisy)
    assert from_head is not None
    moved = [name for name, value in values_of(from_head).items() if head_values()[name] != value]
    assert 1 <= len(moved) <= MAX_MOVES


def values_of_summary(summary: HypothesisSummary) -> dict[str, float]:
    """A judged proposal's whole configuration, from its rationale's `Values:` line."""
    line = summary.rationale.rsplit("Values: ", 1)[1]
    pairs = (item.split("=") for item in line.split(", "))
    return {name: float(value) for name, value in pairs}


def head_values() -> dict[str, float]:
    return {c.name: c.value for c in find_constants(SOURCE)}
