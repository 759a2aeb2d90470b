"""Which Python environment a task runs in: its own (a locked project) or the worker's.

A task folder that carries its own Python project runs in an environment built from it
(see `autoswarm/worker/environments.py`): `pyproject.toml` with `uv.lock` (built with `uv sync
--frozen`), else `requirements.txt` (`uv pip install -r`). Any other folder, and one whose
task.toml says `[run] environment = "worker"`, runs in the worker's own interpreter.
This module only reads the files; it never builds or imports anything.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from autoswarm.shared.hosts import url_host

PYPROJECT = "pyproject.toml"
UV_LOCK = "uv.lock"
REQUIREMENTS = "requirements.txt"
PYTHON_VERSION = ".python-version"
# The files that define a task's environment: they travel with the task and key its build.
ENVIRONMENT_FILES = (PYPROJECT, UV_LOCK, REQUIREMENTS, PYTHON_VERSION)
MAX_ENVIRONMENT_FILE_BYTES = 8 * 2**20  # AR's uv.lock is ~400 KB
_REQUIREMENT_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


class EnvironmentKind(StrEnum):
    WORKER = "worker"  # the worker's own interpreter
    UV_LOCK = "uv.lock"  # pyproject.toml + uv.lock, `uv sync --frozen`
    REQUIREMENTS = "requirements.txt"  # `uv pip install -r requirements.txt`


@dataclass(frozen=True, slots=True)
class EnvironmentPlan:
    """What a task's environment resolves to, and why, in words for `task check`."""

    kind: EnvironmentKind
    files: tuple[str, ...]  # the files it is built from (empty for the worker's)
    packages: tuple[str, ...]  # the names it installs (the project itself left out)
    why: str

    @property
    def own(self) -> bool:
        return self.kind is not EnvironmentKind.WORKER

    def describe(self) -> str:
        """One line: `uv.lock (62 packages)`, or `the worker's own`."""
        if not self.own:
            return "the worker's own"
        count = len(self.packages)
        return f"{self.kind.value} ({count} package{'' if count == 1 else 's'})"


class EnvironmentFilesError(ValueError):
    """An environment file that cannot be read: which, and why."""

    def __init__(self, file: str, message: str) -> None:
        self.file = file
        self.message = message
        super().__init__(f"{file}: {message}")


def read_environment_files(folder: Path) -> dict[str, bytes]:
    """The environment files present in a task folder, as {name: content}."""
    found: dict[str, bytes] = {}
    for name in ENVIRONMENT_FILES:
        path = folder / name
        if path.is_symlink():  # as for every task file: never followed (a link carries out)
            raise EnvironmentFilesError(name, "is a symbolic link; it must be a regular file")
        if path.is_file():
            if path.stat().st_size > MAX_ENVIRONMENT_FILE_BYTES:
                raise EnvironmentFilesError(name, f"larger than {MAX_ENVIRONMENT_FILE_BYTES} B")
            found[name] = path.read_bytes()
    return found


def plan_environment(files: Mapping[str, bytes], *, worker_only: bool = False) -> EnvironmentPlan:
    """The environment `files` (as from `read_environment_files`) resolve to."""
    if worker_only:
        why = "task.toml says [run] environment = 'worker'"
        return EnvironmentPlan(EnvironmentKind.WORKER, (), (), why)
    if UV_LOCK in files:
        if PYPROJECT not in files:
            raise EnvironmentFilesError(UV_LOCK, f"found without {PYPROJECT}: uv cannot sync it")
        packages = _locked_packages(files[UV_LOCK])
        used = tuple(n for n in (PYPROJECT, UV_LOCK, PYTHON_VERSION) if n in files)
        why = f"{PYPROJECT} and {UV_LOCK} present: built with `uv sync --frozen`"
        return EnvironmentPlan(EnvironmentKind.UV_LOCK, used, packages, why)
    if REQUIREMENTS in files:
        packages = _required_packages(files[REQUIREMENTS])
        used = tuple(n for n in (REQUIREMENTS, PYTHON_VERSION) if n in files)
        why = f"{REQUIREMENTS} present: built with `uv pip install -r {REQUIREMENTS}`"
        return EnvironmentPlan(EnvironmentKind.REQUIREMENTS, used, packages, why)
    if PYPROJECT in files:
        why = f"{PYPROJECT} without {UV_LOCK} is not locked: the worker's own (add `uv lock`)"
    else:
        why = f"no {UV_LOCK} or {REQUIREMENTS}: the worker's own"
    return EnvironmentPlan(EnvironmentKind.WORKER, (), (), why)


