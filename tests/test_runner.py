"""The experiment runner, its process tree, sandbox seam and hardware detection, run for real."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import stat
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest

from autoswarm.shared.errors import InvalidInput
from autoswarm.shared.models import ResultStatus
from autoswarm.shared.task import TaskSpec, load_task
from autoswarm.worker.hardware import GpuInfo, HardwareInfo, detect_hardware, select_gpus
from autoswarm.worker.preload import sets_environment
from autoswarm.worker.prepare import PrepareError
from autoswarm.worker.process import MARKER_ENV, read_stat
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Unsandboxed, scrub_env
from autoswarm.worker.scoring import LOADER_FILE
from tests.conftest import processes_in
from tests.task_helpers import TaskFile, write_task

PAYLOADS = Path(__file__).parent / "payloads"

BASE_TOML = """
[task]
name = "probe"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 1

[run]
startup_s = 1.0
grace_s = 0.2
"""

EVAL_TOML = """
[task]
name = "probe-eval"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 5

[run]
prepare = ["python", "prepare.py"]
startup_s = 1
grace_s = 1

[scoring]
mode = "evaluator"
command = ["python", "evaluate.py"]
files = ["evaluate.py"]
timeout_s = 10
"""

MakeTask = Callable[..., tuple[Path, TaskSpec]]


@pytest.fixture
def pid_dir(tmp_path: Path) -> Path:
    """Where payloads write the pids of the processes they start."""
    path = tmp_path / "pids"
    path.mkdir()
    return path


@pytest.fixture
def make_task(tmp_path: Path) -> MakeTask:
    """A task folder in tmp_path with a payload as train.py (and optional other payloads)."""

    def make(
        train: str,
        *,
        toml: str = BASE_TOML,
        prepare: str | None = None,
        evaluate: str | None = None,
        extra_toml: str = "",
    ) -> tuple[Path, TaskSpec]:
        files: dict[str, TaskFile] = {
            "train.py": PAYLOADS / train,
            "prepare.py": "MAX_SEQ_LEN = 8\n" if prepare is None else PAYLOADS / prepare,
            "task.toml": toml + extra_toml,
        }
        if evaluate is not None:
            files["evaluate.py"] = PAYLOADS / evaluate
        task = write_task(tmp_path / "task", files)
        return task, load_task(task)

    return make


@pytest.fixture
def make_runner(tmp_path: Path, pid_dir: Path) -> Callable[..., Runner]:
    """A runner without a sandbox, its folders in tmp_path, the pid folder in its env."""

    def make(*, env: Mapping[str, str] | None = None, keep_work: bool = False) -> Runner:
        return Runner(
            work_root=tmp_path / "work",
            cache_root=tmp_path / "cache",
            sandbox=Unsandboxed(),
            hardware="cpu:test",
            keep_work=keep_work,
            env={"PAYLOAD_PID_DIR": str(pid_dir), **(env or {})},
        )

    return make


def alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (dead, waiting to be reaped)."""
    found = read_stat(pid)
    return found is not None and not found.dead


def pids_written(pid_dir: Path) -> dict[str, int]:
    return {p.name: int(p.read_text()) for p in pid_dir.iterdir() if p.read_text().isdigit()}


def run_processes(under: Path) -> list[int]:
    """Live processes carrying a runner's marker whose working folder lies under `under`."""
    return processes_in(under, f"{MARKER_ENV}=".encode())


# ---- statuses ------------------------------------------------------------------------------


