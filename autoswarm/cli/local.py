"""Build a runner for this machine, choosing the sandbox by the trust setting."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

from autoswarm.shared.errors import InvalidInput, SandboxUnavailable
from autoswarm.worker.hardware import detect_hardware
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Sandbox

logger = logging.getLogger(__name__)

TRUST_MODES = ("auto", "sandboxed", "trusted-code")


def choose_sandbox(trust: str) -> Sandbox:
    """The sandbox for a trust mode; `auto` falls back to trusted code with a warning."""
    from autoswarm.worker.bwrap import make_sandbox

    if trust not in TRUST_MODES:
        raise InvalidInput(f"--trust must be one of {', '.join(TRUST_MODES)}, not {trust!r}")
    if trust != "auto":
        return make_sandbox(trust)  # type: ignore[arg-type]
    try:
        return make_sandbox("sandboxed")
    except SandboxUnavailable as exc:
        logger.warning("no sandbox here, running as trusted code on this machine: %s", exc)
        return make_sandbox("trusted-code")


def make_local_runner(work_dir: Path, *, trust: str, keep_work: bool = False) -> Runner:
    """A runner whose work and prepare cache live under `work_dir`."""
    sandbox = choose_sandbox(trust)
    work_dir.mkdir(parents=True, exist_ok=True)
    return Runner(
        work_root=work_dir / "work",
        cache_root=work_dir / "cache",
        sandbox=sandbox,
        hardware=detect_hardware().hardware_class,
        keep_work=keep_work,
    )


def local_heldout_secret(work_dir: Path, task_name: str) -> str:
    """The held-out secret of a task run here (`autoswarm task run`), made on first use and
    kept, owner-only, in `work_dir/heldout-secrets/`: the coordinator's role, on one machine."""
    folder = work_dir / "heldout-secrets"
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = folder / task_name
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    return path.read_text().strip()
