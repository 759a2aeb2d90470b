"""Hostile payloads (tests/hostile/) run through the real runner inside the real sandbox.

Each test runs one evil `train.py` with `worker.runner.Runner` and `BwrapSandbox` (chosen by
`make_sandbox("sandboxed")`, as the worker chooses it) and asserts containment three ways:
the payload saw nothing (no `LEAK` line, no secret in its log), the recorded result is the
trusted one (`ok` with the evaluator's score, or `invalid`/`crash`/`timeout`), and the host
is unchanged (task folder and worker files intact, no surviving process, no canary file).

Without bubblewrap (or with AUTOSWARM_BWRAP naming a missing binary) each test checks that
the worker refuses untrusted work with an explanation, then skips naming that refusal.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.errors import SandboxUnavailable
from shared.models import Result, ResultStatus
from shared.task import load_task
from worker.bwrap import INSTALL_HINT, default_max_processes, make_sandbox
from worker.process import list_processes
from worker.runner import Runner
from worker.sandbox import Sandbox

pytestmark = pytest.mark.sandbox

HOSTILE = Path(__file__).parent / "hostile"
TINYLM = Path(__file__).parents[1] / "tasks" / "tinylm"
SURVIVOR_MARK = b"hostile-survivor-"
SUMMARY_TOML = """
[task]
name = "hostile"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = {budget_s}

[run]
startup_s = 3
grace_s = 1

[resources]
memory_mb = 512
disk_mb = 32
"""


@pytest.fixture(scope="module")
def sandbox() -> Sandbox | SandboxUnavailable:
    """The sandbox the worker would use here, or its refusal."""
    try:
        return make_sandbox("sandboxed")
    except SandboxUnavailable as exc:
        return exc


@pytest.fixture(scope="module")
def model_archives(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """The evaluator-mode payloads' model archives (build_models.py), built on first use."""
    built: list[Path] = []

    def archive(name: str) -> Path:
        if not built:
            out = tmp_path_factory.mktemp("models")
            subprocess.run(
                [sys.executable, str(HOSTILE / "build_models.py"), str(out), str(TINYLM)],
                check=True,
                capture_output=True,
                timeout=240,
            )
            built.append(out)
        return built[0] / name

    return archive


@dataclass
class Worker:
    """A worker's world in a temp folder: its HOME, token, ssh key and secrets in its env."""

    home: Path
    state: Path
    token: str
    env_secret: str
    ssh_key: str
    listener: socket.socket
    unix_name: str

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.token, self.env_secret, self.ssh_key)


@pytest.fixture
def worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Worker]:
    """HOME with ~/.autoswarm/worker/token and ~/.ssh/id_rsa; secrets in the environment."""
    home = tmp_path / "home"
    state = home / ".autoswarm" / "worker"
    state.mkdir(parents=True)
    token = f"tok-{uuid.uuid4().hex}"
    (state / "token").write_text(token)
    (state / "token").chmod(0o600)
    (home / ".ssh").mkdir()
    ssh_key = f"-----BEGIN OPENSSH PRIVATE KEY----- {uuid.uuid4().hex}"
    (home / ".ssh" / "id_rsa").write_text(ssh_key)
    env_secret = f"aws-{uuid.uuid4().hex}"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("AUTOSWARM_TOKEN", token)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", env_secret)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    unix_name = f"autoswarm-hostile-{uuid.uuid4().hex[:8]}"
    unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    unix.bind("\0" + unix_name)
    unix.listen()
    unix.setblocking(False)
    yield Worker(home, state, token, env_secret, ssh_key, listener, unix_name)
    listener.close()
    unix.close()


@dataclass
class Outcome:
    """What one hostile run left behind."""

    result: Result
    log: str
    exp_dir: Path
    task_dir: Path


