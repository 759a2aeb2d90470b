"""The offline study proposer: Optuna's TPE over a task's numeric constants, ask and tell.

Each call rebuilds the study from the task's history (so a restarted proposer picks up where the
last one stopped: its memory is the history, not the process). Every measured configuration of
its own is told with its score, crashed or unusable ones (a score of exactly 0.0) with a score
below the worst, the head with its mean, and those in flight as running (TPE's constant liar
keeps parallel proposals apart). It then asks for one configuration, keeps the few largest moves
from the head (a change of a handful of constants reads as an idea and is judged as one), and
submits it against the head. The space is `space.build_space`'s.

Before asking for anything new it proposes again what should not be lost: the moves of the best
configuration measured, when the head is below it and it was never kept (its change conflicted
with a head that moved), and its own proposals withdrawn unrun when the head moved
(`autoswarm/coordinator/rederive.py`) whose constants the head left as they were; a hypothesis
waiting for code on the head is implemented so (`implements`).

What it guarantees: every change parses and moves only module-level UPPER_CASE numbers, every
other byte kept; it never proposes a content whose hash is in the history or in flight, nor one
it proposed before; the same history gives the same proposal. Titles read
"LR 0.1 -> 0.2, DEPTH 4 -> 6"; the rationale ends with a `Values:` line holding the whole
configuration, which is how later calls read a trial back. What it does not do: invent code,
or read non-Python files.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import optuna
from optuna.distributions import BaseDistribution, FloatDistribution, IntDistribution
from optuna.study import StudyDirection
from optuna.trial import TrialState, create_trial

from autoswarm.coordinator.proposers.edits import change_hashes
from autoswarm.coordinator.proposers.mutation import (
    DEFAULT_EXCLUDE,
    Constant,
    Number,
    editable_constants,
    parse_number,
)
from autoswarm.coordinator.proposers.mutation import (
    PROPOSER_NAME as MUTATION_NAME,
)
from autoswarm.coordinator.proposers.space import Dimension, Measured, build_space, labels_of
from autoswarm.shared.models import (
    MAX_TITLE_CHARS,
    HypothesisCreate,
    HypothesisSummary,
    ProposerContext,
    Verdict,
)

logger = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)

PROPOSER_NAME = "optuna"
# At most this many constants move in one proposal: a handful of moves reads and is judged as
# one idea, and searched no worse than any number (docs/benchmarks.md, offline search).
MAX_MOVES = 3
# TPE's random start, counted in measured configurations (the head is one).
STARTUP_TRIALS = 3
# Asks per call before giving up (each one repeated a content, or moved nothing).
MAX_ASKS = 64

_VALUES = re.compile(r"^Values: (?P<values>.*)$", re.MULTILINE)
_ASSIGNMENT = re.compile(r"^(?P<label>[^=\s]+)=(?P<value>\S+)$")
_MOVE = re.compile(r"^(?P<label>(?:\S+:)?[A-Z][A-Z0-9_]*) (?P<old>\S+) -> (?P<new>\S+)$")


@dataclass(frozen=True)
class Trial:
    """One configuration read back from the history, with what it scored."""

    measured: Measured
    state: TrialState
    value: float | None  # the metric as measured (None: unusable, or not measured yet)
    verdict: Verdict = Verdict.PENDING
    hypothesis_id: str = ""
    waiting: bool = False  # a conflict waiting for code on the head (the context's pending)


class StudyProposer:
    """Proposes the configuration Optuna's TPE asks for next, as a change of a few constants."""

    name = PROPOSER_NAME

    def __init__(
        self,
        seed: int = 0,
        *,
        exclude: Iterable[str] = DEFAULT_EXCLUDE,
        max_moves: int | None = MAX_MOVES,
        startup_trials: int = STARTUP_TRIALS,
    ) -> None:
        self._seed = seed
        self._exclude = tuple(exclude)
        self._max_moves = max_moves
        self._startup = startup_trials
        self._proposed: set[str] = set()

    def propose(self, context: ProposerContext) -> HypothesisCreate | None:
        """The next hypothesis for this head, or None when no new content was found."""
        constants = self._constants(context)
        if not constants:
            logger.info("optuna: task %s: no numeric constants to move", context.task_id)
            return None
        trials = read_trials(context, labels_of(constants).values())
        dimensions = build_space(constants, [t.measured for t in trials])
        study = self._study(context, dimensions, trials)
        blocked = self._proposed | {
            h.change_hash for h in context.history + context.in_flight if h.change_hash
        }
        for moves, implements, why in self._again(context, dimensions, trials):
            change = rewrite(context.head_files, dimensions, moves)
            hashes = change_hashes(change, context.head_files) if change else set()
            if change and not hashes & blocked:
                self._proposed |= hashes
                return self._hypothesis(context, dimensions, trials, moves, change, why, implements)
        base = incumbent(context, dimensions, trials)
        for _ in range(MAX_ASKS):
            trial = study.ask()
            values = {d.label: d.value(_suggest(trial, d)) for d in dimensions}
            moved = self._moves(dimensions, values, base)
            change = rewrite(context.head_files, dimensions, moved)
            hashes = change_hashes(change, context.head_files) if change else set()
            if not change or hashes & blocked:
                study.tell(trial, state=TrialState.FAIL)
                continue
            self._proposed |= hashes
            return self._hypothesis(context, dimensions, trials, moved, change, "", None)
        logger.info("optuna: task %s: no new configuration in %d asks", context.task_id, MAX_ASKS)
        return None

    def _again(
        self, context: ProposerContext, dimensions: list[Dimension], trials: list[Trial]
    ) -> list[tuple[dict[str, Number], str | None, str]]:
        """Changes worth proposing again before anything new: (moves, the waiting hypothesis
        they implement, why). The best configuration measured that the head is below, then
        proposals of its own withdrawn unrun when the head moved (a conflict in git's lines)
        whose constants the head left as they were."""
        again: list[tuple[dict[str, Number], str | None, str]] = []
        best = best_unkept(context, dimensions, trials)
        if best is not None:
            moves, trial = best
            why = "back to the best configuration measured, which the head is below"
            again.append((moves, trial.hypothesis_id if trial.waiting else None, why))
        for summary in context.pending:
            moves = _untouched_moves(summary, dimensions) if summary.proposer == self.name else {}
            if moves and summary.verdict is Verdict.CONFLICT and summary.metric is None:
                why = "again: withdrawn unrun when the head moved, its constants untouched"
                again.append((moves, summary.hypothesis_id, why))
        return again

    def _constants(self, context: ProposerContext) -> list[Constant]:
        return editable_constants(context, self._exclude)

    def _study(
        self, context: ProposerContext, dimensions: list[Dimension], trials: list[Trial]
    ) -> optuna.Study:
        """A study over `dimensions` told every trial read back (see the module doc)."""
        seed = (self._seed * 1_000_003 + len(context.history) + len(context.in_flight)) % 2**32
        sampler = optuna.samplers.TPESampler(
            seed=seed,
            n_startup_trials=self._startup,
            multivariate=True,
            constant_liar=True,
        )
        direction = (
            StudyDirection.MINIMIZE if context.spec.lower_is_better else StudyDirection.MAXIMIZE
        )
        study = optuna.create_study(direction=direction, sampler=sampler)
        distributions = {d.label: _distribution(d) for d in dimensions}
        head = {d.label: d.constant.value for d in dimensions}
        told = list(trials)
        if context.head_metric is not None:
            head_trial = Measured(head, True, frozenset(), head)
            told.append(Trial(head_trial, TrialState.COMPLETE, context.head_metric))
        fill = _penalty(told, context.spec.lower_is_better)
        for trial in told:
            params = {
                d.label: _coordinate(d, trial.measured.values.get(d.label, d.constant.value))
                for d in dimensions
            }
            value = trial.value if trial.value is not None else fill
            study.add_trial(
                create_trial(
                    state=trial.state,
                    params=params,
                    distributions=distributions,
                    value=value if trial.state is TrialState.COMPLETE else None,
                )
            )
        return study

    def _moves(
        self,
        dimensions: list[Dimension],
        values: Mapping[str, Number],
        base: Mapping[str, Number],
    ) -> dict[str, Number]:
        """The constants the asked configuration moves from `base`, the largest `max_moves`
        of them, on top of `base`'s own moves from the head."""
        moves = {
            d.label: (values[d.label], _distance(d, values[d.label], base[d.label]))
            for d in dimensions
            if values[d.label] != base[d.label]
        }
        ranked = sorted(moves, key=lambda label: -moves[label][1])
        keep = ranked if self._max_moves is None else ranked[: self._max_moves]
        config = {**base, **{label: moves[label][0] for label in keep}}
        return {d.label: config[d.label] for d in dimensions if config[d.label] != d.constant.value}

    def _hypothesis(
        self,
        context: ProposerContext,
        dimensions: list[Dimension],
        trials: list[Trial],
        moved: Mapping[str, Number],
        change: dict[str, str],
        why: str,
        implements: str | None,
    ) -> HypothesisCreate:
        by_label = {d.label: d for d in dimensions}
        parts = [
            f"{label} {''.join(by_label[label].constant.text.split())} -> "
            f"{by_label[label].text(value)}"
            for label, value in moved.items()
        ]
        title = _title(parts)
        values = {d.label: moved.get(d.label, d.constant.value) for d in dimensions}
        rationale = _rationale(context, dimensions, trials, moved, values)
        if why:
            rationale = f"Proposed {why}.\n{rationale}"
        logger.info("optuna: task %s: proposing %s", context.task_id, title)
        return HypothesisCreate(
            task_id=context.task_id,
            title=title,
            rationale=rationale,
            change=change,
            proposer=self.name,
            parent_commit=context.head_commit,
            implements=implements,
        )


