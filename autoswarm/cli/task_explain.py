"""What `autoswarm task check` says beyond the spec: what it resolved, why, and what this
machine cannot provide for it."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from autoswarm.shared.environment import environment_hosts, read_environment_files
from autoswarm.shared.task import TASK_FILE, Device, TaskSpec, task_environment

Row = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class Explained:
    """Resolved settings as (name, value, why) rows, and warnings for this machine."""

    rows: list[Row]
    warnings: list[str]


def explain_task(path: Path, spec: TaskSpec, *, has_cuda: Callable[[], bool]) -> Explained:
    """The rows and warnings for `spec`, loaded from `path`; `has_cuda` is asked only when
    the task needs CUDA (it starts a probe)."""
    layout = not (path / TASK_FILE).is_file()
    source = "no task.toml: karpathy/autoresearch's layout" if layout else "task.toml"
    plan = task_environment(path, spec)
    rows = [("environment", plan.describe(), plan.why)]
    command = " ".join(spec.run.command)
    where = "the task's environment" if plan.own else "the worker's interpreter"
    rows.append(("command", command, f"`python` is {where}; `uv run X.py` means the same"))
    if spec.run.prepare:
        rows.append(("prepare", " ".join(spec.run.prepare), f"once per task version, in {where}"))
    device_why = source
    if layout and spec.resources.device is Device.CUDA:
        device_why += " with its own locked project: AR's defaults (one NVIDIA GPU)"
    rows.append(("device", spec.resources.device.value, device_why))
    deadline_s = spec.budget_s + spec.run.startup_s + spec.run.grace_s
    rows.append(
        ("budget", f"{spec.budget_s:g} s", f"{source}; killed past {deadline_s:g} s in all")
    )
    if spec.run.kernels:
        named = "get_kernel(...) in train.py" if layout else "[run] kernels"
        why = f"{named}: fetched in prepare, read from the hub cache in runs"
        rows.append(("kernels", ", ".join(spec.run.kernels), why))
    rows += _network_rows(path, spec, layout=layout, own=plan.own)
    warnings = []
    if plan.own:
        from autoswarm.worker.environments import find_uv

        if find_uv() is None:
            warnings.append("no uv here: the task's environment cannot be built (pip install uv)")
    if spec.resources.device is Device.CUDA and not has_cuda():
        warnings.append(
            "this task needs an NVIDIA GPU (CUDA) and this machine has none: workers here "
            "never lease it, and `task run` runs it on the CPU, where it may fail"
        )
    return Explained(rows, warnings)


def _network_rows(path: Path, spec: TaskSpec, *, layout: bool, own: bool) -> list[Row]:
    """What the prepare phase can reach under the sandbox (`autoswarm.worker.prepare_network`)."""
    from autoswarm.worker.prepare_network import index_hosts, prepare_hosts

    hosts = prepare_hosts(spec.run.prepare_hosts, kernels=bool(spec.run.kernels))
    if not spec.run.prepare_hosts:
        why = "no [run] prepare_hosts: the prepare step reaches no host"
    elif layout:
        why = "karpathy/autoresearch's layout: its prepare.py downloads from the hub"
    else:
        why = "[run] prepare_hosts"
    if spec.run.kernels:
        why += "; the hub, for [run] kernels"
    rows = [("prepare hosts", ", ".join(hosts) or "none", why)]
    if own:
        named = environment_hosts(read_environment_files(path))
        build = (*index_hosts(os.environ), *named)
        why = "the package index of this machine's uv settings (UV_*), uv's Python downloads"
        rows.append(("build hosts", ", ".join(dict.fromkeys(build)), why + ", the lock's URLs"))
    return rows