def _locked_packages(content: bytes) -> tuple[str, ...]:
    try:
        lock = tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise EnvironmentFilesError(UV_LOCK, f"not valid TOML: {exc}") from None
    entries = lock.get("package", [])
    if not isinstance(entries, list):
        raise EnvironmentFilesError(UV_LOCK, "[[package]] is not a list")
    names: list[str] = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise EnvironmentFilesError(UV_LOCK, "a [[package]] without a name")
        source = entry.get("source", {})
        if isinstance(source, dict) and ("virtual" in source or "editable" in source):
            continue  # the task's own project, not installed
        names.append(entry["name"])
    return tuple(names)


def _required_packages(content: bytes) -> tuple[str, ...]:
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise EnvironmentFilesError(REQUIREMENTS, "not UTF-8") from None
    names = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line and not line.startswith("-") and (match := _REQUIREMENT_NAME.match(line)):
            names.append(match.group(1))
    return tuple(names)


# ---- the hosts an environment's files name -----------------------------------------------

_URL = re.compile(r"https?://[^\s'\"<>]+")


def environment_hosts(files: Mapping[str, bytes]) -> tuple[str, ...]:
    """The `host:port` of every http(s) URL the environment files name: the lock's registries,
    wheels and sdists (AR's torch on download.pytorch.org), pyproject's `[[tool.uv.index]]`,
    requirements' `--index-url`, `--find-links` and `name @ URL` lines."""
    urls: list[str] = []
    if UV_LOCK in files:
        urls += _lock_urls(files[UV_LOCK])
    for name in (PYPROJECT, REQUIREMENTS):
        if name in files:
            urls += _URL.findall(files[name].decode("utf-8", errors="replace"))
    hosts = (url_host(url) for url in urls)
    return tuple(dict.fromkeys(host for host in hosts if host))


def _lock_urls(content: bytes) -> list[str]:
    try:
        lock = tomllib.loads(content.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError):
        return []
    urls: list[str] = []
    for entry in lock.get("package", []):
        if not isinstance(entry, dict):
            continue
        wheels = entry.get("wheels")
        parts: list[Any] = [entry.get("source"), entry.get("sdist")]
        parts += wheels if isinstance(wheels, list) else []
        for part in parts:
            if isinstance(part, dict):
                urls += [
                    part[k] for k in ("registry", "url", "git") if isinstance(part.get(k), str)
                ]
    return urls


# ---- hub kernels fetched at import -------------------------------------------------------

KERNEL_REPO = r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$"
_KERNEL_REPO = re.compile(KERNEL_REPO)


def kernel_repos(source: bytes) -> tuple[str, ...]:
    """The hub repositories a script loads with `get_kernel(...)` (the `kernels` package),
    as far as they can be read without running it: a literal argument, or every literal
    assigned to the name passed (`repo = "a/b" if cap == (9, 0) else "c/d"`)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return ()
    assigned: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assigned.setdefault(target.id, []).append(node.value)
    found: list[str] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args and _is_get_kernel(node.func)):
            continue
        arg = node.args[0]
        values = assigned.get(arg.id, []) if isinstance(arg, ast.Name) else [arg]
        for value in values:
            for leaf in ast.walk(value):
                text = leaf.value if isinstance(leaf, ast.Constant) else None
                if isinstance(text, str) and _KERNEL_REPO.match(text) and text not in found:
                    found.append(text)
    return tuple(found)


def _is_get_kernel(func: ast.expr) -> bool:
    if isinstance(func, ast.Attribute):
        return func.attr == "get_kernel"
    return isinstance(func, ast.Name) and func.id == "get_kernel"