def read_trials(context: ProposerContext, labels: Iterable[str]) -> list[Trial]:
    """Every configuration of this proposer's (or the mutation proposer's) that the history
    and the queue hold, oldest first. Constants a trial does not name are read as the head's."""
    known = set(labels)
    trials = []
    head_metric = context.head_metric
    waiting = {h.hypothesis_id for h in context.pending if h.verdict is Verdict.CONFLICT}
    pending = [h for h in context.pending if h.hypothesis_id in waiting]
    for summary in context.history + context.in_flight + pending:
        measured = _measured(summary, known)
        if measured is None:
            continue
        known_as = summary.hypothesis_id, summary.hypothesis_id in waiting
        if summary.verdict is Verdict.PENDING:
            trials.append(Trial(measured, TrialState.RUNNING, None, Verdict.PENDING, *known_as))
        elif summary.verdict is Verdict.CRASHED or _unusable(summary.metric, head_metric):
            unusable = Measured(measured.values, False, measured.moved, measured.base)
            trials.append(Trial(unusable, TrialState.COMPLETE, None, summary.verdict, *known_as))
        elif summary.metric is not None and math.isfinite(summary.metric):
            trials.append(
                Trial(measured, TrialState.COMPLETE, summary.metric, summary.verdict, *known_as)
            )
    return trials


