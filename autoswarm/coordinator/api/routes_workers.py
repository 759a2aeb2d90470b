"""Worker endpoints (docs/protocol.md): register, lease (long poll), heartbeat, release,
report, bundles."""

from __future__ import annotations

import base64
import hashlib
import logging
import random
import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from autoswarm.coordinator.api.deps import (
    BundleReader,
    Caller,
    Context,
    Ctx,
    WorkerCaller,
    own_worker,
)
from autoswarm.coordinator.api.params import ExperimentId, WorkerId
from autoswarm.coordinator.models import WorkerRecord
from autoswarm.coordinator.store import Leased, Preemption
from autoswarm.coordinator.worker_summary import worker_summary
from autoswarm.shared.errors import InvalidInput, NotFound
from autoswarm.shared.models import (
    MAX_TITLE_CHARS,
    ExperimentKind,
    HeartbeatAnswer,
    Lease,
    Result,
    ResultStatus,
    ResultSubmit,
    Scope,
    Verdict,
    WorkerCreate,
    WorkerSummary,
)
from autoswarm.shared.wire import HeartbeatRequest, LeaseAction, LeaseRequest, hardware_problem

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/api/v1")


def _worker_id(token_hash: str, name: str, slot: str) -> str:
    """Stable per (token, name, slot): a restarted worker keeps its id."""
    return "w" + hashlib.sha256(f"{token_hash}\x1f{name}\x1f{slot}".encode()).hexdigest()[:15]


def _register(ctx: Context, caller: Caller, body: WorkerCreate) -> str:
    worker = WorkerRecord(
        worker_id=_worker_id(caller.token_hash, body.name, body.slot),
        name=body.name,
        hardware=body.hardware,
        slot=body.slot,
        owner=caller.name,
        token_hash=caller.token_hash,
        registered_s=time.time(),
    )
    unbounded = caller.scope is Scope.ADMIN
    ctx.store.put_worker(
        worker,
        max_workers=2**31 if unbounded else ctx.settings.max_workers_per_token,
        max_classes=2**31 if unbounded else ctx.settings.max_classes_per_token,
    )
    ctx.known.forget_worker(worker.worker_id)
    ctx.scheduler.ensure_classes(worker.hardware)
    logger.info(
        "worker %s: registered (%s, %s, owner %s)",
        worker.worker_id,
        worker.name,
        worker.hardware,
        worker.owner,
    )
    return worker.worker_id


@router.post("/workers", status_code=201)
async def register_worker(body: WorkerCreate, caller: WorkerCaller, ctx: Ctx) -> dict[str, str]:
    worker_id = await run_in_threadpool(_register, ctx, caller, body)
    return {"worker_id": worker_id}


BASELINE_TITLE = "baseline of the head"


def _lease_of(ctx: Context, got: Leased) -> Lease:
    """The lease a worker gets for what the lease (or heartbeat) script handed it."""
    task = ctx.store.get_task(got.task_id)
    if task is None:
        raise NotFound(f"experiment {got.experiment_id} vanished while being leased")
    kind = ExperimentKind(got.kind)
    preemptible = kind is ExperimentKind.EXPLORE
    title = BASELINE_TITLE
    if kind is not ExperimentKind.BASELINE:
        row = ctx.store.experiment_rows([got.experiment_id], ["hypothesis_id"])[0]
        hyp = ctx.store.hypothesis_fields([row.get("hypothesis_id", "")], ["title"])[0]
        title = hyp.get("title", "")[:MAX_TITLE_CHARS] or str(kind)
    return Lease(
        experiment_id=got.experiment_id,
        task_id=task.task_id,
        kind=kind,
        fencing_token=got.fencing_token,
        lease_ttl_s=ctx.settings.lease_ttl_s,
        bundle_hash=got.bundle_hash,
        spec=task.spec,
        budget_s=task.spec.budget_s,
        preemptible_s=ctx.settings.preempt_within * task.spec.budget_s if preemptible else 0.0,
        heldout_secret=ctx.store.heldout_secret(task.task_id),
        title=title,
    )


# Experiments of unreadable tasks set aside in one pass of a lease request, at most.
MAX_SET_ASIDE = 16


