"""Task environments and the prepared home: what the trusted prepare phase makes for runs.

A task that carries its own locked project (`autoswarm.shared.environment`) runs in an environment
built here with uv, once per lock and platform, under `cache_root/envs/<key>/`:
    project/   the task's environment files (pyproject.toml, uv.lock, ...), uv's project
    venv/      the environment; runs use `venv/bin/python`, read-only in the sandbox
    build.log  uv's output
    ready      written last: a folder without it is a build that did not finish
uv downloads into `cache_root/uv` and installs the Python it needs (`.python-version`) into
`cache_root/uv-python`. The build is trusted code run outside the sandbox, like the rest of
the prepare phase: it has the worker's uv settings (`UV_*`, certificates) and runs build
backends of source distributions the lock names. Its network is narrowed by `network`
(`autoswarm.worker.prepare_network`): under the bubblewrap sandbox it reaches only the package index
the worker's settings name and the hosts the task's environment files name.

The prepare step's HOME is `<prepared>/home`. Every run sees what prepare left there at the
same place under its own HOME (`~/.cache/autoresearch`, the hub cache `~/.cache/huggingface`
that `kernels.get_kernel` reads at import), read-only; `heldout/` is never under it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import re
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from autoswarm.shared.environment import (
    EnvironmentKind,
    EnvironmentPlan,
    environment_hosts,
    read_environment_files,
)
from autoswarm.shared.errors import AutoswarmError
from autoswarm.worker.leftovers import remove_tree
from autoswarm.worker.prepare_network import (
    HOST_NETWORK,
    PrepareNetwork,
    declare_in_lock,
    index_hosts,
)

logger = logging.getLogger(__name__)

BUILD_TIMEOUT_S = 3600.0  # torch with CUDA is ~3 GB of wheels
READY = "ready"
HOME = "home"
# Variables of the worker's environment that a build passes to uv: its settings (index,
# find-links, offline, cache...), proxies and certificates.
_BUILD_PASS = re.compile(r"^(UV_\w+|(HTTPS?|ALL|NO)_PROXY|(https?|all|no)_proxy|SSL_CERT_\w+)$")
_BUILD_BASE = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "XDG_CONFIG_HOME")
# Folders under HOME that hold one library's folder each: their children are shared one by
# one, so a run can still write its own ~/.cache/<other>.
_CONTAINERS = (".cache", ".config", ".local", ".local/share")
# What a run makes itself under its HOME (its work folder): never replaced by prepare's.
_RUN_OWN = ("out", ".tmp", "data", ".cache/inductor", ".cache/triton")
# Fetches the task's hub kernels with its own `kernels` package, in the prepare phase.
KERNELS_WARM = """\
import sys
from kernels import get_kernel
for repo in sys.argv[1:]:
    try:
        get_kernel(repo)
        print(f"autoswarm: kernel {repo} fetched")
    except Exception as exc:  # one may not fit this GPU; the run says so if it needs it
        print(f"autoswarm: kernel {repo} not fetched: {type(exc).__name__}: {exc}")
"""


class EnvironmentBuildFailed(AutoswarmError):
    """A task's environment could not be built; the message names the package and the lock."""


@dataclass(frozen=True, slots=True)
class TaskEnvironment:
    """A built environment: its interpreter and what a sandbox must show of it, read-only."""

    root: Path
    readonly: tuple[Path, ...]

    @property
    def python(self) -> str:
        return str(self.root / "venv" / "bin" / "python")


def environment_key(files: Mapping[str, bytes], plan: EnvironmentPlan) -> str:
    """One build per lock (its files' content) and platform (OS, CPU, C library)."""
    digest = hashlib.sha256()
    libc = "-".join(platform.libc_ver())
    digest.update(f"{plan.kind}\0{sys.platform}\0{platform.machine()}\0{libc}\0".encode())
    for name in plan.files:
        digest.update(f"{name}\0{len(files[name])}\0".encode() + files[name])
    return digest.hexdigest()[:32]


def find_uv() -> str | None:
    """uv on PATH, else beside this interpreter (a venv's bin/)."""
    beside = Path(sys.executable).with_name("uv")
    found = shutil.which("uv") or (str(beside) if beside.is_file() else None)
    return found


def ready_environment(root: Path) -> TaskEnvironment | None:
    """The environment built in `root`, if its build finished."""
    if not (root / READY).is_file():
        return None
    return TaskEnvironment(root, _runtime_folders(root / "venv"))


