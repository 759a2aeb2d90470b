"""A real local HTTP server speaking the OpenAI chat-completions protocol, for the LLM proposer.

It listens on 127.0.0.1, answers each POST .../chat/completions with the next scripted shape
(the last one repeats), and keeps every request it received (headers and JSON body), so a
test reads the very prompt the proposer sent through litellm's own client.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

# A shape is (status, content type, body), or HANG: hold the request until the server stops.
Shape = tuple[int, str, str]
HANG = (0, "", "")


def completion(content: str | None, *, usage: bool = True, **extra: Any) -> Shape:
    """A well-formed chat completion whose message content is `content`."""
    body: dict[str, Any] = {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 1,
        "model": "local-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        **extra,
    }
    if usage:
        body["usage"] = {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}
    return 200, "application/json", json.dumps(body)


MALFORMED: dict[str, Shape] = {
    "empty-choices": (
        200,
        "application/json",
        json.dumps({"id": "x", "object": "chat.completion", "created": 1, "choices": []}),
    ),
    "no-message": (
        200,
        "application/json",
        json.dumps(
            {
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "choices": [{"index": 0, "finish_reason": "stop"}],
            }
        ),
    ),
    "null-content": completion(None),
    "html": (200, "text/html", "<html><body><h1>502 Bad Gateway</h1></body></html>"),
    "truncated-json": (200, "application/json", '{"id": "x", "object": "chat.completion", "cho'),
}


@dataclass
class ChatServer:
    """The server's address, its script, and the requests it received."""

    shapes: list[Shape]
    requests: list[dict[str, Any]] = field(default_factory=list)
    received: threading.Event = field(default_factory=threading.Event)
    closing: threading.Event = field(default_factory=threading.Event)
    url: str = ""

    def next_shape(self) -> Shape:
        index = min(len(self.requests) - 1, len(self.shapes) - 1)
        return self.shapes[index]

    def prompts(self) -> list[str]:
        """Every message's content of every request, joined per request."""
        return [
            "\n".join(str(m.get("content", "")) for m in r["body"].get("messages", []))
            for r in self.requests
        ]


def _handler(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            headers = {k.lower(): v for k, v in self.headers.items()}
            server.requests.append({"path": self.path, "headers": headers, "body": body})
            server.received.set()
            status, content_type, text = server.next_shape()
            if status == 0:
                server.closing.wait(120)
                return
            data = text.encode()
            self.send_response(status)
            self.send_header("content-type", content_type)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return

    return Handler


@contextmanager
def chat_server(*shapes: Shape) -> Iterator[ChatServer]:
    """A ChatServer on a free port of 127.0.0.1 answering `shapes` in order; stopped after."""
    state = ChatServer(list(shapes))
    http = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    http.daemon_threads = True
    state.url = f"http://127.0.0.1:{http.server_address[1]}/v1"
    thread = threading.Thread(target=http.serve_forever, name="chat-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        state.closing.set()
        http.shutdown()
        http.server_close()
        thread.join(10)
