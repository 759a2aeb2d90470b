"""A restart with many hardware classes: the reconcile at start hears SIGTERM and stops at
its next class, and the coordinator shuts down cleanly (bench/reconcile_restart.py measures
how its time grows with the classes)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from autoswarm.coordinator.heads import code_bytes
from autoswarm.coordinator.lineage import Lineage
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.store.base import FieldValue
from tests.conftest import REPO, CoordinatorFactory, upload, wait_until

CLASSES = 1000


def _classes_without_branches(redis_url: str, data_dir: Path, task_id: str, n: int) -> None:
    """N classes in Redis whose lineage branches are missing (a lineage folder restored
    from an older copy): the reconcile recreates each, one git call apiece."""
    settings = CoordinatorSettings(data_dir=data_dir, redis_url=redis_url, baseline_runs=2)
    store = Store(redis_url)
    try:
        task = store.get_task(task_id)
        assert task is not None
        files = Lineage(settings.lineage_dir, task_id).files_at(task.init_commit)
        head: dict[str, FieldValue] = {
            "commit": task.init_commit,
            "bundle_hash": task.bundle_hash,
            "code_bytes": code_bytes(files, task.spec),
            "experiment_id": "",
        }
        scheduler = Scheduler(store, settings)
        for i in range(n):
            hardware = f"cpu:restart-{i:05d}"
            ids = scheduler.heads.baseline_ids(task_id, hardware, task.init_commit)
            baseline = scheduler.heads.baseline_of(task_id, hardware, head)
            store.add_class(task_id, hardware, head, baseline, ids, now=time.time())
    finally:
        store.close()


def _branches(data_dir: Path, task_id: str) -> int:
    return len(Lineage(CoordinatorSettings(data_dir=data_dir).lineage_dir, task_id).branches())


def test_sigterm_during_a_long_reconcile_stops_the_coordinator_cleanly(
    coordinator_factory: CoordinatorFactory, task_dir: Path, redis_url: str
) -> None:
    """SIGTERM while the restart recreates 1,000 branches: the reconcile stops at its next
    class (saying so), the coordinator shuts down cleanly, and the next start does the rest."""
    running = coordinator_factory()
    with running.client() as admin:
        task_id = admin.post("/api/v1/tasks", json=upload(task_dir)).json()["task_id"]
    running.stop()
    _classes_without_branches(redis_url, running.data_dir, task_id, CLASSES)
    log_path = running.data_dir / "restart.log"
    env = {**os.environ, **running.env, "PYTHONPATH": str(REPO)}
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "autoswarm.coordinator"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: "is missing; recreating" in log_path.read_text(), 60, "the reconcile to start"
        )
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    text = log_path.read_text()
    assert process.returncode in (0, -signal.SIGTERM), text[-3000:]
    assert "reconcile: stopped at task" in text and "coordinator: stopped" in text, text[-3000:]
    assert "Traceback" not in text
    assert _branches(running.data_dir, task_id) < CLASSES + 1  # it did not go on to the end
    running.restart()  # the next start recreates the rest
    assert _branches(running.data_dir, task_id) == CLASSES + 1
