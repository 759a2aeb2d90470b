"""Per-run control groups: a memory cap that counts every page a run holds, and a process cap.

Standard library only: the sandbox's launcher (`autoswarm/worker/limits.py`, run as `python -I -S`)
loads it from its own folder.

`find()` says what this host offers, read from /proc/self/mountinfo and /proc/self/cgroup:
- cgroup v2 (the unified hierarchy): our own group must have `memory` and `pids` in its
  `cgroup.subtree_control`, or let us enable them there. When processes in our group stop
  that ("no internal processes"), `find(prepare=True)` moves this process into a leaf
  `autoswarm-worker` and tries once more (what a container's only process must do);
- cgroup v1 (hybrid hosts): writable `memory` and `pids` hierarchies, each on its own;
- neither: `Absent`, saying why; the sandbox then falls back to rlimits (`autoswarm doctor`
  says which).
A run's group is `autoswarm-run-<launcher pid>` in each parent folder. Its memory cap
(v2 `memory.max` with `memory.swap.max` 0 and `memory.oom.group` 1; v1
`memory.limit_in_bytes` and `memory.memsw.limit_in_bytes`) counts what the kernel charges
to it: anonymous memory, memfds, tmpfs and /dev/shm pages, page tables, kernel memory. Its
`pids.max` counts its own processes and threads only, never another run's.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Sequence

RUN_PREFIX = "autoswarm-run-"
WORKER_LEAF = "autoswarm-worker"
REMOVE_WAIT_S = 5.0
_CONTROLLERS = ("memory", "pids")


class Cgroups:
    """Where per-run groups are made: one folder per controller (the same one on v2).
    (A plain class: importing dataclasses would add ~10 ms to every sandbox's start.)"""

    __slots__ = ("memory", "pids", "version")

    def __init__(self, version: int, memory: str | None, pids: str | None) -> None:
        self.version, self.memory, self.pids = version, memory, pids

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Cgroups) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return f"Cgroups(version={self.version}, memory={self.memory!r}, pids={self.pids!r})"

    def _key(self) -> tuple[int, str | None, str | None]:
        return self.version, self.memory, self.pids

    def parents(self) -> list[str]:
        """The distinct parent folders, memory first."""
        return list(dict.fromkeys(p for p in (self.memory, self.pids) if p is not None))


class Absent:
    """No usable control groups here, and why."""

    __slots__ = ("why",)

    def __init__(self, why: str) -> None:
        self.why = why

    def __repr__(self) -> str:
        return f"Absent({self.why!r})"


# ---- finding the hierarchies -------------------------------------------------------------


def _mounts(mountinfo: str) -> list[tuple[str, str, str, set[str]]]:
    """(fstype, mount point, mount root, super options) of each cgroup mount."""
    found = []
    for line in mountinfo.splitlines():
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] not in ("cgroup", "cgroup2"):
            continue
        found.append((tail[0], _unescape(fields[4]), _unescape(fields[3]), set(tail[2].split(","))))
    return found


def _unescape(path: str) -> str:
    return path.replace("\\040", " ").replace("\\011", "\t").replace("\\134", "\\")


def _own_groups(proc_cgroup: str) -> dict[str, str]:
    """Our group's path per controller ("" for the v2 hierarchy), from /proc/self/cgroup."""
    groups: dict[str, str] = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for name in parts[1].split(",") if parts[1] else [""]:
                groups[name] = parts[2]
    return groups


def _folder(mount_point: str, mount_root: str, path: str) -> str:
    """The folder of group `path` under a hierarchy mounted at `mount_point` from `mount_root`."""
    if mount_root != "/" and (path == mount_root or path.startswith(mount_root + "/")):
        path = path[len(mount_root) :]
    return os.path.join(mount_point, path.lstrip("/")).rstrip("/") or "/"


def _read(path: str) -> str:
    with open(path) as f:
        return f.read()


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


def find(proc: str = "/proc", *, prepare: bool = False) -> Cgroups | Absent:
    """The control groups runs can be put in here, v2 first, else v1, else why neither."""
    try:
        mounts = _mounts(_read(os.path.join(proc, "self", "mountinfo")))
        own = _own_groups(_read(os.path.join(proc, "self", "cgroup")))
    except OSError as exc:
        return Absent(f"cannot read this process's control groups: {exc}")
    why_not_v2 = "no cgroup2 file system is mounted"
    for fstype, point, root, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            found = _find_v2(_folder(point, root, own[""]), prepare=prepare)
            if isinstance(found, Cgroups):
                return found
            why_not_v2 = found.why
    v1 = {}
    for fstype, point, root, options in mounts:
        for name in _CONTROLLERS:
            if fstype == "cgroup" and name in options and name in own:
                folder = _folder(point, root, own[name])
                if os.access(folder, os.W_OK):
                    v1[name] = folder
    if v1:
        return Cgroups(1, v1.get("memory"), v1.get("pids"))
    return Absent(f"cgroup v2: {why_not_v2}; cgroup v1: no writable memory or pids hierarchy")


def _find_v2(folder: str, *, prepare: bool) -> Cgroups | Absent:
    """Our v2 group (or its parent, when we are its `autoswarm-worker` leaf) if usable."""
    if os.path.basename(folder) == WORKER_LEAF:
        folder = os.path.dirname(folder)
    try:
        available = set(_read(os.path.join(folder, "cgroup.controllers")).split())
    except OSError as exc:
        return Absent(f"cannot read {folder}/cgroup.controllers: {exc.strerror}")
    missing = [c for c in _CONTROLLERS if c not in available]
    if missing:
        return Absent(f"{folder} offers no {' or '.join(missing)} controller")
    if not os.access(folder, os.W_OK):
        return Absent(f"{folder} is not writable by this user (not delegated to it)")
    problem = _enable(folder, prepare=prepare)
    if problem:
        return Absent(problem)
    return Cgroups(2, folder, folder)


