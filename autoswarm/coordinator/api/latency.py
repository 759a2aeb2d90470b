"""Request latency, by method, route template and status class (pure ASGI, no body copies).

The route is the template the router matched (`/api/v1/leases/{experiment_id}/heartbeat`),
never the raw path, so label values stay bounded; a request no route matched (a 404, or a
body refused before routing) is `<unmatched>`.
"""

from __future__ import annotations

import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoswarm.coordinator.metrics import Metrics

UNMATCHED = "<unmatched>"


class RequestLatency:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500  # what the client gets if the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router records the route it matched in the scope it was handed (this one).
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            self.metrics.observe_request(
                scope["method"], str(route), status, time.perf_counter() - start
            )
