"""Keeping a change: the judge's decisions recorded, winners committed or merged forward.

A kept change is committed to git first (`commit_kept`, idempotent by its `Experiment:`
trailer), then offered to the task's other hardware classes and made the head in Redis
(`apply_kept`, both idempotent); `reconcile` repairs a crash between the steps. A winner
measured on an old head is three-way merged onto the current head and queued as a `merge`
experiment together with its replicate (two workers run them at once; the replicate is
withdrawn if the merge is not better); a conflict sends its hypothesis back. While another
winner on that head is still being judged (the tip: a merge, or an explore being
replicated), a winner is stacked on the tip's code instead (`_merge_fields`), and so is a
winner found on the head itself (`stacks`): concurrent winners run merged, not one after
another, the strongest claims at the bottom (`Scheduler._outclassed`).
"""

from __future__ import annotations

import dataclasses
import logging

from coordinator import baselines, evidence, judge
from coordinator.heads import code_bytes, derived_id
from coordinator.lineage import CommitInfo, branch_for
from coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from coordinator.noise import Run
from coordinator.rechecks import RecheckOps
from coordinator.rederive import rederive_queued
from coordinator.store import NewExperiment
from coordinator.store.base import FieldValue
from coordinator.store.judging import Observation
from shared.errors import MergeConflict
from shared.models import ExperimentKind, ExperimentState, Verdict

logger = logging.getLogger(__name__)

# How far down a stack of merges `_tip_on` looks for the change being kept.
MAX_STACK = 100


# A change kept on one class: (its class, its candidate, its commit there, the decision).
KeptChange = tuple[str, ExperimentRecord, str, judge.Decision]


