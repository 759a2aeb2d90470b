"""The process tree of one command: start it, watch it, and kill every process it made.

A process belongs to the tree when any of these holds:
- it is the root (started in a new session) or a descendant of a member, by parent pid;
  the root is made a child subreaper, so orphans of the tree stay its children while it lives;
- its session or process group is the root's;
- its environment carries the tree's marker (`AUTOSWARM_RUN_ID=<id>`), which survives
  `setsid`, double forks and reparenting to init;
- it was a member on an earlier tick and is still the same process (pid and start time).

Guarantees: when `supervise` returns, no process found by those rules is alive (zombies
aside: they are dead and only wait for a parent to reap them). Killing freezes the tree
with SIGSTOP until no new member appears, then sends SIGKILL, so a forking tree cannot
outrun it. Signals go through pidfds, so a reused pid is never signalled.

A sandbox's launcher (`autoswarm/worker/limits.py`) puts the run in a control group named for the
root's pid; once the tree is gone, that group is removed here too, in case the launcher was
killed before it could remove it itself.

Does not cover: a process that, between two ticks and before the root exits, leaves the
session, is orphaned and replaces its environment (exec with an empty one). A sandbox with
its own pid namespace closes that gap. Reads /proc: Linux only.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import select
import signal
import subprocess
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoswarm.worker import cgroups

MARKER_ENV = "AUTOSWARM_RUN_ID"
TICK_S = 0.2
KILL_AFTER_TERM_S = 1.0
_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20
_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_MAX_FREEZE_ROUNDS = 50
# How long a killed tree may take to be gone: a process killed inside a write to a busy disk
# dies only when that write returns (seconds, while a machine flushes gigabytes). Waited out,
# so that a run's processes never outlive its result; a tree that dies at once costs nothing.
KILL_WAIT_S = 60.0


@dataclass(frozen=True, slots=True)
class ProcStat:
    """One line of /proc/<pid>/stat, the fields the tree needs."""

    pid: int
    ppid: int
    pgid: int
    sid: int
    state: str
    start_ticks: int
    rss_pages: int

    @property
    def dead(self) -> bool:
        return self.state in "ZXx"


def read_stat(pid: int) -> ProcStat | None:
    """The process's stat, or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # comm may hold spaces and parentheses: split after the last ')'
    fields = raw[raw.rfind(b")") + 2 :].split()
    return ProcStat(
        pid=pid,
        ppid=int(fields[1]),
        pgid=int(fields[2]),
        sid=int(fields[3]),
        state=fields[0].decode(),
        start_ticks=int(fields[19]),
        rss_pages=int(fields[21]),
    )


def list_processes() -> dict[int, ProcStat]:
    """Every live (non-zombie) process visible in /proc, by pid."""
    found: dict[int, ProcStat] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and not stat.dead:
                found[stat.pid] = stat
    return found


