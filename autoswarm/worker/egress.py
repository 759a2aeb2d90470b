"""The allow-list proxy of the prepare phase: the only way out of its empty network namespace.

The worker serves it on a unix socket (in a folder only the worker's user can open) from a
thread of its own; inside the prepare sandbox `autoswarm/worker/egress_relay.py` hands each TCP
connection made to 127.0.0.1:`RELAY_PORT` to it (`autoswarm.worker.prepare_network`).

Guarantees:
- a connection reaches a host only when an allow-list rule (`autoswarm.shared.hosts.HostRule`)
  allows its name and port: `CONNECT host:port` (https, tunnelled as it is) or one plain-http
  request with an absolute `http://host[:port]/...` target (forwarded with `Connection:
  close`, its `Proxy-*` headers dropped); anything else is answered 4xx and closed;
- every refusal is recorded (`refused`), once per host and port, with the line to show
  (past `MAX_REFUSALS` hosts only counted); a host that cannot be reached is answered 502;
- hostile input is bounded: a request head of at most `MAX_HEAD_BYTES` read within
  `HEAD_TIMEOUT_S`, at most `MAX_CONNECTIONS` at once (more are answered 503), and a
  tunnel silent both ways for `IDLE_TIMEOUT_S` is closed; none of it can stop the thread.
Does not:
- look inside a tunnel (TLS is end to end) or limit the bytes it carries;
- check where a name resolves: an allowed name that resolves to this machine's own
  addresses reaches them (names come from the worker's settings and the task's author);
- authenticate the client: anything that can open the socket can use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from autoswarm.shared.hosts import HostRule, normal_host

logger = logging.getLogger(__name__)

MAX_HEAD_BYTES = 16 * 1024  # a request line and headers; real clients send under 2 KB
HEAD_TIMEOUT_S = 20.0
CONNECT_TIMEOUT_S = 30.0
IDLE_TIMEOUT_S = 300.0  # a wheel server can pause; a tunnel silent 5 min both ways is dead
MAX_CONNECTIONS = 64  # AR's prepare downloads with 8 workers; uv opens up to ~50
CHUNK_BYTES = 256 * 1024
MAX_REFUSALS = 32  # hosts named one by one; a prepare trying thousands fills no memory
_REQUEST_LINE = re.compile(rb"^([A-Z]{3,10}) (\S{1,8000}) HTTP/1\.[01]$")
_HOST_PORT = re.compile(r"^([^:/\[\]@]+):([0-9]{1,5})$")
_ABSOLUTE = re.compile(r"^http://([^/:?#@\[\]]+)(?::([0-9]{1,5}))?([/?][^#]*)?$", re.IGNORECASE)
_HOP_HEADERS = (b"proxy-connection", b"proxy-authorization", b"connection", b"keep-alive")


@dataclass(frozen=True, slots=True)
class Refusal:
    """A connection the allow-list refused: where to, and the line that says so."""

    host: str
    port: int
    line: str


@dataclass
class EgressProxy:
    """The proxy, bound to `socket_path` once started; `describe` words a refusal."""

    rules: tuple[HostRule, ...]
    describe: Callable[[str, int], str]
    refused: list[Refusal] = field(default_factory=list)
    more_refused: int = 0  # refusals of further hosts, past MAX_REFUSALS, only counted
    socket_path: Path | None = field(default=None, init=False)
    _loop: asyncio.AbstractEventLoop | None = field(default=None, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)
    _folder: str | None = field(default=None, init=False)

    def allows(self, host: str, port: int) -> bool:
        return any(rule.allows(host, port) for rule in self.rules)

    def start(self) -> Path:
        """Serve in a thread of its own; returns the socket's path."""
        self._folder = tempfile.mkdtemp(prefix="autoswarm-egress-")  # mode 0700
        path = Path(self._folder) / "proxy.sock"
        loop = asyncio.new_event_loop()
        started = threading.Event()
        failed: list[BaseException] = []

        def serve() -> None:
            asyncio.set_event_loop(loop)
            slots = asyncio.Semaphore(MAX_CONNECTIONS)
            try:
                server = loop.run_until_complete(
                    asyncio.start_unix_server(
                        lambda r, w: self._handle(r, w, slots), path, limit=MAX_HEAD_BYTES
                    )
                )
            except OSError as exc:
                failed.append(exc)
                started.set()
                return
            started.set()
            loop.run_forever()
            server.close()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=serve, name="egress-proxy", daemon=True)
        self._thread.start()
        started.wait()
        if failed:
            raise failed[0]
        self.socket_path = path
        return path

    def stop(self) -> None:
        """Close every connection and the socket; the thread ends."""
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
        if self._folder is not None:
            with contextlib.suppress(OSError):
                os.unlink(Path(self._folder) / "proxy.sock")
            with contextlib.suppress(OSError):
                os.rmdir(self._folder)

    # ---- one connection ------------------------------------------------------------------

    async def _handle(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slots: asyncio.Semaphore
    ) -> None:
        try:
            if slots.locked():
                await _answer(writer, 503, "too many connections through the prepare proxy")
                return
            async with slots:
                await self._serve(reader, writer)
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            pass  # the client went away or was too slow: nothing to answer
        finally:
            writer.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT_S)
        except asyncio.LimitOverrunError:
            await _answer(writer, 431, f"request head over {MAX_HEAD_BYTES} bytes")
            return
        lines = head[:-4].split(b"\r\n")
        match = _REQUEST_LINE.match(lines[0])
        target = _target(match.group(1), match.group(2).decode("latin-1")) if match else None
        if match is None or target is None:
            await _answer(writer, 400, "not a proxy request: CONNECT host:port or http://...")
            return
        host, port, path = target
        if not self.allows(host, port):
            self._refuse(host, port)
            await _answer(writer, 403, self.describe(host, port))
            return
        try:
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=CHUNK_BYTES), CONNECT_TIMEOUT_S
            )
        except (OSError, TimeoutError) as exc:
            why = type(exc).__name__ if isinstance(exc, TimeoutError) else exc.strerror or exc
            await _answer(writer, 502, f"{host}:{port} could not be reached: {why}")
            return
        try:
            if path is None:
                writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
            else:
                upstream_w.write(_forwarded_head(match.group(1), path, lines[1:]))
            active = [time.monotonic()]
            await asyncio.gather(
                _pipe(reader, upstream_w, active), _pipe(upstream_r, writer, active)
            )
        finally:
            upstream_w.close()

    def _refuse(self, host: str, port: int) -> None:
        if any(r.host == host and r.port == port for r in self.refused):
            return
        if len(self.refused) >= MAX_REFUSALS:
            self.more_refused += 1
            return
        refusal = Refusal(host, port, self.describe(host, port))
        self.refused.append(refusal)
        logger.warning("egress: %s", refusal.line)


