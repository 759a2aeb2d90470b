"""`autoswarm up` as a researcher runs it: a real subprocess with its coordinator, embedded
Redis, worker processes and the mutation proposer, on a task that runs in a moment."""

from __future__ import annotations

import os
import platform
import re
import signal
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autoswarm.cli.up import decisions_table, default_workers, share_cores
from autoswarm.shared.task import ResourceSpec, load_task
from autoswarm.worker.hardware import cpu_count, normalise
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.slow

TRAIN = """\
import random
X = 4.0  # the score is lowest at X = 1
print("---")
print(f"score: {abs(X - 1.0) + random.gauss(0, 0.001):.6f}")
"""


def up_argv(task: Path, data_dir: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "autoswarm", "up", "--task", str(task), "--workers", "2",
        "--trust", "trusted-code", "--data-dir", str(data_dir), "--out", str(out), *extra,
    ]  # fmt: skip


def run_up(task: Path, data_dir: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    """`autoswarm up` to its end, its output captured."""
    argv = up_argv(task, data_dir, out, *extra)
    return subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=240)


def judged_rows(rows: list[list[str]]) -> int:
    """results.tsv rows (header first) of explores and merges with a verdict."""
    kind, verdict = rows[0].index("kind"), rows[0].index("verdict")
    return sum(
        1 for r in rows[1:] if r[kind] in ("explore", "merge") and r[verdict] not in ("", "pending")
    )


def processes_under(folder: Path) -> list[int]:
    """Pids whose command line names `folder` (workers' state folders, Redis's config)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if str(folder) in cmdline and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


def test_up_runs_bounded_prints_the_lineage_and_leaves_nothing_running(
    tmp_path: Path, task_dir_factory: Callable[..., Path]
) -> None:
    task, data_dir, out = task_dir_factory("quick", TRAIN), tmp_path / "data", tmp_path / "out"
    done = run_up(task, data_dir, out, "--max-experiments", "2")
    assert done.returncode == 0, done.stdout + done.stderr
    token_file = data_dir / "admin.token"
    token = token_file.read_text().strip()
    assert f"admin token: {token}" in done.stdout
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert "/api/v1" in done.stdout
    assert "quick on cpu" in done.stdout  # the lineage, printed at the end
    # Then this run's hypotheses, each with the judge's reason.
    decisions = done.stdout.split("this run's hypotheses (2), and why each was decided so")
    assert len(decisions) == 2 and re.search(r"\(n=\d+, df=\d+\)", decisions[1]), done.stdout
    rows = [row.split("\t") for row in (out / "results.tsv").read_text().splitlines()]
    assert rows[0][0] == "commit" and len(rows) > 1
    # Two workers share the cores out: each is pinned to half, and its class says so.
    hardware = {row[rows[0].index("hardware")] for row in rows[1:]}
    assert hardware == {f"cpu:{normalise(platform.machine())}-{cpu_count() // 2}c"}
    assert "workers: 2" in done.stdout
    assert "local-0" in done.stdout and "local-1" in done.stdout  # the live view's workers
    assert processes_under(data_dir) == []
    # Again on the same data folder: it goes on, and counts only what it judges itself.
    again = run_up(task, data_dir, out, "--max-experiments", "2")
    assert again.returncode == 0, again.stdout + again.stderr
    more = [row.split("\t") for row in (out / "results.tsv").read_text().splitlines()]
    # Its two proposals: one is run and judged; the other may repeat code explored before,
    # judged a duplicate at once with no run of its own (no row).
    assert judged_rows(more) > judged_rows(rows), "the second run judged hypotheses of its own"
    assert "this run's hypotheses (2)" in again.stdout  # its own, not the first run's too
    assert again.stdout.count("local-0") == 1, again.stdout  # its workers, not the first's too
    assert processes_under(data_dir) == []


def test_the_closing_table_shows_this_runs_latest_decisions_oldest_first() -> None:
    """Hypotheses as the API returns them (newest first): the earlier runs' are left out,
    and past the limit only the latest are shown, the title saying where the rest are."""
    hypotheses = [
        {"hypothesis_id": f"h{n}", "seq": n, "title": f"X -> {n}", "verdict": "discarded",
         "delta": 0.5, "reason": f"why {n}"}
        for n in range(30, 0, -1)
    ]  # fmt: skip
    table = decisions_table(hypotheses, earlier={"h1", "h2"}, limit=5)
    assert table is not None and table.row_count == 5
    assert "(28)" in str(table.title) and "the latest 5" in str(table.title)
    titles = [str(cell) for cell in table.columns[0].cells]
    assert titles == [f"X -> {n}" for n in range(26, 31)]
    assert list(table.columns[2].cells) == ["+0.5"] * 5
    small = decisions_table(hypotheses[-4:], earlier={"h1"})
    assert small is not None
    assert [str(cell) for cell in small.columns[0].cells] == ["X -> 2", "X -> 3", "X -> 4"]
    assert "latest" not in str(small.title)
    assert decisions_table(hypotheses[-2:], earlier={"h1", "h2"}) is None


def test_workers_default_to_one_per_cpus_of_the_task_each_on_its_own_cores() -> None:
    tinylm = load_task(REPO / "tasks" / "tinylm")
    assert tinylm.resources.cpus == 2
    assert default_workers(tinylm) == max(1, cpu_count() // 2)
    assert default_workers(tinylm.model_copy(update={"resources": ResourceSpec()})) == 1
    shares = share_cores(2, None)
    if cpu_count() >= 2:
        assert all(shares) and not set(shares[0]) & set(shares[1])
        assert len(shares[0]) == len(shares[1]) == cpu_count() // 2
    assert share_cores(cpu_count() + 1, None) == [[]] * (cpu_count() + 1)  # too few cores


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_killing_up_stops_its_workers_and_redis(
    tmp_path: Path, task_dir_factory: Callable[..., Path]
) -> None:
    task, data_dir, out = task_dir_factory("quick", TRAIN), tmp_path / "data", tmp_path / "out"
    up = subprocess.Popen(
        up_argv(task, data_dir, out),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        # two workers and Redis name the data folder in their command lines
        wait_until(lambda: len(processes_under(data_dir)) >= 3, 120, "up's workers and Redis")
        up.send_signal(signal.SIGKILL)
        up.wait(10)
        wait_until(lambda: processes_under(data_dir) == [], 60, "up's children to exit")
    finally:
        if up.poll() is None:
            up.kill()
        for pid in processes_under(data_dir):
            os.kill(pid, signal.SIGKILL)


NO_CONSTANTS = """\
import random
print("---")
print(f"score: {1.0 + random.gauss(0, 0.001):.6f}")
"""


def test_up_without_a_limit_stops_once_the_proposer_has_nothing_new(
    tmp_path: Path, task_dir_factory: Callable[..., Path]
) -> None:
    """No constant to move: the mutation proposer is spent at once; once the baselines are
    judged `up` says so in one line and stops by itself, with its summary."""
    task = task_dir_factory("fixed", NO_CONSTANTS)
    done = run_up(task, tmp_path / "data", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    said = [line for line in done.stdout.splitlines() if "every experiment is judged" in line]
    assert len(said) == 1 and "nothing new to propose" in said[0], done.stdout
    assert "hypothesis add" in said[0]
    assert "fixed on cpu" in done.stdout  # the closing summary: the lineage
    assert processes_under(tmp_path / "data") == []
