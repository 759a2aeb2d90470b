"""`autoswarm doctor`: what this machine can contribute, and what stops it, as rows of checks.

Each check is a `Check(name, status, detail)` with status OK, WARN or FAIL; the CLI renders
the rows (a table, or `--json` through `Check.as_dict`) and exits with `exit_code(checks)`,
non-zero when any check failed. `sandbox_self_test` is also what the worker runs at start:
it starts a real sandbox and tries, from inside, what a hostile run would try.
The worker never imports torch: torch and CUDA are probed in a short child process.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path

from autoswarm.shared.errors import AutoswarmError
from autoswarm.worker import cgroups, workfs
from autoswarm.worker.bwrap import BwrapSandbox, probe_sandbox
from autoswarm.worker.sandbox import Sandbox, scrub_env

logger = logging.getLogger(__name__)

MIN_PYTHON = (3, 11)
MIN_GPU_MEMORY_MB = 8 * 1024  # below this a GPU is not offered CUDA tasks
DISK_WARN_GB = 10.0
DISK_FAIL_GB = 1.0
CLOCK_SKEW_WARN_S = 5.0
CLOCK_SKEW_FAIL_S = 60.0
PROBE_TIMEOUT_S = 120.0
SELF_TEST_TIMEOUT_S = 120.0
_OUTSIDE_HOST = ("1.1.1.1", 53)  # a public DNS server: any route out would reach it

_TORCH_PROBE = """
import json, sys
out = {}
try:
    import torch
except Exception as exc:
    print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
    sys.exit(0)
out["torch"] = torch.__version__
out["cuda_build"] = torch.version.cuda
out["cuda"] = bool(torch.version.cuda) and torch.cuda.is_available()
out["gpus"] = []
if out["cuda"]:
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        out["gpus"].append({"index": i, "name": p.name, "memory_mb": p.total_memory // 2**20,
                            "capability": f"{p.major}.{p.minor}"})
    out["bf16"] = torch.cuda.is_bf16_supported()
print(json.dumps(out))
"""

# Run inside the sandbox: argv = [secret file, loopback port, outside folder, check CUDA].
_SELF_TEST = """
import json, os, socket, sys
secret, port, outside, cuda = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4] == "1"
out = {}
def attempt(name, action):
    try:
        out[name] = action()
    except Exception as exc:
        out[name] = f"blocked: {type(exc).__name__}: {exc}"
def connect(host, port):
    socket.create_connection((host, port), timeout=3).close()
    return "open"
def write(path):
    with open(path, "w") as f:
        f.write("x")
    return "written"
attempt("internet", lambda: connect(*OUTSIDE))
attempt("loopback", lambda: connect("127.0.0.1", port))
attempt("secret", lambda: open(secret).read())
attempt("write_outside", lambda: write(os.path.join(outside, "planted")))
attempt("write_work", lambda: write("self-test"))
if cuda:
    def probe_cuda():
        import torch
        if not torch.cuda.is_available():
            return "blocked: torch.cuda.is_available() is False"
        return "available: " + torch.cuda.get_device_name(0)
    attempt("cuda", probe_cuda)
print(json.dumps(out))
""".replace("OUTSIDE", repr(_OUTSIDE_HOST))


class Status(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True, slots=True)
class Check:
    """One row of the doctor's table."""

    name: str
    status: Status
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {k: str(v) for k, v in asdict(self).items()}


def exit_code(checks: Sequence[Check]) -> int:
    """1 when any check failed, else 0."""
    return 1 if any(c.status is Status.FAIL for c in checks) else 0


def run_checks(
    coordinator_url: str | None,
    *,
    work_dir: Path | None = None,
    trust: str = "sandboxed",
    bwrap: str | None = None,
) -> list[Check]:
    """Every check, in the order the table shows them."""
    checks = [check_python()]
    torch_info = probe_torch()
    checks += check_torch(torch_info)
    gpus = torch_info.get("gpus") or []
    checks += check_sandbox(trust, bwrap=bwrap, cuda=bool(gpus))
    if trust == "sandboxed":
        checks += check_limits(cgroups.find(), workfs.probe())
    checks.append(check_disk(work_dir or Path.home()))
    checks.append(check_uv())
    if coordinator_url:
        checks += check_coordinator(coordinator_url)
    return checks


