"""Admin and proposer endpoints: tasks, tokens, a task's context, hypotheses, spend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from coordinator.api import views
from coordinator.api.deps import AdminCaller, ContextReader, Ctx, ProposerCaller
from coordinator.hypotheses import build_context, submit_hypothesis
from coordinator.models import TaskCreate, TaskPublic, TokenCreate
from coordinator.tasks import register_task_upload
from coordinator.tokens import create_token
from shared.errors import Conflict
from shared.models import HypothesisCreate, ProposerContext, SpendReport

router = APIRouter(prefix="/api/v1")


@router.post("/tasks", status_code=201)
async def create_task(body: TaskCreate, caller: AdminCaller, ctx: Ctx) -> TaskPublic:
    """Register a task from its files (base64); idempotent for the same files."""

    def register() -> TaskPublic:
        task = register_task_upload(ctx.store, ctx.settings, body.files)
        ctx.scheduler.tasks_changed()
        return views.task_view(ctx.scheduler, task)

    return await run_in_threadpool(register)


@router.post("/tokens", status_code=201)
async def new_token(body: TokenCreate, caller: AdminCaller, ctx: Ctx) -> dict[str, str]:
    """A new token; it is shown only in this answer."""
    token = await run_in_threadpool(create_token, ctx.store, body.scope, body.name)
    return {"token": token, "scope": body.scope.value, "name": body.name}


@router.get("/tasks/{task_id}/context")
async def context(
    task_id: str, caller: ContextReader, ctx: Ctx, hardware: str | None = None
) -> ProposerContext:
    return await run_in_threadpool(build_context, ctx.scheduler, task_id, hardware)


# Distinct models a task's spend is kept for (each one is a label value of /metrics).
MAX_SPEND_MODELS = 50


@router.post("/tasks/{task_id}/spend", status_code=204)
async def spend(task_id: str, body: SpendReport, caller: ProposerCaller, ctx: Ctx) -> Response:
    """A proposer tells what its model calls cost (shown on /metrics)."""

    def add() -> None:
        ctx.scheduler.get_task(task_id)  # 404 for an unknown task
        if not ctx.store.add_spend(
            task_id, body.model, body.usd, body.tokens, body.calls, MAX_SPEND_MODELS
        ):
            raise Conflict(
                f"task {task_id} has spend on {MAX_SPEND_MODELS} models already: report under "
                "one of them (they are the `model` labels of /metrics)"
            )

    await run_in_threadpool(add)
    return Response(status_code=204)


@router.post("/hypotheses", status_code=201)
async def hypotheses(body: HypothesisCreate, caller: ProposerCaller, ctx: Ctx) -> dict[str, Any]:
    submission = await run_in_threadpool(submit_hypothesis, ctx.scheduler, body)
    return {
        "hypothesis_id": submission.hypothesis_id,
        "experiment_id": submission.experiment_id,
        "duplicate": submission.duplicate,
    }