def build_environment(
    task_dir: Path,
    plan: EnvironmentPlan,
    root: Path,
    *,
    on_tick: Callable[[float], None] | None = None,
    network: PrepareNetwork = HOST_NETWORK,
) -> TaskEnvironment:
    """Build `plan` in `root` (the caller holds its lock); raises `EnvironmentBuildFailed`.
    `network`: what uv can reach (none given: this machine's network)."""
    files = read_environment_files(task_dir)
    lock = plan.kind.value  # the file that pins it: uv.lock or requirements.txt
    uv = find_uv()
    if uv is None:
        raise EnvironmentBuildFailed(
            f"the task's environment ({lock}) needs uv, and this worker has none: pip install uv"
        )
    remove_tree(root)
    project = root / "project"
    project.mkdir(parents=True)
    for name in plan.files:
        (project / name).write_bytes(files[name])
    venv = root / "venv"
    env = _build_env(root.parent)
    env["UV_PROJECT_ENVIRONMENT"] = str(venv)
    log_path = root / "build.log"
    hosts = (*index_hosts(env), *environment_hosts(files))
    for argv in _build_steps(uv, plan, venv):
        outcome, refusals = network.supervise(
            argv,
            env,
            hosts=hosts,
            declare=declare_in_lock(lock),
            log_path=log_path,
            cwd=project,
            marker=f"env-{root.name}",
            deadline_s=BUILD_TIMEOUT_S,
            on_tick=on_tick,
        )
        if outcome.timed_out or outcome.exit_code != 0:
            log = log_path.read_text(errors="replace") if log_path.is_file() else ""
            remove_tree(root)
            message = describe_failure(plan, lock, log, outcome.timed_out)
            refused = "; ".join(refusal.line for refusal in refusals)
            raise EnvironmentBuildFailed(f"{message} ({refused})" if refused else message)
    (root / READY).write_text(plan.describe() + "\n")
    logger.info("environments: built %s in %s", plan.describe(), root)
    built = ready_environment(root)
    assert built is not None
    return built


def _build_steps(uv: str, plan: EnvironmentPlan, venv: Path) -> list[list[str]]:
    # Bytecode compiled once here: runs see the environment read-only and import torch
    # in every run.
    if plan.kind is EnvironmentKind.UV_LOCK:
        return [[uv, "sync", "--frozen", "--no-install-project", "--compile-bytecode"]]
    python = str(venv / "bin" / "python")
    install = [uv, "pip", "install", "--python", python, "--compile-bytecode"]
    return [[uv, "venv", str(venv)], [*install, "-r", "requirements.txt"]]


def _build_env(envs_root: Path) -> dict[str, str]:
    env = {name: os.environ[name] for name in _BUILD_BASE if name in os.environ}
    env |= {name: value for name, value in os.environ.items() if _BUILD_PASS.match(name)}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin")
    env.setdefault("UV_CACHE_DIR", str(envs_root / "uv"))
    env.setdefault("UV_PYTHON_INSTALL_DIR", str(envs_root / "uv-python"))
    env["VIRTUAL_ENV"] = ""  # never the worker's own venv
    return env


def describe_failure(plan: EnvironmentPlan, lock: str, log: str, timed_out: bool) -> str:
    """One line: the lock, the package uv names (one the lock lists), uv's error."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    start = next((i for i, line in enumerate(lines) if line.lower().startswith("error")), None)
    errors = lines[start:] if start is not None else lines[-5:]
    package = next((found for line in errors if (found := _first_named(line, plan))), None)
    what = f"package {package}" if package else "no package named (see the build log)"
    why = "timed out" if timed_out else (errors[0] if errors else "uv failed without a message")
    detail = " ".join(errors[1:3])
    return f"environment from {lock} could not be built: {what}: {why[:300]} {detail[:300]}".strip()


def _first_named(line: str, plan: EnvironmentPlan) -> str | None:
    """The locked package a line of uv's names first (uv's hints name the dependents after)."""
    found: list[tuple[int, int, str]] = []
    for name in plan.packages:
        pattern = "[-_.]".join(re.escape(part) for part in re.split(r"[-_.]+", name))
        match = re.search(rf"(?<![\w.-]){pattern}(?![\w-])", line, re.IGNORECASE)
        if match:
            found.append((match.start(), -len(name), name))
    return min(found)[2] if found else None


def _runtime_folders(venv: Path) -> tuple[Path, ...]:
    """The venv and the installation its interpreter comes from (`home` in pyvenv.cfg)."""
    folders = [venv]
    cfg = venv / "pyvenv.cfg"
    if cfg.is_file():
        for line in cfg.read_text(errors="replace").splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and os.path.isabs(value.strip()):
                home = Path(value.strip())
                folders += [home.parent, Path(os.path.realpath(home)).parent]
    return tuple(dict.fromkeys(folders))


# ---- the prepared home -------------------------------------------------------------------


def home_entries(home: Path) -> list[str]:
    """What prepare left under its HOME, as paths relative to it, each shared as one piece:
    the children of the container folders (`~/.cache/autoresearch`), else top-level ones."""
    entries: list[str] = []
    pending = [home] if home.is_dir() and not home.is_symlink() else []
    while pending:
        folder = pending.pop()
        for path in sorted(folder.iterdir()):
            rel = path.relative_to(home).as_posix()
            if rel in _CONTAINERS and path.is_dir() and not path.is_symlink():
                pending.append(path)
            elif rel in _RUN_OWN or any(rel.startswith(own + "/") for own in _RUN_OWN):
                logger.warning("environments: ~/%s from prepare left out: runs make their own", rel)
            else:
                entries.append(rel)
    return sorted(entries)


def link_home(home: Path, work: Path, link_tree: Callable[[Path, Path], None]) -> list[Path]:
    """Rebuild the prepared home's entries under a run's HOME (`work`) with `link_tree`; the
    paths a sandbox binds read-only. A link prepare left is not followed (left out)."""
    shared: list[Path] = []
    for rel in home_entries(home):
        source, target = home / rel, work / rel
        if source.is_symlink():
            logger.warning("environments: ~/%s from prepare is a link, left out", rel)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            link_tree(source, target)
        elif source.is_file():
            _link_file(source, target)
        else:
            continue
        shared.append(target)
    return shared


def _link_file(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
