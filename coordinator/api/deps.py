"""What every route needs: the coordinator's context and the caller, checked by scope."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from coordinator.api.doorbell import Doorbell
from coordinator.models import WorkerRecord
from coordinator.redis_server import EmbeddedRedis
from coordinator.scheduler import Scheduler
from coordinator.settings import CoordinatorSettings
from coordinator.store import Store
from coordinator.tokens import hash_token
from shared.errors import Forbidden, NotFound, Unauthorized
from shared.models import Scope


@dataclass
class Context:
    settings: CoordinatorSettings
    store: Store
    scheduler: Scheduler
    doorbell: Doorbell
    embedded: EmbeddedRedis | None
    admin_token: str


@dataclass(frozen=True)
class Caller:
    token_hash: str
    scope: Scope
    name: str


def get_ctx(request: Request) -> Context:
    ctx: Context = request.app.state.ctx
    return ctx


Ctx = Annotated[Context, Depends(get_ctx)]


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    kind, _, token = header.partition(" ")
    if kind.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    return token.strip()


def require(*scopes: Scope) -> Callable[..., object]:
    """A dependency admitting admin and the given scopes; 401 unknown, 403 wrong scope."""
    allowed = {Scope.ADMIN, *scopes}

    async def check(request: Request, ctx: Ctx) -> Caller:
        token_hash = hash_token(_bearer(request))
        record = await run_in_threadpool(ctx.store.get_token, token_hash)
        if record is None:
            raise Unauthorized("unknown token")
        if record.scope not in allowed:
            needed = ", ".join(sorted(s.value for s in allowed))
            raise Forbidden(f"token {record.name!r} has scope {record.scope.value}; needs {needed}")
        return Caller(token_hash, record.scope, record.name)

    return check


AnyCaller = Annotated[Caller, Depends(require(*Scope))]
AdminCaller = Annotated[Caller, Depends(require())]
WorkerCaller = Annotated[Caller, Depends(require(Scope.WORKER))]
ProposerCaller = Annotated[Caller, Depends(require(Scope.PROPOSER))]
Reader = Annotated[Caller, Depends(require(Scope.READ))]
BundleReader = Annotated[Caller, Depends(require(Scope.READ, Scope.WORKER))]
ContextReader = Annotated[Caller, Depends(require(Scope.READ, Scope.PROPOSER))]


def own_worker(store: Store, caller: Caller, worker_id: str) -> WorkerRecord:
    """The worker, if the caller's token registered it; a worker acts only for itself."""
    worker = store.get_worker(worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id} is not registered; POST /api/v1/workers first")
    if worker.token_hash != caller.token_hash:
        raise Forbidden(f"worker {worker_id} belongs to another token")
    return worker
