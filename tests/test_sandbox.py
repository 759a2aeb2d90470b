"""The bubblewrap sandbox, its probe, the fail-closed choice and the doctor's self-test."""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import pytest

from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.task import load_task
from autoswarm.worker import cgroups, workfs
from autoswarm.worker.bwrap import INSTALL_HINT, BwrapSandbox, make_sandbox, probe_sandbox
from autoswarm.worker.doctor import (
    Status,
    check_coordinator,
    check_limits,
    exit_code,
    probe_torch,
    sandbox_self_test,
)
from autoswarm.worker.limits import bind_sources, drop_to, make_reachable
from autoswarm.worker.process import list_processes
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Sandbox, Unsandboxed
from tests.task_helpers import write_task
from tests.test_hostile import SUMMARY_TOML as HOSTILE_TOML

HOSTILE = Path(__file__).parent / "hostile"
SUMMARY_TOML = """
[task]
name = "probe"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 30

[run]
startup_s = 30
grace_s = 1
"""
EVAL_TOML = """
[task]
name = "probe-eval"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 5

[run]
prepare = ["python", "prepare.py"]
startup_s = 5
grace_s = 1

[scoring]
mode = "evaluator"
command = ["python", "evaluate.py"]
files = ["evaluate.py"]
timeout_s = 30
"""
EVAL_PREPARE = """
import os
os.makedirs("heldout", exist_ok=True)
with open("heldout/answer.txt", "w") as f:
    f.write("42")
"""
EVAL_TRAIN = """
import os
with open(os.path.join(os.environ["AUTOSWARM_OUT_DIR"], "prediction.txt"), "w") as f:
    f.write("40")
"""
EVAL_EVALUATE = """
import os
artifacts = os.environ["AUTOSWARM_ARTIFACTS_DIR"]
def attempt(what, action):
    try:
        action()
        print(f"LEAK {what}")
    except OSError as exc:
        print(f"blocked {what}: {exc}")
attempt("append", lambda: open(os.path.join(artifacts, "prediction.txt"), "a").write("0"))
attempt("create", lambda: open(os.path.join(artifacts, "new.txt"), "w").close())
attempt("remove", lambda: os.remove(os.path.join(artifacts, "prediction.txt")))
prediction = float(open(os.path.join(artifacts, "prediction.txt")).read())
answer = float(open(os.path.join(os.environ["AUTOSWARM_HELDOUT_DIR"], "answer.txt")).read())
print("---")
print(f"val_bpb: {abs(prediction - answer)}")
"""
WHOAMI = """
import os
print("home", os.environ["HOME"])
print("expanduser", os.path.expanduser("~"))
print("cwd", os.getcwd())
print("---")
print("val_bpb: 1.0")
"""


@pytest.fixture(scope="module")
def bwrap_sandbox() -> BwrapSandbox:
    """The bubblewrap sandbox, or a skip naming why bubblewrap cannot run here."""
    probe = probe_sandbox()
    if not probe.ok or probe.bwrap is None:
        pytest.skip(f"bubblewrap absent or unusable: {probe.explain()}")
    return BwrapSandbox(probe.bwrap)


