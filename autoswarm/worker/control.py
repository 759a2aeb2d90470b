"""Control of a running worker from a second terminal: pause, resume, finish, status.

A running worker listens on a unix socket, `worker.sock` in its state folder, readable and
writable only by its user. One request is one JSON line `{"command": ...}`; one answer is
one JSON line. The worker also holds an exclusive lock on `worker.lock` there, so two workers
never share a state folder (its outbox, its socket).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import socketserver
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from autoswarm.shared.errors import AutoswarmError, InvalidInput

logger = logging.getLogger(__name__)

SOCKET_NAME = "worker.sock"
LOCK_NAME = "worker.lock"
COMMANDS = ("pause", "resume", "finish", "status")
MAX_REQUEST_BYTES = 4096
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH = 107

Handler = Callable[[str], dict[str, Any]]


class WorkerNotRunning(AutoswarmError):
    """No worker answers on the state folder's socket."""


class WorkerAlreadyRunning(AutoswarmError):
    """Another worker holds the state folder."""


def socket_path(state_dir: Path) -> Path:
    return state_dir.expanduser() / SOCKET_NAME


def send_command(state_dir: Path, command: str, *, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send one command to the worker whose state folder is `state_dir`; its answer."""
    if command not in COMMANDS:
        raise InvalidInput(f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    path = socket_path(state_dir)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.connect(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise WorkerNotRunning(f"no worker is running with state folder {state_dir}") from exc
        sock.sendall(json.dumps({"command": command}).encode() + b"\n")
        with sock.makefile("rb") as reader:
            line = reader.readline()
    if not line:
        raise WorkerNotRunning(f"the worker at {path} closed the connection without answering")
    answer: dict[str, Any] = json.loads(line)
    return answer


class StateLock:
    """An exclusive lock on a state folder, held while the worker runs."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / LOCK_NAME
        self._file: BinaryIO | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle = open(self.path, "ab")  # noqa: SIM115 - held open while the worker runs
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise WorkerAlreadyRunning(
                f"another worker is running with state folder {self.path.parent}; "
                "stop it, or give this one its own --state-dir"
            ) from None
        self._file = handle

    def release(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


class _RequestHandler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        line = self.rfile.readline(MAX_REQUEST_BYTES)
        try:
            request = json.loads(line)
            command = str(request["command"])
            if command not in COMMANDS:
                raise ValueError(f"unknown command {command!r}")
            answer = self.server.handler(command)
        except (ValueError, KeyError, TypeError) as exc:
            answer = {"ok": False, "error": str(exc)}
        self.wfile.write(json.dumps(answer).encode() + b"\n")


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str, handler: Handler) -> None:
        self.handler = handler
        super().__init__(path, _RequestHandler)


class ControlServer:
    """Serves `handler(command)` on the state folder's socket, in a background thread.

    The caller must hold the folder's `StateLock`: a socket left by a killed worker is
    removed at start.
    """

    def __init__(self, state_dir: Path, handler: Handler) -> None:
        self.path = socket_path(state_dir)
        self.handler = handler
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        """Start listening; False (logged) when the socket path is too long for Linux."""
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            logger.warning(
                "worker control: %s is too long for a unix socket; pause/status are off",
                self.path,
            )
            return False
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old_umask = os.umask(0o177)
        try:
            self._server = _Server(str(self.path), self.handler)
        finally:
            os.umask(old_umask)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True
        )
        self._thread.start()
        logger.info("worker control: listening on %s", self.path)
        return True

    def stop(self) -> None:
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = None
