"""Preloaded runs (`[run] preload`): the interpreter that imports a task's modules before its
script's turn, the run started ahead of its experiment, and the editable code that must not
be preloaded (it writes its own environment before its imports)."""

from __future__ import annotations

import ast
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from autoswarm.shared.task import TaskSpec
from autoswarm.worker.launch import ExperimentRun
from autoswarm.worker.process import TICK_S, Started
from autoswarm.worker.runfiles import OnTick, copy_files

# The interpreter of a preloaded run (`[run] preload`), as `python -c` arguments:
# MODULES... -- SCRIPT ARGS... It imports the modules (one that fails is only named: the
# script imports it itself, or fails as it would anyway), says so by creating
# $TMPDIR/PRELOADED and waits for its line. Then it runs the script as `python SCRIPT
# ARGS...` would (the script's folder first on sys.path). No line (the worker dropped it):
# it exits without running anything.
PRELOADED = ".autoswarm-preloaded"

PRELOAD_MAIN = f"""\
import importlib, os, runpy, sys
split = sys.argv.index("--")
for module in sys.argv[1:split]:
    try:
        importlib.import_module(module)
    except BaseException as exc:
        print(f"autoswarm: preload {{module}}: {{type(exc).__name__}}: {{exc}}", file=sys.stderr)
ready = os.path.join(os.environ.get("TMPDIR", "."), "{PRELOADED}")
open(ready, "w").close()
if not sys.stdin.readline():
    sys.exit("autoswarm: a preloaded run was dropped before its turn")
os.unlink(ready)
sys.argv = sys.argv[split + 1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@dataclass(frozen=True, slots=True)
class WarmRun:
    """A run started ahead (`[run] preload`): its folder ready but for the editable files,
    its interpreter importing or waiting for its line. Used by the next `run` of the same
    task version and budget, dropped otherwise."""

    key: str
    run: ExperimentRun
    process: Started


def warm_key(prepared: Path, spec: TaskSpec, budget_s: float) -> str:
    """What a run started ahead must share with the run that uses it: the task version
    (its prepared folder's name is its key), the whole spec and the budget."""
    return f"{prepared.name}\0{spec.model_dump_json()}\0{budget_s:g}"


def ready_preloaded(
    run: ExperimentRun, process: Started, on_tick: OnTick | None, *, ahead: bool
) -> None:
    """Wait for a preloaded run's modules; one started ahead then gets its editable files,
    copied where it sees its work folder (its script is read only once it gets its line)."""
    work = run.exp_dir / "work"
    wait_preloaded(process, work, run.spec.run.startup_s, on_tick)
    if ahead:
        try:
            copy_editable(run.task_dir, seen_by(process, work), run.spec.editable)
        except OSError:
            if not process.exited():  # else its namespace went with it: it fails as it ended
                raise


def seen_by(process: Started | None, path: Path) -> Path:
    """`path` as the running `process` sees it, through its /proc root: a sandbox may have
    mounted the run's work folder in a namespace of its own (`autoswarm.worker.workfs`); the path
    itself once the process has gone."""
    if process is None or process.exited():
        return path
    return Path(f"/proc/{process.proc.pid}/root") / path.relative_to(path.anchor)


def wait_preloaded(process: Started, work: Path, limit_s: float, on_tick: OnTick | None) -> None:
    """Wait until a preloaded run's modules are imported (it created PRELOADED), it exited,
    or `limit_s` passed: its script, the evaluator that starts with it and the next run
    started ahead then start together in every run, ahead or not. Ticks at 0 s (the run's
    clock has not started) every TICK_S, so a worker that stops or loses the lease
    meanwhile hears of it at once; an exception from `on_tick` ends the wait."""
    ready = seen_by(process, work) / ".tmp" / PRELOADED
    deadline, ticked = time.monotonic() + limit_s, -math.inf
    while not ready.exists() and not process.exited() and time.monotonic() < deadline:
        if on_tick is not None and time.monotonic() - ticked >= TICK_S:
            ticked = time.monotonic()
            on_tick(0.0)
        time.sleep(0.01)


_ENVIRON = ("environ", "environb")

_ENVIRON_WRITES = ("update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__")


def environment_writer(task_dir: Path, spec: TaskSpec) -> str | None:
    """The first editable Python file that writes the process environment, if any. Such a
    write (`os.environ["OMP_NUM_THREADS"] = "1"` before `import torch`) would come too late
    for a module imported ahead (`[run] preload`), so its run starts as `python train.py`."""
    for path in spec.editable:
        file = task_dir / path
        if path.endswith(".py") and file.is_file() and sets_environment(file.read_bytes()):
            return path
    return None


def sets_environment(source: bytes) -> bool:
    """Whether Python source writes its environment: an item of `os.environ` (or `environ`,
    `environb`) set or deleted, one of its mutating methods, `os.putenv` or `os.unsetenv`.
    Reading it is fine. Source that does not parse: False (it fails alike either way)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False

    def is_environ(node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr in _ENVIRON
        return isinstance(node, ast.Name) and node.id in _ENVIRON

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            if is_environ(node.value):
                return True
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                if func.attr in ("putenv", "unsetenv"):
                    return True
                if func.attr in _ENVIRON_WRITES and is_environ(func.value):
                    return True
            elif isinstance(func, ast.Name) and func.id in ("putenv", "unsetenv"):
                return True
    return False


def copy_editable(src: Path, work: Path, paths: Sequence[str]) -> None:
    """The editable files into a work folder made ahead, owned as the folder is (a sandbox
    run as root has handed the folder to its own user by now)."""
    copy_files(src, work, paths, readonly=False)
    owner = work.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        for path in paths:
            target = work / path
            while target != work:
                os.chown(target, owner.st_uid, owner.st_gid, follow_symlinks=False)
                target = target.parent
