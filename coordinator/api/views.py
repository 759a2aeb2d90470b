"""Read-side assembly: tasks with their heads' stats, experiments with filters and diffs.

No fastapi here: the routes call these in a thread.
"""

from __future__ import annotations

from dataclasses import dataclass

from coordinator.models import (
    ExperimentPublic,
    ExperimentRecord,
    HeadPublic,
    TaskPublic,
    TaskRecord,
)
from coordinator.scheduler import Scheduler
from shared.errors import LineageError, NotFound
from shared.models import ExperimentKind

# A page scans at most this many experiments for matches before it hands back a cursor.
MAX_SCAN = 5000


def task_view(scheduler: Scheduler, task: TaskRecord) -> TaskPublic:
    heads: list[HeadPublic] = []
    for hardware in scheduler.store.task_classes(task.task_id):
        head, stats = scheduler.stats(task.task_id, hardware)
        if head is None:
            continue
        heads.append(
            HeadPublic(
                **head.model_dump(),
                mean=stats.mean,
                std=stats.std if stats.df else None,
                runs=stats.runs,
            )
        )
    return TaskPublic(**task.model_dump(), heads=heads)


@dataclass(frozen=True)
class ExperimentFilter:
    task_id: str | None = None
    status: str | None = None
    kind: str | None = None
    verdict: str | None = None
    worker_id: str | None = None

    def matches(self, exp: ExperimentRecord) -> bool:
        return (
            (self.status is None or exp.state.value == self.status)
            and (self.kind is None or exp.kind.value == self.kind)
            and (self.verdict is None or (exp.verdict and exp.verdict.value) == self.verdict)
            and (self.worker_id is None or exp.worker_id == self.worker_id)
        )


def list_experiments(
    scheduler: Scheduler, where: ExperimentFilter, cursor: int | None, limit: int
) -> tuple[list[ExperimentRecord], str | None]:
    """A page of experiments, newest first, and the cursor of the next page (None: last)."""
    store = scheduler.store
    found: list[ExperimentRecord] = []
    scanned = 0
    before = cursor
    batch = max(limit, 50)
    while len(found) < limit and scanned < MAX_SCAN:
        page = store.experiment_page(where.task_id, before_seq=before, count=batch)
        if not page:
            return found, None
        records = {e.experiment_id: e for e in store.get_experiments([eid for eid, _ in page])}
        for experiment_id, seq in page:
            scanned += 1
            before = seq
            exp = records.get(experiment_id)
            if exp is not None and where.matches(exp):
                found.append(exp)
                if len(found) == limit:
                    break
    return found, str(before) if before is not None else None


def experiment_view(scheduler: Scheduler, experiment_id: str) -> ExperimentPublic:
    exp = scheduler.store.get_experiment(experiment_id)
    if exp is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    code_of = exp.experiment_id
    if exp.kind is ExperimentKind.REPLICATE:
        code_of = exp.candidate_id or ""
    diff = ""
    if exp.kind is not ExperimentKind.BASELINE and code_of:
        try:
            diff = scheduler.lineage(exp.task_id).diff(code_of)
        except LineageError:
            diff = ""
    return ExperimentPublic(**exp.model_dump(), diff=diff)