def _target(method: bytes, target: str) -> tuple[str, int, str | None] | None:
    """(host, port, None) for CONNECT, (host, port, path) for a plain-http request; None:
    neither, or a name that is not a host name."""
    parts: tuple[str, str, str | None] | None = None
    if method == b"CONNECT":
        if found := _HOST_PORT.match(target):
            parts = (found.group(1), found.group(2), None)
    elif found := _ABSOLUTE.match(target):
        parts = (found.group(1), found.group(2) or "80", found.group(3) or "/")
    if parts is None:
        return None
    name, port, path = parts
    host = normal_host(name)
    if host is None or not 0 < int(port) < 65536:
        return None
    return host, int(port), path


def _forwarded_head(method: bytes, path: str, headers: Iterable[bytes]) -> bytes:
    kept = [h for h in headers if h.split(b":", 1)[0].strip().lower() not in _HOP_HEADERS]
    lines = [method + b" " + path.encode("latin-1") + b" HTTP/1.1", *kept, b"Connection: close"]
    return b"\r\n".join(lines) + b"\r\n\r\n"


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, active: list[float]
) -> None:
    """Copy until end of stream (then half-close), or until neither direction has moved a
    byte for `IDLE_TIMEOUT_S` (`active`: when one last did, shared by both)."""
    try:
        while True:
            try:
                chunk = await asyncio.wait_for(reader.read(CHUNK_BYTES), IDLE_TIMEOUT_S / 4)
            except TimeoutError:
                if time.monotonic() - active[0] > IDLE_TIMEOUT_S:
                    raise
                continue
            if not chunk:
                break
            active[0] = time.monotonic()
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except (OSError, TimeoutError):
        writer.close()


async def _answer(writer: asyncio.StreamWriter, status: int, message: str) -> None:
    reasons = {400: "Bad Request", 403: "Forbidden", 431: "Too Large", 502: "Bad Gateway"}
    reasons[503] = "Unavailable"
    body = (message + "\n").encode()
    head = f"HTTP/1.1 {status} {reasons[status]}\r\nContent-Type: text/plain\r\n"
    head += f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    with contextlib.suppress(OSError):
        writer.write(head.encode() + body)
        await asyncio.wait_for(writer.drain(), 5)
