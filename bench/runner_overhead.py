"""The runner's overhead per experiment: everything that is not the task's own run.

A trivial task (prints the summary block and exits) runs N times through the Runner and N
times as a bare `subprocess.run` of the same command, interleaved. Overhead = the Runner's
wall time per experiment minus the bare run's. Prints one markdown table row.

    .venv/bin/python bench/runner_overhead.py [-n 20]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from autoswarm.shared.models import ResultStatus
from autoswarm.shared.task import load_task
from autoswarm.worker.hardware import cpu_count
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Unsandboxed

TRAIN = 'print("---")\nprint("val_bpb: 1.0")\nprint("training_seconds: 0.0")\n'
TOML = '[task]\nname = "trivial"\nbudget_s = 10\n\n[run]\nprepare = ["python", "prepare.py"]\n'


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20, help="experiments to time (default 20)")
    n = parser.parse_args().n
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        task = root / "task"
        task.mkdir()
        (task / "train.py").write_text(TRAIN)
        (task / "prepare.py").write_text("")
        (task / "task.toml").write_text(TOML)
        spec = load_task(task)
        runner = Runner(work_root=root / "work", cache_root=root / "cache", sandbox=Unsandboxed())
        runner.run(task, spec)  # warm-up: the prepare step runs once per task version
        bare_s, total_s, inner_s = [], [], []
        for _ in range(n):
            started = time.perf_counter()
            subprocess.run([sys.executable, "train.py"], cwd=task, capture_output=True, check=True)
            bare_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            result = runner.run(task, spec)
            total_s.append(time.perf_counter() - started)
            inner_s.append(result.wall_s)
            assert result.status is ResultStatus.OK, result.error
    overhead_ms = [1000 * (t - b) for t, b in zip(total_s, bare_s, strict=True)]
    outside_ms = [1000 * (t - w) for t, w in zip(total_s, inner_s, strict=True)]
    machine = f"{platform.machine()}, {cpu_count()} cores, Python {platform.python_version()}"
    header = (
        "date",
        "machine",
        "n",
        "bare run ms",
        "runner ms",
        "overhead ms mean / p95",
        "outside child ms",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    print(
        f"| {datetime.date.today()} | {machine} | {n}"
        f" | {1000 * statistics.mean(bare_s):.0f}"
        f" | {1000 * statistics.mean(total_s):.0f}"
        f" | {statistics.mean(overhead_ms):.0f} / {p95(overhead_ms):.0f}"
        f" | {statistics.mean(outside_ms):.0f} |"
    )


if __name__ == "__main__":
    main()