def best_unkept(
    context: ProposerContext, dimensions: list[Dimension], trials: list[Trial]
) -> tuple[dict[str, Number], Trial] | None:
    """The moves of the best configuration measured, made on the head, when it beats the head by
    more than min_effect and the noise yet was never kept (it conflicted with a head that
    moved, or its explore was measured on an old head) and was not proposed again since;
    None otherwise. The head never stays below what the swarm measured better."""
    head_metric, spec = context.head_metric, context.spec
    if head_metric is None:
        return None
    margin = max(spec.min_effect, 2 * (context.head_std or 0.0))
    counts: dict[tuple[tuple[str, Number], ...], int] = {}
    for trial in trials:
        counts[_moves_key(trial)] = counts.get(_moves_key(trial), 0) + 1
    best: Trial | None = None
    for trial in trials:
        if (
            trial.value is None
            or trial.verdict in (Verdict.KEPT, Verdict.NOT_REPRODUCED, Verdict.PENDING)
            or counts[_moves_key(trial)] > 1
            or not spec.is_better(trial.value, head_metric)
            or abs(trial.value - head_metric) <= margin
        ):
            continue
        if best is None or (best.value is not None and spec.is_better(trial.value, best.value)):
            best = trial
    if best is None:
        return None
    # Its own moves, on today's head: the exact configuration is code already explored.
    # Read through the space: a value it cannot hold (a sign flip, past a wall) is not made.
    moves = {}
    for d in dimensions:
        value = best.measured.values.get(d.label)
        if d.label not in best.measured.moved or value is None or d.coordinate(value) is None:
            continue
        if (written := d.value(_coordinate(d, value))) != d.constant.value:
            moves[d.label] = written
    return (moves, best) if moves else None


