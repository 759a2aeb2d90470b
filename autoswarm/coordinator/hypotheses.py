"""Proposer support: a task's context, and hypotheses submitted with or without a change.

A change names only editable files, each within `MAX_FILE_BYTES`; it is applied to the
files of its parent commit (the proposer's head), kept under `refs/experiments/<id>` and
queued as an explore experiment, unless identical code was explored before (then the
hypothesis is recorded as a discarded duplicate). A text-only hypothesis waits, pending,
for a proposer that writes code.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from dataclasses import dataclass
from pathlib import Path

from autoswarm.coordinator.heads import code_bytes, new_id
from autoswarm.coordinator.lineage import Lineage
from autoswarm.coordinator.models import ExperimentRecord, HypothesisRecord
from autoswarm.coordinator.proposers.context import rows_worth_a_diff
from autoswarm.coordinator.read_side import Proposals, ReadSide
from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.shared.errors import Conflict, InvalidInput, LineageError, NotFound, PayloadTooLarge
from autoswarm.shared.models import (
    MAX_FILE_BYTES,
    ExperimentKind,
    HypothesisCreate,
    HypothesisSummary,
    ProposerContext,
    Verdict,
)
from autoswarm.shared.task import PROGRAM_FILE, hash_files

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


def submit_hypothesis(proposals: Proposals, create: HypothesisCreate) -> Submission:
    """Record a hypothesis and queue its explore experiment (see module doc)."""
    store = proposals.store
    task = proposals.get_task(create.task_id)
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
    head = proposals.primary_head(task)
    parent = create.parent_commit or (head.commit if head else task.init_commit)
    lineage = proposals.lineage(task.task_id)
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
        proposals.notify(1)
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


def build_context(reads: ReadSide, task_id: str, hardware: str | None = None) -> ProposerContext:
    """What a proposer reads: program.md, the head's editable files, history, in flight."""
    store = reads.store
    task = reads.get_task(task_id)
    head = reads.primary_head(task, hardware)
    commit = head.commit if head else task.init_commit
    files = reads.lineage(task_id).files_at(commit)
    stats = reads.stats(task_id, head.hardware)[1] if head else None
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
    history = _with_diffs(reads, task_id, hypotheses, history, task.spec.lower_is_better)
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
        read_only_files=_read_only_files(files, task.spec.protected),
    )


def _read_only_files(files: dict[str, bytes], protected: tuple[str, ...]) -> dict[str, str]:
    """The protected files program.md names, for the proposer to read (docs/protocol.md)."""
    program = files.get(PROGRAM_FILE, b"").decode("utf-8", "replace")
    named = [
        path
        for path in protected
        if path in files and re.search(rf"(?<![\w/.-]){re.escape(path)}(?![\w-])", program)
    ]
    return {path: files[path].decode("utf-8", "replace") for path in named}


def _with_diffs(
    reads: ReadSide,
    task_id: str,
    records: list[HypothesisRecord],
    history: list[HypothesisSummary],
    lower_is_better: bool,
) -> list[HypothesisSummary]:
    """`history` with the diffs a prompt can show filled in (`rows_worth_a_diff`)."""
    rows = rows_worth_a_diff(history, lower_is_better=lower_is_better)
    if not rows:
        return history
    experiment_of = {r.hypothesis_id: r.experiment_id for r in records if r.experiment_id}
    wanted = [experiment_of.get(history[i].hypothesis_id) for i in rows]
    experiments = reads.store.get_experiments([e for e in wanted if e])
    code_of = {e.experiment_id: _code_of(e) for e in experiments}
    lineage = reads.lineage(task_id)
    out = list(history)
    for i in rows:
        code = code_of.get(experiment_of.get(history[i].hypothesis_id) or "")
        if code:
            diff = _diff(lineage.path.parent, task_id, code)
            out[i] = history[i].model_copy(update={"diff": diff})
    return out


def _code_of(experiment: ExperimentRecord) -> str:
    """The experiment whose commit holds this one's code (a replicate runs its candidate's)."""
    if experiment.kind is ExperimentKind.REPLICATE:
        return experiment.candidate_id or ""
    return "" if experiment.kind is ExperimentKind.BASELINE else experiment.experiment_id


@functools.lru_cache(maxsize=1024)
def _diff(root: Path, task_id: str, experiment_id: str) -> str:
    """An experiment's diff (its code never changes: read from git once per process)."""
    try:
        return Lineage(root, task_id).diff(experiment_id)
    except LineageError:
        return ""
