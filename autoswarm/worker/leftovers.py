"""What a run leaves behind, read and removed without trusting it.

Everything under a run's work folder was written by code the worker does not trust: a name
the worker expects may now be a symbolic link to a host file, a FIFO that blocks a reader,
a folder of mode 0000, or a tree nested thousands of levels deep. These functions are the
only ones that touch such a tree after a run.

Guarantees:
- no symbolic link is followed: every folder is opened relative to its parent's descriptor
  with O_NOFOLLOW | O_DIRECTORY, every file with O_NOFOLLOW | O_NONBLOCK and read only once
  `fstat` says it is a regular file (a FIFO, socket or device is never read or blocked on);
- `copy_artifacts` copies regular files into a folder of the worker's, bounded in entries,
  bytes and depth; it never links, chmods or chowns what it copies from;
- `remove_tree` removes a tree of any depth with a bounded number of descriptors, making
  the run's folders readable, searchable and writable by descriptor where their mode
  forbids it (folders only: a file's mode is never changed); it never raises.
Does not:
- guard against a process still changing the tree: the runner calls these once no process
  of the run or its evaluator is alive (see `autoswarm.worker.process`);
- treat the first components of a path it is given as the run's: those are the worker's
  folders (the work folder itself, its parents); only what lies below them is the run's.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MAX_ARTIFACT_ENTRIES = 10_000  # files, folders and anything else in out/
MAX_ARTIFACT_DEPTH = 32  # folders within folders in out/
CHUNK_BYTES = 2**20

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class ArtifactsRefused(Exception):
    """The run's artifacts cannot be scored as they are (the message says why, in one line)."""


@dataclass
class CopyReport:
    """What `copy_artifacts` did: files and bytes copied, entries left out (links, FIFOs...)."""

    files: int = 0
    bytes: int = 0
    left_out: int = 0
    entries: int = 0


# ---- copying out/ ------------------------------------------------------------------------


def copy_artifacts(
    src: Path,
    dst: Path,
    *,
    max_bytes: int,
    max_entries: int = MAX_ARTIFACT_ENTRIES,
    max_depth: int = MAX_ARTIFACT_DEPTH,
) -> CopyReport:
    """Copy the regular files under `src` (the run's out/) into the existing folder `dst`.

    `src.parent` is the worker's; `src` itself and all below it are the run's. A missing
    `src` copies nothing; a `src` that is not a folder (a symbolic link, a file) or a tree
    past the bounds raises `ArtifactsRefused`. Links, FIFOs, sockets and devices inside are
    left out (counted in the report)."""
    report = CopyReport()
    with _opened(src.parent, _DIR_FLAGS) as parent_fd:
        try:
            src_fd = os.open(src.name, _DIR_FLAGS, dir_fd=parent_fd)
        except FileNotFoundError:
            return report
        except PermissionError:
            refused = f"{src.name}/ cannot be read: its mode shuts the worker out"
            raise ArtifactsRefused(refused) from None
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise ArtifactsRefused(
                    f"{src.name}/ is not a folder (a symbolic link or a file): nothing to score"
                ) from None
            raise
    try:
        with _opened(dst, _DIR_FLAGS) as dst_fd:
            _copy_folder(src_fd, dst_fd, report, _Bounds(max_bytes, max_entries, max_depth), 0)
    finally:
        os.close(src_fd)
    if report.left_out:
        logger.warning(
            "artifacts: %d entries of %s are not regular files or folders, left out",
            report.left_out,
            src,
        )
    return report


@dataclass(frozen=True)
class _Bounds:
    max_bytes: int
    max_entries: int
    max_depth: int


def _copy_folder(src_fd: int, dst_fd: int, report: CopyReport, bounds: _Bounds, depth: int) -> None:
    if depth > bounds.max_depth:
        raise ArtifactsRefused(f"the artifacts nest folders deeper than {bounds.max_depth}")
    for name in _names(src_fd):
        report.entries += 1
        if report.entries > bounds.max_entries:
            raise ArtifactsRefused(f"the artifacts hold more than {bounds.max_entries} entries")
        mode = os.stat(name, dir_fd=src_fd, follow_symlinks=False).st_mode
        if stat.S_ISDIR(mode):
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=src_fd)
            except PermissionError:  # its mode shuts the worker out: never changed, left out
                report.left_out += 1
                continue
            try:
                os.mkdir(name, 0o755, dir_fd=dst_fd)
                with _opened(name, _DIR_FLAGS, dir_fd=dst_fd) as child_dst:
                    _copy_folder(child, child_dst, report, bounds, depth + 1)
            finally:
                os.close(child)
        elif stat.S_ISREG(mode):
            _copy_file(src_fd, dst_fd, name, report, bounds.max_bytes)
        else:
            report.left_out += 1


