"""What the bubblewrap sandbox adds to each experiment, and that it does not change the score.

Overhead: a trivial task (prints the summary block and exits) runs N times through the
Runner with `Unsandboxed`, with `BwrapSandbox` as it is ("bwrap": control groups where the
host has them, the work folder a tmpfs of disk_mb where the host allows it,
`autoswarm.worker.workfs`) and with the launcher of git ref `--before` (default `main`) and its disk
watch instead of the tmpfs ("before"), interleaved; the difference of each wall time from its
unsandboxed neighbour is the sandbox's cost (the launcher, bwrap's namespaces and mounts, the uid
switch and folder hand-over when root, the run's control group, the work folder's tmpfs:
mounted, filled, out/ carried back; or the disk-cap watch). Prints both and their ratio.
Target: under 1 s.

Watch cost: one poll of the disk watch (`autoswarm.worker.diskcap.DiskWatch`) over a work folder of
`FILES` files with the run's processes (here: this one and `THREADS` children), against
the folder walk alone (what the launcher polled before), as ms per poll and as the share
of one core at one poll per 0.1 s.

Burst (`--burst`, root only): the hostile payload `tests/hostile/disk_burst.py` (~500 MB
fallocated at once against a 32 MB disk_mb) through "before" and "now", their work folders on
a tmpfs mounted for the bench, whose usage is sampled every ~1 ms: the most the run put on the
host's file system beyond what was there before it started, and how the run ended.

Fidelity (`--tinylm K`): tinylm itself, K runs each way (interleaved) with a short budget;
prints the mean and spread of val_bpb outside and inside. Its training is time-budgeted,
so single runs differ by noise; the means must agree within that noise.

    .venv/bin/python bench/sandbox_overhead.py [-n 20] [--before main] [--burst]
        [--tinylm 3 --budget-s 10]
"""

from __future__ import annotations

import argparse
import datetime
import functools
import os
import platform
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.task import load_task
from autoswarm.worker import cgroups, diskcap
from autoswarm.worker.bwrap import BwrapSandbox, make_sandbox
from autoswarm.worker.hardware import cpu_count
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Sandbox, Unsandboxed

TRAIN = 'print("---")\nprint("val_bpb: 1.0")\nprint("training_seconds: 0.0")\n'
TOML = '[task]\nname = "trivial"\nbudget_s = 10\n\n[run]\nprepare = ["python", "prepare.py"]\n'
TINYLM = Path(__file__).parents[1] / "tasks" / "tinylm"
FILES = 500
CHILDREN = 8
POLLS = 200
POLL_S = 0.1
# `--evaluator`: the run writes one artifact, a second sandboxed process scores it; the
# capped work folder then carries out/ back after the run.
EVAL_TRAIN = 'import os\nopen(os.path.join(os.environ["AUTOSWARM_OUT_DIR"], "m"), "w").write("1")\n'
EVAL_SCORE = 'print("---")\nprint("val_bpb: 1.0")\n'
EVAL_TOML = TOML + (
    '\n[scoring]\nmode = "evaluator"\ncommand = ["python", "evaluate.py"]\n'
    'files = ["evaluate.py"]\n'
)
BURST_TOML = '[task]\nname = "burst"\nbudget_s = 5\n\n[resources]\ndisk_mb = 32\n'
BEFORE_FILES = ("limits.py", "cgroups.py", "diskcap.py")  # the launcher and its siblings


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def machine() -> str:
    return f"{platform.machine()}, {cpu_count()} cores, Python {platform.python_version()}"


def runners(root: Path, before: str | None = None) -> dict[str, Runner]:
    sandboxes: dict[str, Sandbox] = {"none": Unsandboxed(), "bwrap": make_sandbox("sandboxed")}
    if before is not None:
        folder = root / "launcher_before"
        folder.mkdir()
        for name in BEFORE_FILES:
            for where in ("autoswarm/worker", "worker"):  # the package's folder, then its old one
                shown = subprocess.run(
                    ["git", "show", f"{before}:{where}/{name}"], capture_output=True, check=False
                )
                if shown.returncode == 0:  # a sibling the launcher of `before` may import
                    (folder / name).write_bytes(shown.stdout)
                    break
        bwrap = make_sandbox("sandboxed")
        assert isinstance(bwrap, BwrapSandbox)
        sandboxes["before"] = BwrapSandbox(
            bwrap.bwrap, cap_work=False, launcher=folder / "limits.py"
        )
    return {
        name: Runner(work_root=root / name / "work", cache_root=root / "cache", sandbox=sandbox)
        for name, sandbox in sandboxes.items()
    }


