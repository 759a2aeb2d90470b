"""Keeping a change: a reproduced winner committed on its class's lineage and made the head.

A kept change is committed to git first (`commit_kept`, idempotent by its `Experiment:`
trailer), then offered to the task's other hardware classes and made the head in Redis
(`apply_kept`, both idempotent); `reconcile` repairs a crash between the steps. The new
head's baselines are queued (held back while a merge stacked on it runs), the old head's
unfinished ones withdrawn, and the explores still queued on the old head derived onto the
new one (`autoswarm.coordinator.rederive`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autoswarm.coordinator import evidence, judge
from autoswarm.coordinator.baselines import Baselines
from autoswarm.coordinator.heads import Heads
from autoswarm.coordinator.lineage import branch_for
from autoswarm.coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from autoswarm.coordinator.noise import Run
from autoswarm.coordinator.offers import Offers
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.coordinator.rechecks import Rechecks
from autoswarm.coordinator.rederive import rederive_queued
from autoswarm.coordinator.stacks import Stacks
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.coordinator.verdicts import Verdicts, decision_event
from autoswarm.shared.models import Verdict

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class Keeper:
    """Pools a candidate's evidence; commits and applies a kept change (see the module doc).

    It moves the head (`heads`, `stacks`, `baselines`), wakes what waited on the keep
    (`verdicts`), offers the change (`offers`) and counts the claim as checked (`rechecks`).
    """

    plumbing: Plumbing
    heads: Heads
    stacks: Stacks
    baselines: Baselines
    verdicts: Verdicts
    offers: Offers
    rechecks: Rechecks

    def chain_of(self, cand: ExperimentRecord, rep: ExperimentRecord) -> list[ExperimentRecord]:
        """The candidate's replicates that have finished, in order, `rep` as it is now."""
        ids = evidence.chain_ids(cand.experiment_id)
        records = {e.experiment_id: e for e in self.plumbing.store.get_experiments(ids)}
        records[rep.experiment_id] = rep
        return evidence.finished([records[i] for i in ids if i in records])

    def evidence_of(
        self, task_id: str, hardware: str, cand: ExperimentRecord, chain: list[ExperimentRecord]
    ) -> judge.Evidence:
        """What the rule pools for a candidate: its chain's runs that count (see
        autoswarm.coordinator.evidence)."""
        _, runs, noise = self.heads.class_runs(task_id, hardware)
        return evidence.evidence(
            cand,
            chain,
            [r.value for r in runs],
            noise.std,
            two_owners=self.plumbing.settings.require_two_owners,
        )

    def commit_kept(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        rep: ExperimentRecord,
        head: HeadRecord,
        decision: judge.Decision,
    ) -> str:
        """Step 1 of keeping: the commit on the class's branch (idempotent by trailer)."""
        lineage = self.plumbing.lineage(task.task_id)
        hyp = self.plumbing.store.get_hypothesis(cand.hypothesis_id or "")
        files = lineage.files_at(cand.code_commit or cand.parent_commit)
        metric = decision.metric if decision.metric is not None else float("nan")
        trailers = {
            "Experiment": cand.experiment_id,
            "Metric": f"{task.spec.metric.name}={metric!r}",
            "Delta": f"{decision.delta!r}",
            "Worker": cand.worker_id or "",
            "Replicated-by": rep.worker_id or "",
            "Hardware": hardware,
        }
        return lineage.commit_change(
            branch_for(hardware),
            files,
            parent=head.commit,
            title=hyp.title if hyp else f"experiment {cand.experiment_id}",
            rationale=hyp.rationale if hyp else "",
            trailers=trailers,
        )

    def apply_kept(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        rep: ExperimentRecord,
        commit: str,
        decision: judge.Decision,
    ) -> None:
        """Step 2 of keeping: the committed change becomes the head in Redis (idempotent)."""
        runs = [
            r.metric for r in (cand.result, rep.result) if r is not None and r.metric is not None
        ]
        chain = self.chain_of(cand, rep)
        counted = self.evidence_of(task.task_id, hardware, cand, chain)
        head: dict[str, FieldValue] = {
            "commit": commit,
            "bundle_hash": cand.bundle_hash,
            "code_bytes": cand.code_bytes or 0,
            "experiment_id": cand.experiment_id,
        }
        before = self.plumbing.store.get_head(task.task_id, hardware)
        carried = self.stacks.tip_on(task, hardware, before, cand) if before else None
        # Its baselines wait while a merge stacked on it runs: it is likely the head for one
        # run only, and is measured by two already (see `Baselines.measure_head`). None
        # either once its run and replicate agree exactly on a deterministic task.
        own = [Run(*o) for o in evidence.observations(counted, commit)]
        exact = self.baselines.is_measured(task, hardware, commit, own)
        ids = [] if carried or exact else self.heads.baseline_ids(task.task_id, hardware, commit)
        now = self.plumbing.clock()
        event = decision_event(cand, decision, hardware, now, verdict=Verdict.KEPT, commit=commit)
        # Offered first: a crash before the head moves repeats both (the offer is idempotent).
        self.offers.offer_elsewhere(task, hardware, cand, commit, decision)
        moved = self.plumbing.store.apply_keep(
            task_id=task.task_id,
            hardware=hardware,
            commit=commit,
            head_fields=head,
            runs=runs,
            candidate_id=cand.experiment_id,
            replicate_id=rep.experiment_id,
            hypothesis_id=cand.hypothesis_id,
            hypothesis={
                "verdict": Verdict.KEPT.value,
                "reason": decision.reason,
                "metric": decision.metric,
                "delta": decision.delta,
                "hardware": hardware,
                "needs_code": False,
            },
            experiment={
                "verdict": Verdict.KEPT.value,
                "reason": decision.reason,
                "head_metric": decision.head_mean,
            },
            bundle_hash=cand.bundle_hash,
            event=event,
            baseline=self.heads.baseline_of(task.task_id, hardware, head),
            baseline_ids=ids,
            now=self.plumbing.clock(),
            observations=evidence.observations(counted, commit),
        )
        self.heads.forget_heads()
        if moved:
            logger.info(
                "task %s: %s head is now %s (experiment %s kept: %s)",
                task.task_id,
                hardware,
                commit,
                cand.experiment_id,
                decision.reason,
            )
            self.rechecks.count_claim(cand.worker_id, agreed=True)
            self.plumbing.notify(len(ids))
            self.verdicts.undefer()  # merges stacked on this one
            if carried is not None:  # winners found on the new head stack on it too
                tip_id, tip_commit = carried
                self.plumbing.store.set_tip(
                    task.task_id, hardware, on=commit, experiment_id=tip_id, commit=tip_commit
                )
            if before is not None and before.commit != commit:
                self.baselines.withdraw_superseded(task, hardware, before.commit, commit)
                lineage = self.plumbing.lineage(task.task_id)
                now = self.plumbing.clock()
                self.plumbing.notify(
                    rederive_queued(self.plumbing.store, lineage, task, before.commit, commit, now)
                )
