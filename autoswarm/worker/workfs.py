"""The run's work folder as a file system of its own, capped by the kernel at the task's disk_mb.

Standard library only: the sandbox's launcher (`autoswarm/worker/limits.py`, run as `python -I -S`)
loads it from its own folder.

The launcher, before it starts bwrap, enters a private mount namespace (a root worker: a
plain one; any other user: a user namespace of its own, mapping its uid and gid to
themselves) and mounts a tmpfs of `disk_mb` (and `MAX_ENTRIES` inodes) over the work folder
there. It fills it from the folder the runner staged on the host: folders and regular files
copied, the read-only paths (protected files, data/, the evaluator's heldout/ and
artifacts/) bind-mounted from the host, never copied into memory. bwrap binds that tmpfs
as the run's work folder; the host's folder stays as the runner made it. When the run has
ended (bwrap gone, and with it every process of its PID namespace), the launcher, trusted
and still holding the namespace, carries `out/` back into the host's folder with
`autoswarm.worker.leftovers.copy_artifacts` (no link followed, bounded in bytes and entries), and
removes the host's copy of a read-only path the run replaced inside (so the runner's check
of protected files sees the change). The tmpfs ends with the launcher.

Why a tmpfs (measured and weighed in docs/benchmarks.md, "Sandbox overhead"):
- the kernel refuses the write itself (ENOSPC; fallocate included), so nothing outruns the
  cap, and removed files held open or mapped count, since their pages stay in the tmpfs;
- it works for a worker of any user, wherever bwrap does (a loop-mounted image needs root
  and mkfs; RLIMIT_FSIZE caps one file, not their sum);
- the price: the work folder lives in memory. Its pages are charged to the run's control
  group, so the run's memory cap is memory_mb + disk_mb (each still caps what it names);
  a CUDA task, with no memory cap, holds at most disk_mb of RAM in its work folder.
Where the namespace or the mount is refused, or disk_mb is more than half the machine's
memory (`check_fits_memory`), the run goes on under the disk watch
(`autoswarm.worker.diskcap`), which the launcher then polls, and says so on stderr; `autoswarm
doctor` tells which applies (`probe`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import stat
import sys
from collections.abc import Sequence

MAX_ENTRIES = 200_000  # inodes of the tmpfs: more files than this is an attack, not a run
MAX_MEMORY_SHARE = 0.5  # a larger disk_mb is left on disk, under the watch, not put in RAM
FULL_BYTES = 2**20  # less free than this after a failed run: it hit the cap
CARRY_REFUSED = ".autoswarm-carry-refused"  # in the host's work folder: why out/ stayed behind
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_MS_NOSUID = 2
_MS_NODEV = 4
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MNT_DETACH = 2
_PATH_FLAGS = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype)]
    raw = data.encode() if data else None
    _check(_libc().mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), raw), f"mount {target}")


def check_fits_memory(size_mb: int, meminfo: str = "/proc/meminfo") -> None:
    """Raise OSError when a work folder of `size_mb` would take more than `MAX_MEMORY_SHARE`
    of this machine's memory: the disk watch caps such a folder instead."""
    with open(meminfo) as f:
        total_kb = next((int(line.split()[1]) for line in f if line.startswith("MemTotal:")), 0)
    if size_mb * 1024 > MAX_MEMORY_SHARE * total_kb:
        raise OSError(
            f"a {size_mb} MB work folder would take more than {MAX_MEMORY_SHARE:.0%} of this"
            f" machine's {total_kb // 1024} MB of memory"
        )


def enter_private_mounts() -> None:
    """A mount namespace of our own, nothing propagating to the host's; a non-root user
    gets it inside a user namespace mapping its own uid and gid to themselves."""
    libc = _libc()
    if os.geteuid() == 0:
        _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    else:
        uid, gid = os.geteuid(), os.getegid()
        _check(libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNS), "unshare(CLONE_NEWUSER)")
        with open("/proc/self/setgroups", "w") as f:
            f.write("deny")
        with open("/proc/self/uid_map", "w") as f:
            f.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as f:
            f.write(f"{gid} {gid} 1")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)


