"""Read-side assembly: tasks with their heads' stats, experiments through the indexes, one
experiment with its hypothesis and diff.

No fastapi here: the routes call these in a thread.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from autoswarm.coordinator.models import (
    HeadPublic,
    TaskPublic,
    TaskRecord,
)
from autoswarm.coordinator.read_models import ExperimentDetail, ExperimentPage, ExperimentSummary
from autoswarm.coordinator.read_side import ReadSide
from autoswarm.coordinator.short_ids import resolve_experiment_id
from autoswarm.coordinator.store.filing import effective_verdict
from autoswarm.coordinator.store.query import ExperimentQuery
from autoswarm.shared.errors import InvalidInput, LineageError, NotFound
from autoswarm.shared.models import ExperimentKind

SUMMARY_FIELDS = (
    "experiment_id",
    "task_id",
    "kind",
    "state",
    "seq",
    "hypothesis_id",
    "verdict",
    "reason",
    "head_metric",
    "hardware",
    "measured_on",
    "worker_id",
    "owner",
    "result",
    "code_commit",
    "parent_commit",
    "candidate_id",
    "created_s",
    "finished_s",
)
HYPOTHESIS_FIELDS = ("title", "proposer", "author", "verdict", "delta")


def task_view(reads: ReadSide, task: TaskRecord) -> TaskPublic:
    heads: list[HeadPublic] = []
    for hardware in reads.store.task_classes(task.task_id):
        head, stats = reads.stats(task.task_id, hardware)
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


def plan_query(reads: ReadSide, query: ExperimentQuery) -> ExperimentQuery:
    """The query as the store runs it: a score sort learns its task's direction and, for a
    task with one hardware class, that class."""
    if query.sort != "score":
        return query
    if not query.task_id:
        raise InvalidInput("sort=score needs task_id: scores are compared within one task")
    task = reads.get_task(query.task_id)
    hardware = query.hardware
    if hardware is None:
        classes = reads.store.task_classes(task.task_id)
        if len(classes) != 1:
            raise InvalidInput(
                f"sort=score needs hardware (one of {classes}): scores compare within a class"
            )
        hardware = classes[0]
    return replace(query, hardware=hardware, lower_is_better=task.spec.lower_is_better)


def _number(value: Any) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None


def summarise(row: dict[str, str], hyp: dict[str, str]) -> ExperimentSummary:
    """A table row from an experiment's fields and its hypothesis's."""
    result = json.loads(row["result"]) if row.get("result") else {}
    memory = result.get("peak_vram_mb") or result.get("peak_rss_mb")
    return ExperimentSummary(
        experiment_id=row["experiment_id"],
        task_id=row.get("task_id", ""),
        kind=row.get("kind", ""),
        state=row.get("state", ""),
        seq=int(row.get("seq", 0)),
        hypothesis_id=row.get("hypothesis_id"),
        title=hyp.get("title", "baseline" if row.get("kind") == "baseline" else ""),
        proposer=hyp.get("proposer", ""),
        author=hyp.get("author", ""),
        verdict=effective_verdict(row, hyp.get("verdict")),
        reason=row.get("reason", ""),
        hardware=row.get("measured_on") or row.get("hardware") or "",
        worker_id=row.get("worker_id"),
        owner=row.get("owner"),
        status=result.get("status"),
        metric=_number(result.get("metric")),
        delta=_number(hyp.get("delta")),
        head_metric=_number(row.get("head_metric")),
        memory_mb=_number(memory),
        wall_s=_number(result.get("wall_s")),
        code_commit=row.get("code_commit"),
        parent_commit=row.get("parent_commit", ""),
        candidate_id=row.get("candidate_id"),
        created_s=float(row.get("created_s", 0) or 0),
        finished_s=_number(row.get("finished_s")),
    )


def summaries(reads: ReadSide, experiment_ids: list[str]) -> list[ExperimentSummary]:
    store = reads.store
    rows = [r for r in store.experiment_rows(experiment_ids, SUMMARY_FIELDS) if r]
    hyps = store.hypothesis_fields([r.get("hypothesis_id", "") for r in rows], HYPOTHESIS_FIELDS)
    return [summarise(row, hyp) for row, hyp in zip(rows, hyps, strict=True)]


def list_experiments(
    reads: ReadSide, query: ExperimentQuery, cursor: str | None, limit: int, view: str
) -> ExperimentPage:
    """A page of experiments (summaries, or whole records) and the next page's cursor."""
    planned = plan_query(reads, query)
    ids, next_cursor = reads.store.find_experiments(planned, cursor, limit)
    if view == "summary":
        return ExperimentPage(experiments=summaries(reads, ids), next_cursor=next_cursor)
    records = reads.store.get_experiments(ids)
    return ExperimentPage(experiments=records, next_cursor=next_cursor)


def experiment_view(reads: ReadSide, experiment_id: str) -> ExperimentDetail:
    """One experiment (its id or a unique prefix of it, autoswarm.coordinator.short_ids) with its
    hypothesis, its effective verdict and its diff."""
    store = reads.store
    exp = store.get_experiment(resolve_experiment_id(store, experiment_id))
    if exp is None:
        raise NotFound(f"experiment {experiment_id} does not exist")
    code_of = exp.experiment_id
    if exp.kind is ExperimentKind.REPLICATE:
        code_of = exp.candidate_id or ""
    diff = ""
    if exp.kind is not ExperimentKind.BASELINE and code_of:
        try:
            diff = reads.lineage(exp.task_id).diff(code_of)
        except LineageError:
            diff = ""
    hyp = store.get_hypothesis(exp.hypothesis_id) if exp.hypothesis_id else None
    verdict = effective_verdict(
        {"verdict": exp.verdict.value if exp.verdict else "", "kind": exp.kind.value},
        hyp.verdict.value if hyp else None,
    )
    return ExperimentDetail(
        **exp.model_dump(), diff=diff, hypothesis=hyp, effective_verdict=verdict
    )
