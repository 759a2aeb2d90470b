"""Shared fixtures: a real redis-server, the real coordinator over HTTP, small task folders.

- `redis_server` (session): one redis-server on a free loopback port, append-only file on,
  data in a tmp folder. `redis_url` (function) flushes it and yields its URL.
- `redis_server_factory`: dedicated servers a test may kill -9 and restart (same port,
  same data folder); all are stopped at teardown.
- `start_coordinator`: the one builder of a test coordinator: the real app with uvicorn,
  in a background thread of this process (`mode="thread"`, default) or as
  `python -m autoswarm.coordinator` in a subprocess (`mode="subprocess"`, which a test may kill -9
  and restart); a `RunningCoordinator` (base_url, admin_token, data_dir, settings env).
- `coordinator_factory`: `start_coordinator` on the flushed session Redis (or, with
  `embedded=True`, the coordinator's own); everything is stopped at teardown.
- `coordinator`: one thread-mode coordinator with default test settings.
- `tiny_task`, `task_dir_factory` / `task_dir`: a tiny valid task folder (summary scoring,
  CPU), built by `tests.task_helpers.write_task`, the one builder of task folders.
"""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn

from autoswarm.coordinator.redis_server import redis_binary
from autoswarm.coordinator.service import serve_in_thread
from autoswarm.coordinator.settings import CoordinatorSettings
from tests.task_helpers import write_task

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def upload(folder: Path) -> dict[str, Any]:
    """A task folder as the body of POST /api/v1/tasks (every file, by its relative path)."""
    files = {
        str(p.relative_to(folder)): base64.b64encode(p.read_bytes()).decode()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }
    return {"files": files}


