"""One run of an experiment on this machine (`ExperimentRun`), and how its processes and
its evaluator's start: in the sandbox, under the task's limits, in the task's environment."""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autoswarm.shared.task import PYTHON_NAMES, Device, TaskSpec
from autoswarm.worker.environments import TaskEnvironment
from autoswarm.worker.hardware import VramSampler
from autoswarm.worker.process import Limits, Started
from autoswarm.worker.sandbox import Sandbox, is_secret_name, scrub_env

logger = logging.getLogger(__name__)

OPEN_FILES = 4096


@dataclass(frozen=True, slots=True)
class ExperimentRun:
    """One run of an experiment here, what its steps share: its folder, ids, task, prepared
    data, budget, the hashes of its protected files."""

    exp_dir: Path
    run_id: str
    task_dir: Path
    spec: TaskSpec
    prepared: Path
    budget_s: float
    hashes: dict[str, str]
    # The task's own environment (None: the worker's).
    environment: TaskEnvironment | None = None
    # Through PRELOAD_MAIN (`[run] preload`), unless the editable code writes its own
    # environment, which must then come before every import, as in `python train.py`.
    preload: bool = False


class Launcher:
    """Starts a task's commands in the sandbox and says how to watch them."""

    def __init__(self, sandbox: Sandbox, extra_env: Mapping[str, str]) -> None:
        self.sandbox = sandbox
        self.extra_env = dict(extra_env)
        self._vram: VramSampler | None = None

    def start(
        self,
        spec: TaskSpec,
        command: Sequence[str],
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        marker: str,
        *,
        readonly: Sequence[Path],
        writable: Sequence[Path],
        gated: bool = False,
        environment: TaskEnvironment | None = None,
        carry: Sequence[Path] = (),
    ) -> Started:
        """`command` started in the sandbox, under the task's limits (not yet watched), in
        the task's environment (read-only) when it has one."""
        cpu = spec.resources.device is Device.CPU
        python = sys.executable if environment is None else environment.python
        readonly = [*readonly, *(() if environment is None else environment.readonly)]
        argv = self.sandbox.wrap(
            resolve(command, python),
            work_dir=cwd,
            readonly=readonly,
            writable=writable,
            env=env,
            carry=carry,
        )
        limits = Limits(
            open_files=OPEN_FILES,
            file_size_mb=spec.resources.disk_mb,
            data_mb=spec.resources.memory_mb if cpu else None,
        )
        return Started(
            argv, cwd=cwd, env=env, log_path=log_path, marker=marker, limits=limits, gated=gated
        )

    def watching(self, spec: TaskSpec) -> dict[str, Any]:
        """How `Started.finish` watches a run or evaluator of this task: memory, VRAM."""
        cpu = spec.resources.device is Device.CPU
        return {
            "memory_limit_mb": spec.resources.memory_mb if cpu else None,
            "sample_vram_mb": None if cpu else self._vram_sampler(),
        }

    def env(self, home: Path) -> dict[str, str]:
        """A scrubbed environment whose HOME is `home` (its temporary files in home/.tmp),
        with the worker's extra variables."""
        return scrub_env(os.environ, home=home, tmp_dir=home / ".tmp") | self.extra_env

    def _vram_sampler(self) -> VramSampler | None:
        if self._vram is None:
            self._vram = VramSampler()
        return self._vram if self._vram.available else None


def describe_exit(code: int, log: str = "") -> str:
    """How a process ended, with the last line of its log."""
    if code < 0:
        try:
            what = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
    else:
        what = f"exit code {code}"
    last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "")
    return f"{what}: {last[:300]}" if last else what


def clip(text: str, limit: int = 4000) -> str:
    """`text`, cut to `limit` characters."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The variables of `env` that do not look like secrets (each one left out is logged)."""
    kept = {}
    for name, value in env.items():
        if is_secret_name(name):
            logger.warning("runner: variable %s looks like a secret, not passed to runs", name)
        else:
            kept[name] = value
    return kept


def resolve(command: Sequence[str], python: str) -> list[str]:
    """The command with a leading `python` replaced by `python` (the task's interpreter)."""
    argv = list(command)
    if argv and argv[0] in PYTHON_NAMES:
        argv[0] = python
    return argv
