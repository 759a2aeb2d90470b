"""Where a running coordinator can be reached, kept in its data folder (`coordinator.json`:
its URL and process id) while it serves, so that commands run beside that folder find it
without flags. Also whether a port can be served at all, checked before anything starts.
"""

from __future__ import annotations

import errno
import json
import os
import socket
from pathlib import Path

from autoswarm.shared.errors import AutoswarmError

ADDRESS_FILE = "coordinator.json"


class PortInUse(AutoswarmError):
    """The port asked for is served by something else already."""


class FolderInUse(AutoswarmError):
    """Another live coordinator serves the data folder (two would share one Redis folder)."""


def check_folder(data_dir: Path) -> None:
    """Raise `FolderInUse` (one line, saying what to do) if another process serves
    `data_dir` now."""
    found = _read(data_dir / ADDRESS_FILE)
    if found is None or found[1] == os.getpid() or read_address(data_dir) is None:
        return
    raise FolderInUse(
        f"{data_dir} is served already, at {found[0]} (process {found[1]}): read it there "
        "(commands run here find it), or stop that one first, or give another --data-dir"
    )


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on `host` now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_port(host: str, port: int) -> None:
    """Raise `PortInUse` (one line, saying what to do) unless `host:port` can be bound now."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds it
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise AutoswarmError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
            raise PortInUse(
                f"port {port} is in use on {host}: pass another --port (or stop what listens there)"
            ) from None


def local_url(host: str, port: int) -> str:
    """The URL this machine reaches a coordinator at (a wildcard address is loopback)."""
    near = {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)
    if ":" in near and not near.startswith("["):
        near = f"[{near}]"
    return f"http://{near}:{port}"


def write_address(data_dir: Path, url: str) -> None:
    """Say, in the data folder, that this process serves it at `url`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / ADDRESS_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}) + "\n")
    os.replace(tmp, path)


def remove_address(data_dir: Path) -> None:
    """Take back what `write_address` said, if it is still this process's."""
    path = data_dir / ADDRESS_FILE
    found = _read(path)
    if found is not None and found[1] == os.getpid():
        path.unlink(missing_ok=True)


def read_address(data_dir: Path) -> str | None:
    """The URL of the live coordinator serving `data_dir`; None if none serves it."""
    found = _read(data_dir / ADDRESS_FILE)
    if found is None:
        return None
    url, pid = found
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None  # it ended without taking the file back (killed)
    except PermissionError:
        pass  # alive, another user's
    return url


def _read(path: Path) -> tuple[str, int] | None:
    try:
        raw = json.loads(path.read_text())
        return str(raw["url"]), int(raw["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
