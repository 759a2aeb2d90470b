"""Reading endpoints: tasks, experiments, workers, events, the clock, and the probes."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from coordinator.api import views
from coordinator.api.deps import AnyCaller, Ctx, Reader
from coordinator.models import (
    ExperimentPublic,
    HypothesisRecord,
    TaskPublic,
    WorkerPublic,
)
from shared.errors import InvalidInput
from shared.models import ExperimentKind, ExperimentState, Verdict

router = APIRouter(prefix="/api/v1")
probes = APIRouter()


@probes.get("/livez")
async def livez() -> dict[str, str]:
    """The process is up (nothing else is checked)."""
    return {"status": "ok"}


@probes.get("/readyz")
async def readyz(ctx: Ctx) -> JSONResponse:
    """Redis answers and the lineage folder is writable."""

    def check() -> dict[str, bool]:
        folder = ctx.settings.lineage_dir
        folder.mkdir(parents=True, exist_ok=True)
        return {"redis": ctx.store.ping(), "lineage": os.access(folder, os.W_OK)}

    checks = await run_in_threadpool(check)
    ready = all(checks.values())
    return JSONResponse({"ready": ready, **checks}, status_code=200 if ready else 503)


@router.get("/time")
async def server_time(caller: AnyCaller) -> dict[str, float]:
    return {"time_s": time.time()}


@router.get("/tasks")
async def tasks(caller: Reader, ctx: Ctx) -> list[TaskPublic]:
    def read() -> list[TaskPublic]:
        return [views.task_view(ctx.scheduler, t) for t in ctx.store.list_tasks()]

    return await run_in_threadpool(read)


@router.get("/tasks/{task_id}")
async def task(task_id: str, caller: Reader, ctx: Ctx) -> TaskPublic:
    def read() -> TaskPublic:
        return views.task_view(ctx.scheduler, ctx.scheduler.get_task(task_id))

    return await run_in_threadpool(read)


@router.get("/tasks/{task_id}/hypotheses")
async def hypotheses(
    task_id: str,
    caller: Reader,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[HypothesisRecord]:
    def read() -> list[HypothesisRecord]:
        ctx.scheduler.get_task(task_id)
        return ctx.store.list_hypotheses(task_id, limit)

    return await run_in_threadpool(read)


@router.get("/experiments")
async def experiments(
    caller: Reader,
    ctx: Ctx,
    task_id: str | None = None,
    status: ExperimentState | None = None,
    kind: ExperimentKind | None = None,
    verdict: Verdict | None = None,
    worker_id: str | None = None,
    cursor: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    """Experiments newest first; pass `next_cursor` back as `cursor` for the next page."""
    if cursor is not None and not cursor.isdigit():
        raise InvalidInput("cursor must be a next_cursor from an earlier page")
    where = views.ExperimentFilter(
        task_id=task_id,
        status=status.value if status else None,
        kind=kind.value if kind else None,
        verdict=verdict.value if verdict else None,
        worker_id=worker_id,
    )
    found, next_cursor = await run_in_threadpool(
        views.list_experiments, ctx.scheduler, where, int(cursor) if cursor else None, limit
    )
    return {
        "experiments": [e.model_dump(mode="json") for e in found],
        "next_cursor": next_cursor,
    }


@router.get("/experiments/{experiment_id}")
async def experiment(experiment_id: str, caller: Reader, ctx: Ctx) -> ExperimentPublic:
    return await run_in_threadpool(views.experiment_view, ctx.scheduler, experiment_id)


@router.get("/workers")
async def workers(caller: Reader, ctx: Ctx) -> list[WorkerPublic]:
    records = await run_in_threadpool(ctx.store.list_workers)
    return [WorkerPublic.model_validate(w.model_dump(exclude={"token_hash"})) for w in records]


@router.get("/dead")
async def dead(caller: Reader, ctx: Ctx) -> list[dict[str, Any]]:
    """Dead-lettered experiments with their last error, newest first."""

    def read() -> list[dict[str, Any]]:
        ids = ctx.store.dead_letters()
        return [
            {"experiment_id": e.experiment_id, "task_id": e.task_id, "last_error": e.last_error}
            for e in ctx.store.get_experiments(ids)
        ]

    return await run_in_threadpool(read)


@router.get("/events")
async def events(
    caller: Reader,
    ctx: Ctx,
    after: Annotated[str, Query(pattern=r"^\d+(-\d+)?$")] = "0",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Results and verdicts after the given event id, oldest first."""
    return await run_in_threadpool(ctx.store.read_events, after, limit)
