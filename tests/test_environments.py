"""A karpathy/autoresearch checkout as it is: its own environment, prepare's home cache,
hub kernels warmed in prepare, AR's defaults; through `task run` and a sandboxed worker."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from autoswarm.cli.task_explain import explain_task
from autoswarm.shared.environment import kernel_repos, plan_environment
from autoswarm.shared.errors import SandboxUnavailable, TaskError
from autoswarm.shared.task import AR_GRACE_S, AR_STARTUP_S, Device, load_task, read_task_files
from autoswarm.worker.bwrap import make_sandbox
from autoswarm.worker.environments import describe_failure
from autoswarm.worker.prepare import PrepareError
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Unsandboxed
from tests.cli_helpers import invoke
from tests.conftest import RunningCoordinator
from tests.environment_helpers import KERNEL_REPO, NAME, make_ar_fixture
from tests.test_hostile_heldout import finished_experiment
from tests.worker_helpers import WorkerFactory, register_task

AR_TRAIN = b"""\
cap = torch.cuda.get_device_capability()
repo = "varunneal/flash-attention-3" if cap == (9, 0) else "kernels-community/flash-attn3"
fa3 = get_kernel(repo).flash_attn_interface
"""
WORKER_TOML = f"""\
[task]
name = "{NAME}"
budget_s = 5

[run]
command = ["uv", "run", "train.py"]
prepare = ["uv", "run", "prepare.py"]
kernels = ["{KERNEL_REPO}"]
startup_s = 20
grace_s = 2

[resources]
device = "cpu"
"""


@pytest.fixture
def host_port() -> Iterator[int]:
    """A TCP listener on the host's loopback: a run that reaches it has network."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """uv never reaches a network: what the lock names must come from its find-links."""
    monkeypatch.setenv("UV_OFFLINE", "1")


def sandboxed_or_skip() -> None:
    try:
        make_sandbox("sandboxed")
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")


def test_an_autoresearch_checkout_resolves_to_autoresearch_defaults(tmp_path: Path) -> None:
    """No task.toml, a locked project: CUDA, 300 s, killed past 600 s, its own environment,
    and the kernels its train.py loads at import."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent")
    spec = load_task(fixture.folder)
    assert spec.resources.device is Device.CUDA
    assert spec.budget_s == 300
    assert (spec.run.startup_s, spec.run.grace_s) == (AR_STARTUP_S, AR_GRACE_S)
    assert spec.budget_s + spec.run.startup_s + spec.run.grace_s == 600  # AR's program.md
    assert spec.run.kernels == (KERNEL_REPO,)
    assert spec.run.prepare == ("python", "prepare.py")
    assert kernel_repos(AR_TRAIN) == (
        "varunneal/flash-attention-3",
        "kernels-community/flash-attn3",
    )
    (fixture.folder / "uv.lock").unlink()
    assert load_task(fixture.folder).resources.device is Device.CPU  # not a locked project


def test_task_check_says_what_it_resolved_and_warns_about_missing_cuda(tmp_path: Path) -> None:
    """`task check` prints `environment: uv.lock (1 package)` and why; with no CUDA here it
    warns that the task needs it."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent")
    answer = invoke("task", "check", str(fixture.folder))
    assert answer.exit_code == 0, answer.output
    assert "environment: uv.lock (1 package)" in answer.stdout
    assert "uv sync --frozen" in answer.stdout
    assert "device: cuda" in answer.stdout and "karpathy/autoresearch" in answer.stdout
    explained = explain_task(fixture.folder, load_task(fixture.folder), has_cuda=lambda: False)
    assert any("needs an NVIDIA GPU" in warning for warning in explained.warnings)
    explained = explain_task(fixture.folder, load_task(fixture.folder), has_cuda=lambda: True)
    assert explained.warnings == []


