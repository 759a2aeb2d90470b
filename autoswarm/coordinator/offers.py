"""Offering a kept change to the task's other hardware classes.

Scores are never compared across classes: a change kept on one class is three-way merged
onto each other class's head and queued there as a `merge` experiment under a hypothesis of
its own (same title, the kept commit in its rationale), judged against that head like any
candidate. A class added later is offered every change kept before (`offer_history`).
Idempotent: an offer's ids are derived from the kept experiment and the class, so a crash
between a keep and its offers is repaired by offering again (`autoswarm.coordinator.reconcile`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autoswarm.coordinator import judge
from autoswarm.coordinator.heads import code_bytes, derived_id
from autoswarm.coordinator.lineage import CommitInfo, branch_for
from autoswarm.coordinator.models import ExperimentRecord, TaskRecord
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.coordinator.store import NewExperiment
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.shared.errors import MergeConflict
from autoswarm.shared.models import ExperimentKind, Verdict

logger = logging.getLogger(__name__)

# A change kept on one class: (its class, its candidate, its commit there, the decision).
KeptChange = tuple[str, ExperimentRecord, str, judge.Decision]


@dataclass(eq=False)
class Offers:
    """Offers kept changes to the other classes (see the module doc)."""

    plumbing: Plumbing

    def offer_elsewhere(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        commit: str,
        decision: judge.Decision,
    ) -> int:
        """Offer a change kept on `hardware` to the task's other classes; how many were queued.

        On each other class the change is three-way merged onto that class's head and queued
        there as a `merge` experiment under a hypothesis of its own (same title, the kept
        commit in its rationale), judged against that head like any candidate: scores are
        never compared across classes. A class whose head has the change already is skipped;
        a conflict is recorded on the offer's hypothesis. Idempotent: the offer's ids are
        derived from the kept experiment and the class.
        """
        kept = (hardware, cand, commit, decision)
        others = [hw for hw in self.plumbing.store.task_classes(task.task_id) if hw != hardware]
        queued = sum(self._offer(task, kept, other) for other in others)
        if queued:
            self.plumbing.notify(queued)
        return queued

    def offer_history(
        self, task: TaskRecord, hardware: str, kept: list[KeptChange] | None = None
    ) -> int:
        """Offer a (new) class every change kept on the task's other classes, oldest first,
        each as `offer_elsewhere` would have when it was kept; how many were queued. Changes
        that were themselves offers are not offered again (their origin is). Idempotent.
        `kept`: the task's `kept_changes`, when the caller read them for many classes."""
        queued = 0
        for change in self.kept_changes(task) if kept is None else kept:
            if change[0] != hardware:
                queued += self._offer(task, change, hardware)
        if queued:
            logger.info(
                "task %s: %d kept changes offered to the new class %s",
                task.task_id,
                queued,
                hardware,
            )
            self.plumbing.notify(queued)
        return queued

    def kept_changes(self, task: TaskRecord) -> list[KeptChange]:
        """The changes kept on each of the task's classes, oldest first per class, but the
        offers kept there (offered from their origin). One read of the branches, one
        history per distinct branch head (fresh classes share the task's first commit):
        a restart with thousands of classes reads each once, not once per pair."""
        lineage = self.plumbing.lineage(task.task_id)
        heads = lineage.branches()
        histories: dict[str, list[CommitInfo]] = {}
        found: dict[str, ExperimentRecord | None] = {}
        changes: list[KeptChange] = []
        for other in self.plumbing.store.task_classes(task.task_id):
            branch = branch_for(other)
            sha = heads.get(branch)
            if sha is None:
                continue  # no branch (yet): nothing kept there
            if sha not in histories:
                histories[sha] = lineage.history(branch)
            for info in reversed(histories[sha]):  # oldest first
                if info.sha not in found:
                    found[info.sha] = self.plumbing.store.get_experiment(
                        info.trailers.get("Experiment", "")
                    )
                cand = found[info.sha]
                if cand is None or cand.hypothesis_id is None:
                    continue  # the task's first commit, or a change from elsewhere
                if cand.hypothesis_id == derived_id("h", "offer", cand.candidate_id or "", other):
                    continue  # an offer kept there: offered from its own origin
                metric = _number(info.trailers.get("Metric", "").rpartition("=")[2])
                delta = _number(info.trailers.get("Delta", ""))
                decision = judge.Decision(judge.Action.KEEP, Verdict.KEPT, "kept", delta, metric)
                changes.append((other, cand, info.sha, decision))
        return changes

    def _offer(
        self,
        task: TaskRecord,
        kept: tuple[str, ExperimentRecord, str, judge.Decision],
        other: str,
    ) -> int:
        """Offer the kept change to one other class; 1 if an experiment was queued there."""
        hardware, cand, commit, decision = kept
        offer_id = derived_id("h", "offer", cand.experiment_id, other)
        head = self.plumbing.store.get_head(task.task_id, other)
        if head is None or self.plumbing.store.get_hypothesis(offer_id) is not None:
            return 0
        lineage = self.plumbing.lineage(task.task_id)
        hyp = self.plumbing.store.get_hypothesis(cand.hypothesis_id or "")
        title = hyp.title if hyp else f"experiment {cand.experiment_id}"
        whence = (
            f"Kept on {hardware} as {commit[:12]} ({task.spec.metric.name} "
            f"{decision.metric!r}, delta {decision.delta!r}); offered to {other}."
        )
        fields: dict[str, FieldValue] = {
            "title": title,
            "rationale": f"{whence} {hyp.rationale if hyp else ''}".strip(),
            "proposer": hyp.proposer if hyp else "human",
            "author": hyp.author if hyp else "",
            "parent_commit": head.commit,
            "hardware": other,
        }
        try:
            merged = lineage.merge(cand.parent_commit, cand.code_commit or commit, head.commit)
        except MergeConflict as exc:
            reason = (
                f"kept on {hardware}, but it conflicts with the {other} head "
                f"{head.commit[:12]} in {', '.join(exc.paths)}"
            )
            fields |= {"verdict": Verdict.CONFLICT.value, "reason": reason}
            self.plumbing.store.submit_hypothesis(
                offer_id, task.task_id, fields, None, None, now=self.plumbing.clock()
            )
            logger.info("task %s: offer of %s to %s: %s", task.task_id, title, other, reason)
            return 0
        if merged == lineage.files_at(head.commit):
            return 0  # that class's head has the change already (it came from there)
        merge_id = derived_id("m", "offer", cand.experiment_id, other)
        code_commit = lineage.store_experiment(
            merge_id, merged, parent=head.commit, message=f"offer: {title}"
        )
        bundle_hash = self.plumbing.store.put_bundle(merged)
        offer = NewExperiment(
            merge_id,
            task.task_id,
            ExperimentKind.MERGE,
            other,
            {
                "hypothesis_id": offer_id,
                "bundle_hash": bundle_hash,
                "parent_commit": head.commit,
                "code_commit": code_commit,
                "code_bytes": code_bytes(merged, task.spec),
                "candidate_id": cand.experiment_id,
            },
        )
        submitted = self.plumbing.store.submit_hypothesis(
            offer_id,
            task.task_id,
            fields,
            offer,
            bundle_hash,
            now=self.plumbing.clock(),
            offered_to=other,
        )
        logger.info(
            "task %s: %s kept on %s offered to %s as experiment %s",
            task.task_id,
            title,
            hardware,
            other,
            submitted.experiment_id,
        )
        return 0 if submitted.duplicate or submitted.experiment_id is None else 1


def _number(text: str) -> float | None:
    """A trailer's number, or None when it has none."""
    try:
        return float(text)
    except ValueError:
        return None
