"""Queued explores re-derived when the head moves, before any worker takes them.

An explore proposed on a head that has since moved would measure its change against old
code: a run spent on a question nobody asks any more, and, if it looks better there, a merge
and its replicate on top. So when a head moves, each explore still queued on the old head is
three-way merged onto the new one: merged cleanly, it is queued again on the new head under
the same hypothesis (a new experiment; the old one is withdrawn); where the new head changed
the same lines (the constant it moves was moved meanwhile), it is withdrawn and its hypothesis
concluded as a conflict, back to the proposers to implement on the new head; where the new
head already has the change, or the merged code was explored before, it is withdrawn as
discarded.

Guarantees: only queued explores are touched (a leased one runs on); each step is idempotent
(the new experiment's id is derived from the old one and the head). Does not: re-derive
merges, replicates or baselines (the scheduler owns those), or scan more than the task's
latest `SCAN` experiments.
"""

from __future__ import annotations

import logging

from autoswarm.coordinator.heads import code_bytes, derived_id
from autoswarm.coordinator.lineage import Lineage
from autoswarm.coordinator.models import ExperimentRecord, TaskRecord
from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.shared.errors import MergeConflict
from autoswarm.shared.models import ExperimentKind, ExperimentState, Verdict
from autoswarm.shared.task import hash_files

logger = logging.getLogger(__name__)

# Queued explores are among the newest experiments; a queue deeper than this is not looked at.
SCAN = 500


def rederive_queued(
    store: Store, lineage: Lineage, task: TaskRecord, old_commit: str, new_commit: str, now: float
) -> int:
    """Re-derive every explore queued on `old_commit` onto `new_commit` (see the module doc);
    how many were queued again."""
    ids = store.task_experiment_ids(task.task_id)[-SCAN:]
    queued = 0
    for exp in store.get_experiments(ids):
        if (
            exp.kind is ExperimentKind.EXPLORE
            and exp.state is ExperimentState.QUEUED
            and exp.parent_commit == old_commit
            and _carries(store, exp)
        ):
            queued += _rederive(store, lineage, task, exp, new_commit, now)
    return queued


def _carries(store: Store, exp: ExperimentRecord) -> bool:
    hyp = store.get_hypothesis(exp.hypothesis_id or "")
    return (
        hyp is not None
        and hyp.verdict is Verdict.PENDING
        and hyp.experiment_id == (exp.experiment_id)
    )


def _rederive(
    store: Store,
    lineage: Lineage,
    task: TaskRecord,
    exp: ExperimentRecord,
    head: str,
    now: float,
) -> int:
    moved = f"the head moved to {head[:12]} before it ran"
    try:
        merged = lineage.merge(exp.parent_commit, exp.code_commit or exp.parent_commit, head)
    except MergeConflict as exc:
        reason = f"{moved}, changing the same lines in {', '.join(exc.paths)}: implement it again"
        _close(store, task, exp, Verdict.CONFLICT, reason, now, {"needs_code": True})
        return 0
    head_files = lineage.files_at(head)
    if merged == head_files:
        _close(store, task, exp, Verdict.DISCARDED, f"{moved}, with this change in it", now)
        return 0
    bundle_hash = hash_files(merged)
    prior = store.explored_by(task.task_id, bundle_hash)
    if prior is not None:
        reason = f"{moved}; there it is the code already explored as experiment {prior}"
        _close(store, task, exp, Verdict.DISCARDED, reason, now)
        return 0
    new_id = derived_id("e", exp.experiment_id, head)
    hyp = store.get_hypothesis(exp.hypothesis_id or "")
    code_commit = lineage.store_experiment(
        new_id, merged, parent=head, message=hyp.title if hyp else new_id
    )
    store.put_bundle(merged)
    fields: dict[str, FieldValue] = {
        "hypothesis_id": exp.hypothesis_id,
        "bundle_hash": bundle_hash,
        "parent_commit": head,
        "code_commit": code_commit,
        "code_bytes": code_bytes(merged, task.spec),
    }
    change = {p: merged[p] for p in task.spec.editable if merged.get(p) != head_files.get(p)}
    follow_up = NewExperiment(new_id, task.task_id, ExperimentKind.EXPLORE, exp.hardware, fields)
    reason = f"{moved}: re-derived onto it as experiment {new_id}"
    hypothesis: dict[str, FieldValue] = {
        "experiment_id": new_id,
        "parent_commit": head,
        "change_hash": hash_files(change),
    }
    store.conclude(
        exp.experiment_id,
        task_id=task.task_id,
        experiment={"verdict": Verdict.DISCARDED.value, "reason": reason},
        hypothesis_id=exp.hypothesis_id,
        hypothesis=hypothesis,
        event=_event(task, exp, Verdict.PENDING, reason, now),
        follow_up=follow_up,
        now=now,
    )
    store.withdraw(
        exp.experiment_id,
        verdict=Verdict.DISCARDED.value,
        reason=reason,
        event=_event(task, exp, Verdict.DISCARDED, reason, now),
        now=now,
    )
    logger.info("task %s: explore %s %s", task.task_id, exp.experiment_id, reason)
    return 1


def _close(
    store: Store,
    task: TaskRecord,
    exp: ExperimentRecord,
    verdict: Verdict,
    reason: str,
    now: float,
    extra: dict[str, FieldValue] | None = None,
) -> None:
    """Withdraw a queued explore and conclude its hypothesis with `verdict`."""
    store.conclude(
        exp.experiment_id,
        task_id=task.task_id,
        experiment={"verdict": verdict.value, "reason": reason},
        hypothesis_id=exp.hypothesis_id,
        hypothesis={"verdict": verdict.value, "reason": reason, **(extra or {})},
        event=_event(task, exp, verdict, reason, now),
        now=now,
    )
    store.withdraw(
        exp.experiment_id,
        verdict=verdict.value,
        reason=reason,
        event=_event(task, exp, verdict, reason, now),
        now=now,
    )
    logger.info("task %s: explore %s withdrawn: %s", task.task_id, exp.experiment_id, reason)


def _event(
    task: TaskRecord, exp: ExperimentRecord, verdict: Verdict, reason: str, now: float
) -> dict[str, FieldValue]:
    return {
        "type": "verdict",
        "task_id": task.task_id,
        "experiment_id": exp.experiment_id,
        "hypothesis_id": exp.hypothesis_id,
        "verdict": verdict.value,
        "reason": reason,
        "time_s": now,
    }