class CappedWork:
    """A tmpfs of `size_mb` over the folder `work`, in this process's mount namespace.
    (A plain class: importing dataclasses would add ~10 ms to every sandbox's start.)"""

    __slots__ = ("host_fd", "identities", "keep", "size_mb", "was_full", "work")

    def __init__(self, work: str, size_mb: int, keep: Sequence[str]) -> None:
        self.work, self.size_mb = os.path.realpath(work), size_mb
        self.keep = [os.path.relpath(os.path.realpath(k), self.work) for k in keep]
        self.keep = [k for k in self.keep if not k.startswith("..")]
        self.host_fd = os.open(self.work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self.identities: dict[str, tuple[int, int]] = {}
        self.was_full = False  # seen (all but) full by `full` once

    def host(self, relative: str = "") -> str:
        """A path of the host's work folder, reached through the descriptor kept on it."""
        return os.path.join(f"/proc/self/fd/{self.host_fd}", relative)

    def mount(self) -> None:
        """Mount the tmpfs and fill it from the host's folder (see the module docstring)."""
        options = f"size={self.size_mb}m,nr_inodes={MAX_ENTRIES},mode=0755"
        _mount("tmpfs", self.work, "tmpfs", _MS_NOSUID | _MS_NODEV, options)
        self._fill("")
        for relative in self.keep:
            with contextlib.suppress(OSError):
                st = os.stat(self.host(relative), follow_symlinks=False)
                self.identities[relative] = (st.st_dev, st.st_ino)

    def _fill(self, relative: str) -> None:
        for entry in os.scandir(self.host(relative)):
            rel = os.path.join(relative, entry.name)
            inside = os.path.join(self.work, rel)
            st = entry.stat(follow_symlinks=False)
            kept = rel in self.keep
            if stat.S_ISDIR(st.st_mode):
                os.mkdir(inside, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)
                if not kept:
                    self._fill(rel)
            elif stat.S_ISREG(st.st_mode):
                if kept:
                    os.close(os.open(inside, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o444))
                else:
                    _copy_file(self.host(rel), inside, stat.S_IMODE(st.st_mode))
            if kept and (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                _mount(self.host(rel), inside, None, _MS_BIND | _MS_REC)

    def full(self) -> bool:
        """Whether the tmpfs is (all but) full now, or was at an earlier call (a statvfs:
        ~1 us, so the launcher asks at each of its polls)."""
        st = os.statvfs(self.work)
        self.was_full |= st.f_bavail * st.f_frsize < FULL_BYTES or st.f_favail == 0
        return self.was_full

    def replaced(self) -> list[str]:
        """The read-only paths that, inside, no longer reach the host's file they were."""
        return [r for r, was in self.identities.items() if _identity(self.work, r) != was]

    def forget_replaced(self) -> list[str]:
        """Remove the host's copy of each read-only file the run replaced; their paths."""
        gone = []
        for relative in self.replaced():
            path = self.host(relative)
            if os.path.isfile(path) and not os.path.islink(path):
                os.unlink(path)
                gone.append(relative)
        return gone

    def unmount(self) -> None:
        """Drop the tmpfs now (its pages leave the run's memory count)."""
        with contextlib.suppress(OSError):
            _check(_libc().umount2(self.work.encode(), _MNT_DETACH), f"umount {self.work}")


def _copy_file(src: str, dst: str, mode: int) -> None:
    """A staged file (the runner's, trusted) into the tmpfs (shutil costs ~15 ms to import)."""
    fd_in = os.open(src, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        fd_out = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            while os.sendfile(fd_out, fd_in, None, 2**20):
                pass
            os.fchmod(fd_out, mode)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _identity(root: str, relative: str) -> tuple[int, int] | None:
    """(device, inode) of `relative` under `root`, reached without following any link."""
    fd = os.open(root, _PATH_FLAGS | os.O_DIRECTORY)
    try:
        for part in relative.split("/"):
            try:
                nxt = os.open(part, _PATH_FLAGS, dir_fd=fd)
            except OSError:
                return None
            os.close(fd)
            fd = nxt
        st = os.fstat(fd)
        return st.st_dev, st.st_ino
    finally:
        os.close(fd)


def carry_out(capped: CappedWork, names: Sequence[str], max_bytes: int) -> str | None:
    """Copy each folder `names` of the tmpfs into the host's folder of that name (which the
    runner made, empty); None, or why one was refused (also left in `CARRY_REFUSED`)."""
    if __package__:
        from autoswarm.worker import leftovers
    else:
        import leftovers  # type: ignore[no-redef]
    from pathlib import Path

    for name in names:
        try:
            leftovers.copy_artifacts(
                Path(capped.work) / name, Path(capped.host(name)), max_bytes=max_bytes
            )
        except leftovers.ArtifactsRefused as exc:
            why = str(exc)
        except OSError as exc:
            why = f"{name}/ could not be carried back: {exc.strerror or exc}"
        else:
            continue
        refuse_carry(capped, why)
        return why
    return None


def refuse_carry(capped: CappedWork, why: str) -> None:
    """Leave `why` in the host's folder, where the runner reads it as the run's artifacts'."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(CARRY_REFUSED, flags, 0o644, dir_fd=capped.host_fd)
    with os.fdopen(fd, "w") as f:
        f.write(why)


def probe() -> str | None:
    """None when this user can mount a capped tmpfs in a private namespace; else why not.
    Runs in a child process: the namespace is the child's and ends with it."""
    import shutil
    import subprocess
    import tempfile

    code = (
        "import os, sys; sys.path.insert(0, sys.argv[1]); import workfs;"
        " workfs.enter_private_mounts(); c = workfs.CappedWork(sys.argv[2], 1, []); c.mount();"
        " open(os.path.join(sys.argv[2], 'probe'), 'w').write('x')"
    )
    here = os.path.dirname(os.path.abspath(__file__))
    folder = tempfile.mkdtemp(prefix="autoswarm-workfs-probe-")
    try:
        done = subprocess.run(
            [sys.executable, "-I", "-S", "-c", code, here, folder],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"the probe did not run: {exc}"
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if done.returncode == 0:
        return None
    lines = done.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {done.returncode}"