def test_good_run_is_ok_with_its_metric(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """A run that prints the summary block is `ok` with the metric, training and VRAM figures."""
    task, spec = make_task("good.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, result.error
    assert result.metric == pytest.approx(0.987654)
    assert result.metrics["training_seconds"] == pytest.approx(0.25)
    assert result.training_s == pytest.approx(0.25)
    assert result.peak_vram_mb == pytest.approx(12.5)
    assert result.exit_code == 0
    assert result.hardware == "cpu:test"
    assert "val_bpb:" in result.log_tail


def test_sleeper_past_budget_times_out(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path
) -> None:
    """A run that sleeps past budget + startup + grace is `timeout` and is dead afterwards."""
    task, spec = make_task("sleeper.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.TIMEOUT
    assert "deadline" in (result.error or "")
    assert "started" in result.log_tail
    assert not alive(pids_written(pid_dir)["sleeper"])


def test_grandchild_ignoring_sigterm_does_not_survive(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path, tmp_path: Path
) -> None:
    """A forked grandchild that ignores SIGTERM is killed with its parent at the deadline."""
    task, spec = make_task("fork_ignore_term.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.TIMEOUT
    pids = pids_written(pid_dir)
    assert set(pids) == {"child", "grandchild"}
    assert not [name for name, pid in pids.items() if alive(pid)]
    assert run_processes(tmp_path) == []


def test_setsid_daemon_does_not_survive(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path, tmp_path: Path
) -> None:
    """A double-forked `setsid` daemon left by a run that exits normally is killed."""
    task, spec = make_task("daemon.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK
    daemon = pids_written(pid_dir)["daemon"]
    assert not alive(daemon)
    assert run_processes(tmp_path) == []


def test_crash_reports_exit_code(make_task: MakeTask, make_runner: Callable[..., Runner]) -> None:
    """A non-zero exit is `crash` with the exit code in the result and its error."""
    task, spec = make_task("crash.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.CRASH
    assert result.exit_code == 3
    assert result.error is not None and "exit code 3" in result.error
    assert "about to fail" in result.log_tail


def test_death_by_signal_is_a_crash_naming_it(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """A run killed by a signal is `crash`, and the error names the signal."""
    task, spec = make_task("segfault.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.CRASH
    assert result.error is not None and "SIGSEGV" in result.error


def test_missing_metric_is_invalid(make_task: MakeTask, make_runner: Callable[..., Runner]) -> None:
    """A summary block without the metric is `invalid`, saying which metric is missing."""
    task, spec = make_task("no_metric.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.INVALID
    assert result.error is not None and "val_bpb" in result.error and "missing" in result.error


def test_nan_metric_is_invalid(make_task: MakeTask, make_runner: Callable[..., Runner]) -> None:
    """`val_bpb: nan` is `invalid`, not a score."""
    task, spec = make_task("nan_metric.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.INVALID
    assert result.metric is None
    assert result.error is not None and "NaN" in result.error


def test_memory_hog_on_cpu_task_is_a_crash(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """A CPU run that allocates far past `memory_mb` ends as `crash` (limit or tree RSS)."""
    task, spec = make_task("hog.py", extra_toml="\n[resources]\nmemory_mb = 256\n")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.CRASH


def test_peak_rss_is_measured(make_task: MakeTask, make_runner: Callable[..., Runner]) -> None:
    """A run holding 200 MB resident reports a peak RSS of at least that."""
    task, spec = make_task("rss.py", extra_toml="\n[resources]\nmemory_mb = 1024\n")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, result.error
    assert result.peak_rss_mb is not None and result.peak_rss_mb >= 200


def test_on_tick_reports_growing_elapsed_time(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """on_tick is called during a run with its elapsed seconds, in increasing order."""
    task, spec = make_task("sleeper.py")
    ticks: list[float] = []
    make_runner().run(task, spec, budget_s=1, on_tick=ticks.append)
    assert len(ticks) >= 2
    assert ticks == sorted(ticks) and ticks[0] >= 0


def test_on_tick_raising_abandons_the_run(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path
) -> None:
    """An exception from on_tick propagates, and the run's process is dead."""
    task, spec = make_task("sleeper.py")

    def lost_lease(elapsed_s: float) -> None:
        if (pid_dir / "sleeper").exists():
            raise RuntimeError("lease lost")

    with pytest.raises(RuntimeError, match="lease lost"):
        make_runner().run(task, spec, on_tick=lost_lease)
    assert not alive(pids_written(pid_dir)["sleeper"])


# ---- work folder and environment -------------------------------------------------------------


def test_environment_is_scrubbed(
    make_task: MakeTask, make_runner: Callable[..., Runner], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run sees no token or key of the worker, but its budget and out folder."""
    monkeypatch.setenv("AUTOSWARM_TOKEN", "t0ken")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    monkeypatch.setenv("HF_TOKEN", "hf-secret")
    task, spec = make_task("env_dump.py")
    result = make_runner(env={"GITHUB_TOKEN": "gh-secret"}).run(task, spec, budget_s=2.5)
    names = {line.split()[1] for line in result.log_tail.splitlines() if line.startswith("env ")}
    assert {"AUTOSWARM_TOKEN", "OPENAI_API_KEY", "HF_TOKEN", "GITHUB_TOKEN"}.isdisjoint(names)
    assert {"AUTOSWARM_BUDGET_S", "AUTOSWARM_OUT_DIR", "HOME", "PATH"} <= names
    assert "budget 2.5" in result.log_tail


def test_scrub_env_keeps_only_safe_names() -> None:
    """scrub_env passes allow-listed names, never secret-looking ones, and sets HOME."""
    env = {"PATH": "/bin", "AWS_SECRET_ACCESS_KEY": "x", "MY_VAR": "1", "DB_PASSWORD": "p"}
    out = scrub_env(env, home=Path("/w"), tmp_dir=Path("/w/.tmp"), allow=["MY_VAR", "DB_PASSWORD"])
    assert out["PATH"] == "/bin" and out["MY_VAR"] == "1"
    assert out["HOME"] == "/w" and out["TMPDIR"] == "/w/.tmp"
    assert "AWS_SECRET_ACCESS_KEY" not in out and "DB_PASSWORD" not in out


def test_work_folder_is_removed_after_the_run(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """Without keep_work, nothing of the experiment is left under work_root."""
    task, spec = make_task("good.py")
    runner = make_runner()
    runner.run(task, spec)
    assert runner.last_experiment_dir is not None
    assert not runner.last_experiment_dir.exists()


def test_kept_work_folder_has_protected_files_read_only(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """With keep_work the folder stays, its protected copy read-only and its editable one not."""
    task, spec = make_task("good.py")
    runner = make_runner(keep_work=True)
    runner.run(task, spec)
    assert runner.last_experiment_dir is not None
    work = runner.last_experiment_dir / "work"
    assert stat.S_IMODE((work / "prepare.py").stat().st_mode) == 0o444
    assert (work / "train.py").stat().st_mode & stat.S_IWUSR
    assert (work / "out").is_dir()


def test_protected_file_changed_in_task_folder_is_invalid(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """A run that rewrites the task folder's protected file is `invalid`, whatever it printed."""
    task, spec = make_task("tamper.py")
    runner = make_runner(env={"PAYLOAD_TAMPER_PATH": str(task / "prepare.py")})
    result = runner.run(task, spec)
    assert result.status is ResultStatus.INVALID
    assert result.error is not None and "prepare.py" in result.error


def test_protected_copy_changed_in_work_folder_is_invalid(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """A run that rewrites its own read-only copy of a protected file is `invalid`."""
    task, spec = make_task("tamper_copy.py")
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.INVALID
    assert result.error is not None and "prepare.py" in result.error


class EnvWrapper:
    """A real wrapper: runs the command under `env` with one more variable."""

    name = "env-wrapper"

    def wrap(
        self,
        argv: Sequence[str],
        *,
        work_dir: Path,
        readonly: Sequence[Path],
        writable: Sequence[Path],
        env: Mapping[str, str],
        carry: Sequence[Path] = (),
    ) -> list[str]:
        assert work_dir / "data" in readonly and work_dir / "prepare.py" in readonly
        assert work_dir in writable
        return ["/usr/bin/env", "WRAPPED_BY=env-wrapper", *argv]


def test_sandbox_wraps_the_command(tmp_path: Path, make_task: MakeTask) -> None:
    """The argv the sandbox returns is what runs, given the read-only data and protected files."""
    task, spec = make_task("env_dump.py")
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=EnvWrapper())
    result = runner.run(task, spec, budget_s=2)
    assert "env WRAPPED_BY" in result.log_tail


# ---- prepare ---------------------------------------------------------------------------------


def test_prepare_runs_once_per_task_version(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path
) -> None:
    """Two runs of one task version prepare once; changing the protected file prepares again."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate.py"
    )
    runner = make_runner()
    first = runner.preparer.prepare(task, spec)
    assert runner.preparer.prepare(task, spec) == first
    assert (first / "data" / "train.txt").is_file()
    assert (pid_dir / "prepare_runs").read_text().count("ran") == 1
    with open(task / "prepare.py", "a") as f:
        f.write("# a new task version\n")
    assert runner.preparer.prepare(task, spec) != first
    assert (pid_dir / "prepare_runs").read_text().count("ran") == 2


def test_concurrent_prepares_run_once(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path
) -> None:
    """Two runners preparing the same task version at once run the prepare step once."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate.py"
    )
    runners = [make_runner(env={"PAYLOAD_PREPARE_SLEEP_S": "0.5"}) for _ in range(2)]
    folders: list[Path] = []
    threads = [
        threading.Thread(target=lambda r=r: folders.append(r.preparer.prepare(task, spec)))
        for r in runners
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(folders) == 2 and folders[0] == folders[1]
    assert (pid_dir / "prepare_runs").read_text().count("ran") == 1


def test_failed_prepare_raises(make_task: MakeTask, make_runner: Callable[..., Runner]) -> None:
    """A failing prepare step is an infrastructure error carrying its log, not a result."""
    toml = BASE_TOML + '\nprepare = ["python", "prepare.py"]\n'
    task, spec = make_task("good.py", toml=toml, prepare="prepare_fail.py")
    with pytest.raises(PrepareError, match="corpus checksum mismatch"):
        make_runner().run(task, spec)


# ---- evaluator mode --------------------------------------------------------------------------


def test_evaluator_scores_the_artifacts(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """In evaluator mode the metric is the evaluator's, not the fake one the run printed."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate.py"
    )
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, result.error
    assert result.metric == pytest.approx(0.02)  # |40 - 42| / 100, not the run's 0.0001
    assert "==> evaluator <==" in result.log_tail


def test_every_evaluator_gets_the_workers_loader_of_exported_programs(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """The evaluator finds autoswarm/worker/exported.py's bytes beside it as exported.py, read-only,
    never an exported.py lying in the task's folder."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate_loader.py"
    )
    (task / "exported.py").write_text("raise SystemExit('a loader of the task')\n")  # unlisted
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, result.error
    seen = dict(line.split(" ", 1) for line in result.log_tail.splitlines() if " " in line)
    assert seen.get("loader_beside") == "True", result.log_tail
    assert seen["loader_sha"] == hashlib.sha256(LOADER_FILE.read_bytes()).hexdigest()
    assert seen["loader_mode"] == "0o444"


def test_run_cannot_see_heldout_or_evaluator(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """The run's folder has data/ but neither heldout/ nor the evaluator file, even beside data/."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate.py"
    )
    result = make_runner().run(task, spec)
    seen = {
        line.split(" ", 1)[0]: line.split(" ", 1)[1]
        for line in result.log_tail.splitlines()
        if line.startswith(("visible", "data_parent"))
    }
    assert "'data'" in seen["visible"] and "'train.py'" in seen["visible"]
    for listing in (seen["visible"], seen["data_parent"]):
        assert "heldout" not in listing and "evaluate.py" not in listing
    assert "train.txt" in seen["visible_data"]


def test_evaluator_gets_regular_artifacts_only(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """The evaluator sees the run's files and folders under artifacts/, but no planted symlink."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate.py"
    )
    result = make_runner().run(task, spec)
    line = next(x for x in result.log_tail.splitlines() if x.startswith("artifacts"))
    assert "prediction.txt" in line and "sub/note.txt" in line
    assert "planted_link" not in line


def test_failing_evaluator_is_invalid(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """An evaluator that exits non-zero makes the result `invalid`, with its message."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate_fail.py"
    )
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.INVALID
    assert result.error is not None and "cannot score this" in result.error


WITH_RUN_TOML = EVAL_TOML.replace("timeout_s = 10", 'timeout_s = 10\nstart = "with-run"').replace(
    "budget_s = 5", "budget_s = 40"
)


def test_an_evaluator_started_with_the_run_sets_up_meanwhile_and_scores_after_it(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """`start = "with-run"`: the evaluator is up while the run still runs (the run waits for
    it), finds no artifacts yet, and scores them once it reads its line."""
    task, spec = make_task(
        "eval_run_waits.py", toml=WITH_RUN_TOML, prepare="prepare_data.py",
        evaluate="evaluate_warm.py",
    )  # fmt: skip
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, (result.error, result.log_tail)
    assert result.metric == pytest.approx(0.02)
    assert "artifacts before the line []" in result.log_tail
    assert "line 'go\\n'" in result.log_tail


def test_an_evaluator_started_after_the_run_reads_an_empty_line(
    make_task: MakeTask, make_runner: Callable[..., Runner]
) -> None:
    """The same evaluator after the run: the artifacts are there when it starts, and its
    input is empty."""
    task, spec = make_task(
        "eval_run.py", toml=EVAL_TOML, prepare="prepare_data.py", evaluate="evaluate_warm.py"
    )
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, result.error
    assert "artifacts before the line ['prediction.txt', 'sub']" in result.log_tail
    assert "line ''" in result.log_tail


def test_a_failed_run_kills_the_evaluator_started_with_it(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path
) -> None:
    """The run crashes: the waiting evaluator never scores, and it is gone when `run` returns."""
    task, spec = make_task(
        "eval_run_waits.py", toml=WITH_RUN_TOML, prepare="prepare_data.py",
        evaluate="evaluate_warm.py",
    )  # fmt: skip
    result = make_runner(env={"PAYLOAD_CRASH": "1"}).run(task, spec)
    assert result.status is ResultStatus.CRASH and "evaluator ready" in result.log_tail
    assert "==> evaluator <==" not in result.log_tail
    assert not alive(pids_written(pid_dir)["evaluator"])
    assert run_processes(task.parent / "work") == []


# ---- runs started ahead ([run] preload) --------------------------------------------------------

PRELOAD = 'preload = ["colorsys"]\n'  # appended to BASE_TOML's [run]


def test_a_run_started_ahead_imports_meanwhile_and_runs_its_script_only_on_its_turn(
    make_task: MakeTask, make_runner: Callable[..., Runner], tmp_path: Path
) -> None:
    """The first run starts the next one ahead, an interpreter that imports the module and
    waits; the second `run` uses it, and its script starts only then and sees what `python
    train.py` would: its name, __main__, argv, its folder on sys.path, an empty input."""
    task, spec = make_task("preload_probe.py", extra_toml=PRELOAD)
    runner = make_runner()
    first = runner.run(task, spec, warm_next=lambda: True)
    assert first.status is ResultStatus.OK, (first.error, first.log_tail)
    assert first.metrics["preloaded"] == 1  # not started ahead: imported on its own clock
    (ahead,) = run_processes(tmp_path / "work")  # the next run's interpreter, waiting
    assert ahead != first.metrics["pid"]
    turn = time.time()
    second = runner.run(task, spec, warm_next=lambda: False)
    assert second.status is ResultStatus.OK, (second.error, second.log_tail)
    m = second.metrics
    assert m["pid"] == ahead and m["preloaded"] == 1 and m["started_at"] >= turn
    assert m["as_main"] == m["argv_ok"] == m["file_ok"] == m["path_ok"] == m["stdin_empty"] == 1
    assert not alive(ahead)
    assert run_processes(tmp_path / "work") == []  # warm_next said no: nothing ahead now
    assert list((tmp_path / "work").iterdir()) == []


def test_a_run_started_ahead_is_dropped_when_another_run_comes(
    make_task: MakeTask, make_runner: Callable[..., Runner], tmp_path: Path
) -> None:
    """Another budget is another run: the one ahead is killed and its folder removed; so
    it is with `drop_warm` (a worker pausing or stopping)."""
    task, spec = make_task("preload_probe.py", extra_toml=PRELOAD)
    runner = make_runner()
    runner.run(task, spec, budget_s=1, warm_next=lambda: True)
    (ahead,) = run_processes(tmp_path / "work")
    other = runner.run(task, spec, budget_s=2, warm_next=lambda: True)
    assert other.status is ResultStatus.OK and other.metrics["pid"] != ahead
    assert not alive(ahead)
    (ahead,) = run_processes(tmp_path / "work")
    runner.drop_warm()
    assert not alive(ahead) and run_processes(tmp_path / "work") == []
    assert list((tmp_path / "work").iterdir()) == []
    runner.drop_warm()  # twice is harmless


SLOW_MODULE = """\
import os, pathlib, time
time.sleep(1.0)
pathlib.Path(os.environ["PAYLOAD_PID_DIR"], "imported").write_text(str(time.time()))
"""


def test_a_preloaded_run_and_its_evaluator_start_once_its_modules_are_in(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path, tmp_path: Path
) -> None:
    """Not started ahead, a preloaded run first imports its modules; only then do its
    script and its clock start, and with them its evaluator, so that each run's script
    shares its first seconds with the same company whether it was started ahead or not."""
    toml = WITH_RUN_TOML.replace(
        'protected = ["prepare.py"]', 'protected = ["prepare.py", "slow.py"]'
    )
    toml = toml.replace("startup_s = 1\n", 'startup_s = 10\npreload = ["slow"]\n')
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "slow.py").write_text(SLOW_MODULE)
    task, spec = make_task(
        "eval_run_waits.py", toml=toml, prepare="prepare_data.py", evaluate="evaluate_warm.py"
    )
    assert spec.run.preload == ("slow",)
    result = make_runner().run(task, spec)
    assert result.status is ResultStatus.OK, (result.error, result.log_tail)
    imported = float((pid_dir / "imported").read_text())
    assert (pid_dir / "evaluator").stat().st_mtime >= imported


ENVPROBE = 'import os\nSEEN = os.environ.get("PROBE_ENV", "")\n'


def test_a_script_that_sets_its_environment_runs_fresh_and_the_run_ahead_waits(
    make_task: MakeTask, make_runner: Callable[..., Runner], tmp_path: Path
) -> None:
    """A script that writes its environment before importing a preloaded module gets what
    `python train.py` gives it: a fresh interpreter, the module imported after the write.
    The run started ahead is left waiting, and the next script that does not uses it."""
    toml = BASE_TOML.replace(
        'protected = ["prepare.py"]', 'protected = ["prepare.py", "envprobe.py"]'
    )
    toml = toml.replace("startup_s = 1.0\n", 'startup_s = 10\npreload = ["envprobe"]\n')
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "envprobe.py").write_text(ENVPROBE)
    task, spec = make_task("preload_probe.py", toml=toml)
    runner = make_runner()
    assert runner.run(task, spec, warm_next=lambda: True).status is ResultStatus.OK
    (ahead,) = run_processes(tmp_path / "work")
    shutil.copyfile(PAYLOADS / "preload_env_probe.py", task / "train.py")
    fresh = runner.run(task, spec, warm_next=lambda: True)
    assert fresh.status is ResultStatus.OK, (fresh.error, fresh.log_tail)
    assert fresh.metrics["seen"] == 1 and fresh.metrics["pid"] != ahead
    assert run_processes(tmp_path / "work") == [ahead]  # still waiting, and the only one
    shutil.copyfile(PAYLOADS / "preload_probe.py", task / "train.py")
    used = runner.run(task, spec)
    assert used.status is ResultStatus.OK and used.metrics["pid"] == ahead


@pytest.mark.parametrize(
    ("source", "writes"),
    [
        ('import os\nos.environ["OMP_NUM_THREADS"] = "1"\n', True),
        ("from os import environ\ndel environ['X']\n", True),
        ("import os\nos.environ.update(X='1')\n", True),
        ("import os\nos.environ.setdefault('X', '1')\n", True),
        ("import os\nos.putenv('X', '1')\n", True),
        ("import os\ndef f():\n    os.environ['X'] = '1'\n", True),
        ("import os\nn = os.environ.get('X', '1')\nm = os.environ['Y']\n", False),
        ("d = {}\nd['environ'] = 1\nd.update(x=1)\n", False),
        ("this is not python (\n", False),
    ],
)
def test_which_sources_write_their_environment(source: str, writes: bool) -> None:
    assert sets_environment(source.encode()) is writes


class _Stopped(Exception):
    pass


def test_a_run_waiting_for_its_modules_ticks_and_can_be_abandoned(
    make_task: MakeTask, make_runner: Callable[..., Runner], pid_dir: Path, tmp_path: Path
) -> None:
    """While a preloaded run imports its modules (before its clock starts), the runner ticks
    at 0 s: a worker stopped or a lease lost meanwhile ends the run there, not after the
    imports, and leaves no process behind."""
    toml = BASE_TOML.replace('protected = ["prepare.py"]', 'protected = ["prepare.py", "slow.py"]')
    toml = toml.replace("startup_s = 1.0\n", 'startup_s = 10\npreload = ["slow"]\n')
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "slow.py").write_text(SLOW_MODULE.replace("1.0", "5.0"))
    task, spec = make_task("preload_probe.py", toml=toml)
    assert spec.run.preload == ("slow",)
    ticks: list[tuple[float, bool]] = []

    def on_tick(elapsed_s: float) -> None:
        ticks.append((elapsed_s, (pid_dir / "imported").exists()))
        if len(ticks) == 3:
            raise _Stopped

    with pytest.raises(_Stopped):
        make_runner().run(task, spec, on_tick=on_tick)
    assert ticks == [(0.0, False)] * 3
    assert run_processes(tmp_path / "work") == []


def test_a_preload_that_fails_or_dies_costs_the_next_experiment_nothing(
    make_task: MakeTask,
    make_runner: Callable[..., Runner],
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A module that cannot be imported is named in the run's log and the script runs as
    usual; an interpreter ahead that died meanwhile is replaced by a fresh start, and the
    worker's log says so."""
    task, spec = make_task("preload_probe.py", extra_toml='preload = ["no_such_module_x"]\n')
    runner = make_runner()
    assert runner.run(task, spec, warm_next=lambda: True).status is ResultStatus.OK
    result = runner.run(task, spec, warm_next=lambda: True)
    assert result.status is ResultStatus.OK, (result.error, result.log_tail)
    assert "autoswarm: preload no_such_module_x: ModuleNotFoundError" in result.log_tail
    (ahead,) = run_processes(tmp_path / "work")
    os.kill(ahead, signal.SIGKILL)
    while alive(ahead):  # dead once a zombie
        time.sleep(0.01)
    with caplog.at_level("WARNING", logger="autoswarm.worker.runner"):
        result = runner.run(task, spec)
    assert result.status is ResultStatus.OK, (result.error, result.log_tail)
    assert result.metrics["pid"] != ahead
    assert "exited (-9); starting afresh" in caplog.text


# ---- hardware ----------------------------------------------------------------------------------


def test_detect_hardware_names_a_class() -> None:
    """detect_hardware gives a CPU class like cpu:x86_64-2c, or a cuda: class with a GPU."""
    info = detect_hardware()
    assert info.hardware_class.startswith("cuda:" if info.gpus else "cpu:")
    assert " " not in info.hardware_class
    assert info.describe()


def test_gpu_hardware_class_is_normalised() -> None:
    """A GPU's name becomes its class with spaces as dashes."""
    info = HardwareInfo("x86_64", 16, (GpuInfo(0, "NVIDIA H100 80GB HBM3", 81559),))
    assert info.hardware_class == "cuda:NVIDIA-H100-80GB-HBM3"
    assert HardwareInfo("x86_64", 2).hardware_class == "cpu:x86_64-2c"


def test_select_gpus_parses_and_rejects() -> None:
    """--gpus takes 0,1 / all / none, and refuses unknown or repeated indices."""
    assert select_gpus("0,1", count=4) == (0, 1)
    assert select_gpus(None, count=2) == (0, 1)
    assert select_gpus("none", count=2) == ()
    for bad in ("4", "0,0", "a"):
        with pytest.raises(InvalidInput):
            select_gpus(bad, count=4)