def has_marker(pid: int, needle: bytes) -> bool:
    """True when the process's initial environment holds `needle` (a NAME=value entry)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False
    return environ.startswith(needle) or (b"\0" + needle) in environ


def send_signal(stat: ProcStat, sig: int) -> bool:
    """Signal this very process (checked by start time through a pidfd); False if gone."""
    try:
        fd = os.pidfd_open(stat.pid)
    except OSError:
        return False
    try:
        now = read_stat(stat.pid)
        if now is None or now.start_ticks != stat.start_ticks:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class ProcessTree:
    """The members of one command's process tree, found by the rules in the module docstring."""

    def __init__(self, root_pid: int, marker: str) -> None:
        self.root_pid = root_pid
        self._needle = f"{MARKER_ENV}={marker}\0".encode()
        root = read_stat(root_pid)  # readable even as a zombie: not yet reaped
        self._known: dict[int, int] = {root_pid: root.start_ticks if root else -1}
        self._own = {os.getpid(), 1}

    def members(self, *, by_marker: bool = False) -> list[ProcStat]:
        """Live members now; records them for later ticks. `by_marker` also reads environments."""
        table = list_processes()
        found: dict[int, ProcStat] = {}
        for stat in table.values():
            if stat.pid in self._own:
                continue
            start = self._known.get(stat.pid)
            if (
                stat.sid == self.root_pid
                or stat.pgid == self.root_pid
                or start == stat.start_ticks
                or (by_marker and has_marker(stat.pid, self._needle))
            ):
                found[stat.pid] = stat
        children: dict[int, list[ProcStat]] = {}
        for stat in table.values():
            if stat.pid not in self._own:
                children.setdefault(stat.ppid, []).append(stat)
        stack = list(found)
        while stack:
            for child in children.get(stack.pop(), ()):
                if child.pid not in found:
                    found[child.pid] = child
                    stack.append(child.pid)
        for stat in found.values():
            self._known[stat.pid] = stat.start_ticks
        return list(found.values())

    def signal_all(self, sig: int) -> None:
        """Send `sig` to every member and to the root's process group."""
        for stat in self.members():
            send_signal(stat, sig)
        with contextlib.suppress(OSError):
            os.killpg(self.root_pid, sig)

    def kill_all(self, timeout_s: float = KILL_WAIT_S) -> list[ProcStat]:
        """Freeze the whole tree, kill it, wait until it is gone; returns those it killed."""
        frozen: dict[tuple[int, int], ProcStat] = {}
        for _ in range(_MAX_FREEZE_ROUNDS):
            fresh = [
                s for s in self.members(by_marker=True) if (s.pid, s.start_ticks) not in frozen
            ]
            if not fresh:
                break
            for stat in fresh:
                if send_signal(stat, signal.SIGSTOP):
                    frozen[(stat.pid, stat.start_ticks)] = stat
        for stat in frozen.values():
            send_signal(stat, signal.SIGKILL)
        _wait_gone(frozen.values(), timeout_s)
        return list(frozen.values())


def _wait_gone(stats: Iterable[ProcStat], timeout_s: float) -> None:
    """Wait until each process is gone or a zombie, at most `timeout_s`."""
    pending = list(stats)
    deadline = time.monotonic() + timeout_s
    delay_s = 0.001
    while pending and time.monotonic() < deadline:
        pending = [s for s in pending if _alive(s)]
        if pending:
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.05)


