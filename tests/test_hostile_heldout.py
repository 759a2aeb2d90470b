"""Held-out data a run cannot recompute, through a real coordinator and a real sandboxed
worker: the coordinator makes each task's held-out secret at registration and hands it
with leases only; the worker's prepare step alone gets it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from autoswarm.cli.local import local_heldout_secret
from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import SandboxUnavailable
from autoswarm.shared.task import hash_files, load_task, read_task_files
from autoswarm.worker.bwrap import make_sandbox
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Unsandboxed
from tests.conftest import RunningCoordinator, wait_until
from tests.test_hostile import HOSTILE
from tests.worker_helpers import WorkerFactory, list_experiments, register_task

SHARPE = Path(__file__).parents[1] / "tasks" / "sharpe"
HONEST_SHARPE_BOUND = 3.0  # strategy.py as shipped scores ~0.3; knowing the days gave 38


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(tmp_path / "workers")
    yield factory
    factory.stop_all()


def rebuilding_task(root: Path) -> Path:
    """sharpe whose strategy is tests/hostile/rebuild_heldout.py, with the public make_data."""
    task = root / "sharpe"
    shutil.copytree(SHARPE, task)
    shutil.copyfile(HOSTILE / "rebuild_heldout.py", task / "strategy.py")
    shutil.copyfile(SHARPE / "make_data.py", task / "public_make_data.py")
    toml = (task / "task.toml").read_text()
    editable = 'editable = ["strategy.py"]'
    assert editable in toml
    toml = toml.replace(editable, 'editable = ["strategy.py", "public_make_data.py"]')
    (task / "task.toml").write_text(toml)
    return task


def rebuild_heldout(task: Path, out: Path) -> np.ndarray:
    """The held-out days as the repository's make_data.py makes them, every seed as written."""
    code = (
        "import sys, numpy, public_make_data as m; "
        "numpy.save(sys.argv[1], m.generate()[:, m.HISTORY_DAYS:])"
    )
    subprocess.run([sys.executable, "-c", code, str(out)], cwd=task, check=True, timeout=60)
    rebuilt: np.ndarray = np.load(out)
    return rebuilt


def finished_experiment(coordinator: RunningCoordinator, task_id: str) -> dict[str, object]:
    """The task's first experiment, once a worker has reported it."""
    found: list[dict[str, object]] = []

    def reported() -> bool:
        found[:] = [e for e in list_experiments(coordinator, task_id=task_id) if e.get("result")]
        return bool(found)

    wait_until(reported, 120, f"a result for {task_id}")
    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as client:
        return dict(client.get_json(f"experiments/{found[0]['experiment_id']}"))


def read_api_bodies(coordinator: RunningCoordinator, task_id: str, bundle_hash: str) -> str:
    """Everything a read token gets from the read API about the task, concatenated."""
    token = coordinator.create_token("read", "reader")
    paths = [
        "/api/v1/tasks", f"/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id}/lineage",
        f"/api/v1/tasks/{task_id}/leaderboard", f"/api/v1/tasks/{task_id}/hypotheses",
        "/api/v1/experiments", "/api/v1/events", "/api/v1/workers",
        f"/api/v1/bundles/{bundle_hash}",
    ]  # fmt: skip
    bodies = []
    with coordinator.client(token) as http:
        for path in paths:
            answer = http.get(path)
            assert answer.status_code == 200, (path, answer.text)
            bodies.append(answer.text)
    return "\n".join(bodies)


@pytest.mark.sandbox
@pytest.mark.slow
def test_heldout_rebuilt_from_the_repository_is_not_what_the_worker_scores(
    coordinator: RunningCoordinator,
    workers: WorkerFactory,
    tmp_path: Path,
    redis_client: redis.Redis,
) -> None:
    """A strategy trading on held-out days rebuilt from make_data.py's seeds scores as an
    honest one; the secret is in neither the run's environment nor the read API."""
    try:
        make_sandbox("sandboxed")
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap absent: a volunteer's worker would refuse this work: {exc}")
    task = rebuilding_task(tmp_path)
    task_id = register_task(coordinator, task)
    token = coordinator.create_token("worker", "volunteer")
    worker = workers.start(coordinator, token, "w1", "--trust", "sandboxed")
    experiment = finished_experiment(coordinator, task_id)
    result = experiment["result"]
    assert isinstance(result, dict), experiment
    assert result["status"] == "ok", result
    assert abs(result["metric"]) < HONEST_SHARPE_BOUND, result["metric"]
    assert "env PATH=" in result["log_tail"]  # the payload did print its environment
    secret = str(redis_client.get(f"as:task:{task_id}:heldout-secret") or "")
    assert len(secret) == 64
    assert secret not in json.dumps(experiment)
    prepared = list((worker.state_dir / "cache" / "prepare").glob("*/heldout/future_returns.npy"))
    assert len(prepared) == 1
    rebuilt = rebuild_heldout(task, tmp_path / "rebuilt.npy")
    scored = np.load(prepared[0])
    assert scored.shape == rebuilt.shape
    assert not np.allclose(scored, rebuilt)
    bundle_hash = hash_files(read_task_files(task, load_task(task)))
    assert secret not in read_api_bodies(coordinator, task_id, bundle_hash)
    assert secret not in worker.log()


def test_a_new_secret_prepares_new_heldout_data_and_the_same_data_for_training(
    tmp_path: Path,
) -> None:
    """The prepare cache is keyed on the secret's hash: another secret, other held-out days;
    the same secret, the same folder; the history the run trains on never changes."""
    runner = Runner(
        work_root=tmp_path / "work", cache_root=tmp_path / "cache", sandbox=Unsandboxed()
    )
    spec = load_task(SHARPE)
    first = runner.preparer.prepare(SHARPE, spec, heldout_secret="a" * 64)
    again = runner.preparer.prepare(SHARPE, spec, heldout_secret="a" * 64)
    other = runner.preparer.prepare(SHARPE, spec, heldout_secret="b" * 64)
    assert first == again and first != other
    assert secret_free(first) and secret_free(other)
    history = [np.load(p / "data" / "history.npy") for p in (first, other)]
    assert np.array_equal(history[0], history[1])
    future = [np.load(p / "heldout" / "future_returns.npy") for p in (first, other)]
    assert not np.allclose(future[0], future[1])


def secret_free(prepared: Path) -> bool:
    """No file of a prepared folder holds the secrets used above."""
    return not any(
        b"a" * 64 in path.read_bytes() or b"b" * 64 in path.read_bytes()
        for path in prepared.rglob("*")
        if path.is_file()
    )


def test_task_run_keeps_one_owner_only_secret_per_task(tmp_path: Path) -> None:
    """`autoswarm task run`'s secret is made once per task, kept owner-only, and reused."""
    first = local_heldout_secret(tmp_path, "sharpe")
    assert local_heldout_secret(tmp_path, "sharpe") == first
    assert local_heldout_secret(tmp_path, "tinylm") != first
    assert (tmp_path / "heldout-secrets" / "sharpe").stat().st_mode & 0o777 == 0o600
