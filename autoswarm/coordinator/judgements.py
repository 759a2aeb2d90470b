"""Judging one finished experiment: the rule's decision on it, and what follows from it.

A baseline's score joins its head's runs (not counted if its worker lost trust, held if it
is absurd); a candidate's first run is screened by the rule (a winner is replicated, merged
or stacked; anything else gets its verdict); a replicate's run is pooled with its chain and
the rule decides: keep, discard, or one more run. The rule is the one thing here that
decides; it is handed in (`Rule`), and every other part only applies what it says.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from autoswarm.coordinator import evidence, judge
from autoswarm.coordinator.baselines import Baselines
from autoswarm.coordinator.heads import Heads
from autoswarm.coordinator.keeping import Keeper
from autoswarm.coordinator.merging import Merges
from autoswarm.coordinator.models import ExperimentRecord, TaskRecord
from autoswarm.coordinator.noise import Run, far_out
from autoswarm.coordinator.plumbing import Plumbing, hardware_of
from autoswarm.coordinator.rechecks import Rechecks
from autoswarm.coordinator.stacking import Stacking, not_needed
from autoswarm.coordinator.store import NewExperiment
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.coordinator.store.judging import Observation
from autoswarm.coordinator.verdicts import Verdicts
from autoswarm.shared.models import ExperimentKind, Result, ResultStatus, Verdict
from autoswarm.shared.task import TaskSpec


class Rule(Protocol):
    """The decision rule: `autoswarm.coordinator.judge.SequentialRule` unless another is handed in
    (docs/judging.md). Pure: it reads what it is given and returns a `judge.Decision`."""

    def screen(
        self,
        result: Result | None,
        stats: judge.HeadStats,
        spec: TaskSpec,
        *,
        shorter: bool = False,
        last_error: str | None = None,
        history: list[float] | None = None,
        worker: str = "",
    ) -> judge.Decision:
        """A candidate's first run: measured again, or its verdict."""
        ...

    def decide(
        self,
        evidence: judge.Evidence,
        stats: judge.HeadStats,
        spec: TaskSpec,
        *,
        shorter: bool = False,
        claim: Run | None = None,
        replicate: Run | None = None,
    ) -> judge.Decision:
        """A candidate after its k-th run: keep, discard (not reproduced) or one more run."""
        ...