# ---- Python, torch, CUDA, GPUs -------------------------------------------------------------


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] < MIN_PYTHON:
        need = ".".join(map(str, MIN_PYTHON))
        return Check("python", Status.FAIL, f"Python {version}; autoswarm needs {need} or newer")
    return Check("python", Status.OK, f"Python {version} at {sys.executable}")


def probe_torch(python: str = sys.executable) -> dict[str, object]:
    """torch, CUDA and the GPUs as a child process sees them ({"error": ...} on failure)."""
    try:
        done = subprocess.run(
            [python, "-c", _TORCH_PROBE],
            capture_output=True,
            text=True,
            timeout=PROBE_TIMEOUT_S,
            check=False,
        )
        found = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        return {"error": f"the torch probe failed: {exc}"}
    return found if isinstance(found, dict) else {"error": "the torch probe printed no object"}


def nvidia_driver() -> str | None:
    """The NVIDIA driver version from nvidia-smi, or None without one."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return None
    try:
        done = subprocess.run(
            [smi, "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = done.stdout.strip().splitlines()
    return lines[0].strip() if done.returncode == 0 and lines else None


def check_torch(info: dict[str, object]) -> list[Check]:
    """Rows for torch, CUDA and its driver, each GPU and bf16."""
    if "error" in info:
        return [Check("torch", Status.FAIL, f"not importable: {info['error']}; pip install torch")]
    rows = [Check("torch", Status.OK, f"torch {info['torch']}")]
    driver = nvidia_driver()
    if not info.get("cuda_build"):
        rows.append(Check("cuda", Status.WARN, "torch is a CPU build: this machine runs CPU tasks"))
        return rows
    if not info.get("cuda"):
        why = "no driver (nvidia-smi not found)" if driver is None else f"driver {driver}"
        rows.append(
            Check("cuda", Status.WARN, f"CUDA {info['cuda_build']} build sees no GPU; {why}")
        )
        return rows
    rows.append(Check("cuda", Status.OK, f"CUDA {info['cuda_build']}, driver {driver or '?'}"))
    gpus = info.get("gpus")
    for gpu in gpus if isinstance(gpus, list) else []:
        rows.append(check_gpu(gpu))
    bf16 = bool(info.get("bf16"))
    rows.append(
        Check(
            "bf16",
            Status.OK if bf16 else Status.WARN,
            "supported" if bf16 else "not supported: bf16 tasks will run slowly or fail",
        )
    )
    return rows


def check_gpu(gpu: object) -> Check:
    """A GPU and whether it may take CUDA tasks, and why not."""
    assert isinstance(gpu, dict)
    memory_mb = int(gpu["memory_mb"])
    what = f"{gpu['name']}, {memory_mb / 1024:.1f} GiB, compute {gpu.get('capability', '?')}"
    name = f"gpu {gpu['index']}"
    if memory_mb < MIN_GPU_MEMORY_MB:
        need = MIN_GPU_MEMORY_MB // 1024
        return Check(name, Status.WARN, f"{what}: not eligible for CUDA tasks (< {need} GiB)")
    return Check(name, Status.OK, f"{what}: eligible")


# ---- the sandbox -----------------------------------------------------------------------------


def check_sandbox(trust: str, *, bwrap: str | None = None, cuda: bool = False) -> list[Check]:
    """Whether bubblewrap works here, then what a run inside it can and cannot do."""
    if trust == "trusted-code":
        return [
            Check(
                "sandbox",
                Status.WARN,
                "trust = trusted-code: runs are NOT sandboxed (the operator's own code only)",
            )
        ]
    probe = probe_sandbox(bwrap)
    if not probe.ok:
        return [Check("sandbox", Status.FAIL, f"{probe.explain()}; untrusted work is refused")]
    assert probe.bwrap is not None
    sandbox = BwrapSandbox(probe.bwrap)
    return [Check("sandbox", Status.OK, probe.explain()), *sandbox_self_test(sandbox, cuda=cuda)]


def sandbox_self_test(sandbox: Sandbox, *, cuda: bool = False) -> list[Check]:
    """Start `sandbox` once and try, from inside, the network, a secret file and CUDA.

    Outside it opens a loopback listener and writes a secret file in a folder of its own;
    inside, connecting anywhere, reading the secret and writing next to it must all fail,
    and writing the work folder must work. With `cuda`, CUDA must be usable inside.
    """
    root = Path(tempfile.mkdtemp(prefix="autoswarm-doctor-"))
    listener = socket.create_server(("127.0.0.1", 0))
    try:
        outside = root / "home"
        outside.mkdir()
        secret = outside / "token"
        secret.write_text(f"secret-{uuid.uuid4().hex}")
        work = root / "work"
        work.mkdir()
        port = listener.getsockname()[1]
        argv = [sys.executable, "-I", "-c", _SELF_TEST, str(secret), str(port), str(outside)]
        argv.append("1" if cuda else "0")
        env = scrub_env(os.environ, home=work, tmp_dir=work)
        wrapped = sandbox.wrap(argv, work_dir=work, readonly=[], writable=[], env=env)
        stderr = ""
        try:
            done = subprocess.run(
                wrapped,
                cwd=work,
                env=env,
                capture_output=True,
                text=True,
                timeout=SELF_TEST_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
            stderr = done.stderr.strip()[-300:]
            seen: dict[str, str] = json.loads(done.stdout.strip().splitlines()[-1])
        except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
            why = stderr or f"{type(exc).__name__}: {exc}"
            return [Check("sandbox self-test", Status.FAIL, f"the test run failed: {why}")]
        planted = (outside / "planted").exists()
    finally:
        listener.close()
        shutil.rmtree(root, ignore_errors=True)
    return _judge_self_test(seen, planted, cuda, sandbox.name)


def _blocked(value: str | None) -> bool:
    return value is not None and value.startswith("blocked")


def _judge_self_test(seen: dict[str, str], planted: bool, cuda: bool, name: str) -> list[Check]:
    reached = [k for k in ("internet", "loopback") if not _blocked(seen.get(k))]
    net = Check("sandbox network", Status.OK, "no route out: internet and host loopback blocked")
    if reached:
        net = Check(
            "sandbox network", Status.FAIL, f"a run inside {name!r} reached: {', '.join(reached)}"
        )
    problems = []
    if not _blocked(seen.get("secret")):
        problems.append("read a secret file outside its work folder")
    if planted or not _blocked(seen.get("write_outside")):
        problems.append("wrote outside its work folder")
    if seen.get("write_work") != "written":
        problems.append(f"could not write its work folder ({seen.get('write_work')})")
    files = Check(
        "sandbox files",
        Status.OK,
        "secrets outside the work folder unreadable; only the work folder writable",
    )
    if problems:
        files = Check("sandbox files", Status.FAIL, f"a run inside {name!r} " + "; ".join(problems))
    rows = [net, files]
    if cuda:
        found = seen.get("cuda", "not tried")
        ok = found.startswith("available")
        rows.append(Check("sandbox CUDA", Status.OK if ok else Status.FAIL, found))
    return rows


# ---- the limits on a run ------------------------------------------------------------------


def check_limits(
    found: cgroups.Cgroups | cgroups.Absent, work_cap_refused: str | None
) -> list[Check]:
    """Which of a run's limits the kernel enforces here (control groups, a capped work
    folder: `work_cap_refused` None, as `autoswarm.worker.workfs.probe` answers), which fall
    back."""
    if isinstance(found, cgroups.Absent):
        return [
            Check(
                "limits memory",
                Status.WARN,
                f"no control groups ({found.why}); falls back to RLIMIT_DATA per process and"
                " the run's RSS polled every 0.2 s: memfds and unmapped shared memory are not"
                " counted (tmpfs /tmp and /dev/shm keep their own size caps)",
            ),
            Check(
                "limits processes",
                Status.WARN,
                "no control groups; falls back to RLIMIT_NPROC, counted over every run of the"
                " shared sandbox user: one run's threads can starve another's",
            ),
            _disk_check(work_cap_refused),
        ]
    where = f"cgroup v{found.version}"
    memory = Check(
        "limits memory",
        Status.OK,
        f"{where} {found.memory}: a CPU task's memory_mb caps each run, memfds, tmpfs and"
        " /dev/shm included (plus disk_mb where its work folder is a tmpfs)",
    )
    if found.memory is None:
        memory = Check(
            "limits memory",
            Status.WARN,
            f"{where} has no writable memory controller; falls back to RLIMIT_DATA and the"
            " polled RSS (memfds are not counted)",
        )
    pids = Check("limits processes", Status.OK, f"{where} {found.pids}: pids.max per run")
    if found.pids is None:
        pids = Check(
            "limits processes",
            Status.WARN,
            f"{where} has no writable pids controller; falls back to RLIMIT_NPROC of the"
            " shared sandbox user (one run can starve another's threads)",
        )
    return [memory, pids, _disk_check(work_cap_refused)]


def _disk_check(refused: str | None) -> Check:
    if refused is None:
        return Check(
            "limits disk",
            Status.OK,
            "kernel-enforced: each run's work folder, its compile caches included, is a tmpfs"
            " of the task's disk_mb in the run's own mount namespace (writes past it fail with"
            " ENOSPC); it is held in memory and counts in the run's memory cap (memory_mb +"
            " disk_mb; a disk_mb over half this machine's memory stays on disk, under the"
            " watch); out/ is copied back, bounded",
        )
    return Check(
        "limits disk",
        Status.WARN,
        f"no kernel-enforced cap ({refused}); falls back to a watch of the work folder every"
        " 0.1 s (files, folders, removed files held open or mapped) and RLIMIT_FSIZE per file:"
        " a fast writer overshoots by what it writes in 0.1 s; compile caches are per run, in"
        " the watched folder",
    )


# ---- disk and coordinator --------------------------------------------------------------------


def check_disk(path: Path) -> Check:
    """Free space where experiments' work folders go."""
    target = path
    while not target.exists() and target != target.parent:
        target = target.parent
    free_gb = shutil.disk_usage(target).free / 2**30
    detail = f"{free_gb:.1f} GiB free at {path}"
    if free_gb < DISK_FAIL_GB:
        return Check("disk", Status.FAIL, f"{detail}: too little to run experiments")
    if free_gb < DISK_WARN_GB:
        return Check("disk", Status.WARN, f"{detail}: large tasks may not fit")
    return Check("disk", Status.OK, detail)