def test_uv_run_in_a_command_means_the_script_in_the_tasks_environment(tmp_path: Path) -> None:
    """`uv run train.py` and `uv run python train.py` are `python train.py`; any other use
    of uv is refused with one line naming the field."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent", task_toml=WORKER_TOML)
    spec = load_task(fixture.folder)
    assert spec.run.command == ("python", "train.py")
    assert spec.run.prepare == ("python", "prepare.py")
    toml = WORKER_TOML.replace('["uv", "run", "train.py"]', '["uv", "run", "python", "train.py"]')
    (fixture.folder / "task.toml").write_text(toml)
    assert load_task(fixture.folder).run.command == ("python", "train.py")
    (fixture.folder / "task.toml").write_text(toml.replace('"run", "python"', '"pip", "install"'))
    with pytest.raises(TaskError, match=r"run\.command.*uv run \[python\] SCRIPT\.py"):
        load_task(fixture.folder)


def test_task_files_carry_the_environment_they_run_in(tmp_path: Path) -> None:
    """A registered task's files hold its pyproject.toml and uv.lock, so workers build the
    same environment."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent")
    files = read_task_files(fixture.folder, load_task(fixture.folder))
    assert files["uv.lock"] == (fixture.folder / "uv.lock").read_bytes()
    assert files["pyproject.toml"] == (fixture.folder / "pyproject.toml").read_bytes()


def test_an_autoresearch_shaped_task_runs_through_task_run(
    tmp_path: Path, host_port: int, offline: None
) -> None:
    """`task run` on the AR fixture, sandboxed: its package comes from its own environment,
    prepare's ~/.cache/arfix and the hub kernel are read, read-only; no network, no held-out."""
    sandboxed_or_skip()
    work = tmp_path / "local"
    heldout_glob = f"{work}/cache/prepare/*/heldout/*"
    fixture = make_ar_fixture(tmp_path, port=host_port, heldout_glob=heldout_glob)
    answer = invoke("task", "run", str(fixture.folder), "--budget", "5", "--trust", "sandboxed",
                    "--work-dir", str(work))  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert "val_bpb:          1.900000" in answer.stdout
    assert "cache_writable:   0" in answer.stdout
    assert "network_reached:  0" in answer.stdout
    assert "heldout_seen:     0" in answer.stdout
    assert len(list(work.glob("cache/prepare/*/heldout/answers.txt"))) == 1  # it was made
    venvs = list(work.glob("cache/envs/*/venv/lib/python*/site-packages/kernels"))
    assert len(venvs) == 1  # built once, in the worker's cache


def test_a_failed_environment_build_names_the_package_and_the_lock(
    tmp_path: Path, offline: None
) -> None:
    """A lock naming a wheel nobody has: one PrepareError naming the package and uv.lock;
    nothing half-built is kept."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent")
    lock = fixture.folder / "uv.lock"
    lock.write_text(lock.read_text().replace("0.0.1", "0.0.2"))
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=Unsandboxed())
    with pytest.raises(PrepareError) as raised:
        runner.preparer.prepare(fixture.folder, load_task(fixture.folder))
    message = str(raised.value)
    assert "package kernels" in message and "uv.lock" in message, message
    assert "\n" not in message
    assert list((tmp_path / "c" / "envs").glob("*/ready")) == []


def test_a_sandboxed_worker_runs_the_autoresearch_task_and_goes_on_past_a_broken_one(
    coordinator: RunningCoordinator, tmp_path: Path, host_port: int, offline: None
) -> None:
    """A real sandboxed worker builds the AR task's environment and runs it with no network
    and no held-out data in sight; a task whose lock cannot be built is reported as a crash
    naming the package, and the worker goes on."""
    sandboxed_or_skip()
    workers = WorkerFactory(tmp_path / "workers")
    state = tmp_path / "workers" / "w1" / "state"
    heldout_glob = f"{state}/cache/prepare/*/heldout/*"
    fixture = make_ar_fixture(
        tmp_path / "good", port=host_port, heldout_glob=heldout_glob, task_toml=WORKER_TOML
    )
    broken = make_ar_fixture(
        tmp_path / "broken",
        port=host_port,
        heldout_glob=heldout_glob,
        task_toml=WORKER_TOML.replace(f'name = "{NAME}"', 'name = "broken"'),
    )
    lock = broken.folder / "uv.lock"
    lock.write_text(lock.read_text().replace("0.0.1", "0.0.2"))
    broken_id = register_task(coordinator, broken.folder)
    task_id = register_task(coordinator, fixture.folder)
    token = coordinator.create_token("worker", "volunteer")
    try:
        workers.start(coordinator, token, "w1", "--trust", "sandboxed", state_dir=state)
        failed = finished_experiment(coordinator, broken_id)
        experiment = finished_experiment(coordinator, task_id)
    finally:
        workers.stop_all()
    failure = failed["result"]
    assert isinstance(failure, dict)
    assert failure["status"] == "crash" and "package kernels" in failure["error"], failure
    result = experiment["result"]
    assert isinstance(result, dict)
    assert result["status"] == "ok", json.dumps(result)[:3000]
    assert result["metric"] == pytest.approx(1.9)
    assert result["metrics"]["network_reached"] == 0
    assert result["metrics"]["heldout_seen"] == 0
    assert result["metrics"]["cache_writable"] == 0
    assert len(list(state.glob("cache/prepare/*/heldout/answers.txt"))) == 1


def test_a_requirements_task_builds_with_the_workers_uv_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """requirements.txt, no lock: built with `uv pip install -r`, from the find-links folder
    the worker's UV_* settings name; the run imports the package the worker lacks."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent", task_toml=WORKER_TOML)
    for name in ("pyproject.toml", "uv.lock"):
        (fixture.folder / name).unlink()
    (fixture.folder / "requirements.txt").write_text("kernels==0.0.1  # the hub's, faked\n")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(fixture.wheels))
    spec = load_task(fixture.folder)
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=Unsandboxed())
    result = runner.run(fixture.folder, spec, budget_s=5)
    assert result.status == "ok", result.log_tail
    assert result.metric == pytest.approx(1.9)
    assert (
        len(list((tmp_path / "c" / "envs").glob("*/venv/lib/python*/site-packages/kernels"))) == 1
    )