def incumbent(
    context: ProposerContext, dimensions: list[Dimension], trials: list[Trial]
) -> dict[str, Number]:
    """Where new moves start from, by label: on a task that has shown no noise, the best
    configuration of ours measured above the head (by less than min_effect, or it would be
    kept), so gains too small to keep one by one add up; else the head's values."""
    head = {d.label: d.constant.value for d in dimensions}
    if context.head_metric is None or context.head_std != 0.0:
        return head
    best: Trial | None = None
    for trial in trials:
        complete = trial.state is TrialState.COMPLETE and trial.measured.usable
        if not complete or trial.value is None or set(head) - set(trial.measured.values):
            continue
        against = best.value if best is not None and best.value is not None else None
        if context.spec.is_better(trial.value, context.head_metric if against is None else against):
            best = trial
    if best is None:
        return head
    by_label = {d.label: d for d in dimensions}
    return {
        label: by_label[label].value(_coordinate(by_label[label], best.measured.values[label]))
        for label in head
    }


def _moves_key(trial: Trial) -> tuple[tuple[str, Number], ...]:
    """A trial's own moves: proposed again on a later head, the moves are the same."""
    values = trial.measured.values
    return tuple(
        sorted((label, values[label]) for label in trial.measured.moved if label in values)
    )


def _untouched_moves(summary: HypothesisSummary, dimensions: list[Dimension]) -> dict[str, Number]:
    """A title's moves, when every constant it moves still has its old value on the head (and
    each new value is one the space holds); else nothing."""
    by_label = {d.label: d for d in dimensions}
    moves: dict[str, Number] = {}
    for part in summary.title.split(", "):
        match = _MOVE.match(part.strip())
        dim = by_label.get(match["label"]) if match else None
        old = parse_number(match["old"]) if match else None
        new = parse_number(match["new"]) if match else None
        if dim is None or old is None or new is None or old != dim.constant.value:
            return {}
        if dim.coordinate(new) is None:
            return {}
        moves[dim.label] = dim.value(_coordinate(dim, new))
    return {label: v for label, v in moves.items() if v != by_label[label].constant.value}


def _unusable(metric: float | None, head_metric: float | None) -> bool:
    """A score of exactly 0.0 where the head scores otherwise: nothing happened (a threshold
    no signal passes, an empty portfolio), whatever the metric's direction."""
    return metric == 0.0 and head_metric is not None and head_metric != 0.0


def _measured(summary: HypothesisSummary, known: set[str]) -> Measured | None:
    """A summary's configuration: its `Values:` line and title's moves (ours), or the title's
    one move (the mutation proposer's); None for anyone else's, or a title we cannot read."""
    if summary.proposer not in (PROPOSER_NAME, MUTATION_NAME):
        return None
    base: dict[str, Number] = {}
    new: dict[str, Number] = {}
    for part in summary.title.split(", "):
        match = _MOVE.match(part.strip())
        old_value = parse_number(match["old"]) if match else None
        new_value = parse_number(match["new"]) if match else None
        if match is None or old_value is None or new_value is None:
            continue
        base[match["label"]] = old_value
        new[match["label"]] = new_value
    values = dict(new)
    line = _VALUES.search(summary.rationale) if summary.proposer == PROPOSER_NAME else None
    if line is not None:
        for item in line["values"].split(", "):
            assignment = _ASSIGNMENT.match(item.strip())
            value = parse_number(assignment["value"]) if assignment else None
            if assignment is not None and value is not None:
                values[assignment["label"]] = value
    values = {label: v for label, v in values.items() if label in known}
    if not values:
        return None
    return Measured(values, True, frozenset(new) & known, base)


def rewrite(
    head_files: Mapping[str, str], dimensions: list[Dimension], moved: Mapping[str, Number]
) -> dict[str, str]:
    """The changed editable files: each moved constant's literal rewritten, nothing else."""
    edits: dict[str, list[tuple[Constant, str]]] = {}
    for dim in dimensions:
        if dim.label in moved:
            edits.setdefault(dim.constant.path, []).append(
                (dim.constant, dim.text(moved[dim.label]))
            )
    change = {}
    for path, items in edits.items():
        source = head_files[path]
        for constant, text in sorted(items, key=lambda item: -item[0].start):
            source = source[: constant.start] + text + source[constant.end :]
        if source != head_files[path]:
            change[path] = source
    return change


