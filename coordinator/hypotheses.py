"""Proposer support: a task's context, and hypotheses submitted with or without a change.

A change names only editable files, each within `MAX_FILE_BYTES`; it is applied to the
files of its parent commit (the proposer's head), kept under `refs/experiments/<id>` and
queued as an explore experiment, unless identical code was explored before (then the
hypothesis is recorded as a discarded duplicate). A text-only hypothesis waits, pending,
for a proposer that writes code.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from coordinator.heads import code_bytes, new_id
from coordinator.models import HypothesisRecord
from coordinator.scheduler import Scheduler
from coordinator.store import NewExperiment, Store
from shared.errors import Conflict, InvalidInput, LineageError, NotFound, PayloadTooLarge
from shared.models import (
    MAX_FILE_BYTES,
    ExperimentKind,
    HypothesisCreate,
    HypothesisSummary,
    ProposerContext,
    Verdict,
)
from shared.task import PROGRAM_FILE, hash_files

logger = logging.getLogger(__name__)

# Every title reaches the proposer (it budgets the prompt itself).
HISTORY_LIMIT = 5000


@dataclass(frozen=True)
class Submission:
    hypothesis_id: str
    experiment_id: str | None
    duplicate: bool


def _check_change(change: dict[str, str], editable: tuple[str, ...]) -> dict[str, bytes]:
    if not change:
        raise InvalidInput("a change names at least one editable file")
    out: dict[str, bytes] = {}
    for path, text in change.items():
        if path not in editable:
            raise InvalidInput(f"{path!r} is not an editable file of this task: {list(editable)}")
        content = text.encode("utf-8")
        if len(content) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"{path}: {len(content)} bytes > {MAX_FILE_BYTES}")
        out[path] = content
    return out


def submit_hypothesis(scheduler: Scheduler, create: HypothesisCreate) -> Submission:
    """Record a hypothesis and queue its explore experiment (see module doc)."""
    store = scheduler.store
    task = scheduler.get_task(create.task_id)
    hypothesis_id = new_id("h")
    fields = {
        "title": create.title,
        "rationale": create.rationale,
        "proposer": create.proposer,
        "author": create.author,
    }
    now = time.time()
    implements = _implemented(store, create) if create.implements else None
    if implements is not None and not create.author:
        fields["author"] = implements.author
    if create.change is None:
        store.submit_hypothesis(
            hypothesis_id,
            task.task_id,
            {**fields, "needs_code": True, "parent_commit": create.parent_commit},
            None,
            None,
            now=now,
        )
        return Submission(hypothesis_id, None, False)
    change = _check_change(create.change, task.spec.editable)
    head = scheduler.primary_head(task)
    parent = create.parent_commit or (head.commit if head else task.init_commit)
    lineage = scheduler.lineage(task.task_id)
    try:
        files = lineage.files_at(parent) | change
    except LineageError:
        raise NotFound(f"task {task.task_id}: unknown parent commit {parent!r}") from None
    bundle_hash = hash_files(files)
    experiment_id = new_id("e")
    code_commit = ""
    if store.explored_by(task.task_id, bundle_hash) is None:
        code_commit = lineage.store_experiment(
            experiment_id, files, parent=parent, message=create.title
        )
        store.put_bundle(files)
    explore = NewExperiment(
        experiment_id,
        task.task_id,
        ExperimentKind.EXPLORE,
        None,
        {
            "hypothesis_id": hypothesis_id,
            "bundle_hash": bundle_hash,
            "parent_commit": parent,
            "code_commit": code_commit,
            "code_bytes": code_bytes(files, task.spec),
        },
    )
    hyp_fields = {
        **fields,
        "parent_commit": parent,
        "change_hash": hash_files(change),
    }
    try:
        submitted = store.submit_hypothesis(
            hypothesis_id,
            task.task_id,
            hyp_fields,
            explore,
            bundle_hash,
            now=now,
            implements=_implementing(implements, hypothesis_id),
        )
    except Conflict:
        if code_commit:  # another proposer implemented it first: this code is no one's
            lineage.drop_experiment(experiment_id, code_commit)
        raise
    if submitted.duplicate and code_commit:  # the same code came in meanwhile
        lineage.drop_experiment(experiment_id, code_commit)
    if submitted.duplicate:
        logger.info(
            "task %s: hypothesis %s duplicates experiment %s",
            task.task_id,
            hypothesis_id,
            submitted.duplicate_of,
        )
    else:
        scheduler.notify(1)
    return Submission(hypothesis_id, submitted.experiment_id, submitted.duplicate)


def _implementing(
    implements: HypothesisRecord | None, hypothesis_id: str
) -> tuple[str, str] | None:
    """(the hypothesis implemented, its new reason), for `submit_hypothesis`."""
    if implements is None:
        return None
    reason = f"implemented as {hypothesis_id}"
    if implements.verdict is Verdict.CONFLICT:  # keep why it had to be done again
        reason = f"{implements.reason}; implemented again as {hypothesis_id}"
    return implements.hypothesis_id, reason


def _implemented(store: Store, create: HypothesisCreate) -> HypothesisRecord:
    """The text-only hypothesis a change implements; it must exist and still need code."""
    original = store.get_hypothesis(create.implements or "")
    if original is None or original.task_id != create.task_id:
        raise NotFound(f"task {create.task_id}: no hypothesis {create.implements!r} to implement")
    if create.change is None:
        raise InvalidInput("a hypothesis that implements another needs a change")
    if not original.needs_code:
        raise InvalidInput(f"hypothesis {original.hypothesis_id} already has code")
    return original


def _summary(hyp: HypothesisRecord, log_tail: str = "") -> HypothesisSummary:
    return HypothesisSummary(
        rationale=hyp.rationale,
        author=hyp.author,
        hypothesis_id=hyp.hypothesis_id,
        title=hyp.title,
        proposer=hyp.proposer,
        verdict=hyp.verdict,
        delta=hyp.delta,
        metric=hyp.metric,
        change_hash=hyp.change_hash,
        reason=hyp.reason,
        log_tail=log_tail,
    )


def build_context(
    scheduler: Scheduler, task_id: str, hardware: str | None = None
) -> ProposerContext:
    """What a proposer reads: program.md, the head's editable files, history, in flight."""
    store = scheduler.store
    task = scheduler.get_task(task_id)
    head = scheduler.primary_head(task, hardware)
    commit = head.commit if head else task.init_commit
    files = scheduler.lineage(task_id).files_at(commit)
    stats = scheduler.stats(task_id, head.hardware)[1] if head else None
    history: list[HypothesisSummary] = []
    in_flight: list[HypothesisSummary] = []
    pending: list[HypothesisSummary] = []
    hypotheses = store.list_hypotheses(task_id, HISTORY_LIMIT)
    crashed = [h.experiment_id for h in hypotheses if h.verdict is Verdict.CRASHED]
    tails = {
        e.experiment_id: e.result.log_tail if e.result else (e.last_error or "")
        for e in store.get_experiments([c for c in crashed if c])
    }
    for hyp in reversed(hypotheses):  # oldest first
        if hyp.needs_code and hyp.verdict in (Verdict.PENDING, Verdict.CONFLICT):
            # Text-only ideas, and winners whose change conflicted with a newer head: both
            # wait for code on the current head (the conflict's reason says why).
            pending.append(_summary(hyp))
        elif hyp.verdict is Verdict.PENDING and hyp.experiment_id:
            in_flight.append(_summary(hyp))
        else:
            history.append(_summary(hyp, tails.get(hyp.experiment_id or "", "")))
    return ProposerContext(
        task_id=task_id,
        spec=task.spec,
        program=files.get(PROGRAM_FILE, b"").decode("utf-8", "replace"),
        head_commit=commit,
        head_files={
            path: files[path].decode("utf-8", "replace")
            for path in task.spec.editable
            if path in files
        },
        head_metric=stats.mean if stats else None,
        head_std=stats.std if stats and stats.df else None,
        history=history,
        in_flight=in_flight,
        pending=pending,
        queue_depth=store.queue_depth(task_id),
    )