def test_a_failed_build_names_the_package_uv_failed_on_not_its_dependents() -> None:
    """uv's hint names the package that pulled the missing one in: the error names the
    missing one (AR offline: nvidia-cublas-cu12, not torch)."""
    plan = plan_environment(
        {
            "pyproject.toml": b"[project]\nname = 'x'\nversion = '0'\n",
            "uv.lock": b'[[package]]\nname = "torch"\n[[package]]\nname = "nvidia-cublas-cu12"\n',
        }
    )
    log = (
        "Resolved 2 packages\n"
        "error: Failed to download `nvidia-cublas-cu12==12.8.4.1`\n"
        "  cause: Network connectivity is disabled\n"
        "hint: `nvidia-cublas-cu12` was included because `torch` depends on it\n"
    )
    message = describe_failure(plan, "uv.lock", log, timed_out=False)
    assert message.startswith("environment from uv.lock could not be built: package nvidia-cublas")


def test_a_broken_lock_is_refused_by_name_when_the_task_loads(tmp_path: Path) -> None:
    """A uv.lock that is not TOML, has no pyproject.toml beside it or is a link: one
    TaskError naming uv.lock, at load (so at registration), never a traceback later."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent")
    lock = fixture.folder / "uv.lock"
    lock.write_text("[[package]\nname = ")
    with pytest.raises(TaskError, match=r"^uv\.lock: not valid TOML"):
        load_task(fixture.folder)
    lock.write_text('[[package]]\nname = "kernels"\n')
    (fixture.folder / "pyproject.toml").unlink()
    with pytest.raises(TaskError, match=r"^uv\.lock: found without pyproject\.toml"):
        load_task(fixture.folder)
    lock.unlink()
    lock.symlink_to("/etc/passwd")  # a link would carry a file of this machine out
    with pytest.raises(TaskError, match=r"^uv\.lock: is a symbolic link"):
        load_task(fixture.folder)


def test_environment_worker_keeps_the_workers_interpreter(tmp_path: Path) -> None:
    """`[run] environment = "worker"` beside a uv.lock: nothing is built, the task runs with
    the worker's interpreter (and so lacks the locked package)."""
    toml = WORKER_TOML.replace("[run]\n", '[run]\nenvironment = "worker"\n')
    toml = toml.replace(f'kernels = ["{KERNEL_REPO}"]\n', "")  # its fetch would need the package
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent", task_toml=toml)
    spec = load_task(fixture.folder)
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=Unsandboxed())
    result = runner.run(fixture.folder, spec, budget_s=5)
    assert result.status == "crash" and "No module named 'kernels'" in (result.error or "")
    assert not (tmp_path / "c" / "envs").exists()
