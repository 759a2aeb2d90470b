"""Reading endpoints: tasks, leaderboards, progress, lineage, experiments, contributors,
workers, events (polled and streamed), the clock, and the probes.

Every GET here needs a `read` token, unless the coordinator runs with `public_read`
(then a request without a token is a reader; a request with a bad token is still 401).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, Depends, Header, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response, StreamingResponse

from autoswarm.coordinator import leaderboard as boards
from autoswarm.coordinator.api import views
from autoswarm.coordinator.api.deps import Caller, Context, Ctx, require
from autoswarm.coordinator.api.params import ExperimentId, HardwareQuery, IdQuery, NameQuery, TaskId
from autoswarm.coordinator.api.sse import Feed
from autoswarm.coordinator.models import HypothesisRecord, TaskPublic, WorkerPublic
from autoswarm.coordinator.read_models import (
    Contributors,
    ExperimentDetail,
    ExperimentPage,
    Leaderboard,
    LineageTree,
    Progress,
)
from autoswarm.coordinator.short_ids import resolve_worker_id
from autoswarm.coordinator.store import UNAVAILABLE
from autoswarm.coordinator.store.query import ExperimentQuery
from autoswarm.shared.errors import InvalidInput
from autoswarm.shared.models import ExperimentKind, ExperimentState, ResultStatus, Scope, Verdict

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")
probes = APIRouter()

Check = Callable[[Request, Context], Awaitable[Caller]]
_read_scope = cast("Check", require(Scope.READ))
_any_scope = cast("Check", require(*Scope))
EVENT_ID = r"^\d+(-\d+)?$"


async def reader(request: Request, ctx: Ctx) -> Caller | None:
    """A `read` caller; when the coordinator is public-read, anyone without a token (None)
    and any known token, whatever its scope."""
    if not ctx.settings.public_read:
        return await _read_scope(request, ctx)
    if not request.headers.get("authorization", "").partition(" ")[2].strip():
        return None
    return await _any_scope(request, ctx)


Reader = Annotated[Caller | None, Depends(reader)]


def _event_id(value: str | None) -> str | None:
    """A stream id Redis can take: `ms` or `ms-seq`, each part under 2**63."""
    if value is not None and any(int(part) >= 2**63 for part in value.split("-")):
        raise InvalidInput(f"event id {value!r} is out of range")
    return value


def get_feed(request: Request) -> Feed:
    feed: Feed = request.app.state.feed
    return feed


LiveFeed = Annotated[Feed, Depends(get_feed)]


def _indexed(feed: Feed) -> None:
    """Bring the indexes up to date with what was recorded before this read (if that
    fails, the read answers from the indexes as they are; the feed's loop retries)."""
    try:
        feed.indexer.catch_up(limit=1000)
    except UNAVAILABLE:
        raise  # the read fails too: 503
    except Exception:
        logger.exception("read: the indexes could not catch up; answering from them as they are")


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
async def server_time() -> dict[str, float]:
    """The coordinator's clock, open to all (as /livez): `autoswarm doctor` checks a
    volunteer's clock against it before the volunteer has a token in hand."""
    return {"time_s": time.time()}


@router.get("/tasks")
async def tasks(caller: Reader, ctx: Ctx) -> list[TaskPublic]:
    def read() -> list[TaskPublic]:
        return [views.task_view(ctx.reads, t) for t in ctx.store.list_tasks()]

    return await run_in_threadpool(read)


@router.get("/tasks/{task_id}")
async def task(task_id: TaskId, caller: Reader, ctx: Ctx) -> TaskPublic:
    def read() -> TaskPublic:
        return views.task_view(ctx.reads, ctx.reads.get_task(task_id))

    return await run_in_threadpool(read)


@router.get("/tasks/{task_id}/hypotheses")
async def hypotheses(
    task_id: TaskId,
    caller: Reader,
    ctx: Ctx,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200,
) -> list[HypothesisRecord]:
    def read() -> list[HypothesisRecord]:
        ctx.reads.get_task(task_id)
        return ctx.store.list_hypotheses(task_id, limit)

    return await run_in_threadpool(read)


@router.get("/tasks/{task_id}/leaderboard")
async def leaderboard(
    task_id: TaskId,
    caller: Reader,
    ctx: Ctx,
    feed: LiveFeed,
    hardware: HardwareQuery = None,
) -> Leaderboard:
    """Per hardware class: the head, its mean ± std over its runs, the chain of kept
    changes (oldest first) with their deltas; and the task's experiment counts."""

    def read() -> Leaderboard:
        _indexed(feed)
        return boards.leaderboard(ctx.reads, task_id, hardware)

    return await run_in_threadpool(read)


@router.get("/tasks/{task_id}/progress", response_model=Progress)
async def progress(
    task_id: TaskId,
    caller: Reader,
    ctx: Ctx,
    feed: LiveFeed,
    limit: Annotated[int, Query(ge=1, le=20_000)] = 2000,
) -> Response:
    """The progress chart: the newest `limit` scored experiments, one series per class."""

    def read() -> bytes:
        _indexed(feed)
        # Thousands of points: serialised once here, not validated again on the way out.
        return boards.progress(ctx.reads, task_id, limit).model_dump_json().encode()

    return Response(await run_in_threadpool(read), media_type="application/json")


@router.get("/tasks/{task_id}/lineage")
async def lineage(task_id: TaskId, caller: Reader, ctx: Ctx, feed: LiveFeed) -> LineageTree:
    """The lineage as a tree: every class's branch from the first code, with how many
    experiments were tried on each commit."""

    def read() -> LineageTree:
        _indexed(feed)
        return boards.lineage_tree(ctx.reads, task_id)

    return await run_in_threadpool(read)


@router.get("/experiments")
async def experiments(
    caller: Reader,
    ctx: Ctx,
    feed: LiveFeed,
    task_id: IdQuery = None,
    status: ExperimentState | None = None,
    kind: ExperimentKind | None = None,
    verdict: Verdict | None = None,
    result: ResultStatus | None = None,
    worker_id: IdQuery = None,
    owner: NameQuery = None,
    hardware: HardwareQuery = None,
    proposer: Annotated[NameQuery, Query(description="mutation, llm, human...")] = None,
    model: Annotated[NameQuery, Query(description="an LLM proposer's model")] = None,
    since: Annotated[
        float | None, Query(description="created at or after (unix s)", allow_inf_nan=False)
    ] = None,
    until: Annotated[
        float | None, Query(description="created at or before (unix s)", allow_inf_nan=False)
    ] = None,
    sort: Literal["time", "score"] = "time",
    view: Literal["full", "summary"] = "full",
    cursor: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> ExperimentPage:
    """Experiments newest first (`sort=score`: best first, within one task and hardware
    class); pass `next_cursor` back as `cursor` for the next page. `status` is the
    experiment's state, `result` its run's status; `view=summary` leaves out log tails."""
    query = ExperimentQuery(
        task_id=task_id,
        state=status.value if status else None,
        kind=kind.value if kind else None,
        verdict=verdict.value if verdict else None,
        result=result.value if result else None,
        worker_id=worker_id,
        owner=owner,
        hardware=hardware,
        proposer=proposer,
        model=model,
        since=since,
        until=until,
        sort=sort,
    )
    if since is not None and until is not None and since > until:
        raise InvalidInput("since must not be after until")

    def read() -> ExperimentPage:
        _indexed(feed)
        found = query
        if worker_id:  # a short id, as the tables print it
            found = replace(query, worker_id=resolve_worker_id(ctx.store, worker_id))
        return views.list_experiments(ctx.reads, found, cursor, limit, view)

    return await run_in_threadpool(read)


@router.get("/experiments/{experiment_id}")
async def experiment(experiment_id: ExperimentId, caller: Reader, ctx: Ctx) -> ExperimentDetail:
    """One experiment: its result and log tail, its hypothesis and rationale, the reason
    for its verdict, and the unified diff against its parent."""
    return await run_in_threadpool(views.experiment_view, ctx.reads, experiment_id)


@router.get("/contributors")
async def contributors(
    caller: Reader,
    ctx: Ctx,
    feed: LiveFeed,
    cursor: Annotated[str | None, Query(pattern=r"^\d{1,9}$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> Contributors:
    """Owners by credit (the formula is in the answer), and teams."""

    def read() -> Contributors:
        _indexed(feed)
        return boards.contributors(ctx.reads, int(cursor or 0), limit)

    return await run_in_threadpool(read)


@router.get("/workers")
async def workers(caller: Reader, ctx: Ctx) -> list[WorkerPublic]:
    records = await run_in_threadpool(ctx.store.list_workers)
    return [w.public() for w in records]


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
    after: Annotated[str, Query(pattern=EVENT_ID)] = "0",
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[dict[str, Any]]:
    """Results and verdicts after the given event id, oldest first."""
    return await run_in_threadpool(ctx.store.read_events, _event_id(after) or "0", limit)


@router.get(
    "/events/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}, "description": "server-sent events"}},
)
async def event_stream(
    caller: Reader,
    feed: LiveFeed,
    task_id: IdQuery = None,
    after: Annotated[str | None, Query(pattern=EVENT_ID)] = None,
    last_event_id: Annotated[str | None, Header(pattern=EVENT_ID)] = None,
) -> StreamingResponse:
    """New results and verdicts as server-sent events (`id`, `event` = type, `data` =
    JSON); `after` or a `Last-Event-ID` header replays what came after that id first."""
    return StreamingResponse(
        feed.stream(_event_id(last_event_id or after), task_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )
