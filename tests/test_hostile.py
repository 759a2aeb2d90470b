"""Hostile payloads (tests/hostile/) run through the real runner inside the real sandbox.

Each test runs one evil `train.py` with `autoswarm.worker.runner.Runner` and `BwrapSandbox` (chosen
by `make_sandbox("sandboxed")`, as the worker chooses it) and asserts containment three ways:
the payload saw nothing (no `LEAK` line, no secret in its log), the recorded result is the
trusted one (`ok` with the evaluator's score, or `invalid`/`crash`/`timeout`), and the host
is unchanged (task folder and worker files intact, no surviving process, no canary file).

Without bubblewrap (or with AUTOSWARM_BWRAP naming a missing binary) each test checks that
the worker refuses untrusted work with an explanation, then skips naming that refusal.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from autoswarm.shared.errors import SandboxUnavailable
from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.task import load_task
from autoswarm.worker.bwrap import INSTALL_HINT, default_max_processes, make_sandbox
from autoswarm.worker.process import list_processes
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Sandbox
from tests.cli_helpers import invoke
from tests.conftest import REPO, CoordinatorFactory, RunningCoordinator, wait_until
from tests.task_helpers import TaskFile, write_task
from tests.worker_helpers import WorkerFactory, list_experiments, register_task, wait_for_state

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
# The run's out/ goes to an evaluator that lists what it was handed (list_artifacts.py).
ARTIFACTS_TOML = (
    SUMMARY_TOML
    + """
[scoring]
mode = "evaluator"
command = ["python", "list_artifacts.py"]
files = ["list_artifacts.py"]
timeout_s = 30
"""
)
# A protected file in a subfolder, whose folder the run can rename.
PROTECTED_LIB_TOML = SUMMARY_TOML.replace(
    'protected = ["prepare.py"]', 'protected = ["prepare.py", "lib/rules.py"]'
)
LIB_RULES = {"lib/rules.py": 'RULE = "the rules of the task"\n'}


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
    (home / ".ssh" / "id_rsa").chmod(0o600)
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
    """sha256 and mode of every regular file under `root`, outside `skip`."""
    found = {}
    for path in sorted(root.rglob("*")):
        if any(path.is_relative_to(s) for s in skip) or not path.is_file() or path.is_symlink():
            continue
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        found[str(path.relative_to(root))] = f"{digest} mode {path.stat().st_mode:o}"
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
        extra_files: Mapping[str, str] | None = None,
        keep_work: bool = True,
    ) -> Outcome:
        if isinstance(sandbox, SandboxUnavailable):
            message = str(sandbox)
            assert "refusing untrusted code" in message and "To fix:" in message
            if os.environ.get("AUTOSWARM_BWRAP"):
                assert INSTALL_HINT in message
            pytest.skip(f"bubblewrap absent: the worker refused untrusted work: {message}")
        names = ["prepare.py", "list_artifacts.py"] if task_files == HOSTILE else None
        files: dict[str, TaskFile] = {
            name: task_files / name
            for name in names or os.listdir(task_files)
            if name != "train.py" and (task_files / name).is_file()
        }
        files |= extra_files or {}
        if toml is not None:
            files["task.toml"] = toml.format(budget_s=budget_s)
        task = write_task(tmp_path / "task", {**files, "train.py": HOSTILE / payload})
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
            keep_work=keep_work,
            env={
                "HOSTILE_MARK": marker,
                "HOSTILE_HOME": str(worker.home),
                "HOSTILE_TASK_DIR": str(task),
                "HOSTILE_PORT": str(worker.listener.getsockname()[1]),
                "HOSTILE_UNIX": worker.unix_name,
            },
        )
        # The prepared data/ and heldout/ must not change either.
        runner.preparer.prepare(task, spec)
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


# ---- what a run leaves behind: out/, protected files, its folder (autoswarm.worker.leftovers)


def test_out_linked_to_the_volunteers_ssh_folder_is_invalid_and_changes_nothing(
    run_payload: RunPayload, worker: Worker
) -> None:
    """out/ -> ~/.ssh: invalid, nothing handed to the evaluator, the key's mode still 0600."""
    out = run_payload("out_to_ssh.py", toml=ARTIFACTS_TOML)
    assert out.result.status is ResultStatus.INVALID, out.log
    assert "out/ is not a folder" in (out.result.error or "")
    assert stat.S_IMODE((worker.home / ".ssh" / "id_rsa").stat().st_mode) == 0o600
    assert list((out.exp_dir / "eval" / "artifacts").iterdir()) == []


@pytest.mark.timeout(120)
def test_out_linked_to_proc_self_is_invalid_at_once(run_payload: RunPayload) -> None:
    """out/ -> /proc/self: invalid; the worker's own environ and cmdline are never copied."""
    out = run_payload("out_to_proc.py", toml=ARTIFACTS_TOML)
    assert out.result.status is ResultStatus.INVALID, out.log
    assert "out/ is not a folder" in (out.result.error or "")
    assert list((out.exp_dir / "eval" / "artifacts").iterdir()) == []


def test_links_fifos_and_sockets_in_out_never_reach_the_evaluator(run_payload: RunPayload) -> None:
    """Only out/'s regular file is handed over; links to the token and home, a FIFO, a socket
    are left out."""
    out = run_payload("out_special_files.py", toml=ARTIFACTS_TOML)
    assert out.result.status is ResultStatus.OK, out.log
    listed = [line.split()[1] for line in out.log.splitlines() if line.startswith("artifact ")]
    assert listed == ["deeper", "model.txt"]
    assert out.result.metric == 2.0  # one file


def test_more_artifacts_than_the_bound_is_invalid(run_payload: RunPayload) -> None:
    """10,001 empty files in out/ (free under the disk cap): invalid, saying the bound."""
    out = run_payload("out_too_many.py", toml=ARTIFACTS_TOML, budget_s=30)  # ends once written
    assert out.result.status is ResultStatus.INVALID, out.log
    assert "more than 10000 entries" in (out.result.error or "")


def test_sparse_artifacts_larger_than_the_disk_cap_are_invalid(run_payload: RunPayload) -> None:
    """1 GB of holes in out/ (nearly free on disk) is not copied: invalid, over 32 MB."""
    out = run_payload("out_sparse.py", toml=ARTIFACTS_TOML)
    assert out.result.status is ResultStatus.INVALID, out.log
    assert "more than 32 MB" in (out.result.error or "")


@pytest.mark.timeout(120)
def test_a_fifo_in_place_of_a_protected_file_is_invalid_without_waiting(
    run_payload: RunPayload,
) -> None:
    """lib/ renamed and lib/rules.py made a FIFO: the check never blocks on it; invalid."""
    out = run_payload("protected_fifo.py", toml=PROTECTED_LIB_TOML, extra_files=LIB_RULES)
    assert "lib/rules.py is now a FIFO" in out.log
    assert out.result.status is ResultStatus.INVALID
    assert "protected files changed during the run: lib/rules.py" in (out.result.error or "")


def test_a_link_back_to_the_original_protected_file_is_invalid(run_payload: RunPayload) -> None:
    """Trained under its own lib/rules.py, then linked to the task's: the link is a change."""
    out = run_payload("protected_relinked.py", toml=PROTECTED_LIB_TOML, extra_files=LIB_RULES)
    assert "trained under: the run wrote its own rules" in out.log
    assert out.result.status is ResultStatus.INVALID, out.result.metric
    assert "lib/rules.py" in (out.result.error or "")


def test_a_work_folder_of_locked_and_deep_folders_is_removed(run_payload: RunPayload) -> None:
    """Folders of mode 0000, 0300 and 0500 and a 3,000-deep tree: removed, the result kept."""
    out = run_payload("cleanup_maze.py", toml=SUMMARY_TOML, keep_work=False)
    assert "left locked folders" in out.log
    assert out.result.status is ResultStatus.OK, out.result.error
    assert not out.exp_dir.exists()


# The runner as a worker runs it, alone in a process (to run without root's powers).
RUN_ONCE = """
import sys
from pathlib import Path
from autoswarm.shared.task import load_task
from autoswarm.worker.bwrap import BwrapSandbox
from autoswarm.worker.runner import Runner
task, root = Path(sys.argv[1]), Path(sys.argv[2])
runner = Runner(work_root=root / "work", cache_root=root / "cache", sandbox=BwrapSandbox())
result = runner.run(task, load_task(task))
print(f"result {result.status}: {result.error}")
"""


def test_a_worker_without_root_powers_removes_a_locked_work_folder(
    tmp_path: Path, sandbox: Sandbox | SandboxUnavailable
) -> None:
    """A worker that cannot override file modes (not root, or root without CAP_DAC_OVERRIDE)
    removes the locked, 3,000-deep work folder and returns the run's result."""
    if isinstance(sandbox, SandboxUnavailable):
        pytest.skip(f"bubblewrap absent: {sandbox}")
    task = write_task(
        tmp_path / "task",
        {
            "task.toml": SUMMARY_TOML.format(budget_s=2),
            "prepare.py": HOSTILE / "prepare.py",
            "train.py": HOSTILE / "cleanup_maze.py",
        },
    )
    root = tmp_path / "worker"
    argv = [sys.executable, "-c", RUN_ONCE, str(task), str(root)]
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("setpriv absent: cannot run as root without CAP_DAC_OVERRIDE")
        caps = "-dac_override,-dac_read_search"
        argv = ["setpriv", "--bounding-set", caps, "--inh-caps", caps, *argv]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    # The maze's locked folders may stop the run first (the disk cap cannot read them): either
    # way the run's result comes back, and its folder is gone.
    ended = "result ok: None" in done.stdout or "the disk cap cannot read" in done.stdout
    assert ended, done.stdout + done.stderr
    assert list((root / "work").iterdir()) == []


# ---- the operator's terminal ----------------------------------------------------------------


def test_task_run_prints_a_runs_escapes_and_markup_as_plain_text(
    tmp_path: Path, sandbox: Sandbox | SandboxUnavailable
) -> None:
    """`autoswarm task run`: no escape sequence of the run's reaches the terminal; its markup
    shows as typed."""
    if isinstance(sandbox, SandboxUnavailable):
        pytest.skip(f"bubblewrap absent: {sandbox}")
    task = write_task(
        tmp_path / "task",
        {
            "task.toml": SUMMARY_TOML.format(budget_s=2),
            "prepare.py": HOSTILE / "prepare.py",
            "train.py": HOSTILE / "terminal_escapes.py",
        },
    )
    answer = invoke("task", "run", str(task), "--trust", "sandboxed", "--work-dir", str(tmp_path))
    assert answer.exit_code == 1, answer.output
    assert "fake-error" in answer.output and "markup" in answer.output, answer.output
    assert "\x1b" not in answer.output and "\x07" not in answer.output
    assert "\r" not in answer.output and "\x08" not in answer.output
    assert "[red]fake-error[/red]" in answer.output
    assert "[blink]markup[/blink]" in answer.output


# ---- through a real worker and coordinator -------------------------------------------------


def hostile_task(root: Path, payload: str, toml: str) -> Path:
    """A task folder whose train.py is `payload`, with the hostile tasks' other files."""
    files = {name: HOSTILE / name for name in ("prepare.py", "list_artifacts.py")}
    return write_task(
        root / "task",
        {"task.toml": toml.format(budget_s=2), **files, "train.py": HOSTILE / payload},
    )


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(tmp_path / "workers")
    yield factory
    factory.stop_all()


def only_experiment(coordinator: RunningCoordinator, task_id: str, states: tuple[str, ...]) -> Any:
    """The task's one experiment (its baseline, queued once a worker asks), once it is in one
    of `states`."""
    found: list[dict[str, Any]] = []
    wait_until(lambda: bool(found.extend(list_experiments(coordinator, task_id=task_id)) or found))
    assert len(found) == 1, found
    return wait_for_state(coordinator, found[0]["experiment_id"], states, timeout_s=120)


