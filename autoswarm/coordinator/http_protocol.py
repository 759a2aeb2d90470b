"""The HTTP protocol the coordinator serves with: uvicorn's httptools one, with a bound on a
request's headers.

uvicorn's httptools protocol keeps a request line and headers of any size in memory (llhttp
sets no limit). Here their bytes are counted as they are parsed; past `MAX_HEADER_BYTES` the
request is answered 431 and its connection closed, before the app sees it.
"""

from __future__ import annotations

import json

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

# A request line and headers, together (bytes): nginx's default buffers hold 32 KiB; a
# bearer token and the usual headers take under 1 KiB.
MAX_HEADER_BYTES = 32 * 1024


class _HeadersTooLarge(Exception):
    """Raised from a parser callback to stop parsing the request."""


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing headers over `MAX_HEADER_BYTES` with 431."""

    _header_bytes = 0
    _too_large = False

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)  # ": " and CRLF
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        self._header_bytes += size
        if self._header_bytes > MAX_HEADER_BYTES:
            self._too_large = True
            raise _HeadersTooLarge

    def data_received(self, data: bytes) -> None:
        if not self._too_large:  # refused: the connection is closing
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if not self._too_large:
            super().send_400_response(msg)
            return
        body = json.dumps(
            {"error": "headers_too_large", "detail": f"headers over {MAX_HEADER_BYTES} bytes"}
        ).encode()
        head = (
            "HTTP/1.1 431 Request Header Fields Too Large\r\n"
            "content-type: application/json\r\n"
            f"content-length: {len(body)}\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode() + body)
        self.transport.close()
