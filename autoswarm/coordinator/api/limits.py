"""What a request must pass before anything reads its body (pure ASGI): a known token, then
its route's size limit.

Guarantees: a request that carries a body (a Content-Length over 0, or chunked) and no
known token is answered 401 from its headers alone, and its connection closed: none of its
body is read (the server holds at most its read buffer, 64 KiB, per connection). A
declared Content-Length over the route's limit is refused 413 at once; otherwise the body
is read (counting the bytes as they stream in) up to the limit and refused the moment it
goes over. Only a body within its limit reaches the app, replayed as received.

Does not: decide scopes (each route's dependency does, after; this only knows the token
exists), or bound a request without a body (nothing reads one).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from autoswarm.coordinator.api.errors import AWAY, RETRY_AFTER_S
from autoswarm.coordinator.store import UNAVAILABLE

LimitFor = Callable[[str, str], int]  # (method, path) -> max body bytes
TokenKnown = Callable[[str], Awaitable[bool]]  # bearer token -> whether it exists
NoteAway = Callable[[str, BaseException], None]  # (where, error): Redis is away


class Admission:
    def __init__(
        self, app: ASGIApp, limit_for: LimitFor, token_known: TokenKnown, note_away: NoteAway
    ) -> None:
        self.app = app
        self.limit_for = limit_for
        self.token_known = token_known
        self.note_away = note_away

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not _has_body(scope):
            await self.app(scope, receive, send)
            return
        refusal = await self._refusal(scope)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        limit = self.limit_for(scope["method"], scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, *_too_large(limit))
            return
        body = await _read_within(receive, limit)
        if body is None:
            await _answer(send, *_too_large(limit))
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refusal(self, scope: Scope) -> _Answer | None:
        token = _bearer(scope)
        if not token:
            return 401, "unauthorized", "send 'Authorization: Bearer <token>'", _CHALLENGE
        try:
            known = await self.token_known(token)
        except UNAVAILABLE as exc:
            self.note_away(f"{scope['method']} {scope['path']}", exc)
            return 503, "unavailable", AWAY, [(b"retry-after", str(RETRY_AFTER_S).encode())]
        if not known:
            return 401, "unauthorized", "unknown token", _CHALLENGE
        return None


_Answer = tuple[int, str, str, list[tuple[bytes, bytes]]]
_CHALLENGE = [(b"www-authenticate", b"Bearer")]


def _has_body(scope: Scope) -> bool:
    declared = _content_length(scope)
    if declared is not None:
        return declared > 0
    return any(name == b"transfer-encoding" for name, _ in scope.get("headers", ()))


def _bearer(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            kind, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if kind.lower() == "bearer" else ""
    return ""


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_within(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None the moment it goes over `limit` (or the client leaves)."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        more = bool(message.get("more_body", False))
    return b"".join(chunks)


def _too_large(limit: int) -> _Answer:
    return 413, "too_large", f"request body over its limit of {limit} bytes", []


async def _answer(
    send: Send, status: int, kind: str, detail: str, headers: list[tuple[bytes, bytes]]
) -> None:
    """Answer and close the connection: the body left unread is never drained."""
    body = json.dumps({"error": kind, "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
