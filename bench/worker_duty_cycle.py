"""The worker's duty cycle: the share of its wall time spent inside the task's budget.

A real coordinator (`python -m autoswarm.coordinator`, embedded Redis, on loopback) and one real
worker (`python -m autoswarm.worker`) run N baseline experiments of one task back to back. In steady
state, between the first report and the last, the worker's wall time is
    window = finished_s[last] - finished_s[first]
and the time inside the budget is the sum over experiments 2..N of min(training_s, budget_s)
(training_s from the summary block; the run's wall time when the task prints none).
duty = inside / window. The rest is the run's startup (imports, the model's export), the
evaluator, and the worker's own work between runs (report, lease, bundle, prepare check,
work folder). Where the runs print `num_steps:`, their step counts follow the row: work
done beside a run (imports ahead, an evaluator started with it) takes from them instead.
`--synthetic S` uses a task that only sleeps S seconds, which isolates the
worker's and the runner's own part. Prints one markdown table row. Target: duty >= 95%.

    .venv/bin/python bench/worker_duty_cycle.py --task tasks/tinylm -n 4
    .venv/bin/python bench/worker_duty_cycle.py --synthetic 20 -n 4 [--no-prefetch]
    .venv/bin/python bench/worker_duty_cycle.py --task tasks/tinylm --budget-s 300 -n 3
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.lifetime import die_with_parent
from autoswarm.shared.task import load_task, read_task_files
from autoswarm.worker.hardware import cpu_count

REPO = Path(__file__).resolve().parent.parent
SYNTHETIC_TRAIN = """\
import time
BUDGET_S = {budget_s}  # seconds of "training"
time.sleep(BUDGET_S)
print("---")
print("val_bpb: 1.0")
print(f"training_seconds: {{BUDGET_S}}")
"""
SYNTHETIC_TOML = """\
[task]
name = "synthetic"
budget_s = {budget_s}
protected = []

[run]
startup_s = 5
grace_s = 2
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def synthetic_task(root: Path, budget_s: float) -> Path:
    folder = root / "synthetic"
    folder.mkdir()
    (folder / "train.py").write_text(SYNTHETIC_TRAIN.format(budget_s=budget_s))
    (folder / "task.toml").write_text(SYNTHETIC_TOML.format(budget_s=budget_s))
    return folder


def with_budget(folder: Path, copy: Path, budget_s: float) -> Path:
    """A copy of a task folder whose task.toml says `budget_s` (the only change)."""
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__", "out", "data"))
    toml = copy / "task.toml"
    text, count = re.subn(
        r"(?m)^budget_s\s*=.*$", f"budget_s = {budget_s:g}", toml.read_text(), count=1
    )
    if not count:
        raise SystemExit(f"{folder}/task.toml has no budget_s line to change")
    toml.write_text(text)
    return copy


