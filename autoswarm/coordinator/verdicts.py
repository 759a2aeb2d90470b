"""Applying a verdict: the judge's decision on one experiment recorded at once.

`Verdicts.conclude` writes a decision's verdict, reason and follow-up in one store script,
guarded by the experiment's `judged` flag (applied once, however often it is repeated);
`withdraw` discards an unfinished experiment that is not needed. The `verdict` event is
built here only (`verdict_event`). Judgements that wait on others are deferred here and
made due again (`undefer`) when a decision may have freed them; the judging pass learns
whether that happened from `take_woken`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from autoswarm.coordinator import judge
from autoswarm.coordinator.baselines import Baselines
from autoswarm.coordinator.models import ExperimentRecord, TaskRecord
from autoswarm.coordinator.plumbing import Plumbing, hardware_of
from autoswarm.coordinator.store import NewExperiment
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.coordinator.store.judging import Observation
from autoswarm.shared.models import ExperimentKind, Verdict

logger = logging.getLogger(__name__)

# How long a judgement that waits on others (a candidate on a head still being measured, a
# merge's replicate that finished before the merge) waits before it is looked at again; a
# baseline's or the merge's judgement brings it forward, so this is the fallback.
DEFER_S = 5.0


def verdict_event(
    task_id: str,
    experiment_id: str,
    verdict: Verdict,
    reason: str,
    time_s: float,
    **more: FieldValue,
) -> dict[str, FieldValue]:
    """The `verdict` event of the experiment stream; `more`: hypothesis_id, hardware,
    metric, commit, where the decision has them."""
    order = ("hypothesis_id", "verdict", "reason", "hardware", "metric", "commit")
    fields = more | {"verdict": verdict.value, "reason": reason}
    return {
        "type": "verdict",
        "task_id": task_id,
        "experiment_id": experiment_id,
        **{key: fields[key] for key in order if key in fields},
        "time_s": time_s,
    }


def decision_event(
    exp: ExperimentRecord,
    decision: judge.Decision,
    hardware: str,
    time_s: float,
    *,
    verdict: Verdict | None = None,
    commit: str | None = None,
) -> dict[str, FieldValue]:
    """The `verdict` event of `decision` on `exp` (`verdict`: another than the decision's;
    `commit`: where a kept change was committed)."""
    more: dict[str, FieldValue] = {
        "hypothesis_id": exp.hypothesis_id,
        "hardware": hardware,
        "metric": decision.metric,
    }
    if commit is not None:
        more["commit"] = commit
    verdict = verdict or decision.verdict
    return verdict_event(exp.task_id, exp.experiment_id, verdict, decision.reason, time_s, **more)


@dataclass(eq=False)
class Verdicts:
    """Records decisions, withdraws what is not needed, defers and undefers judgements."""

    plumbing: Plumbing
    baselines: Baselines
    _woken: bool = field(default=False, init=False)

    def defer(self, experiment_id: str) -> None:
        """Look at this judgement again in DEFER_S, or as soon as `undefer` is called."""
        self.plumbing.store.defer_judgement(experiment_id, self.plumbing.clock() + DEFER_S)

    def undefer(self) -> None:
        """Judgements that wait on others are due now (what they waited for may be done)."""
        if self.plumbing.store.undefer_judgements(self.plumbing.clock()):
            self._woken = True

    def take_woken(self) -> bool:
        """Whether `undefer` made judgements due since this was last asked."""
        woken, self._woken = self._woken, False
        return woken

    def conclude(
        self,
        task: TaskRecord,
        exp: ExperimentRecord,
        decision: judge.Decision,
        *,
        follow_up: NewExperiment | None = None,
        pair: tuple[str, str, list[float]] | None = None,
        hypothesis: dict[str, FieldValue] | None = None,
        experiment: dict[str, FieldValue] | None = None,
        observed: tuple[str, list[Observation]] | None = None,
    ) -> bool:
        """Record `decision` on `exp` (its verdict, reason and `follow_up` at once, with
        `hypothesis` and `experiment` fields of its own, a `pair` or runs `observed` for the
        noise model); True if applied now, False if it was applied before."""
        hardware = hardware_of(exp)
        verdict = None if decision.verdict is Verdict.PENDING else decision.verdict.value
        hyp: dict[str, FieldValue] = {
            "verdict": decision.verdict.value,
            "reason": decision.reason,
            "metric": decision.metric,
            "delta": decision.delta,
            "hardware": hardware,
            **(hypothesis or {}),
        }
        if decision.verdict is Verdict.PENDING and decision.delta is None:
            del hyp["metric"], hyp["delta"]  # restacked: what it claimed still stands
        event = decision_event(exp, decision, hardware, self.plumbing.clock())
        decided = self.plumbing.store.conclude(
            exp.experiment_id,
            task_id=task.task_id,
            experiment={
                "verdict": verdict,
                "reason": decision.reason,
                "head_metric": decision.head_mean,
                **(experiment or {}),
            },
            hypothesis_id=exp.hypothesis_id,
            hypothesis=hyp,
            event=event,
            follow_up=follow_up,
            pair=pair,
            observed=observed,
            now=self.plumbing.clock(),
        )
        logger.info(
            "task %s: experiment %s: %s: %s",
            task.task_id,
            exp.experiment_id,
            decision.verdict.value,
            decision.reason,
        )
        if decided and follow_up is not None:
            self.plumbing.notify(1)
        if decided and verdict is not None and exp.kind is not ExperimentKind.EXPLORE:
            self.undefer()  # merges stacked on a decided one
            if decision.verdict is not Verdict.KEPT:  # if it held back the head's baselines
                self.baselines.measure_head(task, hardware, exp)
        return decided

    def withdraw(self, task: TaskRecord, experiment_id: str, reason: str) -> bool:
        """Withdraw an unfinished experiment that is not needed (discarded, with its reason;
        a running one is told to stop at its next heartbeat); False if it had finished."""
        event = verdict_event(
            task.task_id, experiment_id, Verdict.DISCARDED, reason, self.plumbing.clock()
        )
        return self.plumbing.store.withdraw(
            experiment_id,
            verdict=Verdict.DISCARDED.value,
            reason=reason,
            event=event,
            now=self.plumbing.clock(),
        )