def _enable(folder: str, *, prepare: bool) -> str:
    """Enable memory and pids for `folder`'s children; "" when done, else why not."""
    control = os.path.join(folder, "cgroup.subtree_control")
    try:
        if set(_CONTROLLERS) <= set(_read(control).split()):
            return ""
    except OSError as exc:
        return f"cannot read {control}: {exc.strerror}"
    if not prepare:
        return f"memory and pids are not enabled in {control}"
    for attempt in range(2):
        try:
            _write(control, " ".join(f"+{c}" for c in _CONTROLLERS))
            return ""
        except OSError as exc:
            if exc.errno != errno.EBUSY or attempt:
                return f"cannot enable memory and pids in {control}: {exc.strerror}"
        try:  # processes in our group: move this one into a leaf, then try again
            leaf = os.path.join(folder, WORKER_LEAF)
            os.makedirs(leaf, exist_ok=True)
            _write(os.path.join(leaf, "cgroup.procs"), str(os.getpid()))
        except OSError as exc:
            return f"cannot move the worker into {folder}/{WORKER_LEAF}: {exc.strerror}"
    return f"other processes share {folder}: memory and pids cannot be enabled for children"


# ---- one run's group ---------------------------------------------------------------------


def group_name(launcher_pid: int) -> str:
    """The name of the group of the run whose launcher has this pid."""
    return f"{RUN_PREFIX}{launcher_pid}"


def create_run_group(
    found: Cgroups, name: str, *, memory_mb: int | None, max_processes: int | None
) -> list[str]:
    """Make the run's group folders with their caps; the folders (remove them on failure)."""
    made: list[str] = []
    try:
        for parent in found.parents():
            folder = os.path.join(parent, name)
            try:
                os.mkdir(folder, 0o755)
            except FileExistsError:  # named for our own pid: a dead launcher's, left behind
                remove([folder])
                os.mkdir(folder, 0o755)
            made.append(folder)
            if parent == found.memory and memory_mb is not None:
                _set_memory(found.version, folder, memory_mb * 2**20)
            if parent == found.pids and max_processes is not None:
                _write(os.path.join(folder, "pids.max"), str(max_processes))
    except OSError:
        for folder in made:
            with contextlib.suppress(OSError):
                os.rmdir(folder)
        raise
    return made


def _set_memory(version: int, folder: str, limit: int) -> None:
    if version == 2:
        _write(os.path.join(folder, "memory.max"), str(limit))
        _write_if_present(os.path.join(folder, "memory.swap.max"), "0")
        _write_if_present(os.path.join(folder, "memory.oom.group"), "1")
    else:
        _write(os.path.join(folder, "memory.limit_in_bytes"), str(limit))
        _write_if_present(os.path.join(folder, "memory.memsw.limit_in_bytes"), str(limit))


def _write_if_present(path: str, value: str) -> None:
    """Write a file that kernels without swap accounting (or older ones) do not have."""
    if os.path.exists(path):
        with contextlib.suppress(OSError):
            _write(path, value)


def join(folders: Sequence[str], pid: int = 0) -> None:
    """Put process `pid` (0: the caller) into each folder's group."""
    for folder in folders:
        _write(os.path.join(folder, "cgroup.procs"), str(pid or os.getpid()))


def members(folders: Sequence[str]) -> list[int]:
    """The pids in the groups (processes, not threads)."""
    pids: set[int] = set()
    for folder in folders:
        with contextlib.suppress(OSError):
            pids.update(int(p) for p in _read(os.path.join(folder, "cgroup.procs")).split())
    return sorted(pids)


def oom_kills(folders: Sequence[str]) -> int:
    """How many processes the kernel killed for passing the groups' memory cap."""
    total = 0
    for folder in folders:
        for name in ("memory.events", "memory.oom_control"):
            with contextlib.suppress(OSError, ValueError):
                for line in _read(os.path.join(folder, name)).splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        total += int(value)
    return total


def remove(folders: Sequence[str], timeout_s: float = REMOVE_WAIT_S) -> bool:
    """Kill whatever is left in the groups and remove them; True when all are gone."""
    deadline = time.monotonic() + timeout_s
    for folder in folders:
        if not os.path.isdir(folder):
            continue
        with contextlib.suppress(OSError):
            _write(os.path.join(folder, "cgroup.kill"), "1")  # v2, Linux 5.14+
        while True:
            for pid in members([folder]):
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            try:
                os.rmdir(folder)
                break
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(0.01)
    return True


def run_folders(found: Cgroups, launcher_pid: int) -> list[str]:
    """The folders a run's group has (or would have) under `found`'s parents."""
    return [os.path.join(parent, group_name(launcher_pid)) for parent in found.parents()]


def remove_leftovers(found: Cgroups, proc: str = "/proc") -> list[str]:
    """Remove run groups whose launcher is gone (a worker that crashed); those removed."""
    removed = []
    for parent in found.parents():
        try:
            names = os.listdir(parent)
        except OSError:
            continue
        for name in names:
            pid = name[len(RUN_PREFIX) :]
            if name.startswith(RUN_PREFIX) and pid.isdigit() and not _launcher_alive(proc, pid):
                folder = os.path.join(parent, name)
                if remove([folder]):
                    removed.append(folder)
    return removed


def _launcher_alive(proc: str, pid: str) -> bool:
    try:
        with open(os.path.join(proc, pid, "cmdline"), "rb") as f:
            return b"limits.py" in f.read()
    except OSError:
        return False
