"""`make demo`'s promise: how soon `autoswarm up` keeps a replicated improvement on tinylm.

Runs `autoswarm up --task tasks/tinylm --max-experiments N` (as `make demo` does, in a
fresh data folder) as a subprocess, reads its hypotheses every five seconds, and records when each
hypothesis was judged and when the first was kept (its replicate agreed: the lineage moved).
Prints one markdown table row: the seconds from `up`'s start to the first kept change and
to the end, the head's baseline mean and spread, the kept change and its replicated score.
The machine must be otherwise idle: tinylm trains for a fixed wall-clock budget, so other
work on the same cores both slows it and widens the noise the judge has to beat.

    .venv/bin/python bench/demo_time.py            # as make demo: --max-experiments 3
    .venv/bin/python bench/demo_time.py --max-experiments 6 --workers 2
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.lifetime import die_with_parent
from autoswarm.shared.task import load_task
from autoswarm.worker.hardware import cpu_count

REPO = Path(__file__).resolve().parent.parent
POLL_S = 5.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", type=Path, default=REPO / "tasks" / "tinylm")
    parser.add_argument("--max-experiments", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None, help="default: up's own")
    parser.add_argument("--timeout-s", type=float, default=1200)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="autoswarm-demo-"))
    argv = [sys.executable, "-m", "autoswarm", "up", "--task", str(args.task),
            "--max-experiments", str(args.max_experiments), "--data-dir", str(folder / "data"),
            "--out", str(folder / "out")]  # fmt: skip
    if args.workers:
        argv += ["--workers", str(args.workers)]
    load = os.getloadavg()[0]
    started = time.monotonic()
    up = subprocess.Popen(
        argv,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "COLUMNS": "200", "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
        preexec_fn=die_with_parent(),
    )
    assert up.stdout is not None
    url = ""
    for line in up.stdout:
        found = re.search(r"http://127\.0\.0\.1:\d+", line)
        if found:
            url = found.group(0)
            break
    if not url:
        sys.exit(f"autoswarm up printed no URL; see {folder}")
    token = (folder / "data" / "admin.token").read_text().strip()
    name = load_task(args.task).name
    printed: list[str] = []  # drained as it comes, so `up` never blocks on a full pipe
    drain = threading.Thread(target=lambda: printed.extend(up.stdout or []), daemon=True)
    drain.start()
    first_kept: tuple[float, dict[str, Any]] | None = None
    board: dict[str, Any] = {"classes": []}
    workers = ""
    with CoordinatorClient(url, token) as client:
        while up.poll() is None and time.monotonic() - started < args.timeout_s:
            try:
                # One cheap read per poll: the run's noise is the judge's to beat, not ours.
                hypotheses = client.get_json(f"tasks/{name}/hypotheses")
                kept = [h for h in hypotheses if h.get("verdict") == "kept"]
                if kept and first_kept is None:
                    first_kept = (time.monotonic() - started, kept[0])
                    print(f"first kept at {first_kept[0]:.0f} s: {kept[0]['title']}", flush=True)
                    board = client.get_json(f"tasks/{name}/leaderboard")
                    workers = str(len(client.get_json("workers")))
            except Exception as exc:  # the coordinator stops at the end: the loop ends too
                print(f"poll: {exc}", file=sys.stderr)
            time.sleep(POLL_S)
    up.wait()
    drain.join(10)
    rest = "".join(printed)
    total = time.monotonic() - started
    if first_kept is None:
        print(rest[-3000:])
        sys.exit(f"no change was kept in {total:.0f} s (exit {up.returncode}); see {folder}")
    head = heads_row(board)
    today = datetime.date.today().isoformat()
    machine = f"{platform.machine()}, {cpu_count()} cores, load {load:.1f} at start"
    print("| date | machine | workers | max experiments | first kept s | total s | kept | head |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    print(
        f"| {today} | {machine} | {workers} | {args.max_experiments} | {first_kept[0]:.0f} "
        f"| {total:.0f} | {first_kept[1]['title']} | {head} |"
    )


def heads_row(board: dict[str, Any]) -> str:
    """The head per hardware class in one cell: its baselines' mean ± spread, and the chain
    of kept changes with the replicated score of each."""
    cells = []
    for cls in board["classes"]:
        chain = ", ".join(
            f"{c['title']} {c['metric']:.4f}" for c in cls["chain"][1:] if c["metric"] is not None
        )
        spread = "?" if cls["std"] is None else f"{cls['std']:.4f}"
        mean = "?" if cls["mean"] is None else f"{cls['mean']:.4f}"
        cells.append(f"{cls['hardware']}: head {mean} ± {spread} (n={cls['runs']}); {chain}")
    return "; ".join(cells) or "—"


if __name__ == "__main__":
    main()