def _set_aside(ctx: Context, got: Leased) -> None:
    """Withdraw an experiment whose task's stored record does not read (stored by an older
    version, see `Store.get_task`): no worker can run it, and it must not hold up others."""
    reason = f"task {got.task_id}: its stored record is unreadable (see the coordinator log)"
    now = time.time()
    event: dict[str, str | float] = {
        "type": "verdict",
        "task_id": got.task_id,
        "experiment_id": got.experiment_id,
        "verdict": Verdict.DISCARDED.value,
        "reason": reason,
        "time_s": now,
    }
    ctx.store.withdraw(
        got.experiment_id, verdict=Verdict.DISCARDED.value, reason=reason, event=event, now=now
    )
    logger.warning("experiment %s: withdrawn at lease: %s", got.experiment_id, reason)


def _try_lease(ctx: Context, caller: Caller, worker_id: str) -> Lease | None:
    """One pass of a lease request, in one thread-pool hop: the caller's worker, the lease
    script (which hands back what the lease needs), the task from memory."""
    worker = own_worker(ctx, caller, worker_id)
    problem = hardware_problem(worker.hardware)
    if problem is not None:  # registered before classes had one canonical form
        raise InvalidInput(
            f"worker {worker_id}: hardware class {worker.hardware!r} {problem}; register again"
        )
    ctx.scheduler.ensure_classes(worker.hardware)  # a task registered while we waited
    for _ in range(MAX_SET_ASIDE):
        got = ctx.store.lease(
            worker.worker_id,
            worker.owner,
            worker.hardware,
            now=time.time(),
            lease_ttl_s=ctx.settings.lease_ttl_s,
            replicate_wait_s=ctx.settings.replicate_wait_s,
        )
        if got is None or ctx.store.get_task(got.task_id) is not None:
            break
        _set_aside(ctx, got)
    else:
        return None  # the next pass looks further
    if got is None:
        return None
    logger.info(
        "worker %s: experiment %s (%s) leased, token %d",
        worker.worker_id,
        got.experiment_id,
        got.kind,
        got.fencing_token,
    )
    return _lease_of(ctx, got)


@router.post(
    "/leases",
    response_model=None,
    responses={200: {"model": Lease}, 204: {"description": "nothing to lease within wait_s"}},
)
async def lease(body: LeaseRequest, caller: WorkerCaller, ctx: Ctx, request: Request) -> Response:
    """A lease now, or when one is queued within wait_s (long poll); 204 if none."""
    deadline = time.monotonic() + min(body.wait_s, ctx.settings.max_wait_s)
    while True:
        got = await run_in_threadpool(_try_lease, ctx, caller, body.worker_id)
        if got is not None:
            # Serialised by pydantic itself (FastAPI's generic encoder costs more than the
            # rest of the request).
            return Response(got.model_dump_json(), media_type="application/json")
        remaining = deadline - time.monotonic()
        if remaining <= 0 or await request.is_disconnected():
            return Response(status_code=204)
        # Jitter spreads the re-checks of many idle workers.
        poll_s = ctx.settings.lease_poll_s * random.uniform(0.8, 1.2)
        await ctx.doorbell.wait(min(remaining, poll_s))


@router.post("/leases/{experiment_id}/heartbeat")
async def heartbeat(
    experiment_id: ExperimentId, body: HeartbeatRequest, caller: WorkerCaller, ctx: Ctx
) -> HeartbeatAnswer:
    """Renew a lease; `cancel` when the experiment is no longer wanted, and for a worker that
    can switch, `switch_to` when its young explore was preempted (docs/protocol.md)."""

    def renew() -> HeartbeatAnswer:
        worker = own_worker(ctx, caller, body.worker_id)
        preemption = None
        if body.can_switch:
            preemption = Preemption(
                worker.owner,
                worker.hardware,
                ctx.settings.preempt_within,
                ctx.settings.replicate_wait_s,
            )
        renewal = ctx.store.heartbeat(
            experiment_id,
            body.worker_id,
            body.fencing_token,
            now=time.time(),
            ttl_s=ctx.settings.lease_ttl_s,
            preemption=preemption,
            running_s=body.running_s,
        )
        switch_to = None
        if renewal.switched is not None:
            switch_to = _lease_of(ctx, renewal.switched)
            logger.info(
                "worker %s: explore %s preempted by %s %s (leased, token %d)",
                body.worker_id,
                experiment_id,
                switch_to.kind,
                switch_to.experiment_id,
                switch_to.fencing_token,
            )
        return HeartbeatAnswer(
            lease_ttl_s=ctx.settings.lease_ttl_s, cancel=renewal.cancel, switch_to=switch_to
        )

    answer = await run_in_threadpool(renew)
    if answer.switch_to is not None:
        ctx.doorbell.ring(1)  # the preempted explore is queued again for an idle worker
    return answer


