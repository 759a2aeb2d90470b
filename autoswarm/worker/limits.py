"""The sandbox's launcher: the limits, the user and the disk cap that bwrap itself cannot set.

`BwrapSandbox.wrap` puts this file in front of `bwrap`:
    python -I -S autoswarm/worker/limits.py [options] -- bwrap ARGS...
It runs outside the sandbox, imports the standard library and its siblings
`autoswarm/worker/cgroups.py` and `autoswarm/worker/diskcap.py` only (it runs with `-I -S`, so
starting it costs ~20 ms), and then:
- with `--cgroup-memory`/`--cgroup-pids` parent folders (`autoswarm.worker.cgroups.find`, passed by
  `BwrapSandbox`): makes the run's own control group,
  `autoswarm-run-<this pid>`, capped at `--memory-mb` (default: the run's RLIMIT_DATA,
  which the runner sets to a CPU task's memory_mb) counting memfds, tmpfs and /dev/shm,
  and at `--nproc` processes and threads; bwrap starts inside it. After bwrap ends the
  group is emptied and removed (`autoswarm.worker.process` removes it too if this launcher was
  killed), and a run the kernel killed for its memory says so on stderr;
- without a pids group: sets RLIMIT_NPROC to the processes the sandbox's host user already
  has plus `--nproc`, so a fork bomb stops at that count (RLIMIT_NPROC is per host user:
  runs that share it share that count);
- as root: root is exempt from RLIMIT_NPROC, and bubblewrap maps the sandbox's user to the
  caller's, so the sandbox would be root on the host. The launcher therefore hands the
  writable folders to `--host-uid` (65534, "nobody", by default), makes the folders bwrap
  binds reachable for that user in a private mount namespace of its own (a tmpfs over the
  first ancestor that user cannot enter, e.g. /root, holding only the bound paths), drops
  to that user and group with no supplementary groups, and runs bwrap as that user;
- with `--capped-work` (the work folder) and a disk cap: enters a mount namespace of its
  own and mounts a tmpfs of `--disk-mb` over the work folder there (`autoswarm.worker.workfs`): the
  kernel then refuses writes past the cap, the memory cap grows by `--disk-mb` (its pages
  are the run's), and that folder is not watched. After the run it removes the host's copy
  of a read-only file the run replaced, copies the `--carry` folders (out/) back into the
  host's work folder, bounded and without following links, and says on stderr when the
  run's writes filled the folder (exit 125 when the run failed). Where the host refuses
  the mount it says so and watches the folder as below;
- runs bwrap as its child and watches the disk the run holds under `--watch` folders (the
  work folder: RLIMIT_FSIZE caps each file, not their sum): every file and folder in them,
  and files on their file systems that the run's processes hold open or mapped after
  removing them. Past `--disk-mb`, or when a folder there cannot be read (a non-root
  worker cannot read a mode-0300 folder), it kills bwrap (and so, with
  `--die-with-parent`, the whole sandbox) and exits 125 with a message;
- exits with bwrap's status (a signal that killed bwrap kills the launcher too).
Nothing else here changes the host: the mounts live in the launcher's own mount namespace,
and the run's control group is removed when the run ends.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import os
import select
import signal
import stat
import sys
import time
from collections.abc import Iterable, Sequence

if __package__:
    from autoswarm.worker import cgroups, diskcap, workfs
else:  # the launcher, run as `python -I -S autoswarm/worker/limits.py`: its siblings, by path
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import cgroups  # type: ignore[no-redef]
    import diskcap  # type: ignore[no-redef]
    import workfs  # type: ignore[no-redef]

DISK_EXCEEDED_EXIT = 125
MEMORY_EXCEEDED_EXIT = 137  # what a shell reports for a SIGKILL, the kernel's OOM kill
POLL_S = 0.1
_CLONE_NEWNS = 0x00020000
_MS_BIND = 4096
_MS_REC = 16384
_MS_PRIVATE = 1 << 18
_MS_NOSUID = 2
_MS_NODEV = 4
_PR_SET_PDEATHSIG = 1
_BIND_OPTIONS = frozenset(
    {
        "--bind",
        "--bind-try",
        "--ro-bind",
        "--ro-bind-try",
        "--dev-bind",
        "--dev-bind-try",
    }
)
# How many values each bwrap option takes (bubblewrap 0.4 to 0.11); others take none.
_ARITY = dict.fromkeys(_BIND_OPTIONS, 2) | {
    "--setenv": 2,
    "--symlink": 2,
    "--chmod": 2,
    "--file": 2,
    "--bind-data": 2,
    "--ro-bind-data": 2,
    "--bind-fd": 2,
    "--ro-bind-fd": 2,
    "--args": 1,
    "--userns": 1,
    "--userns2": 1,
    "--pidns": 1,
    "--uid": 1,
    "--gid": 1,
    "--hostname": 1,
    "--chdir": 1,
    "--unsetenv": 1,
    "--lock-file": 1,
    "--sync-fd": 1,
    "--remount-ro": 1,
    "--exec-label": 1,
    "--file-label": 1,
    "--proc": 1,
    "--dev": 1,
    "--tmpfs": 1,
    "--mqueue": 1,
    "--dir": 1,
    "--seccomp": 1,
    "--add-seccomp-fd": 1,
    "--block-fd": 1,
    "--userns-block-fd": 1,
    "--info-fd": 1,
    "--json-status-fd": 1,
    "--cap-add": 1,
    "--cap-drop": 1,
    "--perms": 1,
    "--size": 1,
}


# ---- process count -----------------------------------------------------------------------


def count_tasks(uid: int) -> int:
    """Tasks (processes and threads: what RLIMIT_NPROC counts) whose real uid is `uid`."""
    total = 0
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        real_uid, threads = -1, 1
        try:
            with open(f"/proc/{name}/status", "rb") as f:
                for line in f:
                    if line.startswith(b"Uid:"):
                        real_uid = int(line.split()[1])
                    elif line.startswith(b"Threads:"):
                        threads = int(line.split()[1])
                        break
        except (OSError, ValueError, IndexError):
            continue
        if real_uid == uid:
            total += threads
    return total


def set_nproc(uid: int, allowance: int) -> int:
    """Limit the host user `uid` to its current task count plus `allowance`; the limit set."""
    import resource

    limit = count_tasks(uid) + allowance
    hard = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_NPROC, (limit, limit))
    return limit


# ---- reaching the bound paths as another user --------------------------------------------


def can_enter(st: os.stat_result, uid: int, gid: int) -> bool:
    """True when `uid`/`gid` (no supplementary groups) may search a folder with this stat."""
    if st.st_uid == uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid == gid:
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def first_closed_ancestor(path: str, uid: int, gid: int) -> str | None:
    """The first folder above `path` (an absolute real path) that `uid` cannot enter."""
    current = "/"
    for part in path.strip("/").split("/")[:-1]:
        if not can_enter(os.stat(current), uid, gid):
            return current
        current = os.path.join(current, part)
    return None if can_enter(os.stat(current), uid, gid) else current


def bind_sources(bwrap_argv: Sequence[str]) -> list[int]:
    """Indices in a bwrap argv (program first) of the sources of its bind options."""
    found, i = [], 1
    while i < len(bwrap_argv) and bwrap_argv[i] != "--":
        arg = bwrap_argv[i]
        if arg in _BIND_OPTIONS:
            found.append(i + 1)
        i += 1 + _ARITY.get(arg, 0)
    return found


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _mount(
    libc: ctypes.CDLL,
    source: str | None,
    target: str,
    fstype: str | None,
    flags: int,
    data: str | None = None,
) -> None:
    enc = [None if s is None else s.encode() for s in (source, target, fstype, data)]
    _check(libc.mount(enc[0], enc[1], enc[2], ctypes.c_ulong(flags), enc[3]), f"mount {target}")


def make_reachable(sources: Iterable[str], uid: int, gid: int) -> None:
    """In a new private mount namespace, make every source path reachable by `uid`/`gid`.

    For each first ancestor the user cannot enter, a tmpfs is mounted over it holding only
    the paths below it that are bound (each bind-mounted from the original). Needs root.
    """
    by_cover: dict[str, list[str]] = {}
    for source in sources:
        cover = first_closed_ancestor(source, uid, gid)
        if cover is not None:
            by_cover.setdefault(cover, []).append(source)
    if not by_cover:
        return
    libc = _libc()
    _check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(libc, None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing propagates to the host
    for cover in sorted(by_cover, key=len):
        if cover == "/":
            raise OSError(f"the sandbox user {uid} cannot enter / itself")
        paths = _outermost(by_cover[cover])
        fds = {p: os.open(p, os.O_PATH | os.O_CLOEXEC) for p in paths}
        _mount(libc, "tmpfs", cover, "tmpfs", _MS_NOSUID | _MS_NODEV, "mode=0755,size=1m")
        for path, fd in fds.items():
            rel = os.path.relpath(path, cover)
            target = os.path.join(cover, rel)
            os.makedirs(os.path.dirname(target), mode=0o755, exist_ok=True)
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                os.makedirs(target, mode=0o755, exist_ok=True)
            elif not os.path.exists(target):
                os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o644))
            _mount(libc, f"/proc/self/fd/{fd}", target, None, _MS_BIND | _MS_REC)
            os.close(fd)


def _outermost(sources: Iterable[str]) -> list[str]:
    """`sources` less those inside another, a folder: binding it (with what is mounted
    in it) reaches them, and a second bind stacked on a mount of the first would pin the
    host's file beneath (it could no longer be removed in this namespace)."""
    kept: list[str] = []
    for path in sorted(set(sources)):
        if not any(path.startswith(k.rstrip("/") + "/") for k in kept):
            kept.append(path)
    return kept


