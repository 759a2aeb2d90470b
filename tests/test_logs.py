"""Logs: JSON lines when stderr is not a terminal, from both ways of starting the coordinator;
the plain format on a terminal."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import re
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from autoswarm.shared.logs import JsonFormatter
from tests.conftest import REPO, free_port, wait_until

ENTRY_POINTS = {
    "python -m autoswarm.coordinator": ["-m", "autoswarm.coordinator"],
    "autoswarm coordinator": ["-m", "autoswarm", "coordinator"],
}


def _env(redis_url: str, data_dir: Path, port: int) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "AUTOSWARM_REDIS_URL": redis_url,
        "AUTOSWARM_DATA_DIR": str(data_dir),
        "AUTOSWARM_HOST": "127.0.0.1",
        "AUTOSWARM_PORT": str(port),
        "AUTOSWARM_ADMIN_TOKEN": "as_test_logs",
    }


def _ready(port: int) -> bool:
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1, trust_env=False)
    except httpx.HTTPError:
        return False
    return answer.status_code == 200


@pytest.fixture
def stopped_output(
    request: pytest.FixtureRequest, redis_url: str, tmp_path: Path
) -> Iterator[list[str]]:
    """Start a coordinator with stdout and stderr piped, serve one request, stop it; its
    output lines."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, *ENTRY_POINTS[request.param]],
        cwd=REPO,
        env=_env(redis_url, tmp_path / "data", port),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        wait_until(lambda: process.poll() is not None or _ready(port), 30, "the coordinator")
        assert process.poll() is None, "the coordinator exited at start"
        unknown = httpx.get(f"http://127.0.0.1:{port}/api/v1/tasks", trust_env=False)
        assert unknown.status_code == 401
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    yield (out + err).decode().splitlines()


@pytest.mark.parametrize("stopped_output", list(ENTRY_POINTS), indirect=True)
def test_every_log_line_is_json_when_not_on_a_terminal(stopped_output: list[str]) -> None:
    """Start to stop, every line parses as JSON with level, logger and msg."""
    entries = [json.loads(line) for line in stopped_output if line.strip()]
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in entries)
    messages = [entry["msg"] for entry in entries]
    assert any(msg.startswith("coordinator: ready") for msg in messages)
    assert "coordinator: stopped" in messages


def test_an_exception_is_logged_with_its_traceback_in_one_line() -> None:
    """exc carries the traceback; the line itself stays one JSON object."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.Logger("test_logs")
    logger.addHandler(handler)
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("experiment %s: judging failed", "e1")
    (line,) = stream.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "error" and entry["msg"] == "experiment e1: judging failed"
    assert "ValueError: boom" in entry["exc"]


def test_logs_are_plain_text_on_a_terminal(redis_url: str, tmp_path: Path) -> None:
    """On a terminal `python -m autoswarm.coordinator` writes `time LEVEL logger: message` lines."""
    port = free_port()
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "autoswarm.coordinator"],
        cwd=REPO,
        env=_env(redis_url, tmp_path / "data", port),
        stdout=secondary,
        stderr=secondary,
        start_new_session=True,
    )
    os.close(secondary)
    seen = b""
    try:
        deadline = time.monotonic() + 30
        while b"coordinator: ready" not in seen and time.monotonic() < deadline:
            readable, _, _ = select.select([primary], [], [], 0.2)
            if readable:
                seen += os.read(primary, 65536)
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        os.close(primary)
    ready = [line for line in seen.decode().splitlines() if "coordinator: ready" in line]
    assert ready, seen.decode()[-2000:]
    assert " INFO autoswarm.coordinator.api.app: coordinator: ready" in ready[0]
    assert not ready[0].lstrip().startswith("{")


def _worker_lines(tmp_path: Path, argv: list[str], **env: str) -> list[str]:
    """A worker whose coordinator is not there, piped: its lines until it says so."""
    process = subprocess.Popen(
        [sys.executable, *argv, "--join", f"http://127.0.0.1:{free_port()}", "--token", "t",
         "--gpus", "none", "--trust", "trusted-code", "--state-dir", str(tmp_path / "w")],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        while not any("never reached" in line for line in lines):
            line = process.stdout.readline()
            assert line, lines
            lines.append(line.rstrip("\n"))
    finally:
        process.send_signal(signal.SIGINT)
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
    return [line for line in lines if line.strip()]


def test_the_worker_logs_as_every_process_does_json_when_piped_human_when_asked(
    tmp_path: Path,
) -> None:
    """`python -m autoswarm.worker` piped writes JSON lines; `autoswarm worker` with
    AUTOSWARM_LOG_FORMAT=human writes `time LEVEL logger: message` lines."""
    for line in _worker_lines(tmp_path, ["-m", "autoswarm.worker"]):
        assert {"ts", "level", "logger", "msg"} <= set(json.loads(line)), line
    human = _worker_lines(tmp_path, ["-m", "autoswarm", "worker"], AUTOSWARM_LOG_FORMAT="human")
    assert all(re.match(r"\d\d:\d\d:\d\d \w+ [\w.]+: ", line) for line in human), human