@router.get("/workers/{worker_id}/summary")
async def summary(
    worker_id: WorkerId,
    caller: WorkerCaller,
    ctx: Ctx,
    since_s: Annotated[float, Query(ge=0, allow_inf_nan=False)] = 0.0,
) -> WorkerSummary:
    """The worker's runs, kept ones and credit since `since_s` (its start); its own token
    only (docs/protocol.md)."""

    def read() -> WorkerSummary:
        own_worker(ctx, caller, worker_id)
        return worker_summary(ctx.store, worker_id, since_s)

    return await run_in_threadpool(read)


@router.post("/leases/{experiment_id}/release", status_code=204)
async def release(
    experiment_id: ExperimentId, body: LeaseAction, caller: WorkerCaller, ctx: Ctx
) -> Response:
    def hand_back() -> None:
        own_worker(ctx, caller, body.worker_id)
        ctx.store.release(experiment_id, body.worker_id, body.fencing_token)
        logger.info("worker %s: experiment %s released", body.worker_id, experiment_id)

    await run_in_threadpool(hand_back)
    ctx.doorbell.ring(1)
    return Response(status_code=204)


def _in_range(ctx: Context, experiment_id: str, result: Result) -> Result:
    """The result, or an invalid one when its score is outside its task's `[metric] range`
    (a score that cannot be true is never judged)."""
    if result.status is not ResultStatus.OK or result.metric is None:
        return result
    task_id = ctx.store.experiment_task(experiment_id)
    task = ctx.store.get_task(task_id) if task_id else None
    if task is None or not task.spec.metric.outside(result.metric):
        return result
    lo, hi = task.spec.metric.range or (0.0, 0.0)
    error = f"{task.spec.metric.name} {result.metric!r} is outside the task's range [{lo}, {hi}]"
    return result.model_copy(
        update={"status": ResultStatus.INVALID, "metric": None, "error": error}
    )


def _report(ctx: Context, caller: Caller, body: ResultSubmit) -> bool:
    own_worker(ctx, caller, body.worker_id)
    recorded = ctx.store.report(
        body.experiment_id,
        body.worker_id,
        body.fencing_token,
        _in_range(ctx, body.experiment_id, body.result),
        now=time.time(),
        max_attempts=ctx.settings.max_attempts,
    )
    if recorded:
        logger.info(
            "worker %s: experiment %s reported %s %s",
            body.worker_id,
            body.experiment_id,
            body.result.status.value,
            body.result.metric,
        )
        ctx.judge.wake()  # the judge loop applies the verdict (the result is safe in Redis)
    return recorded


@router.post("/results", status_code=201, response_model=None)
async def report(body: ResultSubmit, caller: WorkerCaller, ctx: Ctx) -> Response:
    recorded = await run_in_threadpool(_report, ctx, caller, body)
    if not recorded:
        return JSONResponse({"recorded": False, "detail": "already recorded"}, status_code=200)
    ctx.doorbell.ring(1)
    return JSONResponse({"recorded": True}, status_code=201)


@router.get("/bundles/{bundle_hash}")
async def bundle(bundle_hash: str, caller: BundleReader, ctx: Ctx) -> dict[str, Any]:
    if len(bundle_hash) != 64 or any(c not in "0123456789abcdef" for c in bundle_hash):
        raise NotFound(f"bundle {bundle_hash!r} does not exist")
    files = await run_in_threadpool(ctx.store.get_bundle, bundle_hash)
    if files is None:
        raise NotFound(f"bundle {bundle_hash} does not exist")
    encoded = {path: base64.b64encode(content).decode("ascii") for path, content in files.items()}
    return {"bundle_hash": bundle_hash, "files": encoded}