def overhead(n: int, before: str, evaluator: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = root / "task"
        task.mkdir()
        (task / "train.py").write_text(EVAL_TRAIN if evaluator else TRAIN)
        (task / "prepare.py").write_text("")
        (task / "evaluate.py").write_text(EVAL_SCORE)
        (task / "task.toml").write_text(EVAL_TOML if evaluator else TOML)
        spec = load_task(task)
        by_name = runners(root, before)
        for runner in by_name.values():
            runner.run(task, spec)  # warm-up: prepare once
        wall_s: dict[str, list[float]] = {name: [] for name in by_name}
        for _ in range(n):
            for name, runner in by_name.items():
                started = time.perf_counter()
                result = runner.run(task, spec)
                wall_s[name].append(time.perf_counter() - started)
                assert result.status is ResultStatus.OK, (name, result.error, result.log_tail)
    added = {
        name: [1000 * (b - u) for b, u in zip(wall_s[name], wall_s["none"], strict=True)]
        for name in ("before", "bwrap")
    }
    found = cgroups.find()
    limits = "rlimits" if isinstance(found, cgroups.Absent) else f"cgroup v{found.version}"
    header = (
        "date",
        "machine",
        "n",
        "unsandboxed ms",
        f"before ({before}) ms, added mean / p95",
        f"now ({limits}) ms, added mean / p95",
        "added now / before",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    cells = [str(datetime.date.today()), machine(), str(n)]
    cells.append(f"{1000 * statistics.mean(wall_s['none']):.0f}")
    for name in ("before", "bwrap"):
        cells.append(
            f"{1000 * statistics.mean(wall_s[name]):.0f}, {statistics.mean(added[name]):.0f}"
            f" / {p95(added[name]):.0f}"
        )
    cells.append(f"{statistics.mean(added['bwrap']) / statistics.mean(added['before']):.2f}")
    print("| " + " | ".join(cells) + " |")


def watch_cost() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for i in range(FILES):
            (root / f"f{i}.bin").write_bytes(b"x" * 4096)
        children = [subprocess.Popen(["sleep", "60"]) for _ in range(CHILDREN)]
        pids = [os.getpid(), *(c.pid for c in children)]
        try:
            per_poll_ms = {}
            watch = diskcap.DiskWatch([tmp], [], 2**30)
            for name, poll in (
                ("walk only (before)", lambda: diskcap.used_bytes([tmp], [])),
                ("walk, open and mapped files (now)", lambda: watch.poll(lambda: pids)),
            ):
                started = time.perf_counter()
                for _ in range(POLLS):
                    poll()
                per_poll_ms[name] = 1000 * (time.perf_counter() - started) / POLLS
        finally:
            for child in children:
                child.kill()
                child.wait()
    print(
        f"disk watch, {FILES} files, {len(pids)} processes ({datetime.date.today()}, {machine()}):"
    )
    for name, ms in per_poll_ms.items():
        print(f"  {name}: {ms:.2f} ms per poll, {ms / (10 * POLL_S):.1f}% of a core")


def burst(before: str) -> None:
    hostile = Path(__file__).parents[1] / "tests" / "hostile"
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp) / "vol"
        volume.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g", "tmpfs", volume], check=True)
        try:
            task = volume / "task"
            task.mkdir()
            (task / "train.py").write_bytes((hostile / "disk_burst.py").read_bytes())
            (task / "prepare.py").write_text("")
            (task / "task.toml").write_text(BURST_TOML)
            spec = load_task(task)
            for name, runner in runners(volume, before).items():
                if name == "none":
                    continue
                runner.preparer.prepare(task, spec)
                peak_bytes, result = peak_while(volume, functools.partial(runner.run, task, spec))
                print(
                    f"burst, {name}: at most {peak_bytes / 2**20:.1f} MB on the host's file system"
                    f" (cap 32 MB); {result.status}: {(result.error or '')[:120]}"
                )
        finally:
            subprocess.run(["umount", "-l", volume], check=False)


def peak_while(volume: Path, action: Callable[[], Result]) -> tuple[int, Result]:
    """The most `volume`'s usage grew over its start while `action` ran, and its result."""
    start, peak, done = used(volume), [0], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], used(volume) - start)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = action()
    finally:
        done.set()
        sampler.join()
    return peak[0], result


def used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


def fidelity(k: int, budget_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        spec = load_task(TINYLM)
        by_name = runners(Path(tmp))
        scores: dict[str, list[float]] = {name: [] for name in by_name}
        steps: dict[str, list[str]] = {name: [] for name in by_name}
        for _ in range(k):
            for name, runner in by_name.items():
                result = runner.run(TINYLM, spec, budget_s=budget_s)
                assert result.status is ResultStatus.OK and result.metric is not None, (
                    name,
                    result.error,
                    result.log_tail[-2000:],
                )
                scores[name].append(result.metric)
                run_log = result.log_tail.split("==> evaluator <==", 1)[0]
                steps[name].append(run_log.rsplit("num_steps:", 1)[-1].split()[0])
    print(f"tinylm, budget {budget_s:g} s, {k} runs each ({datetime.date.today()}, {machine()}):")
    for name, values in scores.items():
        spread = statistics.stdev(values) if len(values) > 1 else 0.0
        listed = ", ".join(f"{v:.4f}" for v in values)
        print(
            f"  {name:6s} val_bpb mean {statistics.mean(values):.4f} sd {spread:.4f} [{listed}]"
            f" after {', '.join(steps[name])} steps"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="trivial experiments per sandbox")
    parser.add_argument("--before", default="main", help="git ref of the launcher to compare")
    parser.add_argument("--evaluator", action="store_true", help="an evaluator-mode task")
    parser.add_argument("--burst", action="store_true", help="a disk burst, before and now")
    parser.add_argument("--tinylm", type=int, default=0, help="tinylm runs per sandbox (0: none)")
    parser.add_argument("--budget-s", type=float, default=10.0, help="tinylm's budget per run")
    args = parser.parse_args()
    if args.n:
        overhead(args.n, args.before, args.evaluator)
        watch_cost()
    if args.burst:
        burst(args.before)
    if args.tinylm:
        fidelity(args.tinylm, args.budget_s)


if __name__ == "__main__":
    main()