def _copy_file(src_fd: int, dst_fd: int, name: str, report: CopyReport, max_bytes: int) -> None:
    try:
        fd = os.open(name, _FILE_FLAGS, dir_fd=src_fd)
    except PermissionError:  # its mode shuts the worker out: never changed, left out
        report.left_out += 1
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            report.left_out += 1
            return
        if report.bytes + st.st_size > max_bytes:
            raise ArtifactsRefused(f"the artifacts hold more than {max_bytes // 2**20} MB")
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        with _opened(name, flags, 0o444, dir_fd=dst_fd) as out:
            copied = 0
            while copied < st.st_size:
                sent = os.sendfile(out, fd, copied, min(CHUNK_BYTES, st.st_size - copied))
                if sent == 0:
                    break  # shorter than fstat said: what is there is the file
                copied += sent
    finally:
        os.close(fd)
    report.files += 1
    report.bytes += copied


# ---- hashing a protected file ------------------------------------------------------------


def hash_file(root: Path, relative: str) -> str | None:
    """sha256 of the regular file at `relative` under the worker's folder `root`, reached
    without following links; None when any component is a link, the file is not a regular
    file (a FIFO is never waited on) or it cannot be read."""
    parts = Path(relative).parts
    try:
        with _opened(root, _DIR_FLAGS) as top:
            fd = os.dup(top)
            for part in parts[:-1]:
                try:
                    nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
                finally:
                    os.close(fd)
                fd = nxt
            try:
                with _opened(parts[-1], _FILE_FLAGS, dir_fd=fd) as file_fd:
                    if not stat.S_ISREG(os.fstat(file_fd).st_mode):
                        return None
                    os.set_blocking(file_fd, True)
                    digest = hashlib.sha256()
                    while chunk := os.read(file_fd, CHUNK_BYTES):
                        digest.update(chunk)
                    return digest.hexdigest()
            finally:
                os.close(fd)
    except OSError:
        return None


# ---- removing a run's folder -------------------------------------------------------------


def remove_tree(path: Path) -> bool:
    """Remove `path` (a folder of the worker's) and everything in it; True when it is gone.
    Never raises: what could not be removed is logged."""
    try:
        with _opened(path.parent, _DIR_FLAGS) as parent_fd:
            try:
                mode = os.stat(path.name, dir_fd=parent_fd, follow_symlinks=False).st_mode
            except FileNotFoundError:
                return True
            if stat.S_ISDIR(mode):
                _empty_folder(parent_fd, path.name)
                os.rmdir(path.name, dir_fd=parent_fd)
            else:
                os.unlink(path.name, dir_fd=parent_fd)
        return True
    except Exception as exc:  # a cleanup failure is logged and answered False, never raised
        logger.warning("cleanup: could not remove %s: %s: %s", path, type(exc).__name__, exc)
        return False


def _empty_folder(parent_fd: int, name: str) -> None:
    """Empty the folder `name` under `parent_fd`, depth first without recursion: one
    descriptor per level would run out on a tree nested deeper than the open-files limit,
    so it keeps only the names still to remove per level and goes back up through `..`,
    checking each step against the (device, inode) it came from."""
    fd = _open_for_removal(parent_fd, name)
    levels = [(_remove_all_but_folders(fd), _identity(fd))]  # (folders left, whose) per level
    try:
        while True:
            pending = levels[-1][0]
            if pending:
                child = _open_for_removal(fd, pending[-1])
                os.close(fd)
                fd = child
                levels.append((_remove_all_but_folders(fd), _identity(fd)))
                continue
            levels.pop()
            if not levels:
                return
            up = os.open("..", _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = up
            if _identity(fd) != levels[-1][1]:
                raise OSError(errno.ESTALE, "a folder moved while it was being removed")
            os.rmdir(levels[-1][0].pop(), dir_fd=fd)
    finally:
        os.close(fd)


def _remove_all_but_folders(fd: int) -> list[str]:
    """Unlink every entry of the folder open as `fd` that is not a folder; the folders' names."""
    folders = []
    for name in _names(fd):
        if stat.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
            folders.append(name)
        else:
            os.unlink(name, dir_fd=fd)
    return folders


def _open_for_removal(parent_fd: int, name: str) -> int:
    """The folder `name` opened (never through a link), first made readable, writable and
    searchable by its owner where we lack that (a run's mode-0000 or 0300 folder; a root
    worker without CAP_DAC_OVERRIDE takes the folder over first), by descriptor."""
    flags = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    handle = os.open(name, flags, dir_fd=parent_fd)
    # The descriptor's /proc link reaches the very folder, never a link's target.
    folder = f"/proc/self/fd/{handle}"
    try:
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            if os.fstat(handle).st_uid != os.geteuid():
                os.chown(folder, os.geteuid(), -1)
            os.chmod(folder, 0o700)
        return os.open(folder, _DIR_FLAGS & ~os.O_NOFOLLOW)
    finally:
        os.close(handle)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


# ---- descriptors -------------------------------------------------------------------------


def _names(fd: int) -> Iterator[str]:
    """The names in the folder open as `fd`."""
    with os.scandir(fd) as entries:
        for entry in entries:
            yield entry.name


@contextlib.contextmanager
def _opened(
    path: str | Path, flags: int, mode: int = 0o777, *, dir_fd: int | None = None
) -> Iterator[int]:
    fd = os.open(path, flags, mode, dir_fd=dir_fd)
    try:
        yield fd
    finally:
        os.close(fd)