class KeepOps(RecheckOps):
    """Recording decisions and keeping changes (see the module doc)."""

    def chain_of(self, cand: ExperimentRecord, rep: ExperimentRecord) -> list[ExperimentRecord]:
        """The candidate's replicates that have finished, in order, `rep` as it is now."""
        ids = evidence.chain_ids(cand.experiment_id)
        records = {e.experiment_id: e for e in self.store.get_experiments(ids)}
        records[rep.experiment_id] = rep
        return evidence.finished([records[i] for i in ids if i in records])

    def evidence_of(
        self, task_id: str, hardware: str, cand: ExperimentRecord, chain: list[ExperimentRecord]
    ) -> judge.Evidence:
        """What the rule pools for a candidate: its chain's runs that count (see
        coordinator.evidence)."""
        _, runs, noise = self.class_runs(task_id, hardware)
        return evidence.evidence(
            cand,
            chain,
            [r.value for r in runs],
            noise.std,
            two_owners=self.settings.require_two_owners,
        )

    def _conclude(
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
        hardware = self._hardware_of(exp)
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
        event: dict[str, FieldValue] = {
            "type": "verdict",
            "task_id": task.task_id,
            "experiment_id": exp.experiment_id,
            "hypothesis_id": exp.hypothesis_id,
            "verdict": decision.verdict.value,
            "reason": decision.reason,
            "hardware": hardware,
            "metric": decision.metric,
            "time_s": self._clock(),
        }
        decided = self.store.conclude(
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
            now=self._clock(),
        )
        logger.info(
            "task %s: experiment %s: %s: %s",
            task.task_id,
            exp.experiment_id,
            decision.verdict.value,
            decision.reason,
        )
        if decided and follow_up is not None:
            self.notify(1)
        if decided and verdict is not None and exp.kind is not ExperimentKind.EXPLORE:
            self.undefer()  # merges stacked on a decided one
            if decision.verdict is not Verdict.KEPT:
                self.measure_head(task, hardware, exp)  # if it held back the head's baselines
        return decided

    # -- keeping a change -------------------------------------------------------------------

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
        lineage = self.lineage(task.task_id)
        hyp = self.store.get_hypothesis(cand.hypothesis_id or "")
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
        before = self.store.get_head(task.task_id, hardware)
        carried = self._tip_on(task, hardware, before, cand) if before else None
        # Its baselines wait while a merge stacked on it runs: it is likely the head for one
        # run only, and is measured by two already (see `measure_head`).
        # None either once its run and replicate agree exactly on a deterministic task.
        own = tuple(Run(*o) for o in evidence.observations(counted, commit))
        exact = self._measured(task, hardware, commit, own)
        ids = [] if carried or exact else self.baseline_ids(task.task_id, hardware, commit)
        event: dict[str, FieldValue] = {
            "type": "verdict",
            "task_id": task.task_id,
            "experiment_id": cand.experiment_id,
            "hypothesis_id": cand.hypothesis_id,
            "verdict": Verdict.KEPT.value,
            "reason": decision.reason,
            "hardware": hardware,
            "metric": decision.metric,
            "commit": commit,
            "time_s": self._clock(),
        }
        # Offered first: a crash before the head moves repeats both (the offer is idempotent).
        self.offer_elsewhere(task, hardware, cand, commit, decision)
        moved = self.store.apply_keep(
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
            baseline=self.baseline_of(task.task_id, hardware, head),
            baseline_ids=ids,
            now=self._clock(),
            observations=evidence.observations(counted, commit),
        )
        self.forget_heads()
        if moved:
            logger.info(
                "task %s: %s head is now %s (experiment %s kept: %s)",
                task.task_id,
                hardware,
                commit,
                cand.experiment_id,
                decision.reason,
            )
            self.count_claim(cand.worker_id, agreed=True)
            self.notify(len(ids))
            self.undefer()  # merges stacked on this one
            if carried is not None:  # winners found on the new head stack on it too
                tip_id, tip_commit = carried
                self.store.set_tip(
                    task.task_id, hardware, on=commit, experiment_id=tip_id, commit=tip_commit
                )
            if before is not None and before.commit != commit:
                self._withdraw_baselines(task, hardware, before.commit, commit)
                lineage = self.lineage(task.task_id)
                now = self._clock()
                self.notify(rederive_queued(self.store, lineage, task, before.commit, commit, now))

    def _tip_on(
        self, task: TaskRecord, hardware: str, old: HeadRecord, kept: ExperimentRecord
    ) -> tuple[str, str] | None:
        """The tip on the old head if it was built on the change being kept (stacked on it,
        or on a merge stacked on it ...): its code has the new head's, so it is the tip on
        the new head too. None otherwise."""
        tip = self._tip(task, hardware, old)
        if tip is None or tip[0] == kept.experiment_id:
            return None
        under, seen = self.store.get_experiment(tip[0]), 0
        while under is not None and under.stacked_on and seen < MAX_STACK:
            if under.stacked_on == kept.experiment_id:
                return tip
            if not self.carries(under.stacked_on):  # a merge in between was not kept
                return None
            under, seen = self.store.get_experiment(under.stacked_on), seen + 1
        return None

    def measure_head(
        self, task: TaskRecord, hardware: str, failed: ExperimentRecord | None = None
    ) -> int:
        """Queue a kept head's baselines if they were held back (a merge was stacked on it),
        once no winner is stacked on it any more or the winner at the bottom of its stack
        (`failed`, run on the head itself) was not kept: the stack starts again from the
        head, which stays the head for another run at least, and its noise is known from
        too few runs meanwhile. How many were queued. Idempotent: their ids are derived from
        the head."""
        head = self.store.get_head(task.task_id, hardware)
        if head is None or not head.experiment_id:
            return 0
        broken = failed is not None and failed.parent_commit == head.commit
        if not broken and self._tip(task, hardware, head):
            return 0
        if self._measured(task, hardware, head.commit):
            return 0
        fields: dict[str, FieldValue] = {
            "commit": head.commit,
            "bundle_hash": head.bundle_hash,
            "code_bytes": head.code_bytes,
        }
        baseline = self.baseline_of(task.task_id, hardware, fields)
        queued = 0
        for baseline_id in self.baseline_ids(task.task_id, hardware, head.commit):
            new = dataclasses.replace(baseline, experiment_id=baseline_id)
            queued += self.store.enqueue_experiment(new, now=self._clock())
        if queued:
            logger.info(
                "task %s: %s head %s measured: %d baselines queued",
                task.task_id,
                hardware,
                head.commit,
                queued,
            )
            self.notify(queued)
        return queued

    def _measured(
        self, task: TaskRecord, hardware: str, commit: str, own: tuple[Run, ...] = ()
    ) -> bool:
        """Whether a head needs no baselines (coordinator.baselines); `own`: its runs not
        recorded yet."""
        runs = [*self.class_runs(task.task_id, hardware)[1], *own]
        return baselines.measured(runs, commit, task.spec.metric.noise)

    def _withdraw_baselines(
        self, task: TaskRecord, hardware: str, superseded: str, commit: str
    ) -> None:
        """The baselines of a head that is no longer the head, not finished yet, are not
        needed: they would measure old code ahead of the merges and replicates queued behind
        them (a running one is told to stop at its next heartbeat)."""
        reason = f"not needed: the head moved on from {superseded[:12]} to {commit[:12]}"
        more = [
            self.more_baseline_id(task.task_id, hardware, superseded, runs)
            for runs in range(self.settings.max_baseline_runs)
        ]
        for baseline_id in self.baseline_ids(task.task_id, hardware, superseded) + more:
            event: dict[str, FieldValue] = {
                "type": "baseline",
                "task_id": task.task_id,
                "experiment_id": baseline_id,
                "hardware": hardware,
                "commit": superseded,
                "metric": None,
                "reason": reason,
                "time_s": self._clock(),
            }
            self.store.withdraw(
                baseline_id,
                verdict=Verdict.DISCARDED.value,
                reason=reason,
                event=event,
                now=self._clock(),
            )

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
        others = [hw for hw in self.store.task_classes(task.task_id) if hw != hardware]
        queued = sum(self._offer(task, kept, other) for other in others)
        if queued:
            self.notify(queued)
        return queued

    def ensure_class(self, task: TaskRecord, hardware: str) -> bool:
        """HeadOps.ensure_class; a class added now is also offered what others kept before."""
        added = super().ensure_class(task, hardware)
        if added:
            self.offer_history(task, hardware)
        return added

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
            self.notify(queued)
        return queued

    def kept_changes(self, task: TaskRecord) -> list[KeptChange]:
        """The changes kept on each of the task's classes, oldest first per class, but the
        offers kept there (offered from their origin). One read of the branches, one
        history per distinct branch head (fresh classes share the task's first commit):
        a restart with thousands of classes reads each once, not once per pair."""
        lineage = self.lineage(task.task_id)
        heads = lineage.branches()
        histories: dict[str, list[CommitInfo]] = {}
        found: dict[str, ExperimentRecord | None] = {}
        changes: list[KeptChange] = []
        for other in self.store.task_classes(task.task_id):
            branch = branch_for(other)
            sha = heads.get(branch)
            if sha is None:
                continue  # no branch (yet): nothing kept there
            if sha not in histories:
                histories[sha] = lineage.history(branch)
            for info in reversed(histories[sha]):  # oldest first
                if info.sha not in found:
                    found[info.sha] = self.store.get_experiment(info.trailers.get("Experiment", ""))
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
        head = self.store.get_head(task.task_id, other)
        if head is None or self.store.get_hypothesis(offer_id) is not None:
            return 0
        lineage = self.lineage(task.task_id)
        hyp = self.store.get_hypothesis(cand.hypothesis_id or "")
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
            self.store.submit_hypothesis(
                offer_id, task.task_id, fields, None, None, now=self._clock()
            )
            logger.info("task %s: offer of %s to %s: %s", task.task_id, title, other, reason)
            return 0
        if merged == lineage.files_at(head.commit):
            return 0  # that class's head has the change already (it came from there)
        merge_id = derived_id("m", "offer", cand.experiment_id, other)
        code_commit = lineage.store_experiment(
            merge_id, merged, parent=head.commit, message=f"offer: {title}"
        )
        bundle_hash = self.store.put_bundle(merged)
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
        submitted = self.store.submit_hypothesis(
            offer_id, task.task_id, fields, offer, bundle_hash, now=self._clock(), offered_to=other
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

    def _merge_forward(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        head: HeadRecord,
        decision: judge.Decision,
        *,
        concluded: ExperimentRecord,
        why: str,
        experiment: dict[str, FieldValue] | None = None,
        claim_by: str | None = None,
        yields: bool = False,
    ) -> None:
        """A winner measured on other code than the head's: merge it onto the current head
        and test it again there, as a `merge` experiment with its replicate beside it (which
        preempt no explore if it `yields`).

        `concluded` is the experiment whose judgement this is (the candidate's replicate, or
        a stacked merge whose base did not become the head; `experiment`: fields of its own
        to record; or an explore that looked better on a head that has moved: `claim_by` its
        worker, whose claim the merge's verdict then checks); `why` starts its reason. While
        another merge onto the same head is being judged (the tip), the change is stacked on
        that merge's code instead (or on an explore being replicated there: a winner found on
        the head itself comes here only so, see `stacks`): if the tip is kept, the head
        becomes exactly the code this merge was built on, and it is judged against that head
        with no run of its own again (see `Scheduler._unstack`); if not, it is merged onto
        the head then.
        """
        lineage = self.lineage(task.task_id)
        code = cand.code_commit or cand.parent_commit
        try:
            merged = lineage.merge(cand.parent_commit, code, head.commit)
        except MergeConflict as exc:
            reason = (
                f"{why}, but the head moved to {head.commit[:12]} and the change conflicts "
                f"with it in {', '.join(exc.paths)}: implement it again"
            )
            conflict = judge.Decision(
                judge.Action.DISCARD, Verdict.CONFLICT, reason, decision.delta, decision.metric
            )
            self._conclude(task, concluded, conflict, hypothesis={"needs_code": True})
            return
        if merged == lineage.files_at(head.commit):
            reason = f"{why}, but the head {head.commit[:12]} already has this change"
            same = judge.Decision(
                judge.Action.DISCARD, Verdict.DISCARDED, reason, decision.delta, decision.metric
            )
            self._conclude(task, concluded, same)
            return
        merge_id = derived_id("m", cand.experiment_id, head.commit)
        replicate_id = derived_id("r", merge_id)  # the id the judge gives its replicate
        fields = self._merge_fields(task, hardware, cand, head, merged, merge_id, replicate_id)
        fields["claim_by"] = claim_by
        fields["yields"] = yields or None
        if concluded.state is ExperimentState.QUEUED:
            # A run set aside before any worker took it: no other worker came for it since
            # it was queued, so its wait goes on in the runs that carry its change on.
            fields["waits_since"] = concluded.waits_since or concluded.created_s
        follow_up = NewExperiment(merge_id, task.task_id, ExperimentKind.MERGE, hardware, fields)
        # A reproduced change merged cleanly will likely beat the head again: its replicate
        # runs alongside it, on another worker, instead of after it (withdrawn if the merge
        # is not better). Queued first, so a crash before the decision repeats both.
        twin = fields | {"candidate_id": merge_id, "twin": merge_id}
        self.store.enqueue_experiment(
            NewExperiment(replicate_id, task.task_id, ExperimentKind.REPLICATE, hardware, twin),
            now=self._clock(),
        )
        onto = f"the head {head.commit[:12]}"
        if fields.get("stacked_on"):
            onto += f" (on top of experiment {fields['stacked_on']}, still being judged)"
        reason = f"{why}; merged onto {onto} as experiment {merge_id}, which must beat it too"
        pending = judge.Decision(
            judge.Action.REPLICATE,
            Verdict.PENDING,
            reason,
            decision.delta,
            decision.metric,
            head_mean=decision.head_mean,
        )
        self._conclude(
            task,
            concluded,
            pending,
            follow_up=follow_up,
            hypothesis={"experiment_id": merge_id},
            experiment=experiment,
        )
        self.store.set_tip(
            task.task_id,
            hardware,
            on=head.commit,
            experiment_id=merge_id,
            commit=str(fields["code_commit"]),
        )
        self.notify(1)  # the twin

    def _merge_fields(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        head: HeadRecord,
        merged: dict[str, bytes],
        merge_id: str,
        replicate_id: str,
    ) -> dict[str, FieldValue]:
        """The fields of the merge of `cand` onto `head` (`merged`), stacked on the tip when
        one is being judged on that head; those already queued, after a crash."""
        queued = self.store.get_experiment(replicate_id)
        if queued is not None:  # repeated after a crash: the twin says what was chosen
            return {
                "hypothesis_id": cand.hypothesis_id,
                "bundle_hash": queued.bundle_hash,
                "parent_commit": queued.parent_commit,
                "code_commit": queued.code_commit,
                "code_bytes": queued.code_bytes,
                "candidate_id": cand.experiment_id,
                "twin": replicate_id,
                "stacked_on": queued.stacked_on,
            }
        lineage = self.lineage(task.task_id)
        base, stacked_on = head.commit, None
        tip = self._tip(task, hardware, head)
        stacked = self._onto_tip(task, cand, tip)
        if tip is not None and stacked is not None:
            merged, base, stacked_on = stacked, tip[1], tip[0]
        hyp = self.store.get_hypothesis(cand.hypothesis_id or "")
        title = hyp.title if hyp else cand.experiment_id
        merged_commit = lineage.store_experiment(
            merge_id, merged, parent=base, message=f"merge: {title}"
        )
        return {
            "hypothesis_id": cand.hypothesis_id,
            "bundle_hash": self.store.put_bundle(merged),
            "parent_commit": base,
            "code_commit": merged_commit,
            "code_bytes": code_bytes(merged, task.spec),
            "candidate_id": cand.experiment_id,
            "twin": replicate_id,
            "stacked_on": stacked_on,
        }

    def stacks(
        self, task: TaskRecord, hardware: str, cand: ExperimentRecord, head: HeadRecord
    ) -> bool:
        """Whether a winner found on the head would be stacked on the tip: another winner on
        that head is still being judged, and this change merges cleanly onto its code and
        adds to it. (Otherwise it is replicated on the head, and may become the tip.)"""
        if head.commit != cand.parent_commit:
            return False
        return self._onto_tip(task, cand, self._tip(task, hardware, head)) is not None

    def mark_tip(self, task: TaskRecord, hardware: str, cand: ExperimentRecord) -> None:
        """A winner found on the head, now being replicated there, is the tip (the code the
        next winners on that head are stacked on) unless another winner is."""
        head = self.store.get_head(task.task_id, hardware)
        if head is None or head.commit != cand.parent_commit or not cand.code_commit:
            return
        if self._tip(task, hardware, head) is None:
            self.store.set_tip(
                task.task_id,
                hardware,
                on=head.commit,
                experiment_id=cand.experiment_id,
                commit=cand.code_commit,
            )

    def _onto_tip(
        self, task: TaskRecord, cand: ExperimentRecord, tip: tuple[str, str] | None
    ) -> dict[str, bytes] | None:
        """`cand`'s change merged onto the tip's code; None if there is no tip, the tip is
        `cand` itself (restacked), the change conflicts with the tip (not with the head) or
        the tip has it already."""
        if tip is None or tip[0] == cand.experiment_id:
            return None
        lineage = self.lineage(task.task_id)
        try:
            stacked = lineage.merge(
                cand.parent_commit, cand.code_commit or cand.parent_commit, tip[1]
            )
        except MergeConflict:
            return None
        return None if stacked == lineage.files_at(tip[1]) else stacked

    def _tip(self, task: TaskRecord, hardware: str, head: HeadRecord) -> tuple[str, str] | None:
        """The last winner stacked onto this head (a merge, or the first explore replicated
        there), (experiment id, code commit), while it and every winner under it are still
        being judged; None if there is none (a stack whose bottom was not kept is built on
        code that will never be the head)."""
        tip = self.store.get_tip(task.task_id, hardware)
        if tip.get("on") != head.commit or not tip.get("experiment_id"):
            return None
        for under in self.stack_under(tip["experiment_id"]):
            if under.experiment_id == head.experiment_id:  # the change the head was made of
                break
            if not self.carries(under.experiment_id):
                return None
        return tip["experiment_id"], tip["commit"]

    def stack_under(self, experiment_id: str) -> list[ExperimentRecord]:
        """A stacked winner and the winners under it, top first, down to the one built on a
        head (at most MAX_STACK)."""
        chain: list[ExperimentRecord] = []
        exp = self.store.get_experiment(experiment_id)
        while exp is not None and len(chain) < MAX_STACK:
            chain.append(exp)
            exp = self.store.get_experiment(exp.stacked_on) if exp.stacked_on else None
        return chain

    def carries(self, experiment_id: str) -> bool:
        """Whether this winner (a merge or its twin, or an explore or its replicate) still
        carries its hypothesis, undecided."""
        exp = self.store.get_experiment(experiment_id)
        if exp is None or exp.state is ExperimentState.DEAD:
            return False
        hyp = self.store.get_hypothesis(exp.hypothesis_id or "")
        if hyp is None or hyp.verdict is not Verdict.PENDING or not hyp.experiment_id:
            return False
        carriers = {exp.experiment_id, exp.twin, exp.replicate_id}
        return hyp.experiment_id in carriers.union(evidence.chain_ids(exp.experiment_id))


def _number(text: str) -> float | None:
    """A trailer's number, or None when it has none."""
    try:
        return float(text)
    except ValueError:
        return None