@dataclass(eq=False)
class Judgements:
    """Judges one finished baseline, candidate or replicate (see the module doc)."""

    plumbing: Plumbing
    rule: Rule
    heads: Heads
    baselines: Baselines
    verdicts: Verdicts
    rechecks: Rechecks
    merges: Merges
    stacking: Stacking
    keeper: Keeper

    def baseline(self, task: TaskRecord, exp: ExperimentRecord) -> None:
        """A baseline's score joins its head's runs, unless its worker lost trust or the score
        is absurd for the class (then the head is measured again by another worker)."""
        hardware = hardware_of(exp)
        ok = exp.result is not None and exp.result.status is ResultStatus.OK
        metric = exp.result.metric if ok and exp.result else None
        reason = (
            f"baseline {metric!r}" if metric is not None else f"baseline failed: {exp.last_error}"
        )
        untrusted = metric is not None and self.rechecks.distrusted(exp.worker_id)
        _, runs, noise = self.heads.class_runs(task.task_id, hardware)
        far = metric is not None and far_out(metric, [r.value for r in runs], noise.std)
        if untrusted:
            metric = None
            reason = f"{reason} by {exp.worker_id}, who lost trust: not counted, measured again"
        elif far:
            metric = None
            reason = f"{reason} is far outside this class's history: held, not counted"
            if not exp.exclude_worker:  # a replacement that agrees with it counts
                reason += "; measured again by another worker"
        event: dict[str, FieldValue] = {
            "type": "baseline",
            "task_id": task.task_id,
            "experiment_id": exp.experiment_id,
            "hardware": hardware,
            "commit": exp.parent_commit,
            "metric": metric,
            "reason": reason,
            "time_s": self.plumbing.clock(),
        }
        mine = [Run(exp.experiment_id, exp.parent_commit, "", metric)] if metric is not None else []
        enough = bool(mine) and self.baselines.is_measured(task, hardware, exp.parent_commit, mine)
        self.plumbing.store.record_baseline(
            exp.experiment_id,
            task.task_id,
            hardware,
            exp.parent_commit,
            metric,
            baseline_runs=1 if enough else self.plumbing.settings.baseline_runs,
            event=event,
            now=self.plumbing.clock(),
            observation=(
                (exp.experiment_id, exp.parent_commit, exp.worker_id or "", metric)
                if metric is not None
                else None
            ),
        )
        if untrusted or (far and not exp.exclude_worker):
            self.rechecks.replace_baseline(exp, exp.worker_id or "", held=far and not untrusted)
        if enough:  # a deterministic task: the head's other baselines would only repeat
            self.baselines.withdraw_measured(task, hardware, exp.parent_commit)
        self.verdicts.undefer()  # candidates waiting on this head

    def candidate(self, task: TaskRecord, exp: ExperimentRecord) -> None:
        """An explore's or merge's first run screened by the rule: a winner is replicated,
        merged or stacked; anything else gets its verdict."""
        hardware = hardware_of(exp)
        experiment: dict[str, FieldValue] | None = None
        if exp.stacked_on:
            unstacked = self.stacking.unstack(task, hardware, exp)
            if unstacked is None:
                return
            exp, experiment = unstacked, {"parent_commit": unstacked.parent_commit}
        head, stats = self.heads.stats(task.task_id, hardware, exp.parent_commit)
        measuring = head is not None and not head.ready and exp.parent_commit == head.commit
        if measuring and head and head.baselines_done < self.plumbing.settings.baseline_runs:
            # Run while the head's baselines ran: judged once they are in.
            self.verdicts.defer(exp.experiment_id)
            return
        shorter = head is not None and (exp.code_bytes or 0) < head.code_bytes
        runs = self.heads.class_runs(task.task_id, hardware)[1]
        decision = self.rule.screen(
            exp.result,
            stats,
            task.spec,
            shorter=shorter,
            last_error=exp.last_error,
            history=[r.value for r in runs],
            worker=exp.worker_id or "",
        )
        replicating = decision.action is judge.Action.REPLICATE
        if replicating and exp.kind is ExperimentKind.EXPLORE:
            self.stacking.place_winner(task, hardware, exp, decision, experiment)
            # Queued after its replicate: the head's runs join the comparison as they come.
            self.baselines.measure_again(task, hardware, head, stats, exp, decision.head_runs)
            return
        follow_up, decision = self._follow_up(exp, hardware, decision)
        hypothesis: dict[str, FieldValue] | None = None
        if follow_up is not None:
            hypothesis = {"experiment_id": follow_up.experiment_id}
            if follow_up.kind is ExperimentKind.REPLICATE:
                experiment = (experiment or {}) | {"replicate_id": follow_up.experiment_id}
        decided = self.verdicts.conclude(
            task, exp, decision, follow_up=follow_up, hypothesis=hypothesis, experiment=experiment
        )
        ok = exp.result is not None and exp.result.status is ResultStatus.OK
        if decided and ok and exp.claim_by and not self.rechecks.distrusted(exp.worker_id):
            # Better on the head too, or not: the explore's claim checked.
            self.rechecks.count_claim(
                exp.claim_by, agreed=decision.action is judge.Action.REPLICATE
            )
        if decided and decision.head_runs:
            self.baselines.measure_again(task, hardware, head, stats, exp, decision.head_runs)
        if exp.twin:
            self.stacking.settle_twin(
                task, exp, replicating=decision.action is judge.Action.REPLICATE
            )
        if decided and not replicating and exp.kind is ExperimentKind.MERGE:
            self.stacking.restack_above(task, hardware, exp.experiment_id)

    def _follow_up(
        self, exp: ExperimentRecord, hardware: str, decision: judge.Decision
    ) -> tuple[NewExperiment | None, judge.Decision]:
        """What runs after a candidate: its replicate when it looks better; a re-check by
        another worker when its worker lost trust and it looks no better (the decision then
        stays pending)."""
        if decision.action is judge.Action.REPLICATE:
            return self.merges.replicate_of(exp, hardware), decision
        if decision.action is judge.Action.DISCARD and self.rechecks.distrusted(exp.worker_id):
            recheck = self.rechecks.recheck_of(exp, exp.worker_id or "")
            reason = (
                f"{decision.reason}; measured by {exp.worker_id}, who lost trust: re-checked "
                f"by another worker as {recheck.experiment_id}"
            )
            pending = judge.Decision(
                decision.action,
                Verdict.PENDING,
                reason,
                decision.delta,
                decision.metric,
                head_mean=decision.head_mean,
            )
            return recheck, pending
        return None, decision

    def replicate(self, task: TaskRecord, rep: ExperimentRecord) -> None:
        """A replicate pooled with its candidate's chain: kept (committed, or merged forward
        when the head moved), one more run, or not reproduced."""
        hardware = hardware_of(rep)
        carrier = self._carried_by(rep)
        if carrier is not None:
            # Finished just as its winner was set aside (see `Stacking._set_aside`): not needed.
            reason = f"not needed: its hypothesis is carried by experiment {carrier} now"
            unneeded = judge.Decision(judge.Action.DISCARD, Verdict.DISCARDED, reason)
            self.verdicts.conclude(task, rep.model_copy(update={"hypothesis_id": None}), unneeded)
            return
        cand = self.plumbing.store.get_experiment(rep.candidate_id or "")
        if cand is not None and rep.twin and not cand.judged:
            # Queued alongside its merge, finished first: judged once the merge is.
            self.verdicts.defer(rep.experiment_id)
            return
        if cand is not None and rep.twin and cand.verdict is not None:
            reason = not_needed(cand.experiment_id)
            unneeded = judge.Decision(judge.Action.DISCARD, Verdict.DISCARDED, reason)
            # Its own verdict only: the hypothesis has the merge's.
            self.verdicts.conclude(task, rep.model_copy(update={"hypothesis_id": None}), unneeded)
            return
        if cand is None or cand.result is None or cand.result.metric is None:
            reason = f"the candidate {rep.candidate_id} has no score to replicate"
            decision = judge.Decision(judge.Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason)
            self.verdicts.conclude(task, rep, decision)
            return
        head, stats = self.heads.stats(task.task_id, hardware, cand.parent_commit)
        shorter = head is not None and (cand.code_bytes or 0) < head.code_bytes
        chain = self.keeper.chain_of(cand, rep)
        if self.baselines.measured_meanwhile(task.task_id, hardware, head, stats, cand, len(chain)):
            # The head's baselines queued for this look run still: judged once they are in.
            self.verdicts.defer(rep.experiment_id)
            return
        counted = self.keeper.evidence_of(task.task_id, hardware, cand, chain)
        first = chain[0].experiment_id == rep.experiment_id if chain else False
        decision = self.rule.decide(
            counted,
            stats,
            task.spec,
            shorter=shorter,
            claim=evidence.run_of(cand) if first else None,
            replicate=evidence.run_of(rep) if first else None,
        )
        code = cand.code_commit or cand.parent_commit
        # Runs that disagree do not teach the noise (one of them is likely not honest).
        learns = len(counted.runs) > 1 and decision.agreed is not False
        observed = (hardware, evidence.observations(counted, code)) if learns else None
        if decision.action is judge.Action.KEEP and head is not None:
            if cand.parent_commit == head.commit:
                commit = self.keeper.commit_kept(task, hardware, cand, rep, head, decision)
                self.keeper.apply_kept(task, hardware, cand, rep, commit, decision)
            else:
                why = f"reproduced ({decision.reason}) on {cand.parent_commit[:12]}"
                self.merges.merge_forward(
                    task, hardware, cand, head, decision, concluded=rep, why=why
                )
            return
        if decision.action is judge.Action.REPLICATE:
            self._measure_again(task, hardware, cand, rep, decision, len(chain), observed)
            return
        pair = None
        if decision.agreed and rep.result and rep.result.metric is not None and cand.code_commit:
            pair = (hardware, cand.code_commit, [cand.result.metric, rep.result.metric])
        decided = self.verdicts.conclude(task, rep, decision, pair=pair, observed=observed)
        if decided and decision.agreed is not None:
            self.rechecks.count_claim(cand.worker_id, agreed=decision.agreed)
        if decided:
            self.stacking.restack_above(task, hardware, cand.experiment_id)

    def _carried_by(self, rep: ExperimentRecord) -> str | None:
        """The experiment that carries this replicate's hypothesis now, if not this replicate
        (nor the merge it was queued alongside): its winner was set aside and merged again."""
        hyp = self.plumbing.store.get_hypothesis(rep.hypothesis_id or "")
        if hyp is None or not hyp.experiment_id:
            return None
        return None if hyp.experiment_id in (rep.experiment_id, rep.twin) else hyp.experiment_id

    def _measure_again(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        rep: ExperimentRecord,
        decision: judge.Decision,
        runs: int,
        observed: tuple[str, list[Observation]] | None,
    ) -> None:
        """The rule asks for one more run of the candidate: the next replicate of its chain,
        by another worker where one exists; the head is measured once more too."""
        decided = self.merges.conclude_replicated(
            task, rep, cand, decision, index=runs, observed=observed
        )
        if decided and decision.agreed is not None:
            self.rechecks.count_claim(cand.worker_id, agreed=decision.agreed)
        if decided and decision.head_runs:
            head, stats = self.heads.stats(task.task_id, hardware, cand.parent_commit)
            self.baselines.measure_again(task, hardware, head, stats, rep, decision.head_runs)