def _distribution(dim: Dimension) -> BaseDistribution:
    if dim.integer:
        return IntDistribution(int(dim.low), int(dim.high), log=dim.log and dim.low >= 1)
    return FloatDistribution(dim.low, dim.high, log=dim.log and dim.low > 0)


def _suggest(trial: optuna.Trial, dim: Dimension) -> float:
    distribution = _distribution(dim)
    if isinstance(distribution, IntDistribution):
        return trial.suggest_int(
            dim.label, distribution.low, distribution.high, log=distribution.log
        )
    assert isinstance(distribution, FloatDistribution)
    return trial.suggest_float(dim.label, distribution.low, distribution.high, log=distribution.log)


def _coordinate(dim: Dimension, value: Number) -> float:
    """A measured value on the dimension's scale, clipped into its range (a value past a
    wall counts as the wall: the same verdict likely holds there)."""
    coordinate = dim.coordinate(value)
    if coordinate is None:
        coordinate = dim.coordinate(dim.constant.value) or dim.low
    clipped = dim.clip(coordinate)
    return round(clipped) if dim.integer else clipped


def _distance(dim: Dimension, value: Number, start: Number) -> float:
    """How far a value moves from `start`, as a fraction of the room on that side (on its
    scale): a uniform draw moves every constant equally far, wherever it starts."""
    here, there = dim.coordinate(start), dim.coordinate(value)
    if here is None or there is None:
        return 1.0
    low, high = dim.low, dim.high
    if dim.log and low > 0:
        here, there, low, high = (math.log(x) for x in (here, there, low, high))
    room = high - here if there > here else here - low
    return abs(there - here) / room if room > 0 else 0.0


def _penalty(trials: list[Trial], lower_is_better: bool) -> float:
    """The score an unusable configuration is told: below the worst usable one by the
    spread of the usable scores (so TPE counts it among the bad, never the good)."""
    scores = [t.value for t in trials if t.value is not None and t.measured.usable]
    if not scores:
        return 1.0 if lower_is_better else -1.0
    spread = max(max(scores) - min(scores), 0.1 * max(abs(s) for s in scores), 1e-6)
    return max(scores) + spread if lower_is_better else min(scores) - spread


def _title(parts: list[str]) -> str:
    title = ", ".join(parts)
    if len(title) <= MAX_TITLE_CHARS:
        return title
    shown: list[str] = []
    for n, part in enumerate(parts):
        more = f", and {len(parts) - n} more"
        if len(", ".join([*shown, part])) + len(more) > MAX_TITLE_CHARS:
            return ", ".join(shown) + more
        shown.append(part)
    return title


def _rationale(
    context: ProposerContext,
    dimensions: list[Dimension],
    trials: list[Trial],
    moved: Mapping[str, Number],
    values: Mapping[str, Number],
) -> str:
    metric = context.spec.metric.name
    scored = [t for t in trials if t.state is TrialState.COMPLETE]
    lines = [
        f"Optuna TPE over {len(dimensions)} constants, told {len(scored)} measured "
        f"configurations ({sum(not t.measured.usable for t in scored)} unusable) and "
        f"{len(trials) - len(scored)} in flight; the head's {metric} is "
        + (f"{context.head_metric:.6g}." if context.head_metric is not None else "unmeasured.")
    ]
    for dim in dimensions:
        if dim.label not in moved:
            continue
        tried = [t for t in scored if dim.label in t.measured.moved]
        better = [
            t
            for t in tried
            if t.value is not None
            and context.head_metric is not None
            and context.spec.is_better(t.value, context.head_metric)
        ]
        low, high = dim.value(dim.low), dim.value(dim.high)
        lines.append(
            f"{dim.label}: {dim.scale.value} scale over {dim.text(low)}..{dim.text(high)}; "
            f"moved in {len(tried)} measured before, {len(better)} of them above today's head."
        )
    assignments = ", ".join(f"{label}={_plain(value)}" for label, value in values.items())
    lines.append(f"Values: {assignments}")
    return "\n".join(lines)


def _plain(value: Number) -> str:
    return str(value) if isinstance(value, int) else repr(float(value))
