"""The runs that check a winner: its replicate, and its merge onto the current head.

A winner measured on other code than the head's is three-way merged onto the current head
and queued as a `merge` experiment together with its replicate (its twin: two workers run
them at once; the twin is withdrawn if the merge is not better); a conflict sends its
hypothesis back for new code. While another winner on that head is still being judged (the
tip), it is stacked on the tip's code instead (`autoswarm.coordinator.stacks`). Ids are derived from
what they check, so queueing one twice is a no-op.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoswarm.coordinator import evidence, judge
from autoswarm.coordinator.heads import code_bytes, derived_id
from autoswarm.coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from autoswarm.coordinator.plumbing import Plumbing, hardware_of
from autoswarm.coordinator.stacks import Stacks
from autoswarm.coordinator.store import NewExperiment
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.coordinator.store.judging import Observation
from autoswarm.coordinator.verdicts import Verdicts
from autoswarm.shared.errors import MergeConflict
from autoswarm.shared.models import ExperimentKind, ExperimentState, Verdict


@dataclass(eq=False)
class Merges:
    """Queues a winner's replicate, or its merge onto the head with its twin."""

    plumbing: Plumbing
    stacks: Stacks
    verdicts: Verdicts

    def replicate_of(self, cand: ExperimentRecord, hardware: str, index: int = 0) -> NewExperiment:
        """The same code on the same class, the `index`-th replicate of its chain: by a
        worker of another owner while one is active on the class (leasing.lua; with
        `require_two_owners`, only so), else by another worker; by its own worker only
        after `replicate_wait_s` with no other worker."""
        since = self.plumbing.clock() - max(300.0, 5 * self.plumbing.settings.lease_ttl_s)
        owners = set(self.plumbing.store.active_owners(hardware, since))
        strict = self.plumbing.settings.require_two_owners
        fields: dict[str, FieldValue] = {
            "hypothesis_id": cand.hypothesis_id,
            "bundle_hash": cand.bundle_hash,
            "parent_commit": cand.parent_commit,
            "code_commit": cand.code_commit,
            "code_bytes": cand.code_bytes,
            "candidate_id": cand.experiment_id,
            "exclude_worker": cand.worker_id,
            "exclude_owner": cand.owner if strict or owners - {cand.owner} else None,
            "finder_owner": cand.owner,
            "two_owners": True if strict else None,
        }
        replicate_id = evidence.chain_ids(cand.experiment_id)[index]
        return NewExperiment(replicate_id, cand.task_id, ExperimentKind.REPLICATE, hardware, fields)

    def conclude_replicated(
        self,
        task: TaskRecord,
        concluded: ExperimentRecord,
        cand: ExperimentRecord,
        decision: judge.Decision,
        *,
        index: int = 0,
        experiment: dict[str, FieldValue] | None = None,
        observed: tuple[str, list[Observation]] | None = None,
    ) -> bool:
        """Record `decision` on `concluded` with the `index`-th replicate of `cand` queued
        as its follow-up (`experiment`: its own fields, to which the replicate's id is added);
        True if applied now."""
        replicate = self.replicate_of(cand, hardware_of(concluded), index)
        if experiment is not None:
            experiment = experiment | {"replicate_id": replicate.experiment_id}
        return self.verdicts.conclude(
            task,
            concluded,
            decision,
            follow_up=replicate,
            hypothesis={"experiment_id": replicate.experiment_id},
            experiment=experiment,
            observed=observed,
        )

    def merge_forward(
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
        the head itself comes here only so, see `Stacks.would_stack`): if the tip is kept, the head
        becomes exactly the code this merge was built on, and it is judged against that head
        with no run of its own again (see `Stacking.unstack`); if not, it is merged onto
        the head then.
        """
        lineage = self.plumbing.lineage(task.task_id)
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
            self.verdicts.conclude(task, concluded, conflict, hypothesis={"needs_code": True})
            return
        if merged == lineage.files_at(head.commit):
            reason = f"{why}, but the head {head.commit[:12]} already has this change"
            same = judge.Decision(
                judge.Action.DISCARD, Verdict.DISCARDED, reason, decision.delta, decision.metric
            )
            self.verdicts.conclude(task, concluded, same)
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
        self.plumbing.store.enqueue_experiment(
            NewExperiment(replicate_id, task.task_id, ExperimentKind.REPLICATE, hardware, twin),
            now=self.plumbing.clock(),
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
        self.verdicts.conclude(
            task,
            concluded,
            pending,
            follow_up=follow_up,
            hypothesis={"experiment_id": merge_id},
            experiment=experiment,
        )
        self.plumbing.store.set_tip(
            task.task_id,
            hardware,
            on=head.commit,
            experiment_id=merge_id,
            commit=str(fields["code_commit"]),
        )
        self.plumbing.notify(1)  # the twin

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
        queued = self.plumbing.store.get_experiment(replicate_id)
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
        lineage = self.plumbing.lineage(task.task_id)
        base, stacked_on = head.commit, None
        tip = self.stacks.tip(task, hardware, head)
        stacked = self.stacks.onto_tip(task, cand, tip)
        if tip is not None and stacked is not None:
            merged, base, stacked_on = stacked, tip[1], tip[0]
        hyp = self.plumbing.store.get_hypothesis(cand.hypothesis_id or "")
        title = hyp.title if hyp else cand.experiment_id
        merged_commit = lineage.store_experiment(
            merge_id, merged, parent=base, message=f"merge: {title}"
        )
        return {
            "hypothesis_id": cand.hypothesis_id,
            "bundle_hash": self.plumbing.store.put_bundle(merged),
            "parent_commit": base,
            "code_commit": merged_commit,
            "code_bytes": code_bytes(merged, task.spec),
            "candidate_id": cand.experiment_id,
            "twin": replicate_id,
            "stacked_on": stacked_on,
        }