def start_coordinator(root: Path, n: int) -> tuple[subprocess.Popen[bytes], str, str]:
    port, token = free_port(), "as_bench_" + secrets.token_urlsafe(16)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSWARM_")}
    env |= {
        "PYTHONPATH": str(REPO),
        "AUTOSWARM_DATA_DIR": str(root / "coordinator"),
        "AUTOSWARM_PORT": str(port),
        "AUTOSWARM_ADMIN_TOKEN": token,
        "AUTOSWARM_BASELINE_RUNS": str(n),  # N runs of the head: no proposer needed
        "AUTOSWARM_LOG_LEVEL": "WARNING",
    }
    log = (root / "coordinator.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "autoswarm.coordinator"],
        cwd=REPO,
        env=env,
        stdout=log,
        stderr=log,
        preexec_fn=die_with_parent(),  # a benchmark stopped by a signal leaves no server
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    with CoordinatorClient(url, token, timeout_s=2) as client:
        while True:
            try:
                if client.get_json("/readyz").get("ready"):
                    return process, url, token
            except Exception as exc:
                if process.poll() is not None or time.monotonic() > deadline:
                    why = f"coordinator did not start; see {root}/coordinator.log"
                    raise SystemExit(why) from exc
            time.sleep(0.2)


def run_worker(root: Path, url: str, token: str, n: int, trust: str, prefetch: bool) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSWARM_")}
    env |= {"PYTHONPATH": str(REPO), "AUTOSWARM_PREFETCH": "true" if prefetch else "false"}
    args = [
        "--join", url, "--token", token, "--name", "bench", "--gpus", "none",
        "--trust", trust, "--state-dir", str(root / "worker"),
        "--max-experiments", str(n), "--wait-s", "5",
    ]  # fmt: skip
    with (root / "worker.log").open("wb") as log:
        code = subprocess.call(
            [sys.executable, "-m", "autoswarm.worker", *args],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
            preexec_fn=die_with_parent(),
        )
    if code != 0:
        raise SystemExit(f"worker exited {code}; see {root}/worker.log")


STEPS = re.compile(r"^num_steps:\s+(\d+)\s*$", re.MULTILINE)


def logs(experiments: list[dict[str, Any]]) -> list[str]:
    """The log tails of the finished experiments, in the order they finished."""
    done = [e for e in experiments if e["state"] == "done" and e["result"]]
    return [e["result"]["log_tail"] or "" for e in sorted(done, key=lambda e: e["finished_s"])]


def measure(experiments: list[dict[str, Any]], budget_s: float) -> dict[str, float]:
    done = sorted(
        (e for e in experiments if e["state"] == "done" and e["result"]),
        key=lambda e: e["finished_s"],
    )
    if len(done) < 2:
        raise SystemExit(f"only {len(done)} experiments finished; need 2 or more")
    steady = done[1:]
    window_s = done[-1]["finished_s"] - done[0]["finished_s"]
    inside_s = sum(
        min(e["result"]["training_s"] or e["result"]["wall_s"], budget_s) for e in steady
    )
    run_s = sum(e["result"]["wall_s"] for e in steady)
    n = len(steady)
    return {
        "n": n,
        "cycle_s": window_s / n,
        "outside_s": (window_s - inside_s) / n,
        # the run's own time beyond its budget: interpreter, imports, data, export
        "run_extra_s": (run_s - inside_s) / n,
        # after the run: the evaluator (evaluator mode) and the worker's own work
        "after_run_s": (window_s - run_s) / n,
        "duty": inside_s / window_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=REPO / "tasks" / "tinylm")
    parser.add_argument("--synthetic", type=float, help="a task that only sleeps this long")
    parser.add_argument("-n", type=int, default=4, help="experiments to run (default 4)")
    parser.add_argument("--trust", default="trusted-code", choices=("sandboxed", "trusted-code"))
    parser.add_argument("--no-prefetch", action="store_true")
    parser.add_argument(
        "--budget-s",
        type=float,
        help="run the task with this budget instead of its own (a copy of its folder)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="duty-") as tmp:
        root = Path(tmp)
        folder = synthetic_task(root, args.synthetic) if args.synthetic else args.task
        if args.budget_s is not None:
            folder = with_budget(folder, root / "task", args.budget_s)
        spec = load_task(folder)
        coordinator, url, admin_token = start_coordinator(root, args.n)
        try:
            with CoordinatorClient(url, admin_token, timeout_s=60) as admin:
                task_id = admin.register_task(read_task_files(folder, spec))["task_id"]
                worker_token = admin.create_token("worker", "bench")
                run_worker(root, url, worker_token, args.n, args.trust, not args.no_prefetch)
                page = admin.get_json("experiments", {"task_id": task_id, "limit": 500})
        finally:
            coordinator.terminate()
            coordinator.wait(timeout=30)
    m = measure(page["experiments"], spec.budget_s)
    machine = f"{platform.machine()}, {cpu_count()} cores, Python {platform.python_version()}"
    setup = f"{spec.name} ({spec.budget_s:g} s), {args.trust}"
    setup += ", no prefetch" if args.no_prefetch else ""
    print(
        "| date | machine | task, trust | n | cycle s | outside budget s "
        "| of which run startup s | of which after run s | duty |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {datetime.date.today()} | {machine} | {setup} | {m['n']:.0f} | {m['cycle_s']:.2f} "
        f"| {m['outside_s']:.2f} | {m['run_extra_s']:.2f} | {m['after_run_s']:.2f} "
        f"| {m['duty']:.1%} |"
    )
    steps = [int(found.group(1)) for found in map(STEPS.search, logs(page["experiments"])) if found]
    if steps:  # what the time inside the budget bought: a tax taken from training shows here
        print(f"\nnum_steps per run: {', '.join(map(str, steps))}")


if __name__ == "__main__":
    main()
