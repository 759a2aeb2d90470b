"""Crash repair on start: make Redis agree with the lineage, then apply pending results.

Git is the truth for accepted code. For each task and hardware class, every commit on the
branch past Redis's head carries an `Experiment:` trailer; that experiment is made kept in
Redis (`Keeper.apply_kept`, idempotent), oldest first. A branch whose history does not
contain Redis's head (Redis restored from elsewhere) resets the head to git's and measures
it anew. Nothing is ever committed here, so nothing can be committed twice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from autoswarm.coordinator import judge
from autoswarm.coordinator.heads import derived_id
from autoswarm.coordinator.lineage import CommitInfo, branch_for
from autoswarm.coordinator.models import TaskRecord
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.shared.models import Verdict

logger = logging.getLogger(__name__)


def _commits_after(history: list[CommitInfo], commit: str) -> list[CommitInfo] | None:
    """The commits after `commit`, oldest first; None if `commit` is not in the history."""
    newer: list[CommitInfo] = []
    for info in history:  # newest first
        if info.sha == commit:
            return list(reversed(newer))
        newer.append(info)
    return None


def reconcile_class(
    scheduler: Scheduler, task: TaskRecord, hardware: str, git_head: str | None
) -> int:
    """Bring one class's head in Redis up to its branch (at `git_head`, None: missing); how
    many commits were applied."""
    store = scheduler.store
    lineage = scheduler.plumbing.lineage(task.task_id)
    branch = branch_for(hardware)
    head = store.get_head(task.task_id, hardware)
    if git_head is None:
        start = head.commit if head else task.init_commit
        logger.error(
            "task %s: branch %s is missing; recreating it at %s", task.task_id, branch, start
        )
        lineage.ensure_branch(branch, start)
        return 0
    if head is not None and head.commit == git_head:
        return 0
    chain = _commits_after(lineage.history(branch), head.commit) if head else None
    if chain is None:
        scheduler.heads.reset_head(task, hardware, git_head)
        return 0
    applied = 0
    for info in chain:
        if not _apply_commit(scheduler, task, hardware, info):
            scheduler.heads.reset_head(task, hardware, git_head)
            return applied
        applied += 1
    return applied


def _apply_commit(scheduler: Scheduler, task: TaskRecord, hardware: str, info: CommitInfo) -> bool:
    store = scheduler.store
    experiment_id = info.trailers.get("Experiment", "")
    cand = store.get_experiment(experiment_id) if experiment_id else None
    rep = None
    if cand is not None:
        rep = store.get_experiment(cand.replicate_id or derived_id("r", cand.experiment_id))
    if cand is None or rep is None:
        logger.error(
            "task %s: commit %s names experiment %r, unknown to Redis",
            task.task_id,
            info.sha,
            experiment_id,
        )
        return False
    metrics = [r.metric for r in (cand.result, rep.result) if r and r.metric is not None]
    mean = sum(metrics) / len(metrics) if metrics else None
    reason = f"kept: committed as {info.sha[:12]} ({info.trailers.get('Metric', '')})"
    delta = float(info.trailers["Delta"]) if _is_float(info.trailers.get("Delta")) else None
    decision = judge.Decision(judge.Action.KEEP, Verdict.KEPT, reason, delta, mean, True)
    logger.warning(
        "task %s: %s: experiment %s is on the lineage but not in Redis; applying it",
        task.task_id,
        hardware,
        experiment_id,
    )
    scheduler.keeper.apply_kept(task, hardware, cand, rep, info.sha, decision)
    return True


def _is_float(text: str | None) -> bool:
    try:
        float(text or "")
    except ValueError:
        return False
    return True


class Interrupted(Exception):
    """A stop was asked for (SIGTERM, SIGINT) while reconciling; what was done is kept."""


Stopping = Callable[[], bool]


def reconcile(scheduler: Scheduler, stopping: Stopping = lambda: False) -> int:
    """Reconcile every task and class with the lineage, make the offers of kept changes to
    other classes that a crash left unmade, then apply pending judgements.

    Linear in the classes: the branch heads are read at once, each distinct history once
    (`kept_changes`). `stopping` is asked between classes; when it says so, `Interrupted`
    is raised (each step is idempotent: the next start does the rest)."""
    applied = 0
    for task in scheduler.store.list_tasks():
        applied += _reconcile_task(scheduler, task, stopping)
    # A judgement can queue another (a replicate's keep frees nothing else), so a few rounds.
    for _ in range(10):
        _check(stopping, "judging")
        if scheduler.process_pending(1000).handled == 0:
            break
    return applied


def _reconcile_task(scheduler: Scheduler, task: TaskRecord, stopping: Stopping) -> int:
    applied = 0
    with scheduler.plumbing.task_lock(task.task_id):
        classes = scheduler.store.task_classes(task.task_id)
        logger.info("reconcile: task %s, %d hardware classes", task.task_id, len(classes))
        heads = scheduler.plumbing.lineage(task.task_id).branches()
        for done, hardware in enumerate(classes):
            _check(stopping, f"task {task.task_id}, class {done + 1} of {len(classes)}")
            try:
                applied += reconcile_class(
                    scheduler, task, hardware, heads.get(branch_for(hardware))
                )
            except Exception:
                logger.exception("task %s: %s: reconcile failed", task.task_id, hardware)
        if len(classes) < 2:
            return applied
        # Offers a crash cut short (between a keep or a new class and its offers): each
        # made already is found by its derived id, so this costs reads, not merges.
        kept = scheduler.offers.kept_changes(task)
        for done, hardware in enumerate(classes):
            _check(stopping, f"task {task.task_id}, offers to class {done + 1} of {len(classes)}")
            try:
                scheduler.offers.offer_history(task, hardware, kept)
            except Exception:
                logger.exception("task %s: %s: offers failed", task.task_id, hardware)
    return applied


def _check(stopping: Stopping, where: str) -> None:
    if stopping():
        raise Interrupted(f"reconcile: stopped at {where}; the next start goes on from there")