def wait_until(check: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll `check` every 20 ms until it holds; fail the test after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


# ---------------------------------------------------------------------------------------
# Redis
# ---------------------------------------------------------------------------------------


class RedisServer:
    """A real redis-server on loopback with its append-only file on; restartable."""

    def __init__(self, folder: Path, port: int | None = None) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        args = [
            redis_binary(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.folder),
            "--appendonly", "yes",
            "--appendfsync", "always",
            "--save", "",
            "--daemonize", "no",
            "--logfile", str(self.folder / "redis.log"),
        ]  # fmt: skip
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        try:
            wait_until(lambda: _pings(client), START_TIMEOUT_S, f"redis on port {self.port}")
        finally:
            client.close()
        return self

    def kill(self) -> None:
        """kill -9: no chance to flush anything it has not written yet."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The session Redis, flushed for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
def redis_server_factory(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    servers: list[RedisServer] = []

    def make() -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}").start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


# ---------------------------------------------------------------------------------------
# The coordinator
# ---------------------------------------------------------------------------------------

TEST_SETTINGS: dict[str, Any] = {
    "lease_ttl_s": 5.0,
    "max_attempts": 3,
    "reaper_interval_s": 0.2,
    "lease_poll_s": 0.2,
    "baseline_runs": 2,
}


@dataclass
class RunningCoordinator:
    """A coordinator the test talks to over HTTP; `kill`/`restart` in subprocess mode."""

    base_url: str
    admin_token: str
    data_dir: Path
    env: dict[str, str]
    mode: str
    port: int
    process: subprocess.Popen[bytes] | None = None
    server: uvicorn.Server | None = None
    thread: threading.Thread | None = None
    log_path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # A Redis server started for this coordinator alone, stopped with it.
    own_redis: RedisServer | None = None

    def client(self, token: str | None = None, **kwargs: Any) -> httpx.Client:
        """A client with `token` (default: the admin's; "": none)."""
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.base_url, headers=headers, trust_env=False, timeout=30, **kwargs
        )

    def get(self, path: str, **params: Any) -> Any:
        """GET /api/v1/`path` as the admin; its JSON (the test fails on any other status)."""
        with self.client() as http:
            answer = http.get(f"/api/v1/{path}", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

    def create_token(self, scope: str, name: str) -> str:
        with self.client() as http:
            answer = http.post("/api/v1/tokens", json={"scope": scope, "name": name})
            answer.raise_for_status()
            return str(answer.json()["token"])

    def kill(self) -> None:
        """kill -9 the coordinator process (subprocess mode only)."""
        assert self.process is not None, "kill needs mode='subprocess'"
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=30)
            self.server = None
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if self.own_redis is not None:
            self.own_redis.stop()

    def restart(self) -> None:
        """Start it again on the same port, data folder and Redis."""
        self.stop()
        _launch(self)


def _settings_env(values: dict[str, Any]) -> dict[str, str]:
    return {f"AUTOSWARM_{k.upper()}": str(v) for k, v in values.items() if v is not None}


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def _launch(running: RunningCoordinator) -> None:
    if running.mode == "thread":
        values = {k[len("AUTOSWARM_") :].lower(): v for k, v in running.env.items()}
        handle = serve_in_thread(CoordinatorSettings(**values))
        running.server, running.thread = handle.server, handle.thread
    else:
        env = {**os.environ, **running.env, "PYTHONPATH": str(REPO)}
        running.log_path = running.data_dir / "coordinator.log"
        with running.log_path.open("ab") as log:
            running.process = subprocess.Popen(
                [sys.executable, "-m", "autoswarm.coordinator"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
    process = running.process

    def up() -> bool:
        if process is not None and process.poll() is not None:
            log = running.log_path.read_text() if running.log_path else ""
            raise AssertionError(f"coordinator exited at start:\n{log[-3000:]}")
        return _ready(running.base_url)

    wait_until(up, START_TIMEOUT_S, f"coordinator at {running.base_url}")


CoordinatorFactory = Callable[..., RunningCoordinator]


def start_coordinator(
    folder: Path,
    *,
    redis_url: str | None,
    mode: str = "thread",
    admin_token: str | None = "generate",
    own_redis: RedisServer | None = None,
    **settings: Any,
) -> RunningCoordinator:
    """A coordinator serving `folder` on a free port with the test settings, once ready.
    `redis_url` None: it starts its own Redis. `admin_token` None: the one it writes."""
    port = free_port()
    folder.mkdir(parents=True, exist_ok=True)
    token = "as_test_" + secrets.token_urlsafe(16) if admin_token == "generate" else admin_token
    values: dict[str, Any] = {
        **TEST_SETTINGS,
        "data_dir": folder,
        "port": port,
        "host": "127.0.0.1",
        "redis_url": redis_url,
        "admin_token": token,
        **settings,
    }
    running = RunningCoordinator(
        base_url=f"http://127.0.0.1:{port}",
        admin_token=token or "",
        data_dir=folder,
        env=_settings_env(values),
        mode=mode,
        port=port,
        own_redis=own_redis,
    )
    _launch(running)
    if not running.admin_token:
        running.admin_token = (folder / "admin.token").read_text().strip()
    return running


@pytest.fixture
def coordinator_factory(tmp_path: Path, redis_url: str) -> Iterator[CoordinatorFactory]:
    started: list[RunningCoordinator] = []

    def start(
        *,
        embedded: bool = False,
        redis_url_override: str | None = None,
        data_dir: Path | None = None,
        **options: Any,
    ) -> RunningCoordinator:
        folder = data_dir or tmp_path / f"coordinator-{len(started)}"
        url = None if embedded else (redis_url_override or redis_url)
        running = start_coordinator(folder, redis_url=url, **options)
        started.append(running)
        return running

    yield start
    for running in reversed(started):
        running.stop()


@pytest.fixture
def coordinator(coordinator_factory: CoordinatorFactory) -> RunningCoordinator:
    return coordinator_factory()


# ---------------------------------------------------------------------------------------
# Tasks
# ---------------------------------------------------------------------------------------


TINY_TRAIN = """\
# A tiny task: prints a score from its constants, in the summary-block format.
SCORE = 1.0  # the metric this run reports
print("---")
print(f"score: {SCORE}")
"""
TINY_TOML = """\
[task]
name = "{name}"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 5

[metric]
name = "score"
direction = "minimize"
"""


def tiny_task(
    root: Path, name: str = "tiny", train: str = TINY_TRAIN, toml: str = TINY_TOML
) -> Path:
    """A valid task folder `root/tasks/name`: `train.py` prints `score: SCORE`, lower is better."""
    return write_task(
        root / "tasks" / name,
        {
            "task.toml": toml.format(name=name),
            "train.py": train,
            "prepare.py": "print('nothing to prepare')\n",
            "program.md": f"# {name}\n\nMake `score` lower.\n",
        },
    )


@pytest.fixture
def task_dir_factory(tmp_path: Path) -> Callable[..., Path]:
    """`tiny_task` under this test's tmp_path."""

    def make(name: str = "tiny", train: str = TINY_TRAIN, toml: str = TINY_TOML) -> Path:
        return tiny_task(tmp_path, name, train, toml)

    return make


@pytest.fixture
def task_dir(task_dir_factory: Callable[..., Path]) -> Path:
    return task_dir_factory()


def processes_in(under: Path, needle: bytes, proc_file: str = "environ") -> list[int]:
    """Live processes whose /proc/<pid>/<proc_file> holds `needle` and whose working folder
    lies under `under` (a runner's marker in `environ`, a launcher's code in `cmdline`)."""
    from autoswarm.worker.process import list_processes

    found = []
    for pid in list_processes():
        try:
            held = Path(f"/proc/{pid}/{proc_file}").read_bytes()
            cwd = Path(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if needle in held and cwd.is_relative_to(under):
            found.append(pid)
    return found