def check_uv() -> Check:
    """uv, which builds the environments of tasks that carry their own locked project."""
    from autoswarm.worker.environments import find_uv

    uv = find_uv()
    if uv is None:
        why = "tasks with their own pyproject.toml + uv.lock or requirements.txt fail to prepare"
        return Check("uv", Status.WARN, f"not installed: {why}; pip install uv")
    return Check("uv", Status.OK, f"{uv}: builds tasks' own environments")


def check_coordinator(url: str) -> list[Check]:
    """The coordinator answers /livez, and its clock agrees with ours."""
    from autoswarm.shared.client import CoordinatorClient  # httpx lives behind the client

    with CoordinatorClient(url, token="", timeout_s=10.0) as client:
        try:
            client.get_json("/livez")
        except AutoswarmError as exc:
            return [Check("coordinator", Status.FAIL, f"{url} is not reachable: {exc}")]
        rows = [Check("coordinator", Status.OK, f"{url} is live")]
        try:
            before = time.time()
            server = client.server_time()
            skew_s = server - (before + time.time()) / 2
        except AutoswarmError as exc:
            return [*rows, Check("clock", Status.WARN, f"no server time: {exc}")]
    detail = f"coordinator clock {skew_s:+.1f} s from ours"
    if abs(skew_s) > CLOCK_SKEW_FAIL_S:
        return [*rows, Check("clock", Status.FAIL, f"{detail}: fix this machine's time (NTP)")]
    if abs(skew_s) > CLOCK_SKEW_WARN_S:
        return [*rows, Check("clock", Status.WARN, f"{detail}: enable NTP")]
    return [*rows, Check("clock", Status.OK, detail)]