def _alive(stat: ProcStat) -> bool:
    now = read_stat(stat.pid)
    return now is not None and not now.dead and now.start_ticks == stat.start_ticks


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a supervised command ended."""

    exit_code: int  # negative: killed by that signal (as subprocess reports it)
    timed_out: bool
    out_of_memory: bool
    wall_s: float
    peak_rss_mb: float
    peak_vram_mb: float | None
    leftovers_killed: int


@dataclass(frozen=True, slots=True)
class Limits:
    """Resource limits set in the child before it starts (each None: leave as is)."""

    open_files: int | None = 4096
    file_size_mb: int | None = None
    data_mb: int | None = None


def supervise(
    argv: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log_path: Path,
    marker: str,
    deadline_s: float,
    limits: Limits | None = None,
    memory_limit_mb: float | None = None,
    on_tick: Callable[[float], None] | None = None,
    sample_vram_mb: Callable[[Sequence[int]], float | None] | None = None,
    tick_s: float = TICK_S,
) -> Outcome:
    """Run `argv` in a new session with stdout and stderr to `log_path`; kill its tree at the end.

    At `deadline_s` the tree gets SIGTERM, then SIGKILL `KILL_AFTER_TERM_S` later; when the
    tree's RSS passes `memory_limit_mb` it is killed at once. Whatever way the root ends,
    every remaining member is killed before this returns. If `on_tick` raises, the tree is
    killed and the exception propagates (the caller's way to abandon a run).
    """
    started = Started(
        argv, cwd=cwd, env=env, log_path=log_path, marker=marker, limits=limits, tick_s=tick_s
    )
    return started.finish(
        deadline_s,
        memory_limit_mb=memory_limit_mb,
        on_tick=on_tick,
        sample_vram_mb=sample_vram_mb,
    )


class Started:
    """A command started now and supervised later (`finish`, as `supervise` does).

    With `gated`, its standard input is a pipe that `release` writes one line to and closes:
    a command that sets itself up first and then reads that line waits for it (a warm
    evaluator waits so for the run it scores). `finish` counts its wall time and deadline
    from the release. Until `finish` or `kill`, nothing watches its time or memory.
    """

    def __init__(
        self,
        argv: Sequence[str],
        *,
        cwd: Path,
        env: Mapping[str, str],
        log_path: Path,
        marker: str,
        limits: Limits | None = None,
        gated: bool = False,
        tick_s: float = TICK_S,
    ) -> None:
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env={**env, MARKER_ENV: marker},
                stdin=subprocess.PIPE if gated else subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_preexec(limits or Limits()),
            )
        self._watch = _Watch(self.proc, tick_s)
        self._tree = ProcessTree(self.proc.pid, marker)

    def release(self, line: bytes = b"go\n") -> None:
        """Write `line` to a gated command's input and close it; its clock starts now."""
        stdin, self.proc.stdin = self.proc.stdin, None
        if stdin is not None:
            with contextlib.suppress(OSError):  # it may have exited already: finish says how
                stdin.write(line)
                stdin.flush()
            with contextlib.suppress(OSError):
                stdin.close()
        self._watch.started = time.monotonic()

    def exited(self) -> bool:
        """True once the root has exited; it is not reaped (`finish` still says how)."""
        if self.proc.returncode is not None:
            return True
        try:
            flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
            return os.waitid(os.P_PID, self.proc.pid, flags) is not None
        except ChildProcessError:
            return True

    def finish(
        self,
        deadline_s: float,
        *,
        memory_limit_mb: float | None = None,
        on_tick: Callable[[float], None] | None = None,
        sample_vram_mb: Callable[[Sequence[int]], float | None] | None = None,
    ) -> Outcome:
        """Watch it until it ends (see `supervise`); its whole tree is gone when this returns."""
        try:
            return self._watch.run(self._tree, deadline_s, memory_limit_mb, on_tick, sample_vram_mb)
        finally:
            self.kill()

    def kill(self) -> None:
        """Kill its whole tree now, if it still runs, and reap it."""
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
            self.proc.stdin = None
        if self.proc.returncode is None:
            self._tree.kill_all()
            self._watch.reap(block=True)
        self._watch.close()
        remove_run_group(self.proc.pid)


class _Watch:
    """The wait loop of one supervised root process."""

    def __init__(self, proc: subprocess.Popen[bytes], tick_s: float) -> None:
        self.proc = proc
        self.tick_s = tick_s
        self.started = time.monotonic()
        self.ended: float | None = None
        self.maxrss_mb = 0.0
        self.poller: select.poll | None = None
        try:
            self.pidfd: int | None = os.pidfd_open(proc.pid)
        except OSError:  # pidfds need Linux 5.3; fall back to polling
            self.pidfd = None
        else:
            self.poller = select.poll()
            self.poller.register(self.pidfd, select.POLLIN)

    def run(
        self,
        tree: ProcessTree,
        deadline_s: float,
        memory_limit_mb: float | None,
        on_tick: Callable[[float], None] | None,
        sample_vram_mb: Callable[[Sequence[int]], float | None] | None,
    ) -> Outcome:
        peak_rss_mb, peak_vram_mb = 0.0, None
        timed_out = out_of_memory = False
        while not self.wait(min(self.tick_s, max(0.0, self._left(deadline_s)))):
            members = tree.members()
            rss_mb = sum(s.rss_pages for s in members) * _PAGE_MB
            peak_rss_mb = max(peak_rss_mb, rss_mb)
            if sample_vram_mb is not None:
                vram = sample_vram_mb([s.pid for s in members])
                if vram is not None:
                    peak_vram_mb = max(peak_vram_mb or 0.0, vram)
            if memory_limit_mb is not None and rss_mb > memory_limit_mb:
                out_of_memory = True
                break
            if self._left(deadline_s) <= 0:
                timed_out = True
                tree.signal_all(signal.SIGTERM)
                self.wait(KILL_AFTER_TERM_S)
                break
            if on_tick is not None:
                on_tick(time.monotonic() - self.started)
        leftovers = [s for s in tree.kill_all() if s.pid != self.proc.pid]
        self.reap(block=True)
        assert self.proc.returncode is not None and self.ended is not None
        return Outcome(
            exit_code=self.proc.returncode,
            timed_out=timed_out,
            out_of_memory=out_of_memory,
            wall_s=max(0.0, self.ended - self.started),  # it may have ended before its release
            peak_rss_mb=max(peak_rss_mb, self.maxrss_mb),
            peak_vram_mb=peak_vram_mb,
            leftovers_killed=len(leftovers),
        )

    def _left(self, deadline_s: float) -> float:
        return deadline_s - (time.monotonic() - self.started)

    def wait(self, timeout_s: float) -> bool:
        """Wait up to `timeout_s` for the root to exit; True (and reaped) when it has."""
        if self.poller is not None:
            if not self.poller.poll(timeout_s * 1000):
                return False
            return self.reap(block=True)
        deadline = time.monotonic() + timeout_s
        delay_s = 0.001
        while not self.reap(block=False):
            if time.monotonic() >= deadline:
                return False
            time.sleep(delay_s)
            delay_s = min(delay_s * 2, 0.05)
        return True

    def reap(self, *, block: bool) -> bool:
        """Collect the root's exit status and peak RSS; True once it is reaped."""
        if self.proc.returncode is not None:
            return True
        try:
            pid, status, usage = os.wait4(self.proc.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            pid, status, usage = self.proc.pid, 0, None
        if pid == 0:
            return False
        self.ended = time.monotonic()
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        if usage is not None:
            self.maxrss_mb = usage.ru_maxrss / 1024  # KiB on Linux
        return True

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None


@functools.cache
def _cgroups() -> cgroups.Cgroups | cgroups.Absent:
    return cgroups.find()


def remove_run_group(launcher_pid: int) -> None:
    """Remove the control group a sandbox's launcher with this pid made, if it is left."""
    found = _cgroups()
    if isinstance(found, cgroups.Cgroups):
        cgroups.remove(cgroups.run_folders(found, launcher_pid))


def _preexec(limits: Limits) -> Callable[[], None]:
    """The child's setup between fork and exec: limits, no core dumps, die with the parent."""
    import resource

    libc = _libc()
    settings = [(resource.RLIMIT_CORE, 0)]
    if limits.open_files is not None:
        settings.append((resource.RLIMIT_NOFILE, limits.open_files))
    if limits.file_size_mb is not None:
        settings.append((resource.RLIMIT_FSIZE, limits.file_size_mb * 2**20))
    if limits.data_mb is not None:
        settings.append((resource.RLIMIT_DATA, limits.data_mb * 2**20))
    # Soft = hard, never above the current hard limit: the child cannot raise them back.
    planned = []
    for which, value in settings:
        hard = resource.getrlimit(which)[1]
        capped = value if hard == resource.RLIM_INFINITY else min(value, hard)
        planned.append((which, (capped, capped)))

    def apply() -> None:
        for which, pair in planned:
            resource.setrlimit(which, pair)
        if libc is not None:
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
            libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)

    return apply


_LIBC: list[ctypes.CDLL | None] = []


def _libc() -> ctypes.CDLL | None:
    if not _LIBC:
        try:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        except OSError:
            _LIBC.append(None)
    return _LIBC[0]
