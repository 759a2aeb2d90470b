"""A read-only coordinator (`autoswarm dashboard`, and read commands that open a data folder
for themselves): an ASGI wrapper that answers 405 to every request but GET, HEAD and
OPTIONS, before the app sees it, so nothing can be written through it whatever the token.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

READING = frozenset({"GET", "HEAD", "OPTIONS"})


class ReadOnly:
    """The app, answering only what reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    def __getattr__(self, name: str) -> Any:
        return getattr(self.app, name)  # `state` and the like, as the app has them

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in READING:
            await self.app(scope, receive, send)
            return
        body = json.dumps({"detail": "this coordinator is read-only"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 405,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"allow", b"GET, HEAD, OPTIONS"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})
