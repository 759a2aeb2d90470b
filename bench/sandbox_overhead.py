"""What the bubblewrap sandbox adds to each experiment, and that it does not change the score.

Overhead: a trivial task (prints the summary block and exits) runs N times through the
Runner with `Unsandboxed` and N times with `BwrapSandbox`, interleaved; the difference of
each pair's wall time is the sandbox's cost (the launcher, bwrap's namespaces and mounts,
the uid switch and folder hand-over when root, the disk-cap watch). Target: under 1 s.

Fidelity (`--tinylm K`): tinylm itself, K runs each way (interleaved) with a short budget;
prints the mean and spread of val_bpb outside and inside. Its training is time-budgeted,
so single runs differ by noise; the means must agree within that noise.

    .venv/bin/python bench/sandbox_overhead.py [-n 20] [--tinylm 3 --budget-s 10]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import tempfile
import time
from pathlib import Path

from shared.models import ResultStatus
from shared.task import load_task
from worker.bwrap import make_sandbox
from worker.hardware import cpu_count
from worker.runner import Runner
from worker.sandbox import Sandbox, Unsandboxed

TRAIN = 'print("---")\nprint("val_bpb: 1.0")\nprint("training_seconds: 0.0")\n'
TOML = '[task]\nname = "trivial"\nbudget_s = 10\n\n[run]\nprepare = ["python", "prepare.py"]\n'
TINYLM = Path(__file__).parents[1] / "tasks" / "tinylm"


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def machine() -> str:
    return f"{platform.machine()}, {cpu_count()} cores, Python {platform.python_version()}"


def runners(root: Path) -> dict[str, Runner]:
    sandboxes: dict[str, Sandbox] = {"none": Unsandboxed(), "bwrap": make_sandbox("sandboxed")}
    return {
        name: Runner(work_root=root / name / "work", cache_root=root / "cache", sandbox=sandbox)
        for name, sandbox in sandboxes.items()
    }


def overhead(n: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = root / "task"
        task.mkdir()
        (task / "train.py").write_text(TRAIN)
        (task / "prepare.py").write_text("")
        (task / "task.toml").write_text(TOML)
        spec = load_task(task)
        by_name = runners(root)
        for runner in by_name.values():
            runner.run(task, spec)  # warm-up: prepare once, caches handed over once
        wall_s: dict[str, list[float]] = {name: [] for name in by_name}
        for _ in range(n):
            for name, runner in by_name.items():
                started = time.perf_counter()
                result = runner.run(task, spec)
                wall_s[name].append(time.perf_counter() - started)
                assert result.status is ResultStatus.OK, (name, result.error, result.log_tail)
    added_ms = [1000 * (b - u) for b, u in zip(wall_s["bwrap"], wall_s["none"], strict=True)]
    header = ("date", "machine", "n", "unsandboxed ms", "bwrap ms", "added ms mean / p95")
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    print(
        f"| {datetime.date.today()} | {machine()} | {n}"
        f" | {1000 * statistics.mean(wall_s['none']):.0f}"
        f" | {1000 * statistics.mean(wall_s['bwrap']):.0f}"
        f" | {statistics.mean(added_ms):.0f} / {p95(added_ms):.0f} |"
    )


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
    parser.add_argument("--tinylm", type=int, default=0, help="tinylm runs per sandbox (0: none)")
    parser.add_argument("--budget-s", type=float, default=10.0, help="tinylm's budget per run")
    args = parser.parse_args()
    if args.n:
        overhead(args.n)
    if args.tinylm:
        fidelity(args.tinylm, args.budget_s)


if __name__ == "__main__":
    main()
