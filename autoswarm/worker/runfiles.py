"""The files of a run and of the prepare cache: copies, hard-linked trees, read-only marks,
the tail of a log, and the lock a cache entry is made under."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from autoswarm.worker.process import TICK_S

logger = logging.getLogger(__name__)

LOG_WINDOW_BYTES = 4 * 2**20  # the summary block is read from the log's last 4 MiB

# Called about every TICK_S with the seconds a step has run; it raises to stop the step.
OnTick = Callable[[float], None]


def copy_files(src: Path, dst: Path, paths: Sequence[str], *, readonly: bool) -> None:
    for path in paths:
        target = dst / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / path, target)
        target.chmod(0o444 if readonly else 0o644)


def link_tree(src: Path, dst: Path) -> None:
    """Rebuild `src` at `dst` from hard links (copies across file systems), regular files only.

    For the prepared data/ and heldout/ only, which trusted code wrote: a tree a run wrote
    is copied by `autoswarm.worker.leftovers.copy_artifacts`, never linked.
    """
    dst.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        return
    copied = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in dirnames:
            if not (Path(dirpath) / name).is_symlink():
                (dst / rel / name).mkdir(exist_ok=True)
        for name in filenames:
            source = Path(dirpath) / name
            if not stat.S_ISREG(source.lstat().st_mode):
                logger.warning("runner: %s is not a regular file, left out", source)
                continue
            try:
                os.link(source, dst / rel / name)
            except OSError:
                shutil.copyfile(source, dst / rel / name)
                copied += 1
    if copied:
        logger.warning(
            "runner: copied %d files from %s instead of linking them: keep the work and cache"
            " folders on one file system",
            copied,
            src,
        )


def make_readonly(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o444)


def read_log(path: Path) -> str:
    """The last `LOG_WINDOW_BYTES` of a log, decoded leniently."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_WINDOW_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def locked(path: Path, on_tick: OnTick | None) -> Iterator[None]:
    """Hold an exclusive lock on `path`, ticking while another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(TICK_S)
                if on_tick is not None:
                    on_tick(time.monotonic() - started)
        yield
    finally:
        os.close(fd)