def hand_over(paths: Iterable[str], keep: Sequence[str], uid: int, gid: int) -> None:
    """Give each writable folder, and what lies in it outside `keep`, to `uid`/`gid`."""
    kept = tuple(os.path.realpath(k) for k in keep)

    def skipped(path: str) -> bool:
        return any(path == k or path.startswith(k + "/") for k in kept)

    for root in paths:
        real = os.path.realpath(root)
        if not os.path.isdir(real) or os.lstat(real).st_uid == uid:
            continue  # already handed over (a persistent cache): not walked again
        os.lchown(real, uid, gid)
        for dirpath, dirnames, filenames in os.walk(real):
            dirnames[:] = [d for d in dirnames if not skipped(os.path.join(dirpath, d))]
            for name in dirnames + filenames:
                full = os.path.join(dirpath, name)
                if not skipped(full):
                    os.lchown(full, uid, gid)


def drop_to(uid: int, gid: int) -> None:
    """Become `uid`/`gid` for good, with no supplementary groups and no capabilities."""
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid:
        raise OSError("could not drop to the sandbox user")


# ---- the disk cap and the run's group ---------------------------------------------------


def inherited_mb(which: int) -> int | None:
    """A limit the runner set on this process (RLIMIT_FSIZE: disk_mb, RLIMIT_DATA:
    memory_mb), in MB, as the run's total cap; None when unlimited."""
    import resource

    soft = resource.getrlimit(which)[0]
    return None if soft == resource.RLIM_INFINITY else max(1, soft // 2**20)


def run_pids(child: int, folders: Sequence[str]) -> list[int]:
    """The run's processes: its group's members, or else bwrap and its descendants."""
    if folders:
        return cgroups.members(folders)
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    raw = f.read()
                children.setdefault(int(raw[raw.rfind(b")") + 2 :].split()[1]), []).append(
                    int(name)
                )
            except (OSError, ValueError, IndexError):
                continue
    found, stack = [], [child]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack += children.get(pid, [])
    return found


def make_group(args: argparse.Namespace) -> list[str]:
    """The run's control group folders (see `autoswarm.worker.cgroups`), or [] to use rlimits."""
    if args.cgroup_memory is None and args.cgroup_pids is None:
        return []
    found = cgroups.Cgroups(args.cgroup_version, args.cgroup_memory, args.cgroup_pids)
    try:
        return cgroups.create_run_group(
            found,
            cgroups.group_name(os.getpid()),
            memory_mb=None if args.memory_mb is None else args.memory_mb + args.work_mb,
            max_processes=args.nproc,
        )
    except OSError as exc:
        sys.stderr.write(f"autoswarm sandbox: no control group ({exc}); rlimits only\n")
        return []


def supervise_bwrap(
    child: int,
    args: argparse.Namespace,
    folders: Sequence[str],
    capped: workfs.CappedWork | None = None,
) -> tuple[int, str | None]:
    """Wait for bwrap; kill it when the run breaks its disk cap. (wait status, why killed)."""
    try:
        pidfd: int | None = os.pidfd_open(child)
    except OSError:  # Linux < 5.3: poll by sleeping
        pidfd = None
    watch = diskcap.DiskWatch(args.watch, args.keep, (args.disk_mb or 0) * 2**20)
    try:
        while True:
            pid, status = os.waitpid(child, os.WNOHANG)
            if pid == child:
                return status, None
            if capped is not None:
                capped.full()  # remembered: a run that fails after filling it is told why
            if args.disk_mb is not None and args.watch:
                why = watch.poll(lambda: run_pids(child, folders)).over(args.disk_mb)
                if why is not None:
                    os.kill(child, signal.SIGKILL)
                    return os.waitpid(child, 0)[1], why
            if pidfd is None:
                time.sleep(POLL_S)
            else:
                select.select([pidfd], [], [], POLL_S)  # wakes as soon as bwrap exits
    finally:
        if pidfd is not None:
            os.close(pidfd)


def _exit_like(status: int) -> None:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def finish(
    status: int,
    disk_why: str | None,
    args: argparse.Namespace,
    folders: list[str],
    capped: workfs.CappedWork | None,
) -> None:
    """Say why the run was stopped, carry out/ back from a capped work folder, remove the
    run's group, exit as bwrap did. Does not return."""
    exit_code: int | None = None
    ended_well = os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    if disk_why is not None:
        sys.stderr.write(
            f"autoswarm sandbox: the work folder holds {disk_why}, over its disk cap of"
            f" {args.disk_mb} MB; the run was killed\n"
        )
        exit_code = DISK_EXCEEDED_EXIT
    elif folders and cgroups.oom_kills(folders):
        work = f" + {args.work_mb} MB for its work folder" if args.work_mb else ""
        sys.stderr.write(
            f"autoswarm sandbox: the run passed its memory cap of {args.memory_mb} MB{work}"
            " (memfds, tmpfs and /dev/shm included); the kernel killed it: out of memory\n"
        )
        exit_code = MEMORY_EXCEEDED_EXIT
    elif capped is not None and capped.full():
        sys.stderr.write(
            f"autoswarm sandbox: the run's writes went over its disk cap of {args.disk_mb} MB:"
            " its work folder, a file system of that size, refused them (ENOSPC)"
            + ("\n" if ended_well else "; the run failed\n")
        )
        exit_code = None if ended_well else DISK_EXCEEDED_EXIT
    if capped is not None:
        settle_capped(capped, args, ended_well)
    sys.stderr.flush()
    cgroups.remove(folders)
    if exit_code is not None:
        os._exit(exit_code)
    _exit_like(status)


def settle_capped(capped: workfs.CappedWork, args: argparse.Namespace, ended_well: bool) -> None:
    """Once no process of the run is left: report replaced read-only files to the host,
    carry out/ back (a run that ended well only), drop the tmpfs."""
    try:
        capped.forget_replaced()
        if ended_well and args.carry:
            why = workfs.carry_out(capped, args.carry, (args.disk_mb or 0) * 2**20)
            if why is not None:
                sys.stderr.write(f"autoswarm sandbox: artifacts not carried back: {why}\n")
    except OSError as exc:
        why = f"the work folder could not be settled: {exc}"
        sys.stderr.write(f"autoswarm sandbox: {why}\n")
        with contextlib.suppress(OSError):
            workfs.refuse_carry(capped, why)
    capped.unmount()


def cap_work(args: argparse.Namespace) -> workfs.CappedWork | None:
    """The work folder as a tmpfs of disk_mb in our own mount namespace (`autoswarm.worker.workfs`),
    or None (said on stderr) when the host refuses it: the disk watch then caps it."""
    if args.capped_work is None or args.disk_mb is None:
        return None
    capped = None
    try:
        workfs.check_fits_memory(args.disk_mb)
        workfs.enter_private_mounts()  # first: a bind needs its source in our namespace
        capped = workfs.CappedWork(args.capped_work, args.disk_mb, args.keep)
        capped.mount()
    except OSError as exc:
        if capped is not None:
            capped.unmount()
        sys.stderr.write(
            f"autoswarm sandbox: the work folder is not a capped file system here ({exc});"
            " the disk watch caps it\n"
        )
        return None
    args.watch = [w for w in args.watch if os.path.realpath(w) != capped.work]
    args.work_mb = args.disk_mb
    return capped


# ---- entry point -------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="autoswarm-sandbox-launcher")
    parser.add_argument("--nproc", type=int, required=True)
    parser.add_argument("--host-uid", type=int, default=65534)
    parser.add_argument("--host-gid", type=int, default=65534)
    parser.add_argument("--disk-mb", type=int, default=None)
    parser.add_argument("--memory-mb", type=int, default=None)
    parser.add_argument("--cgroup-version", type=int, default=2)
    parser.add_argument("--cgroup-memory", default=None, help="the memory controller's parent")
    parser.add_argument("--cgroup-pids", default=None, help="the pids controller's parent")
    parser.add_argument("--watch", action="append", default=[])
    parser.add_argument("--writable", action="append", default=[])
    parser.add_argument("--keep", action="append", default=[])
    parser.add_argument("--capped-work", default=None, help="the work folder, made a tmpfs")
    parser.add_argument("--carry", action="append", default=[], help="folders carried back")
    parser.add_argument("bwrap", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.bwrap[:1] == ["--"]:
        args.bwrap = args.bwrap[1:]
    if not args.bwrap:
        parser.error("no bwrap command after --")
    args.work_mb = 0  # memory the work folder's tmpfs may add to the run's cap
    return args


def prepare_root(args: argparse.Namespace, bwrap: list[str]) -> None:
    """As root: hand the writable folders over, make bound paths reachable, drop to the user."""
    for i in bind_sources(bwrap):
        if os.path.exists(bwrap[i]):
            bwrap[i] = os.path.realpath(bwrap[i])
    hand_over(args.writable, args.keep, args.host_uid, args.host_gid)
    sources = [bwrap[i] for i in bind_sources(bwrap) if os.path.exists(bwrap[i])]
    make_reachable(sources, args.host_uid, args.host_gid)


def start_bwrap(args: argparse.Namespace, bwrap: list[str], folders: list[str]) -> None:
    """In the forked child: join the run's group, drop to the host user, exec bwrap."""
    try:
        cgroups.join(folders)
        if os.geteuid() == 0:
            drop_to(args.host_uid, args.host_gid)
        if not any(os.path.exists(os.path.join(f, "pids.max")) for f in folders):
            set_nproc(os.getuid(), args.nproc)  # no pids group: the host user's count
        _libc().prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        # bwrap needs no environment; the run's is in its --setenv options, and an empty
        # one here keeps the worker's out of /proc/1/environ inside the sandbox
        os.execve(bwrap[0], bwrap, {})
    except OSError as exc:
        sys.stderr.write(f"autoswarm sandbox: cannot start {bwrap[0]}: {exc}\n")
        os._exit(127)


def main(argv: Sequence[str]) -> None:
    import resource

    args = parse_args(argv)
    if args.disk_mb is None:
        args.disk_mb = inherited_mb(resource.RLIMIT_FSIZE)
    if args.memory_mb is None:
        args.memory_mb = inherited_mb(resource.RLIMIT_DATA)
    bwrap = list(args.bwrap)
    capped = cap_work(args)
    if os.geteuid() == 0:
        prepare_root(args, bwrap)
    folders = make_group(args)
    child = os.fork()
    if child == 0:
        start_bwrap(args, bwrap, folders)
    status, disk_why = supervise_bwrap(child, args, folders, capped)
    finish(status, disk_why, args, folders, capped)


if __name__ == "__main__":
    main(sys.argv[1:])