def test_a_worker_scores_out_linked_to_its_state_folder_invalid_and_never_hands_it_back(
    tmp_path: Path,
    coordinator_factory: CoordinatorFactory,
    workers: WorkerFactory,
    sandbox: Sandbox | SandboxUnavailable,
) -> None:
    """A real worker: out/ -> its state folder is `invalid`, reported with an attempt counted
    per run (dead after max_attempts, never handed back), its token file's mode unchanged."""
    if isinstance(sandbox, SandboxUnavailable):
        pytest.skip(f"bubblewrap absent: {sandbox}")
    coordinator = coordinator_factory(max_attempts=2, baseline_runs=1)
    task_id = register_task(
        coordinator, hostile_task(tmp_path, "out_to_worker_state.py", ARTIFACTS_TOML)
    )
    state = tmp_path / "workers" / "w" / "state"
    state.mkdir(parents=True)
    secret = f"tok-{uuid.uuid4().hex}"
    (state / "token").write_text(secret)
    (state / "token").chmod(0o600)
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w",
                           "--trust", "sandboxed", state_dir=state)  # fmt: skip
    record = only_experiment(coordinator, task_id, ("dead",))
    assert record["attempts"] == 2
    assert record["result"]["status"] == "invalid"
    assert "out/ is not a folder" in record["result"]["error"]
    assert secret not in json.dumps(record)
    assert stat.S_IMODE((state / "token").stat().st_mode) == 0o600
    assert worker.log().count(f"experiment {record['experiment_id']} reported") == 2
    assert "failed in the worker" not in worker.log()


def test_an_experiment_that_fails_in_the_worker_is_reported_the_second_time(
    tmp_path: Path,
    coordinator_factory: CoordinatorFactory,
    workers: WorkerFactory,
    sandbox: Sandbox | SandboxUnavailable,
) -> None:
    """A fault of the worker's before the run (an editable file named out, where the run's
    out/ folder goes): handed back once, then reported `invalid` until dead, never circling."""
    if isinstance(sandbox, SandboxUnavailable):
        pytest.skip(f"bubblewrap absent: {sandbox}")
    coordinator = coordinator_factory(max_attempts=2, baseline_runs=1)
    toml = SUMMARY_TOML.replace('editable = ["train.py"]', 'editable = ["train.py", "out"]')
    task = hostile_task(tmp_path, "net.py", toml)
    (task / "out").write_text("a file where the worker makes a folder\n")
    task_id = register_task(coordinator, task)
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w",
                           "--trust", "sandboxed")  # fmt: skip
    record = only_experiment(coordinator, task_id, ("dead",))
    assert record["attempts"] == 2
    assert "failed on this experiment twice" in record["result"]["error"]
    assert worker.log().count(f"experiment {record['experiment_id']} failed in the worker") == 3


def test_show_prints_a_runs_escapes_and_markup_as_plain_text(
    tmp_path: Path,
    coordinator_factory: CoordinatorFactory,
    workers: WorkerFactory,
    sandbox: Sandbox | SandboxUnavailable,
) -> None:
    """`autoswarm show` of a run that printed escape sequences and markup: none reaches the
    terminal; the markup shows as typed."""
    if isinstance(sandbox, SandboxUnavailable):
        pytest.skip(f"bubblewrap absent: {sandbox}")
    coordinator = coordinator_factory(max_attempts=1, baseline_runs=1)
    task_id = register_task(
        coordinator, hostile_task(tmp_path, "terminal_escapes.py", SUMMARY_TOML)
    )
    workers.start(coordinator, coordinator.create_token("worker", "w"), "w", "--trust", "sandboxed")
    record = only_experiment(coordinator, task_id, ("dead",))
    log_tail = record["result"]["log_tail"]  # the wire replaces control characters with U+FFFD
    assert "OWNED-title" in log_tail and "\x1b" not in log_tail and "\ufffd" in log_tail
    answer = invoke("show", record["experiment_id"], "--join", coordinator.base_url,
                    "--token", coordinator.admin_token)  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert "OWNED-title" in answer.output and "fake-error" in answer.output, answer.output
    for control in ("\x1b", "\x07", "\r", "\x08"):
        assert control not in answer.output
    assert "[red]fake-error[/red]" in answer.output
    assert "[blink]markup[/blink]" in answer.output


# ---- bubblewrap absent --------------------------------------------------------------------


def test_missing_bubblewrap_refuses_untrusted_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """With AUTOSWARM_BWRAP naming a missing binary, sandboxed trust refuses, naming the fix."""
    monkeypatch.setenv("AUTOSWARM_BWRAP", "/nonexistent/bwrap")
    with pytest.raises(SandboxUnavailable) as refused:
        make_sandbox("sandboxed")
    assert "bubblewrap is not installed" in str(refused.value)
    assert "apt-get install bubblewrap" in str(refused.value)
