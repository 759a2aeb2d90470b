"""Restart reconcile: how its time grows with a task's hardware classes.

A tiny task is registered in a fresh data folder with its own redis-server (the embedded
one), then given N hardware classes the way the coordinator leaves them: a lineage branch
each at the task's first commit (one `git update-ref --stdin`), and a head with its
baselines queued in Redis (the store's own `add_class` script). Then the restart's
`reconcile` runs, as the coordinator's startup runs it, and is timed. Each N gets a fresh
folder. The setup is the same whatever the code under test, so the same script measures
the code before and after a change (PYTHONPATH picks the tree).

Target (issue 26): linear in the classes (3,000 classes take about 10x 300 classes), and
well within the shipped startupProbe's 120 s at thousands of classes.

    .venv/bin/python bench/reconcile_restart.py                       # 300 and 3,000
    .venv/bin/python bench/reconcile_restart.py --classes 30 100      # the old code: N^2
"""

from __future__ import annotations

import argparse
import json
import subprocess
import tempfile
import time
from pathlib import Path

from autoswarm.coordinator.heads import code_bytes
from autoswarm.coordinator.lineage import Lineage, branch_for
from autoswarm.coordinator.reconcile import reconcile
from autoswarm.coordinator.redis_server import EmbeddedRedis
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.coordinator.tasks import register_task

TASK_TOML = """\
[task]
name = "bench"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 5

[metric]
name = "score"
direction = "minimize"
"""


def _task_folder(root: Path) -> Path:
    folder = root / "task"
    folder.mkdir()
    (folder / "task.toml").write_text(TASK_TOML)
    (folder / "train.py").write_text("print('---')\nprint('score: 1.0')\n")
    (folder / "prepare.py").write_text("print('nothing to prepare')\n")
    return folder


def _add_classes(store: Store, settings: CoordinatorSettings, task_id: str, n: int) -> None:
    """N classes at the task's first commit: branches in git, heads and baselines in Redis."""
    task = store.get_task(task_id)
    assert task is not None
    lineage = Lineage(settings.lineage_dir, task_id)
    classes = [f"cpu:bench-{i:05d}" for i in range(n)]
    lines = "".join(f"create refs/heads/{branch_for(hw)} {task.init_commit}\n" for hw in classes)
    subprocess.run(
        ["git", f"--git-dir={lineage.path}", "update-ref", "--stdin"],
        input=lines.encode(),
        check=True,
    )
    files = lineage.files_at(task.init_commit)
    head: dict[str, FieldValue] = {
        "commit": task.init_commit,
        "bundle_hash": store.put_bundle(files),
        "code_bytes": code_bytes(files, task.spec),
        "experiment_id": "",
    }
    scheduler = Scheduler(store, settings)
    for hw in classes:
        ids = scheduler.heads.baseline_ids(task_id, hw, task.init_commit)
        baseline = scheduler.heads.baseline_of(task_id, hw, head)
        store.add_class(task_id, hw, head, baseline, ids, now=time.time())


def measure(n: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="bench-reconcile-") as tmp:
        root = Path(tmp)
        embedded = EmbeddedRedis(root / "redis", appendfsync="everysec")
        url = embedded.start()
        settings = CoordinatorSettings(data_dir=root / "data", redis_url=url, baseline_runs=2)
        store = Store(url)
        try:
            task = register_task(store, settings, _task_folder(root))
            start = time.perf_counter()
            _add_classes(store, settings, task.task_id, n)
            setup_s = time.perf_counter() - start
            start = time.perf_counter()
            reconcile(Scheduler(store, settings))
            reconcile_s = time.perf_counter() - start
        finally:
            store.close()
            embedded.stop()
    return {
        "classes": n,
        "setup_s": round(setup_s, 2),
        "reconcile_s": round(reconcile_s, 3),
        "per_class_ms": round(1000 * reconcile_s / n, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[300, 3000])
    args = parser.parse_args()
    rows = [measure(n) for n in args.classes]
    for row in rows:
        print(json.dumps(row))
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        print(
            json.dumps(
                {
                    "classes_ratio": last["classes"] / first["classes"],
                    "time_ratio": round(last["reconcile_s"] / first["reconcile_s"], 2),
                }
            )
        )


if __name__ == "__main__":
    main()
