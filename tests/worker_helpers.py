"""Helpers for tests that run real worker processes against a real coordinator."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.task import load_task, read_task_files
from tests.conftest import REPO, RunningCoordinator, tiny_task, wait_until

# A task whose run sleeps SLEEP_S, then prints SCORE (+ Gaussian noise NOISE) as `score`.
SLEEPY_TRAIN = """\
import os, random, sys, time
SLEEP_S = {sleep_s}  # seconds the run takes
SCORE = {score}  # the metric this run reports
NOISE = {noise}  # standard deviation of the noise added to SCORE
CRASH = {crash}  # exit with an error instead of printing a score
time.sleep(SLEEP_S)
if CRASH:
    sys.exit("crashed on purpose")
print("---")
print(f"score: {{SCORE + random.gauss(0, NOISE):.6f}}")
"""
SLEEPY_TOML = """\
[task]
name = "{name}"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = {budget_s}

[metric]
name = "score"
direction = "minimize"

[run]
startup_s = 5
grace_s = 1
"""


def make_task(
    root: Path,
    name: str = "sleepy",
    *,
    sleep_s: float = 0.5,
    score: float = 1.0,
    noise: float = 0.0,
    crash: bool = False,
    budget_s: float = 5,
) -> Path:
    """A task folder whose run sleeps, then prints a score (or crashes)."""
    train = SLEEPY_TRAIN.format(sleep_s=sleep_s, score=score, noise=noise, crash=crash)
    toml = SLEEPY_TOML.format(name="{name}", budget_s=budget_s)
    return tiny_task(root, name, train=train, toml=toml)


def register_task(coordinator: RunningCoordinator, folder: Path) -> str:
    """Register a task folder with the coordinator; its task_id."""
    files = read_task_files(folder, load_task(folder))
    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as client:
        return str(client.register_task(files)["task_id"])


def list_experiments(coordinator: RunningCoordinator, **filters: Any) -> list[dict[str, Any]]:
    """Every experiment matching `filters`, all pages."""
    found: list[dict[str, Any]] = []
    cursor = None
    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as client:
        while True:
            page = client.get_json("experiments", {**filters, "cursor": cursor, "limit": 500})
            found += page["experiments"]
            cursor = page["next_cursor"]
            if not cursor:
                return found


@dataclass
class WorkerProcess:
    """`python -m autoswarm.worker` in a subprocess, with its own state folder and log."""

    name: str
    state_dir: Path
    args: list[str]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.log_path = self.state_dir.parent / f"{self.name}.log"

    def start(self) -> WorkerProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSWARM_")}
        env["PYTHONPATH"] = str(REPO)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "autoswarm.worker", *self.args],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout_s)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        if not self.alive():
            return
        self.signal(signal.SIGCONT)
        self.signal(signal.SIGTERM)
        try:
            self.wait(timeout_s=10)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.wait()


class WorkerFactory:
    """Starts worker processes against one coordinator; stops them all at the end."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.started: list[WorkerProcess] = []

    def start(
        self,
        coordinator: RunningCoordinator,
        token: str,
        name: str,
        *extra: str,
        state_dir: Path | None = None,
    ) -> WorkerProcess:
        state = state_dir or self.root / name / "state"
        args = [
            "--join", coordinator.base_url,
            "--token", token,
            "--name", name,
            "--gpus", "none",
            "--trust", "trusted-code",
            "--state-dir", str(state),
            "--wait-s", "1",
            *extra,
        ]  # fmt: skip
        worker = WorkerProcess(name, state, args).start()
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        """SIGTERM all at once, then wait for each (SIGKILL after 10 s)."""
        running = [w for w in self.started if w.alive()]
        for worker in running:
            worker.signal(signal.SIGCONT)
            worker.signal(signal.SIGTERM)
        for worker in running:
            worker.stop()

    def __iter__(self) -> Iterator[WorkerProcess]:
        return iter(self.started)


def wait_for_state(
    coordinator: RunningCoordinator,
    experiment_id: str,
    states: tuple[str, ...],
    timeout_s: float = 30.0,
) -> dict[str, Any]:
    """Wait until the experiment is in one of `states`; its record."""
    seen: dict[str, Any] = {}

    def check() -> bool:
        with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as client:
            seen.update(client.get_json(f"experiments/{experiment_id}"))
        return seen.get("state") in states

    wait_until(check, timeout_s, f"experiment {experiment_id} in {states}")
    return seen
