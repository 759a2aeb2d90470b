"""The disk a sandboxed run holds: what its work folder's cap counts, polled by the launcher.

Standard library only: the sandbox's launcher (`autoswarm/worker/limits.py`, run as `python -I -S`)
loads it from its own folder.

Counts, for the folders watched (the work folder; the run can write nowhere else on disk):
- every file and folder in them, by blocks allocated, not following links;
- files on their file systems that the run's processes hold open (`/proc/PID/fd`) or
  mapped (`/proc/PID/maps`) after removing them: a removed file keeps its blocks while a
  process holds it. A file only mapped is measured through /proc/PID/map_files where
  that may be read (root); otherwise its size cannot be known and it counts as the most a
  file may hold (`unknown_bytes`, the per-file cap), so one stops the run;
- as problems of their own, a folder the watcher cannot read (a non-root worker cannot list
  a mode-0300 folder, and so cannot count it), more than `MAX_WATCHED_ENTRIES` files or
  more than `MAX_HANDLES` open files and mappings (each would make one look take seconds):
  the run is stopped as over its cap.
Does not count: tmpfs pages (/tmp, /dev/shm, memfds: the memory cap counts those), and
what is written between two polls before the cap stops it: the folders are walked, and
the processes' removed files looked up, every `REMOVED_EVERY` poll (0.1 s; reading
/proc/PID/maps of a process holding torch costs milliseconds, but the watch is only the
fallback where the work folder cannot be a capped tmpfs, `autoswarm.worker.workfs`, and at one look
per 0.5 s a run held 256 MB of removed files before it was seen).
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Callable, Iterable, Sequence

MAX_WATCHED_ENTRIES = 200_000  # more files than this in a work folder is an attack, not a run
REMOVED_EVERY = 1  # polls between two looks at the processes' removed files
# Open files and mappings of all the run's processes: a torch run holds a few thousand; past
# this the watch would take seconds per look, so it is an attack, not a run.
MAX_HANDLES = 200_000


class DiskUse:
    """What the run holds on disk now (a plain class: dataclasses costs the launcher ~10 ms)."""

    __slots__ = ("entries", "handles", "removed_bytes", "unreadable", "visible_bytes")

    def __init__(
        self,
        visible_bytes: int,
        entries: int,
        unreadable: str | None,
        removed_bytes: int,
        handles: int = 0,
    ) -> None:
        self.visible_bytes = visible_bytes
        self.entries = entries
        self.unreadable = unreadable  # a folder that could not be listed
        self.removed_bytes = removed_bytes  # removed files still held open or mapped
        self.handles = handles  # open files and mappings looked at

    @property
    def total_bytes(self) -> int:
        return self.visible_bytes + self.removed_bytes

    def over(self, cap_mb: int) -> str | None:
        """Why this use breaks a cap of `cap_mb`, or None."""
        if self.unreadable is not None:
            return f"a folder the disk cap cannot read ({self.unreadable})"
        if self.entries > MAX_WATCHED_ENTRIES:
            return f"more than {MAX_WATCHED_ENTRIES} files"
        if self.handles > MAX_HANDLES:
            return f"more than {MAX_HANDLES} open files and mappings"
        if self.total_bytes > cap_mb * 2**20:
            removed = f", {self.removed_bytes / 2**20:.0f} MB of it in removed files still held"
            return f"{self.total_bytes / 2**20:.0f} MB" + (removed if self.removed_bytes else "")
        return None


class DiskWatch:
    """The disk a run holds under `roots` (not entering `skip`), poll after poll."""

    def __init__(self, roots: Sequence[str], skip: Sequence[str], unknown_bytes: int) -> None:
        self.roots, self.skip = list(roots), list(skip)
        self.unknown_bytes = unknown_bytes
        self.devices = set()
        for root in roots:
            with contextlib.suppress(OSError):
                self.devices.add(os.stat(root).st_dev)
        self.polls = 0
        self.removed = self.handles = 0

    def poll(self, pids: Callable[[], Iterable[int]]) -> DiskUse:
        """What the run holds now; `pids` lists its processes (asked every REMOVED_EVERY)."""
        if self.polls % REMOVED_EVERY == 0:
            self.removed, self.handles = removed_bytes(pids(), self.devices, self.unknown_bytes)
        self.polls += 1
        visible, entries, unreadable = used_bytes(self.roots, self.skip)
        return DiskUse(visible, entries, unreadable, self.removed, self.handles)


def used_bytes(roots: Sequence[str], skip: Sequence[str]) -> tuple[int, int, str | None]:
    """(bytes allocated, entries, a folder that could not be listed) under `roots`."""
    skipped = {os.path.realpath(s) for s in skip}
    total = entries = 0
    unreadable = None
    stack = [os.path.realpath(r) for r in roots]
    while stack and entries <= MAX_WATCHED_ENTRIES:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                for entry in it:
                    entries += 1
                    if entry.path in skipped:
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(entry.path)
        except FileNotFoundError:
            continue  # removed meanwhile
        except OSError as exc:
            unreadable = unreadable or f"{folder}: {exc.strerror}"
    return total, entries, unreadable


def removed_bytes(pids: Iterable[int], devices: set[int], unknown_bytes: int) -> tuple[int, int]:
    """(blocks of removed files on `devices` that the processes hold open or mapped, open
    files and mappings looked at); stops looking past `MAX_HANDLES`. A file only mapped
    whose size /proc does not show counts as `unknown_bytes`."""
    opened: dict[tuple[int, int], int] = {}
    mapped: dict[tuple[int, int], int] = {}
    handles = 0
    for pid in pids:
        if handles > MAX_HANDLES:
            break
        files = _open_files(pid)
        for st in files:
            if st.st_nlink == 0 and st.st_dev in devices and stat.S_ISREG(st.st_mode):
                opened[(st.st_dev, st.st_ino)] = st.st_blocks * 512
        found, mappings = _mapped_removed(pid, devices)
        for key, size in found:
            mapped[key] = max(mapped.get(key, 0), unknown_bytes if size is None else size)
        handles += len(files) + mappings
    return sum((mapped | opened).values()), handles


def _open_files(pid: int) -> list[os.stat_result]:
    folder = f"/proc/{pid}/fd"
    found: list[os.stat_result] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return found
    for name in names:
        with contextlib.suppress(OSError):
            found.append(os.stat(os.path.join(folder, name)))
    return found


def _mapped_removed(
    pid: int, devices: set[int]
) -> tuple[list[tuple[tuple[int, int], int | None]], int]:
    """(((device, inode), bytes or None: not shown) of mapped files on `devices` that are
    removed, mappings looked at)."""
    wanted = {f"{os.major(d):02x}:{os.minor(d):02x}": d for d in devices}
    found: list[tuple[tuple[int, int], int | None]] = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            every = f.readlines()
    except OSError:
        return found, 0
    lines = [line for line in every if line.rstrip().endswith("(deleted)")]
    for line in lines:
        fields = line.split(maxsplit=5)
        if len(fields) < 6 or fields[3] not in wanted:
            continue
        span, inode = fields[0], int(fields[4])
        size: int | None = None
        with contextlib.suppress(OSError):  # root only: the file itself, through the mapping
            size = os.stat(f"/proc/{pid}/map_files/{span}").st_blocks * 512
        found.append(((wanted[fields[3]], inode), size))
    return found, len(every)
