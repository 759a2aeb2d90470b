"""The bubblewrap sandbox, its self-probe, and the fail-closed choice of a sandbox.

`make_sandbox("sandboxed")` returns a `BwrapSandbox` or raises `SandboxUnavailable` saying
why bubblewrap cannot run here and how to fix it; only `make_sandbox("trusted-code")`, an
operator's explicit choice, runs code unconfined.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from autoswarm.shared.errors import SandboxUnavailable
from autoswarm.worker import cgroups, workfs
from autoswarm.worker.sandbox import Sandbox, Unsandboxed

logger = logging.getLogger(__name__)

BWRAP_ENV = "AUTOSWARM_BWRAP"
LAUNCHER = Path(__file__).with_name("limits.py")
SANDBOX_UID = 1000  # the run's uid and gid inside: not root, even in its own namespace
NOBODY = 65534  # the host user a root worker's runs become
PROBE_TIMEOUT_S = 30.0
INSTALL_HINT = (
    "install bubblewrap: apt-get install bubblewrap (Debian, Ubuntu), dnf install bubblewrap "
    "(Fedora, RHEL), pacman -S bubblewrap (Arch), apk add bubblewrap (Alpine)"
)
# System folders; a symlink among them (usr-merged /lib -> usr/lib) is recreated as one.
_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# /etc entries a program needs to start: the loader's cache, time zone, alternatives.
_ETC_FILES = (
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "alternatives",
    "os-release",
)
_ETC_GLOBS = ("/etc/python3*",)  # Debian's system Python reads its sitecustomize here
_NVIDIA_DEVICES = "/dev/nvidia*"

Trust = Literal["sandboxed", "trusted-code"]


def default_max_processes() -> int:
    """Processes and threads a run may add: torch starts a thread per core, twice over."""
    return 256 + 8 * (os.cpu_count() or 1)


def resolve_bwrap(bwrap: str | None = None) -> str | None:
    """The bwrap to use: `bwrap`, else `$AUTOSWARM_BWRAP`, else `bwrap` on PATH; None: none."""
    chosen = bwrap or os.environ.get(BWRAP_ENV) or shutil.which("bwrap")
    if not chosen:
        return None
    found = shutil.which(chosen) if os.sep not in chosen else chosen
    if found is None or not os.access(found, os.X_OK) or not os.path.isfile(found):
        return None
    return found


def bwrap_options(bwrap: str) -> frozenset[str]:
    """The options this bwrap's `--help` lists (older versions lack `--disable-userns`...)."""
    try:
        done = subprocess.run(
            [bwrap, "--help"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return frozenset()
    return frozenset(re.findall(r"(--[a-z0-9-]+)", done.stdout + done.stderr))


class BwrapSandbox:
    """Runs a command under bubblewrap with no network, its work folder the only writable place.

    Covers, for the wrapped command and everything it starts:
    - no network at all (a new, empty network namespace: no interface up, not even loopback;
      the host's abstract unix sockets are out of reach too);
    - a new PID namespace (it sees only its own processes; /proc/1 is bwrap's, with an empty
      environment), IPC, UTS and cgroup namespaces, and a new session (no terminal to
      inject into);
    - files: a read-only root (a tmpfs remounted read-only) holding only /usr and the /bin,
      /lib... links, the loader's /etc files, /sys read-only, the Python installation the
      worker runs (venv and base, read-only), `LD_LIBRARY_PATH`/`CUDA_HOME` folders and
      `extra_readonly`; fresh /proc and /dev (read-only), size-capped tmpfs on /tmp and
      /dev/shm; the work folder and `writable` paths are the only writable binds; `readonly`
      paths are bound read-only, also inside the work folder (protected files, data/), so
      they can be neither written, chmod-ed, removed nor replaced. Nothing else of the host
      exists inside: not $HOME, not the worker's token, config, outbox or caches (other
      than the writable paths it is given: the runner gives none, its compile caches are per
      run, in the work folder), not the worker's source tree, not held-out data;
    - the environment is exactly `env` (`--clearenv`; bwrap adds PWD);
    - it runs as uid/gid 1000 with no capabilities and no new privileges (setuid bits are
      ignored), and cannot create further user namespaces where bwrap supports
      `--disable-userns`; when the worker runs as root, the run is `host_uid` (nobody) on
      the host, never root (see `autoswarm/worker/limits.py`);
    - limits, in the run's own control group where the host offers one (cgroup v2, or v1
      memory and pids; `autoswarm.worker.cgroups`, made by the launcher, removed after the run and,
      left by a crash, when a sandbox is next made): `max_processes` processes and threads
      (pids.max, counting only this run's), and for a CPU task its memory_mb (the runner's
      RLIMIT_DATA) as a memory cap that counts memfds, tmpfs and /dev/shm pages: the kernel
      kills the run past it. Without control groups: RLIMIT_NPROC (`max_processes` beyond
      what its host user already runs, a count shared by every run of that user) and the
      runner's per-process RLIMIT_DATA and polled RSS;
    - a total disk cap on the work folder (the run's RLIMIT_FSIZE, which the runner sets
      to the task's `disk_mb`) that the kernel enforces where the host allows it
      (`work_cap_refused` None): the work folder is a tmpfs of that size in the launcher's
      own mount namespace (`autoswarm.worker.workfs`), its read-only paths bound from the host, and
      the `carry` folders (out/) copied back, bounded, once no process of the run is left.
      Elsewhere it is polled every 0.1 s by the launcher (`autoswarm.worker.diskcap`): every file
      and folder in it, and removed files the run still holds open or mapped; a folder the
      watch cannot read stops the run; a fast writer overshoots by what it writes in 0.1 s.
      The runner adds open files, file size, memory and the budget from outside;
    - the CUDA device nodes (/dev/nvidia*) are passed through when present (a root
      worker's runs need them world-accessible, as the driver makes them by default);
    - nothing survives it: bwrap's `--die-with-parent` and the PID namespace end every
      process inside when bwrap or its parent dies.
    Does not cover:
    - kernel exploits (no seccomp filter is installed): the sandbox is as strong as the
      kernel's namespaces;
    - a memory limit for CUDA tasks (the runner sets none) and, without control groups,
      memory outside RSS (memfds); a CPU share;
    - GPU isolation: the run can use every GPU whose device node is present, and reads
      what the driver shows (other processes' GPU use);
    - side channels (timing, /sys information such as the CPU model);
    - where the tmpfs is refused, a file system limit: the disk cap is then a watch;
    - the work folder's memory: its tmpfs pages count in the run's memory cap, which is
      memory_mb + disk_mb (a CUDA task, with no memory cap, holds up to disk_mb of RAM);
    - Python packages outside the installation's prefixes (user site, PYTHONPATH): they are
      invisible inside unless passed as `extra_readonly`.
    """

    name = "bwrap"

    def __init__(
        self,
        bwrap: str = "bwrap",
        *,
        host_uid: int = NOBODY,
        host_gid: int = NOBODY,
        max_processes: int | None = None,
        tmp_mb: int = 512,
        shm_mb: int = 1024,
        gpu: bool | None = None,
        extra_readonly: Sequence[Path] = (),
        use_cgroups: bool = True,
        cap_work: bool = True,
        launcher: Path = LAUNCHER,
    ) -> None:
        found = resolve_bwrap(bwrap)
        if found is None:
            raise SandboxUnavailable(f"bubblewrap not found at {bwrap!r}; {INSTALL_HINT}")
        self.bwrap = found
        self.host_uid = host_uid
        self.host_gid = host_gid
        self.max_processes = max_processes or default_max_processes()
        self.tmp_mb = tmp_mb
        self.shm_mb = shm_mb
        self.gpu_devices = sorted(glob.glob(_NVIDIA_DEVICES)) if gpu is not False else []
        self.extra_readonly = tuple(extra_readonly)
        self.options = bwrap_options(found)
        self.launcher = launcher
        self.cgroups = cgroups.find(prepare=True) if use_cgroups else cgroups.Absent("turned off")
        # None: each run's work folder is a tmpfs of disk_mb (`autoswarm.worker.workfs`);
        # else why not.
        self.work_cap_refused = workfs.probe() if cap_work else "turned off"
        if isinstance(self.cgroups, cgroups.Cgroups):
            for folder in cgroups.remove_leftovers(self.cgroups):
                logger.warning("sandbox: removed the control group %s a run left behind", folder)

    def wrap(
        self,
        argv: Sequence[str],
        *,
        work_dir: Path,
        readonly: Sequence[Path],
        writable: Sequence[Path],
        env: Mapping[str, str],
        carry: Sequence[Path] = (),
    ) -> list[str]:
        """The launcher, then bwrap, then `argv`: see the class docstring for what holds.
        `carry`: folders in the work folder copied back to the host's when the run ends well."""
        work = os.path.abspath(work_dir)
        rw = _unique([work, *(os.path.abspath(p) for p in writable)])
        ro = _unique(os.path.abspath(p) for p in readonly)
        launcher = [sys.executable, "-I", "-S", str(self.launcher)]
        launcher += ["--nproc", str(self.max_processes)]
        launcher += ["--host-uid", str(self.host_uid), "--host-gid", str(self.host_gid)]
        if isinstance(self.cgroups, cgroups.Cgroups):
            launcher += ["--cgroup-version", str(self.cgroups.version)]
            if self.cgroups.memory is not None:
                launcher += ["--cgroup-memory", self.cgroups.memory]
            if self.cgroups.pids is not None:
                launcher += ["--cgroup-pids", self.cgroups.pids]
        launcher += ["--watch", work]
        if self.work_cap_refused is None:
            launcher += ["--capped-work", work]
            for folder in carry:
                launcher += ["--carry", os.path.relpath(os.path.abspath(folder), work)]
        for path in rw:
            launcher += ["--writable", path]
        for path in ro:
            launcher += ["--keep", path]
        return [*launcher, "--", *self.bwrap_argv(argv, work=work, rw=rw, ro=ro, env=env)]

    def bwrap_argv(
        self,
        argv: Sequence[str],
        *,
        work: str,
        rw: Sequence[str],
        ro: Sequence[str],
        env: Mapping[str, str],
    ) -> list[str]:
        """bwrap's own argv for `argv`, without the launcher."""
        args = [self.bwrap, "--unshare-all", "--unshare-user"]
        if "--disable-userns" in self.options:
            args.append("--disable-userns")
        args += ["--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID)]
        args += ["--die-with-parent", "--new-session", "--hostname", "sandbox", "--clearenv"]
        for key, value in env.items():
            args += ["--setenv", key, value]
        args += _system_binds()
        args += ["--proc", "/proc", "--dev", "/dev"]
        for device in self.gpu_devices:
            args += ["--dev-bind", device, device]
        args += self._tmpfs("/tmp", self.tmp_mb) + self._tmpfs("/dev/shm", self.shm_mb)
        for path in _outside(_runtime_paths(env, self.extra_readonly), _covered_by_system()):
            args += ["--ro-bind", path, path]
        for path in rw:
            args += ["--bind", path, path]
        for path in ro:
            args += ["--ro-bind", path, path]
        # The root and /dev are tmpfs mounts bwrap made (uncapped, in RAM): read-only once built.
        args += ["--remount-ro", "/dev", "--remount-ro", "/"]
        return [*args, "--chdir", work, "--", *argv]

    def _tmpfs(self, dest: str, size_mb: int) -> list[str]:
        size = ["--size", str(size_mb * 2**20)] if "--size" in self.options else []
        return [*size, "--tmpfs", dest]


def _unique(paths: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(paths))


def _system_binds() -> list[str]:
    args: list[str] = []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    for name in _ETC_FILES:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    for pattern in _ETC_GLOBS:
        for path in sorted(glob.glob(pattern)):
            args += ["--ro-bind", path, path]
    args += ["--ro-bind-try", "/sys", "/sys"]
    return args


def _covered_by_system() -> list[str]:
    return [p for p in _SYSTEM_DIRS if os.path.isdir(p) and not os.path.islink(p)]


def _runtime_paths(env: Mapping[str, str], extra: Sequence[Path]) -> list[str]:
    """The Python installation (venv and base, as given and resolved) and library folders."""
    candidates = [
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        sys.base_exec_prefix,
        os.path.dirname(os.path.dirname(sys.executable)),
        os.path.dirname(os.path.dirname(os.path.realpath(sys.executable))),
    ]
    for name in ("LD_LIBRARY_PATH", "CUDA_HOME"):
        candidates += [p for p in env.get(name, "").split(":") if p]
    candidates += [str(p) for p in extra]
    found: list[str] = []
    for path in candidates:
        if os.path.isabs(path) and os.path.isdir(path):
            found += [os.path.abspath(path), os.path.realpath(path)]
    return _unique(found)


def _outside(paths: Iterable[str], roots: Sequence[str]) -> list[str]:
    """`paths` less those inside one of `roots` or inside another path of the list."""
    kept: list[str] = []
    for path in sorted(set(paths), key=len):
        if path == "/":
            continue
        if not any(path == r or path.startswith(r.rstrip("/") + "/") for r in [*roots, *kept]):
            kept.append(path)
    return kept


def network_only_argv(bwrap: str, argv: Sequence[str]) -> list[str]:
    """bwrap's argv that runs `argv` as it would run here (this user, this machine's files and
    devices, the environment it is given) but in an empty network namespace of its own
    (loopback only) and its own PID namespace: for the trusted prepare phase, whose one way
    out is the allow-list proxy (`autoswarm.worker.prepare_network`). The host's abstract unix
    sockets are out of reach; its socket files are not (the files are the host's)."""
    # --unshare-user as for runs: it works wherever the run sandbox does (a container's root
    # may lack the capability to make a network namespace without one); uids map as they are.
    args = [bwrap, "--unshare-user", "--unshare-net", "--unshare-pid", "--die-with-parent"]
    args += ["--dev-bind", "/", "/", "--proc", "/proc"]
    return [*args, "--", *argv]


# ---- probe and the fail-closed choice ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class SandboxProbe:
    """Whether bubblewrap can confine runs here; if not, why and how to fix it."""

    ok: bool
    bwrap: str | None
    version: str | None
    detail: str
    fix: str = ""

    def explain(self) -> str:
        """One paragraph for a volunteer: what failed and what to do."""
        if self.ok:
            return f"{self.version or 'bubblewrap'} at {self.bwrap}: {self.detail}"
        return f"{self.detail}. To fix: {self.fix}" if self.fix else self.detail


def probe_sandbox(bwrap: str | None = None) -> SandboxProbe:
    """Start a real sandbox once (through the launcher, as a run would) and report."""
    path = resolve_bwrap(bwrap)
    if path is None:
        named = bwrap or os.environ.get(BWRAP_ENV) or "bwrap"
        return SandboxProbe(
            False, None, None, f"bubblewrap is not installed ({named!r} not found)", INSTALL_HINT
        )
    version = _bwrap_version(path)
    try:
        sandbox = BwrapSandbox(path)
    except SandboxUnavailable as exc:
        return SandboxProbe(False, path, version, str(exc), INSTALL_HINT)
    work = Path(tempfile.mkdtemp(prefix="autoswarm-probe-"))
    try:
        code = "import os; open('probe', 'w').write(str(os.getuid()))"
        argv = sandbox.wrap(
            [sys.executable, "-I", "-S", "-c", code],
            work_dir=work,
            readonly=[],
            writable=[],
            env={"PATH": "/usr/bin:/bin", "HOME": str(work)},
        )
        try:
            done = subprocess.run(
                argv,
                cwd=work,
                capture_output=True,
                text=True,
                timeout=PROBE_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except subprocess.TimeoutExpired:
            return SandboxProbe(
                False,
                path,
                version,
                "a test sandbox did not finish in time",
                "check that bwrap runs: bwrap --ro-bind / / true",
            )
        wrote = (work / "probe").read_text() if (work / "probe").is_file() else ""
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if done.returncode == 0 and wrote == str(SANDBOX_UID):
        return SandboxProbe(True, path, version, "a test sandbox started and ran Python")
    message = (done.stderr or done.stdout).strip().splitlines()
    why = message[-1] if message else f"exit code {done.returncode}"
    return SandboxProbe(
        False, path, version, f"bubblewrap cannot start a sandbox: {why}", _diagnose(why)
    )


def _bwrap_version(path: str) -> str | None:
    try:
        done = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() or None


def _read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", *name.split(".")).read_text().strip()
    except OSError:
        return None


def _diagnose(message: str) -> str:
    """How to fix a bwrap that cannot create its namespaces, from the host's settings."""
    if _read_sysctl("kernel.unprivileged_userns_clone") == "0":
        return "enable unprivileged user namespaces: sysctl -w kernel.unprivileged_userns_clone=1"
    if _read_sysctl("kernel.apparmor_restrict_unprivileged_userns") == "1":
        return (
            "allow user namespaces for bwrap: sysctl -w "
            "kernel.apparmor_restrict_unprivileged_userns=0, or load an AppArmor profile "
            "that permits userns for /usr/bin/bwrap (Ubuntu 24.04 and later)"
        )
    if _read_sysctl("user.max_user_namespaces") == "0":
        return "allow user namespaces: sysctl -w user.max_user_namespaces=15000"
    if os.path.exists("/.dockerenv") or os.path.exists("/run/.containerenv"):
        return (
            "this is a container whose seccomp or AppArmor profile blocks namespaces: run it "
            "with --security-opt seccomp=unconfined --security-opt apparmor=unconfined (or a "
            "profile allowing unshare/clone with user namespaces), or run the worker on the host"
        )
    if "setuid" in message or "Operation not permitted" in message:
        return (
            "user namespaces are blocked here (a kernel setting, a container profile or an "
            "LSM): run `bwrap --unshare-user --ro-bind / / true` to reproduce, and allow them"
        )
    return f"run `{' '.join(['bwrap', '--unshare-all', '--ro-bind', '/', '/', 'true'])}` to see why"


def make_sandbox(trust: Trust, *, bwrap: str | None = None) -> Sandbox:
    """The sandbox for `trust`: bwrap, or `SandboxUnavailable` with the fix; never silently none.

    "trusted-code" (the operator's own code on the operator's own machines) returns
    `Unsandboxed` and logs a warning saying so.
    """
    if trust == "trusted-code":
        logger.warning(
            "sandbox: trust is 'trusted-code': experiments run WITHOUT a sandbox, with this "
            "user's files, network and secrets; use it only for code you wrote or reviewed"
        )
        return Unsandboxed()
    if trust != "sandboxed":
        raise SandboxUnavailable(f"unknown trust setting {trust!r}: 'sandboxed' or 'trusted-code'")
    probe = probe_sandbox(bwrap)
    if not probe.ok:
        raise SandboxUnavailable(
            f"refusing untrusted code: {probe.explain()}. Or, only for code you trust, set "
            'trust = "trusted-code"'
        )
    logger.info("sandbox: %s", probe.explain())
    assert probe.bwrap is not None
    return BwrapSandbox(probe.bwrap)
