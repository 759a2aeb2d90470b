"""Operations endpoints: `GET /metrics` in the Prometheus text format, without a token (as
the probes; the numbers carry task ids and counts, never an experiment, worker or secret)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool

from autoswarm.coordinator.metrics import CONTENT_TYPE, Metrics

router = APIRouter()


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    """Every metric of this coordinator; the store's are read from Redis now."""
    found: Metrics = request.app.state.metrics
    body = await run_in_threadpool(found.render)
    return Response(body, media_type=CONTENT_TYPE)
