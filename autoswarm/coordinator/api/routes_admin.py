"""Admin and proposer endpoints: tasks, tokens, a task's context, hypotheses, spend."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.concurrency import run_in_threadpool

from autoswarm.coordinator.api import views
from autoswarm.coordinator.api.deps import AdminCaller, ContextReader, Ctx, ProposerCaller
from autoswarm.coordinator.api.params import HardwareQuery, TaskId, TokenId
from autoswarm.coordinator.hypotheses import Submission, build_context, submit_hypothesis
from autoswarm.coordinator.models import TaskPublic
from autoswarm.coordinator.tasks import register_task_upload
from autoswarm.coordinator.tokens import (
    TOKEN_ID_CHARS,
    create_token,
    find_token,
    list_tokens,
    revoke_token,
)
from autoswarm.shared.errors import Conflict, TooMany
from autoswarm.shared.models import (
    HypothesisCreate,
    ProposerContext,
    Scope,
    SpendReport,
    TaskCreate,
    TokenCreate,
)

router = APIRouter(prefix="/api/v1")


@router.post("/tasks", status_code=201)
async def create_task(body: TaskCreate, caller: AdminCaller, ctx: Ctx) -> TaskPublic:
    """Register a task from its files (base64); idempotent for the same files."""

    def register() -> TaskPublic:
        task = register_task_upload(ctx.store, ctx.settings, body.files)
        ctx.scheduler.tasks_changed()
        return views.task_view(ctx.reads, task)

    return await run_in_threadpool(register)


@router.post("/tokens", status_code=201)
async def new_token(body: TokenCreate, caller: AdminCaller, ctx: Ctx) -> dict[str, str]:
    """A new token; it is shown only in this answer."""
    token = await run_in_threadpool(create_token, ctx.store, body.scope, body.name)
    return {"token": token, "scope": body.scope.value, "name": body.name}


@router.get("/tokens")
async def tokens(caller: AdminCaller, ctx: Ctx) -> list[dict[str, object]]:
    """Every token (its id is a prefix of its hash; the token itself is never kept)."""
    return await run_in_threadpool(list_tokens, ctx.store)


@router.delete("/tokens/{token_id}")
async def revoke(token_id: TokenId, caller: AdminCaller, ctx: Ctx) -> dict[str, object]:
    """Revoke a token: refused from now on, its workers' leases back in the queue."""

    def run() -> dict[str, object]:
        token_hash = find_token(ctx.store, token_id)
        if token_hash == caller.token_hash:
            raise Conflict("that is the token of this request: revoke it with another admin's")
        handed_back = revoke_token(ctx.store, token_hash)
        ctx.known.forget_token(token_hash)
        return {"token_id": token_hash[:TOKEN_ID_CHARS], "handed_back": handed_back}

    return await run_in_threadpool(run)


@router.get("/tasks/{task_id}/context")
async def context(
    task_id: TaskId, caller: ContextReader, ctx: Ctx, hardware: HardwareQuery = None
) -> ProposerContext:
    return await run_in_threadpool(build_context, ctx.reads, task_id, hardware)


# Distinct models a task's spend is kept for (each one is a label value of /metrics).
MAX_SPEND_MODELS = 50


@router.post("/tasks/{task_id}/spend", status_code=204)
async def spend(task_id: TaskId, body: SpendReport, caller: ProposerCaller, ctx: Ctx) -> Response:
    """A proposer tells what its model calls cost (shown on /metrics)."""

    def add() -> None:
        ctx.reads.get_task(task_id)  # 404 for an unknown task
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
    """Submit a hypothesis; 429 while the caller has `max_hypotheses_in_flight` not judged
    yet (checked before the write: submissions at the same moment may pass it by a few)."""

    def submit() -> Submission:
        bounded = caller.scope is not Scope.ADMIN
        if bounded:
            in_flight = ctx.store.hypotheses_in_flight(caller.token_hash)
            if in_flight >= ctx.settings.max_hypotheses_in_flight:
                raise TooMany(
                    f"token {caller.name!r} has {in_flight} hypotheses not judged yet "
                    "(max_hypotheses_in_flight): submit more once some are judged"
                )
        submission = submit_hypothesis(ctx.reads, body)
        if bounded and not submission.duplicate:
            ctx.store.hold_in_flight(caller.token_hash, submission.hypothesis_id)
        return submission

    submission = await run_in_threadpool(submit)
    return {
        "hypothesis_id": submission.hypothesis_id,
        "experiment_id": submission.experiment_id,
        "duplicate": submission.duplicate,
    }