RunInside = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_inside(tmp_path: Path, bwrap_sandbox: BwrapSandbox) -> RunInside:
    """Run Python `code` in the sandbox with tmp_path/work as its work folder."""

    def run(
        code: str,
        *args: str,
        readonly: Sequence[Path] = (),
        writable: Sequence[Path] = (),
        env: Mapping[str, str] | None = None,
        outer_env: Mapping[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        work = tmp_path / "work"
        work.mkdir(exist_ok=True)
        inner = dict(env or {"PATH": "/usr/bin:/bin", "HOME": str(work)})
        argv = bwrap_sandbox.wrap(
            [sys.executable, "-I", "-c", code, *args],
            work_dir=work,
            readonly=readonly,
            writable=writable,
            env=inner,
        )
        return subprocess.run(
            argv,
            cwd=work,
            env=dict(outer_env or inner),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    return run


def make_task(root: Path, toml: str, files: Mapping[str, str]) -> Path:
    return write_task(root / "task", {"task.toml": toml, **files})


def runner_with(sandbox: Sandbox, root: Path, *, keep_work: bool = False) -> Runner:
    return Runner(
        work_root=root / "work-root",
        cache_root=root / "cache",
        sandbox=sandbox,
        hardware="cpu:test",
        keep_work=keep_work,
    )


# ---- probe and the fail-closed choice -----------------------------------------------------


@pytest.mark.sandbox
def test_probe_reports_a_working_sandbox(bwrap_sandbox: BwrapSandbox) -> None:
    """Where bubblewrap works, the probe starts a sandbox and says so."""
    probe = probe_sandbox(bwrap_sandbox.bwrap)
    assert probe.ok, probe.explain()
    assert probe.version is not None and "bubblewrap" in probe.version


def test_probe_without_bubblewrap_names_the_package() -> None:
    """A missing bwrap is reported with the package to install."""
    probe = probe_sandbox("/nonexistent/bwrap")
    assert not probe.ok
    assert probe.fix == INSTALL_HINT
    assert "apt-get install bubblewrap" in probe.explain()


def test_trusted_code_runs_unsandboxed_and_warns(caplog: pytest.LogCaptureFixture) -> None:
    """trust = "trusted-code" gives no sandbox and a WARNING that says so."""
    with caplog.at_level(logging.WARNING, logger="autoswarm.worker.bwrap"):
        sandbox = make_sandbox("trusted-code")
    assert isinstance(sandbox, Unsandboxed)
    assert any("WITHOUT a sandbox" in r.getMessage() for r in caplog.records)


# ---- what a run inside can see and do ------------------------------------------------------


@pytest.mark.sandbox
def test_environment_inside_is_exactly_the_given_one(run_inside: RunInside) -> None:
    """The run gets the env it was given; a secret in the launching environment stays out."""
    secret = "tok-environment-secret"
    given = {"PATH": "/usr/bin:/bin", "HOME": "/nowhere", "KEEP_ME": "1"}
    done = run_inside(
        "import json, os; print(json.dumps(dict(os.environ)))",
        env=given,
        outer_env={**given, "AUTOSWARM_TOKEN": secret},
    )
    seen = json.loads(done.stdout)
    assert {k: seen[k] for k in given} == given
    assert set(seen) - set(given) <= {"PWD", "LC_CTYPE"}  # set by bwrap and Python themselves
    assert secret not in done.stdout


@pytest.mark.sandbox
def test_home_is_the_work_folder(tmp_path: Path, bwrap_sandbox: BwrapSandbox) -> None:
    """Through the runner, HOME and ~ are the run's work folder, which is also its cwd."""
    task = make_task(tmp_path, SUMMARY_TOML, {"train.py": WHOAMI, "prepare.py": ""})
    runner = runner_with(bwrap_sandbox, tmp_path, keep_work=True)
    result = runner.run(task, load_task(task))
    assert runner.last_experiment_dir is not None
    work = runner.last_experiment_dir / "work"
    assert result.status is ResultStatus.OK, result.log_tail
    assert f"home {work}\n" in result.log_tail
    assert f"expanduser {work}\n" in result.log_tail
    assert f"cwd {work}\n" in result.log_tail


@pytest.mark.sandbox
def test_only_the_work_folder_and_writable_paths_are_writable(
    run_inside: RunInside, tmp_path: Path
) -> None:
    """Writes land in the work folder and given writable paths; everywhere else they fail."""
    cache = tmp_path / "cache"
    cache.mkdir()
    targets = ["x", f"{cache}/x", "/usr/x", f"{sys.prefix}/x", "/etc/x", "/x", "/sys/x", "/dev/x"]
    code = (
        "import sys\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        open(path, 'w').close(); print('wrote', path)\n"
        "    except OSError as exc:\n"
        "        print('blocked', path, exc.errno)\n"
    )
    done = run_inside(code, *targets, writable=[cache])
    wrote = [line.split()[1] for line in done.stdout.splitlines() if line.startswith("wrote")]
    assert wrote == ["x", f"{cache}/x"], done.stdout + done.stderr


@pytest.mark.sandbox
def test_readonly_paths_inside_the_work_folder_stay_read_only(
    run_inside: RunInside, tmp_path: Path
) -> None:
    """A read-only file and folder inside the writable work folder cannot be changed."""
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    (work / "prepare.py").write_text("RULE = 1\n")
    code = (
        "import os\n"
        'for action in (\'open("prepare.py", "a")\', \'open("data/new", "w")\','
        ' \'os.remove("prepare.py")\', \'os.rename("data", "moved")\'):\n'
        "    try:\n"
        "        eval(action); print('LEAK', action)\n"
        "    except OSError as exc:\n"
        "        print('blocked', action, exc.errno)\n"
    )
    done = run_inside(code, readonly=[work / "prepare.py", work / "data"])
    assert done.stdout.count("blocked") == 4, done.stdout + done.stderr
    assert (work / "prepare.py").read_text() == "RULE = 1\n"


@pytest.mark.sandbox
def test_host_files_outside_the_binds_do_not_exist_inside(
    run_inside: RunInside, tmp_path: Path
) -> None:
    """A file beside the work folder is absent; HOME holds at most the way to the Python install."""
    beside = tmp_path / "beside.txt"
    beside.write_text("secret")
    home = Path.home()
    code = (
        "import os, sys; home = sys.argv[2]\n"
        "listed = sorted(os.listdir(home)) if os.path.isdir(home) else []\n"
        "print(os.path.exists(sys.argv[1]), listed)"
    )
    done = run_inside(code, str(beside), str(home))
    exists, listed = done.stdout.split(" ", 1)
    assert exists == "False", done.stderr
    python_install = {sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)}
    ways = sorted(
        {Path(p).relative_to(home).parts[0] for p in python_install if Path(p).is_relative_to(home)}
    )
    assert listed.strip() == str(ways)


@pytest.mark.sandbox
def test_run_is_not_root_on_the_host(run_inside: RunInside, tmp_path: Path) -> None:
    """Files a run writes belong to an unprivileged user on the host, even for a root worker."""
    done = run_inside("open('mine', 'w').close()")
    assert done.returncode == 0, done.stderr
    owner = (tmp_path / "work" / "mine").stat().st_uid
    assert owner != 0
    assert owner == (65534 if os.geteuid() == 0 else os.geteuid())


@pytest.mark.sandbox
def test_nothing_inside_survives_a_killed_sandbox(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """SIGKILL to the sandbox's launcher ends a detached process inside it."""
    work = tmp_path / "work"
    work.mkdir()
    marker = f"sandbox-survivor-{os.getpid()}-{time.monotonic_ns()}"
    code = (
        "import os, subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', sys.argv[1]],"
        " start_new_session=True)\n"
        "print('ready', flush=True); time.sleep(600)\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HOME": str(work)}
    argv = bwrap_sandbox.wrap(
        [sys.executable, "-I", "-c", code, marker],
        work_dir=work,
        readonly=[],
        writable=[],
        env=env,
    )
    with subprocess.Popen(argv, cwd=work, env=env, stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        assert marked(marker)
        proc.send_signal(signal.SIGKILL)
    for _ in range(100):  # the kernel tears the namespace down asynchronously
        if not marked(marker):
            break
        time.sleep(0.1)
    assert not marked(marker)


def marked(marker: str) -> list[int]:
    """Live processes whose command line holds `marker`."""
    found = []
    for pid in list_processes():
        try:
            if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                found.append(pid)
        except OSError:
            continue
    return found


# ---- trusted scoring and fidelity ----------------------------------------------------------


@pytest.mark.sandbox
def test_evaluator_sees_the_artifacts_read_only(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """The evaluator cannot change, add or remove artifacts; it still scores them."""
    files = {"train.py": EVAL_TRAIN, "prepare.py": EVAL_PREPARE, "evaluate.py": EVAL_EVALUATE}
    task = make_task(tmp_path, EVAL_TOML, files)
    result = runner_with(bwrap_sandbox, tmp_path).run(task, load_task(task))
    assert result.log_tail.count("blocked") == 3, result.log_tail
    assert "LEAK" not in result.log_tail
    assert result.status is ResultStatus.OK
    assert result.metric == 2.0


PRELOAD_TRAIN = """\
import os, sys, time
print("---")
print("val_bpb: 1.0")
print(f"preloaded: {int('colorsys' in sys.modules)}")
print(f"started_at: {time.time():.3f}")
print(f"own_file_writable: {int(os.access(__file__, os.W_OK))}")
"""


@pytest.mark.sandbox
def test_a_run_started_ahead_in_the_sandbox_is_the_run_it_would_be(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    """`[run] preload`: the next run's sandbox starts while this one ends and waits; the
    editable file copied in at its turn belongs to the sandbox's user as in any run."""
    toml = SUMMARY_TOML + 'preload = ["colorsys"]\n'
    task = make_task(tmp_path, toml, {"train.py": PRELOAD_TRAIN, "prepare.py": ""})
    spec = load_task(task)
    runner = runner_with(bwrap_sandbox, tmp_path)
    results = []
    with caplog.at_level(logging.INFO, logger="autoswarm.worker.runner"):
        for _ in range(2):
            turn = time.time()
            results.append(runner.run(task, spec, warm_next=lambda: True))
        runner.drop_warm()
    done = [r.getMessage() for r in caplog.records if "experiment" in r.getMessage()]
    assert len(done) == 2 and "started ahead" not in done[0] and "started ahead" in done[1]
    for result in results:
        assert result.status is ResultStatus.OK, result.log_tail
        assert result.metrics["preloaded"] == result.metrics["own_file_writable"] == 1
    assert results[1].metrics["started_at"] >= turn
    assert list((tmp_path / "work-root").iterdir()) == []


@pytest.mark.sandbox
@pytest.mark.slow
def test_metric_inside_equals_metric_outside(tmp_path: Path, bwrap_sandbox: BwrapSandbox) -> None:
    """A deterministic small model scores the same in the sandbox as without it."""
    train = (HOSTILE / "fixed_steps.py").read_text()
    metrics = []
    sandboxes: tuple[Sandbox, ...] = (Unsandboxed(), bwrap_sandbox)
    for i, sandbox in enumerate(sandboxes):
        root = tmp_path / str(i)
        root.mkdir()
        task = make_task(root, SUMMARY_TOML, {"train.py": train, "prepare.py": ""})
        result = runner_with(sandbox, root).run(task, load_task(task))
        assert result.status is ResultStatus.OK, result.log_tail
        metrics.append(result.metric)
    assert metrics[0] == metrics[1]


@pytest.mark.sandbox
@pytest.mark.gpu
def test_cuda_is_usable_inside(run_inside: RunInside) -> None:
    """With a CUDA GPU, torch inside the sandbox sees it and computes on it."""
    if not glob.glob("/dev/nvidia*") or not probe_torch().get("cuda"):
        pytest.skip("no CUDA GPU here: no NVIDIA device node, or torch sees none")
    code = (
        "import torch; print(torch.cuda.is_available(), torch.ones(2, device='cuda').sum().item())"
    )
    done = run_inside(code)
    assert done.stdout.split() == ["True", "2.0"], done.stderr


# ---- the doctor's self-test ----------------------------------------------------------------


@pytest.mark.sandbox
def test_self_test_passes_inside_bubblewrap(bwrap_sandbox: BwrapSandbox) -> None:
    """In bubblewrap, the network, the secret and writes outside are all blocked."""
    checks = sandbox_self_test(bwrap_sandbox)
    assert [c.status for c in checks] == [Status.OK, Status.OK], checks


def test_self_test_fails_without_a_sandbox() -> None:
    """Unsandboxed, the self-test fails: the host listener and the secret are reachable."""
    checks = sandbox_self_test(Unsandboxed())
    assert [c.status for c in checks] == [Status.FAIL, Status.FAIL], checks
    assert exit_code(checks) == 1


def test_unreachable_coordinator_fails() -> None:
    """A coordinator URL nobody answers on is a FAIL row."""
    rows = check_coordinator("http://127.0.0.1:9")  # the discard port: nothing listens
    assert rows[0].status is Status.FAIL


def test_launcher_finds_bind_sources_past_option_values() -> None:
    """An env value spelled like a bind option is not taken for one."""
    argv = ["bwrap", "--setenv", "X", "--bind", "--ro-bind", "/a", "/a", "--chdir", "/w", "--"]
    assert bind_sources([*argv, "--bind", "/b", "/b"]) == [5]


# ---- limits that hold for everything a run holds (tests/hostile) --------------------------

NOBODY = 65534
RUN_AS_WORKER = """
import sys
from pathlib import Path
from autoswarm.shared.task import load_task
from autoswarm.worker.bwrap import BwrapSandbox, make_sandbox
from autoswarm.worker.runner import Runner
task, root = Path(sys.argv[1]), Path(sys.argv[2])
sandbox = make_sandbox("sandboxed") if sys.argv[3] == "capped" else BwrapSandbox(cap_work=False)
runner = Runner(
    work_root=root / "work", cache_root=root / "cache", sandbox=sandbox, keep_work=True
)
print(runner.run(task, load_task(task), budget_s=2).model_dump_json())
"""


def needs_cgroups() -> cgroups.Cgroups:
    """This host's control groups, or a skip naming the fallback `autoswarm doctor` shows."""
    found = cgroups.find()
    if isinstance(found, cgroups.Absent):
        pytest.skip(f"no control groups here ({found.why}): rlimits only, as doctor says")
    return found


def run_groups(found: cgroups.Cgroups) -> set[str]:
    """The run groups under this host's parents now."""
    return {
        os.path.join(parent, name)
        for parent in found.parents()
        for name in os.listdir(parent)
        if name.startswith(cgroups.RUN_PREFIX)
    }


def hostile_task(root: Path, payload: str, budget_s: float = 2) -> Path:
    """A summary-mode task whose train.py is a payload of tests/hostile."""
    return write_task(
        root / f"task-{payload.removesuffix('.py')}",
        {
            "prepare.py": HOSTILE / "prepare.py",
            "train.py": HOSTILE / payload,
            "task.toml": HOSTILE_TOML.format(budget_s=budget_s),
        },
    )


def run_hostile(root: Path, sandbox: Sandbox, payload: str) -> Result:
    """Run a payload of tests/hostile through a runner in `sandbox`; no LEAK line allowed."""
    task = hostile_task(root, payload)
    result = runner_with(sandbox, root).run(task, load_task(task))
    assert "LEAK" not in result.log_tail, result.log_tail
    return result


@pytest.mark.sandbox
@pytest.mark.parametrize("payload", ["memfd_bomb.py", "tmpfs_bomb.py"])
def test_memory_held_outside_rss_stops_at_the_memory_cap(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox, payload: str
) -> None:
    """Memfds, and files on /dev/shm and /tmp (outside RSS), stop at memory_mb (plus the
    disk_mb its work folder may hold in memory, as a tmpfs): a crash."""
    found = needs_cgroups()
    before = run_groups(found)
    result = run_hostile(tmp_path, bwrap_sandbox, payload)
    log = result.log_tail
    held = [int(line.split()[1]) for line in log.splitlines() if line.startswith("holding ")]
    assert held and max(held) < 512 + 32
    assert result.status is ResultStatus.CRASH
    assert "memory cap of 512 MB" in log
    assert run_groups(found) <= before  # its own group is gone


@pytest.mark.sandbox
def test_run_cannot_lift_its_caps_or_leave_its_control_group(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """Writing its group's pids.max or memory cap, or another group's cgroup.procs, fails."""
    needs_cgroups()
    result = run_hostile(tmp_path, bwrap_sandbox, "cgroup_escape.py")
    assert "blocked raise pids.max" in result.log_tail
    assert "blocked leave the group" in result.log_tail
    assert result.status is ResultStatus.OK


@pytest.fixture(scope="module")
def watched_sandbox(bwrap_sandbox: BwrapSandbox) -> BwrapSandbox:
    """The sandbox with the disk watch as its disk cap, as where the capped tmpfs is refused."""
    return BwrapSandbox(bwrap_sandbox.bwrap, cap_work=False)


@pytest.mark.sandbox
@pytest.mark.parametrize("payload", ["disk_unlinked.py", "disk_unlinked_mapped.py"])
def test_removed_files_still_held_count_in_the_capped_work_folder(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox, payload: str
) -> None:
    """Files removed while held open, or only mapped, fill the capped tmpfs: a crash at 32 MB."""
    if bwrap_sandbox.work_cap_refused is not None:
        pytest.skip(f"no kernel-enforced work folder here: {bwrap_sandbox.work_cap_refused}")
    result = run_hostile(tmp_path, bwrap_sandbox, payload)
    assert "over its disk cap of 32 MB" in f"{result.error}\n{result.log_tail}"
    assert result.status is ResultStatus.CRASH


@pytest.mark.sandbox
@pytest.mark.parametrize("payload", ["disk_unlinked.py", "disk_unlinked_mapped.py"])
def test_removed_files_still_held_count_in_the_disk_watch(
    tmp_path: Path, watched_sandbox: BwrapSandbox, payload: str
) -> None:
    """Under the fallback watch, files removed while held open, or only mapped, are counted:
    the run stops at 32 MB."""
    result = run_hostile(tmp_path, watched_sandbox, payload)
    assert "over its disk cap of 32 MB" in result.log_tail
    assert "in removed files still held" in result.log_tail
    assert result.status is ResultStatus.CRASH


@contextlib.contextmanager
def own_volume(root: Path, size_mb: int) -> Iterator[Path]:
    """A tmpfs of its own at root/vol: what it holds is what runs there put on the host."""
    volume = root / "vol"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", volume], check=True)
    try:
        yield volume
    finally:
        subprocess.run(["umount", "-l", volume], check=False)


def used_bytes(path: Path) -> int:
    """Bytes in use on the file system holding `path`."""
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


@pytest.mark.sandbox
def test_a_burst_past_the_disk_cap_never_lands_on_the_hosts_disk(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """~500 MB fallocated at once against a 32 MB cap: the host's file system holding the
    work folder never gains more than the cap, and the run is a crash naming the cap."""
    if os.geteuid() != 0:
        pytest.skip("measures on a file system mounted for the test: needs root")
    with own_volume(tmp_path, 1024) as volume:
        task = hostile_task(volume, "disk_burst.py")
        runner = runner_with(bwrap_sandbox, volume)
        runner.preparer.prepare(task, load_task(task))
        baseline = used_bytes(volume)
        peak, done = [baseline], threading.Event()

        def sample() -> None:
            while not done.is_set():
                peak.append(max(peak[-1], used_bytes(volume)))
                time.sleep(0.001)

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = runner.run(task, load_task(task))
        finally:
            done.set()
            sampler.join()
    assert max(peak) - baseline <= 32 * 2**20, f"{(max(peak) - baseline) >> 20} MB landed"
    assert "LEAK" not in result.log_tail, result.log_tail
    assert result.status is ResultStatus.CRASH
    assert "disk cap of 32 MB" in (result.error or ""), result.error


CAPPED_EVAL_TOML = EVAL_TOML + "\n[resources]\ndisk_mb = 32\n"
CAPPED_EVAL_TRAIN = (
    EVAL_TRAIN
    + """
st = os.statvfs(".")
print(f"work folder size: {st.f_blocks * st.f_frsize >> 20} MB")
"""
)


@pytest.mark.sandbox
def test_an_honest_run_in_a_capped_work_folder_still_scores(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """The run's work folder is a file system of disk_mb; its out/ still reaches the evaluator."""
    if bwrap_sandbox.work_cap_refused is not None:
        pytest.skip(f"no kernel-enforced work folder here: {bwrap_sandbox.work_cap_refused}")
    files = {
        "train.py": CAPPED_EVAL_TRAIN,
        "prepare.py": EVAL_PREPARE,
        "evaluate.py": EVAL_EVALUATE,
    }
    task = make_task(tmp_path, CAPPED_EVAL_TOML, files)
    result = runner_with(bwrap_sandbox, tmp_path).run(task, load_task(task))
    assert "work folder size: 32 MB" in result.log_tail, result.log_tail
    assert result.status is ResultStatus.OK, result.error
    assert result.metric == 2.0


def become_nobody() -> None:
    """In a child: reach this Python as nobody (in a mount namespace of its own), become it."""
    make_reachable([sys.prefix, sys.base_prefix, os.path.realpath(sys.executable)], NOBODY, NOBODY)
    drop_to(NOBODY, NOBODY)


def run_as_nobody(payload: str, disk_cap: str = "capped") -> Result:
    """Run a payload through a runner in a worker process of user nobody (not root), its
    work folder `capped` by the kernel where it can be, or under the disk `watch`."""
    root = Path(tempfile.mkdtemp(prefix="autoswarm-nobody-"))
    try:
        task = hostile_task(root, payload)
        for path in [root, *root.rglob("*")]:
            os.chown(path, NOBODY, NOBODY)
        root.chmod(0o755)
        done = subprocess.run(
            [sys.executable, "-c", RUN_AS_WORKER, str(task), str(root), disk_cap],
            preexec_fn=become_nobody,
            cwd=root,
            env={
                "PATH": os.environ["PATH"],
                "HOME": str(root),
                "PYTHONPATH": str(Path(__file__).parents[1]),
            },
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return Result.model_validate_json(done.stdout.strip().splitlines()[-1])
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.sandbox
@pytest.mark.parametrize("disk_cap", ["capped", "watch"])
@pytest.mark.parametrize("payload", ["disk_unreadable.py", "disk_unlinked_mapped.py"])
def test_disk_a_non_root_worker_cannot_see_stops_at_the_disk_cap(
    payload: str, disk_cap: str
) -> None:
    """As user nobody, a mode-0300 folder or removed files kept only mapped stop the run,
    in a capped work folder and under the fallback watch alike."""
    if os.geteuid() != 0:
        pytest.skip("starts a worker as user nobody: needs root")
    result = run_as_nobody(payload, disk_cap)
    assert "LEAK" not in result.log_tail
    assert "over its disk cap of 32 MB" in f"{result.error}\n{result.log_tail}"
    assert result.status is ResultStatus.CRASH


@pytest.mark.sandbox
def test_compile_caches_carry_nothing_into_a_later_run(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """What a run plants in the Inductor and Triton caches is not there for the next run."""
    task = hostile_task(tmp_path, "poison_cache.py")
    runner = runner_with(bwrap_sandbox, tmp_path)
    spec = load_task(task)
    first = runner.run(task, spec)
    second = runner.run(task, spec)
    assert first.log_tail.count("planted planted_by_an_earlier_run.py") == 2
    assert "LEAK" not in second.log_tail
    assert second.log_tail.count("holds 0 files, none planted") == 2
    assert list(tmp_path.rglob("planted_by_an_earlier_run.py")) == []


@pytest.mark.sandbox
@pytest.mark.slow
def test_one_runs_threads_cannot_starve_another_run(
    tmp_path: Path, bwrap_sandbox: BwrapSandbox
) -> None:
    """A run holding every thread it may have leaves another run its own threads."""
    victim_task = hostile_task(tmp_path, "threads_starved.py", budget_s=10)
    hog_task = hostile_task(tmp_path, "threads_hog.py", budget_s=10)
    victim_runner = runner_with(bwrap_sandbox, tmp_path / "victim")
    results: list[Result] = []
    victim = threading.Thread(
        target=lambda: results.append(victim_runner.run(victim_task, load_task(victim_task)))
    )
    victim.start()
    deadline = time.monotonic() + 60
    logs = tmp_path / "victim" / "work-root"
    while not any("waiting" in p.read_text() for p in logs.glob("run-*/run.log")):
        assert time.monotonic() < deadline and victim.is_alive(), "the victim never started"
        time.sleep(0.05)
    hog = runner_with(bwrap_sandbox, tmp_path / "hog").run(hog_task, load_task(hog_task))
    victim.join(timeout=120)
    assert "holding" in hog.log_tail and "threads, the next refused" in hog.log_tail
    assert len(results) == 1
    assert "LEAK" not in results[0].log_tail
    assert "started 32 threads" in results[0].log_tail
    assert results[0].status is ResultStatus.OK


def test_leftover_run_groups_of_a_crashed_worker_are_removed_at_start() -> None:
    """A run group whose launcher is gone is emptied and removed when a sandbox is made."""
    found = needs_cgroups()
    gone = subprocess.Popen(["true"])
    gone.wait()
    folders = cgroups.create_run_group(
        found, cgroups.group_name(gone.pid), memory_mb=64, max_processes=8
    )
    stray = subprocess.Popen(["sleep", "60"])
    try:
        cgroups.join(folders, stray.pid)
        make_sandbox("sandboxed")
        assert stray.wait(timeout=10) == -signal.SIGKILL
        assert not any(os.path.exists(f) for f in folders)
    finally:
        stray.kill()
        cgroups.remove(folders)


def fake_cgroup2(root: Path, controllers: str) -> Path:
    """A /proc/self and a cgroup2 folder of our group, as plain files under `root`."""
    proc = root / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mountinfo").write_text(
        f"41 31 0:38 / {root}/cg rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    (proc / "self" / "cgroup").write_text("0::/worker.slice\n")
    group = root / "cg" / "worker.slice"
    group.mkdir(parents=True)
    (group / "cgroup.controllers").write_text(controllers)
    (group / "cgroup.subtree_control").write_text("")
    return proc


def test_cgroup_v2_is_found_and_its_controllers_enabled(tmp_path: Path) -> None:
    """Our v2 group with memory and pids available gets them enabled for its children."""
    proc = fake_cgroup2(tmp_path, "cpu io memory pids\n")
    found = cgroups.find(str(proc), prepare=True)
    group = tmp_path / "cg" / "worker.slice"
    assert found == cgroups.Cgroups(2, str(group), str(group))
    assert (group / "cgroup.subtree_control").read_text() == "+memory +pids"


def test_cgroup_v2_without_the_memory_controller_falls_back_saying_why(tmp_path: Path) -> None:
    """A v2 group that offers no memory controller is no place for runs: the reason is named."""
    proc = fake_cgroup2(tmp_path, "cpu pids\n")
    found = cgroups.find(str(proc), prepare=True)
    assert isinstance(found, cgroups.Absent)
    assert "no memory controller" in found.why


def test_run_group_on_cgroup_v2_writes_its_caps_and_members(tmp_path: Path) -> None:
    """A v2 run group gets memory.max, pids.max and the pid it is given in cgroup.procs."""
    found = cgroups.Cgroups(2, str(tmp_path), str(tmp_path))
    folders = cgroups.create_run_group(found, "autoswarm-run-7", memory_mb=512, max_processes=300)
    assert folders == [str(tmp_path / "autoswarm-run-7")]
    group = tmp_path / "autoswarm-run-7"
    assert (group / "memory.max").read_text() == str(512 * 2**20)
    assert (group / "pids.max").read_text() == "300"
    cgroups.join(folders, 4242)
    assert cgroups.members(folders) == [4242]


def test_doctor_says_how_limits_fall_back_without_cgroups() -> None:
    """Without control groups, doctor warns that memory and processes fall back to rlimits."""
    rows = {c.name: c for c in check_limits(cgroups.Absent("no cgroup2 file system"), None)}
    assert rows["limits memory"].status is Status.WARN
    assert "memfds" in rows["limits memory"].detail
    assert "RLIMIT_NPROC" in rows["limits processes"].detail


def test_doctor_names_this_hosts_control_groups() -> None:
    """On a host with control groups, doctor names the version and the folders used."""
    found = needs_cgroups()
    rows = {c.name: c for c in check_limits(found, workfs.probe())}
    assert f"cgroup v{found.version}" in rows["limits processes"].detail
    assert rows["limits processes"].status is Status.OK


def test_doctor_says_the_disk_cap_is_kernel_enforced_where_the_host_allows_it() -> None:
    """Where a capped tmpfs can be mounted here, doctor says the kernel enforces disk_mb."""
    refused = workfs.probe()
    if refused is not None:
        pytest.skip(f"no capped work folder here: {refused}")
    rows = {c.name: c for c in check_limits(cgroups.Absent("none"), refused)}
    assert rows["limits disk"].status is Status.OK
    assert "kernel-enforced" in rows["limits disk"].detail


def test_doctor_says_how_the_disk_cap_falls_back_and_why() -> None:
    """Where the mount is refused, doctor warns that the disk cap is a watch, and says why."""
    why = "unshare(CLONE_NEWUSER): Operation not permitted"
    rows = {c.name: c for c in check_limits(cgroups.Absent("none"), why)}
    assert rows["limits disk"].status is Status.WARN
    assert why in rows["limits disk"].detail
    assert "overshoots" in rows["limits disk"].detail


def test_a_work_folder_over_half_the_memory_is_left_to_the_disk_watch(tmp_path: Path) -> None:
    """A disk_mb over half of MemTotal is refused as a tmpfs, naming the memory; half fits."""
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:        8388608 kB\nMemFree:         1024 kB\n")
    workfs.check_fits_memory(4096, str(meminfo))
    with pytest.raises(OSError, match="8192 MB of memory"):
        workfs.check_fits_memory(4097, str(meminfo))
