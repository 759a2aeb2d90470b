"""What every route needs: the coordinator's context and the caller, checked by scope."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, TypeVar

from cachetools import TTLCache
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from autoswarm.coordinator.api.doorbell import Doorbell
from autoswarm.coordinator.judge_loop import JudgeLoop
from autoswarm.coordinator.leader import Leadership
from autoswarm.coordinator.models import TokenRecord, WorkerRecord
from autoswarm.coordinator.read_side import Proposals
from autoswarm.coordinator.redis_server import EmbeddedRedis
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.tokens import hash_token
from autoswarm.shared.errors import Forbidden, NotFound, Unauthorized
from autoswarm.shared.models import Scope

_R = TypeVar("_R")


class Known:
    """Tokens and workers read lately, so that a request usually knows its caller without a
    Redis round trip. An entry lives `ttl_s`: a token deleted from Redis, or a worker
    registered again on another class, is seen within that. Unknown ones are never
    remembered (a token or a worker created in another coordinator process is known at its
    first use)."""

    def __init__(self, store: Store, ttl_s: float, size: int = 100_000) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._tokens: TTLCache[str, TokenRecord] = TTLCache(size, ttl_s)
        self._workers: TTLCache[str, WorkerRecord] = TTLCache(size, ttl_s)

    def cached_token(self, token_hash: str) -> TokenRecord | None:
        """The token if read lately (no I/O)."""
        with self._lock:
            return self._tokens.get(token_hash)

    def token(self, token_hash: str) -> TokenRecord | None:
        """The token, read from Redis unless read lately."""
        return self._remembered(self._tokens, token_hash, self.store.get_token)

    def worker(self, worker_id: str) -> WorkerRecord | None:
        """The worker, read from Redis unless read lately."""
        return self._remembered(self._workers, worker_id, self.store.get_worker)

    def _remembered(
        self, cache: TTLCache[str, _R], key: str, read: Callable[[str], _R | None]
    ) -> _R | None:
        with self._lock:
            record = cache.get(key)
        if record is None:
            record = read(key)
            if record is not None:
                with self._lock:
                    cache[key] = record
        return record

    def forget_token(self, token_hash: str) -> None:
        """A revoked token: refused by this process from now on."""
        with self._lock:
            self._tokens.pop(token_hash, None)

    def forget_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)


@dataclass
class Context:
    settings: CoordinatorSettings
    store: Store
    scheduler: Scheduler
    doorbell: Doorbell
    embedded: EmbeddedRedis | None
    admin_token: str
    judge: JudgeLoop
    leadership: Leadership
    known: Known = field(init=False)

    def __post_init__(self) -> None:
        self.known = Known(self.store, self.settings.caller_cache_s)

    @property
    def reads(self) -> Proposals:
        """What the read routes and a proposal use (not the scheduler itself)."""
        return self.scheduler.reads


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


async def known_token(ctx: Context, token_hash: str) -> TokenRecord | None:
    """The token's record: from memory if read lately, else from Redis (in a thread)."""
    record = ctx.known.cached_token(token_hash)
    if record is None:
        record = await run_in_threadpool(ctx.known.token, token_hash)
    return record


def require(*scopes: Scope) -> Callable[..., object]:
    """A dependency admitting admin and the given scopes; 401 unknown, 403 wrong scope."""
    allowed = {Scope.ADMIN, *scopes}

    async def check(request: Request, ctx: Ctx) -> Caller:
        token_hash = hash_token(_bearer(request))
        record = await known_token(ctx, token_hash)
        if record is None:
            raise Unauthorized("unknown token")
        if record.scope not in allowed:
            needed = ", ".join(sorted(s.value for s in allowed))
            raise Forbidden(f"token {record.name!r} has scope {record.scope.value}; needs {needed}")
        return Caller(token_hash, record.scope, record.name)

    return check


AdminCaller = Annotated[Caller, Depends(require())]
WorkerCaller = Annotated[Caller, Depends(require(Scope.WORKER))]
ProposerCaller = Annotated[Caller, Depends(require(Scope.PROPOSER))]
Reader = Annotated[Caller, Depends(require(Scope.READ))]
BundleReader = Annotated[Caller, Depends(require(Scope.READ, Scope.WORKER))]
ContextReader = Annotated[Caller, Depends(require(Scope.READ, Scope.PROPOSER))]


def own_worker(ctx: Context, caller: Caller, worker_id: str) -> WorkerRecord:
    """The worker, if the caller's token registered it; a worker acts only for itself."""
    worker = ctx.known.worker(worker_id)
    if worker is None:
        raise NotFound(f"worker {worker_id} is not registered; POST /api/v1/workers first")
    if worker.token_hash != caller.token_hash:
        raise Forbidden(f"worker {worker_id} belongs to another token")
    return worker