def tree_hashes(root: Path, skip: tuple[Path, ...] = ()) -> dict[str, str]:
    """sha256 of every regular file under `root`, outside `skip`."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path.is_relative_to(s) for s in skip) or not path.is_file() or path.is_symlink():
            continue
        found[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def survivors(marker: str) -> list[int]:
    """Live processes whose command line names a survivor or whose environment has `marker`."""
    found = []
    for pid in list_processes():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if SURVIVOR_MARK in cmdline or marker.encode() in environ:
            found.append(pid)
    return found


RunPayload = Callable[..., Outcome]


@pytest.fixture
def run_payload(
    tmp_path: Path,
    worker: Worker,
    sandbox: Sandbox | SandboxUnavailable,
    model_archives: Callable[[str], Path],
) -> RunPayload:
    """Run a hostile payload as train.py of a task; check the host is unchanged afterwards."""

    def run(
        payload: str,
        *,
        task_files: Path = HOSTILE,
        toml: str | None = None,
        budget_s: float = 2,
        model: str | None = None,
    ) -> Outcome:
        if isinstance(sandbox, SandboxUnavailable):
            message = str(sandbox)
            assert "refusing untrusted code" in message and "To fix:" in message
            if os.environ.get("AUTOSWARM_BWRAP"):
                assert INSTALL_HINT in message
            pytest.skip(f"bubblewrap absent: the worker refused untrusted work: {message}")
        task = tmp_path / "task"
        task.mkdir()
        names = ["prepare.py"] if task_files == HOSTILE else os.listdir(task_files)
        for name in names:
            if name != "train.py" and (task_files / name).is_file():
                shutil.copyfile(task_files / name, task / name)
        if toml is not None:
            (task / "task.toml").write_text(toml.format(budget_s=budget_s))
        shutil.copyfile(HOSTILE / payload, task / "train.py")
        if model is not None:  # the archive it hands in, as a second editable file
            shutil.copyfile(model_archives(model), task / "model_in.pt2")
            text = (task / "task.toml").read_text()
            editable = 'editable = ["train.py"]'
            assert editable in text
            (task / "task.toml").write_text(
                text.replace(editable, 'editable = ["train.py", "model_in.pt2"]')
            )
        spec = load_task(task)
        marker = f"hostile-run-{uuid.uuid4().hex}"
        runner = Runner(
            work_root=worker.state / "work",
            cache_root=worker.state / "cache",
            sandbox=sandbox,
            hardware="cpu:test",
            keep_work=True,
            env={
                "HOSTILE_MARK": marker,
                "HOSTILE_HOME": str(worker.home),
                "HOSTILE_TASK_DIR": str(task),
                "HOSTILE_PORT": str(worker.listener.getsockname()[1]),
                "HOSTILE_UNIX": worker.unix_name,
            },
        )
        runner.prepare(task, spec)  # the prepared data/ and heldout/ must not change either
        task_before = tree_hashes(task)
        home_before = tree_hashes(worker.home, skip=(worker.state / "work",))
        result = runner.run(task, spec, budget_s=budget_s)
        assert runner.last_experiment_dir is not None
        exp_dir = runner.last_experiment_dir
        log = result.log_tail
        assert "LEAK" not in log, log
        assert "PWNED" not in log
        for secret in worker.secrets:
            assert secret not in log
        assert tree_hashes(task) == task_before
        assert tree_hashes(worker.home, skip=(worker.state / "work",)) == home_before
        assert survivors(marker) == []
        assert not list(tmp_path.rglob("pwned-canary*"))
        with pytest.raises(BlockingIOError):
            worker.listener.accept()
        return Outcome(result, log, exp_dir, task)

    return run


# ---- summary mode: the machine and the worker's secrets ----------------------------------


def test_network_is_unreachable(run_payload: RunPayload) -> None:
    """Internet, DNS, a host loopback listener and a host abstract socket all fail."""
    out = run_payload("net.py", toml=SUMMARY_TOML)
    assert out.log.count("blocked") == 6
    assert out.result.status is ResultStatus.OK


def test_worker_token_and_ssh_key_are_invisible(run_payload: RunPayload) -> None:
    """The token and ~/.ssh are unreadable by relative guesses, ~ and absolute paths."""
    out = run_payload("steal_secrets.py", toml=SUMMARY_TOML)
    assert "blocked ../../../token" in out.log
    assert "blocked ~/.ssh/id_rsa" in out.log


def test_secrets_in_environments_are_invisible(run_payload: RunPayload, worker: Worker) -> None:
    """No secret of the worker's environment shows in the run's own or /proc/*/environ."""
    out = run_payload("steal_secrets.py", toml=SUMMARY_TOML)
    assert "environ of pid 1:" in out.log or "blocked /proc/1/environ" in out.log
    assert worker.env_secret not in out.log


def test_run_sees_only_its_own_processes(run_payload: RunPayload) -> None:
    """/proc inside lists only the sandbox's processes, never the host's."""
    out = run_payload("steal_secrets.py", toml=SUMMARY_TOML)
    visible = out.log.split("processes visible:", 1)[1].splitlines()[0]
    assert str(os.getpid()) not in visible.replace(",", " ").split()
    assert len(visible.split(",")) <= 3


def test_protected_file_cannot_be_changed(run_payload: RunPayload) -> None:
    """Appending, chmod, removing, renaming or replacing prepare.py all fail."""
    out = run_payload("protected.py", toml=SUMMARY_TOML)
    assert out.log.count("blocked") == 7
    work_copy = out.exp_dir / "work" / "prepare.py"
    assert work_copy.read_bytes() == (HOSTILE / "prepare.py").read_bytes()


def test_one_huge_file_stops_at_the_disk_cap(run_payload: RunPayload) -> None:
    """Writing one file without end stops at the task's disk_mb (file size or folder cap)."""
    out = run_payload("disk_one_file.py", toml=SUMMARY_TOML)
    by_file_cap = "blocked one file at 32 MB" in out.log
    assert by_file_cap or "over its disk cap of 32 MB" in out.log


def test_many_files_stop_at_the_folder_disk_cap(run_payload: RunPayload) -> None:
    """Many files each under the file-size cap are stopped by the work folder's disk cap."""
    out = run_payload("disk_many_files.py", toml=SUMMARY_TOML)
    assert "over its disk cap of 32 MB" in out.log
    assert out.result.status is ResultStatus.CRASH


def test_fork_bomb_stops_at_the_process_cap(run_payload: RunPayload) -> None:
    """Forks fail once the process cap is reached; the tree is killed; nothing survives."""
    roomy = SUMMARY_TOML.replace("memory_mb = 512", "memory_mb = 16384")  # so NPROC stops it
    out = run_payload("fork_bomb.py", toml=roomy)
    count = int(out.log.split("blocked fork at ", 1)[1].split()[0])
    # the cap is max_processes beyond the tasks the sandbox's host user had at launch (a
    # previous test's sandbox may still be exiting): a little slack, never unbounded
    assert count <= default_max_processes() + 32
    assert out.result.status in (ResultStatus.TIMEOUT, ResultStatus.CRASH)


def test_unbounded_allocation_is_a_crash(run_payload: RunPayload) -> None:
    """Allocating without bound hits the memory cap and the run is a crash."""
    out = run_payload("memory.py", toml=SUMMARY_TOML)
    assert out.result.status is ResultStatus.CRASH
    assert "MemoryError" in out.log or "out of memory" in (out.result.error or "")


def test_detached_daemon_does_not_survive(run_payload: RunPayload) -> None:
    """A double-forked, setsid, SIGTERM-ignoring daemon is gone when the run returns."""
    out = run_payload("daemon.py", toml=SUMMARY_TOML)
    assert "started a daemon marked hostile-survivor-" in out.log
    assert out.result.status is ResultStatus.OK


def test_self_relaunching_process_does_not_survive(run_payload: RunPayload) -> None:
    """A process re-executing itself in new sessions is gone when the run returns."""
    out = run_payload("relaunch.py", toml=SUMMARY_TOML)
    assert "started a self-relaunching process" in out.log


# ---- evaluator mode: the score (the real tinylm evaluator) -------------------------------


def evaluator_metric(log: str) -> float:
    """The val_bpb the evaluator printed (its part of the log tail)."""
    part = log.split("==> evaluator <==", 1)[1]
    return float(part.split("val_bpb:", 1)[1].split()[0])


@pytest.mark.slow
def test_fake_summary_is_ignored_for_the_evaluators_score(run_payload: RunPayload) -> None:
    """A run printing `val_bpb: 0.1` is recorded with the evaluator's own score."""
    out = run_payload("fake_score.py", task_files=TINYLM, model="honest.pt2")
    assert out.result.status is ResultStatus.OK
    assert out.result.metric == evaluator_metric(out.log)
    assert out.result.metric is not None and out.result.metric > 1.0


@pytest.mark.slow
def test_lookahead_model_is_invalid(run_payload: RunPayload) -> None:
    """A model whose logits at t use byte t+1 fails the causality check: invalid, no score."""
    out = run_payload("lookahead.py", task_files=TINYLM, model="lookahead.pt2")
    assert out.result.status is ResultStatus.INVALID
    assert out.result.metric is None
    assert "not causal" in (out.result.error or "")


@pytest.mark.slow
def test_lookahead_model_dodging_the_cut_points_is_invalid(run_payload: RunPayload) -> None:
    """A model that peeks everywhere but at the old evaluator's fixed cut points is invalid too."""
    out = run_payload("lookahead_row_aware.py", task_files=TINYLM, model="lookahead_row_aware.pt2")
    assert out.result.status is ResultStatus.INVALID, out.result.metric
    assert out.result.metric is None
    assert "not causal" in (out.result.error or "")


@pytest.mark.slow
def test_model_returning_its_own_loss_is_invalid(run_payload: RunPayload) -> None:
    """A model that returns a made-up loss beside its logits is rejected: invalid, no score."""
    out = run_payload("made_up_loss.py", task_files=TINYLM, model="made_up_loss.pt2")
    assert out.result.status is ResultStatus.INVALID
    assert out.result.metric is None
    assert "return one tensor" in (out.result.error or "")


@pytest.mark.slow
def test_code_running_pickle_in_the_model_never_runs(run_payload: RunPayload) -> None:
    """A pickle inside the model archive is never unpickled: no canary, the model is scored."""
    out = run_payload("pickle_model.py", task_files=TINYLM, model="pickle_model.pt2")
    assert "code-running pickle" in out.log
    assert out.result.status is ResultStatus.OK  # the sample inputs are never read
    assert out.result.metric == evaluator_metric(out.log)


@pytest.mark.slow
def test_heldout_data_is_invisible_to_the_run(run_payload: RunPayload) -> None:
    """heldout/val.bin and the prepare step are nowhere in the run's file system."""
    out = run_payload("read_heldout.py", task_files=TINYLM)
    assert "data/ holds ['train.bin']" in out.log
    assert "searched the whole visible file system" in out.log


@pytest.mark.slow
def test_scoring_code_cannot_be_patched(run_payload: RunPayload) -> None:
    """prepare.py, site-packages and the evaluator's folder are unwritable; plants never run."""
    out = run_payload("monkeypatch_eval.py", task_files=TINYLM)
    assert "blocked patch prepare.py" in out.log
    assert "blocked plant sitecustomize" in out.log
    assert "planted" in out.log  # they never run: no PWNED, no canary (checked for all)


# ---- bubblewrap absent --------------------------------------------------------------------


def test_missing_bubblewrap_refuses_untrusted_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """With AUTOSWARM_BWRAP naming a missing binary, sandboxed trust refuses, naming the fix."""
    monkeypatch.setenv("AUTOSWARM_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable) as refused:
        make_sandbox("sandboxed")
    assert "bubblewrap is not installed" in str(refused.value)
    assert "apt-get install bubblewrap" in str(refused.value)
