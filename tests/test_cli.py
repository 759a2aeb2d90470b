"""The command line as the README shows it, through `autoswarm` itself.

Each command of the README's blocks is run here (or in the test named for it in
`README_COMMANDS`) against the real thing: a coordinator started with `autoswarm
coordinator` (its own embedded Redis), worker processes started with `autoswarm worker`,
litellm's own `mock_response` for the LLM proposer. The last test reads the README and
fails when it shows a command or an option that does not exist, or a command that no test
here or elsewhere runs.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from importlib import import_module
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer.main
from typer.testing import Result

from autoswarm.cli.app import app
from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import Unauthorized
from autoswarm.shared.task import load_task, read_task_files
from autoswarm.worker.control import send_command
from tests.cli_helpers import invoke
from tests.conftest import REPO, free_port, wait_until
from tests.worker_helpers import SLEEPY_TRAIN, make_task

README = REPO / "README.md"

TOKEN_TEST = (
    "tests/test_cli.py::"
    "test_token_list_shows_each_token_and_revoke_refuses_it_and_requeues_its_lease"
)
# Each command the README shows, and the test that runs it through the command line.
README_COMMANDS = {
    "--help": "tests/test_cli.py::test_help_lists_every_command",
    "task check": "tests/test_cli.py::test_task_check_prints_the_spec_or_one_clear_error",
    "task run": "tests/test_cli.py::test_task_run_runs_once_and_prints_the_summary_block",
    "task register": "tests/test_cli.py::test_task_register_is_idempotent",
    "up": "tests/test_up.py::test_up_runs_bounded_prints_the_lineage_and_leaves_nothing_running",
    "coordinator": "tests/test_cli.py::test_coordinator_runs_its_own_redis_and_keeps_its_token",
    "token create": "tests/test_cli.py::test_token_create_prints_a_token_with_its_scope",
    "token list": TOKEN_TEST,
    "token revoke": TOKEN_TEST,
    "dashboard": "tests/test_dashboard.py::"
    "test_after_up_ends_every_read_command_and_the_dashboard_open_its_folder_without_flags",
    "worker": "tests/test_cli.py::test_worker_joins_and_is_paused_resumed_and_finished",
    "worker pause": "tests/test_cli.py::test_worker_joins_and_is_paused_resumed_and_finished",
    "worker resume": "tests/test_cli.py::test_worker_joins_and_is_paused_resumed_and_finished",
    "worker finish": "tests/test_cli.py::test_worker_joins_and_is_paused_resumed_and_finished",
    "worker status": "tests/test_cli.py::test_worker_joins_and_is_paused_resumed_and_finished",
    "doctor": "tests/test_cli.py::test_doctor_checks_this_machine_and_the_coordinator",
    "propose": "tests/test_cli.py::test_propose_with_the_mutation_proposer",
    "hypothesis add": "tests/test_cli.py::test_hypothesis_add_queues_a_change_with_its_author",
    "status": "tests/test_export.py::test_status_once_renders_the_table",
    "leaderboard": "tests/test_export.py::test_leaderboard_and_status_answer_json",
    "experiments": "tests/test_export.py::test_experiments_filters_as_the_api_does",
    "show": "tests/test_export.py::test_show_prints_the_reason_and_the_diff",
    "export": "tests/test_export.py::test_csv_and_jsonl_carry_the_same_rows",
    "plot": "tests/test_export.py::test_plot_writes_progress_png",
    "ray-workers": "tests/test_ray.py::test_ray_workers_command_runs_worker_actors",
}
# `propose --proposer llm` is run too, by this test:
LLM_PROPOSE_TEST = "tests/test_cli.py::test_propose_with_an_llm_through_litellms_mock"

WORKER_SETTINGS = {  # a coordinator that answers quickly, for a task that runs in a moment
    "AUTOSWARM_LEASE_TTL_S": "5",
    "AUTOSWARM_REAPER_INTERVAL_S": "0.2",
    "AUTOSWARM_LEASE_POLL_S": "0.2",
    "AUTOSWARM_BASELINE_RUNS": "2",
}


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the caller's AUTOSWARM_* settings, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSWARM_")}
    return {**env, "PYTHONPATH": str(REPO), **extra}


# ---- without a coordinator -----------------------------------------------------------------


def test_help_lists_every_command() -> None:
    answer = invoke("--help")
    assert answer.exit_code == 0
    listed = set(re.findall(r"^│ ([a-z][a-z-]*) ", answer.stdout, re.M))
    assert listed == set(subcommands(typer.main.get_command(app))), answer.stdout


def test_task_check_prints_the_spec_or_one_clear_error(tmp_path: Path) -> None:
    """tinylm's resolved spec as a table and as JSON; a broken folder exits 2 saying why."""
    table = invoke("task", "check", "tasks/tinylm")
    assert table.exit_code == 0, table.output
    assert "tinylm" in table.stdout and "val_bpb" in table.stdout
    spec = json.loads(invoke("task", "check", "tasks/tinylm", "--json").stdout)
    assert spec["budget_s"] == 40 and spec["metric"]["direction"] == "minimize"

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "task.toml").write_text('[task]\nname = "Bad Name"\n')
    (broken / "train.py").write_text("print(1)\n")
    answer = invoke("task", "check", str(broken))
    assert answer.exit_code == 2
    assert "bad task folder" in answer.stderr and "name" in answer.stderr


def test_up_refuses_an_unknown_trust_before_starting_anything(tmp_path: Path) -> None:
    """`up --trust bogus` exits 2 naming the choices; no data folder, no coordinator."""
    data_dir = tmp_path / "data"
    answer = invoke("up", "--trust", "bogus", "--data-dir", str(data_dir))
    assert answer.exit_code == 2
    assert "--trust" in answer.output and "trusted-code" in answer.output
    assert not data_dir.exists()


def error_line(here: Path, *args: str) -> str:
    """`autoswarm ARGS` run in `here`, expected to fail: its one line of complaint."""
    done = subprocess.run(
        [sys.executable, "-m", "autoswarm", *args],
        cwd=here,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    said = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    assert done.returncode != 0, said
    assert "Traceback" not in done.stdout + done.stderr, said
    assert len(said) == 1, said
    return said[0]


def test_each_error_a_user_can_cause_is_one_line_saying_what_to_do(
    tmp_path: Path, task_dir: Path
) -> None:
    """A busy port (`up`, `coordinator`, `dashboard`), a folder with no results, a coordinator
    that is not there, a missing task, no admin token, a data folder another process serves:
    one line each, no traceback."""
    from autoswarm.coordinator.address import write_address

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in (
            ("up", "--task", str(task_dir), "--trust", "trusted-code", "--port", port),
            ("coordinator", "--port", port, "--data-dir", str(tmp_path / "c")),
        ):
            assert f"port {port} is in use" in error_line(tmp_path, *args), args
        (tmp_path / "d" / "lineage").mkdir(parents=True)
        said = error_line(tmp_path, "dashboard", "--data-dir", "d", "--port", port)
        assert f"port {port} is in use" in said
    for args in (("leaderboard",), ("show", "e1234567"), ("dashboard",)):
        assert "where `autoswarm up` ran" in error_line(tmp_path, *args), args
    closed = f"http://127.0.0.1:{free_port()}"
    said = error_line(tmp_path, "status", "--once", "--join", closed)
    assert closed in said and "is it running" in said
    said = error_line(tmp_path, "up", "--task", str(tmp_path / "nowhere"))
    assert "nowhere" in said
    said = error_line(tmp_path, "token", "create", "--scope", "read", "--name", "x")
    assert "--token" in said
    served = tmp_path / "served"
    write_address(served, "http://127.0.0.1:9")  # this test's process serves it, as `up` would
    for args in (
        ("up", "--task", str(task_dir), "--trust", "trusted-code", "--data-dir", str(served)),
        ("coordinator", "--data-dir", str(served), "--port", str(free_port())),
    ):
        assert "is served already, at http://127.0.0.1:9" in error_line(tmp_path, *args), args


def test_a_folder_being_served_is_read_through_its_coordinator_not_opened_again(
    tmp_path: Path,
) -> None:
    """While a coordinator serves the folder (its address in coordinator.json, its process
    alive), the read commands and `dashboard` use it; a dead one's address is ignored."""
    from autoswarm.cli.reach import reach
    from autoswarm.coordinator.address import read_address, write_address

    data_dir = tmp_path / ".autoswarm"
    (data_dir / "lineage").mkdir(parents=True)
    (data_dir / "admin.token").write_text("as_admin\n")
    write_address(data_dir, "http://127.0.0.1:9")
    with reach(None, None, data_dir) as found:
        assert (found.url, found.token, found.opened_here) == (
            "http://127.0.0.1:9",
            "as_admin",
            False,
        )
    answer = invoke("dashboard", "--data-dir", str(data_dir))
    assert answer.exit_code == 0 and "http://127.0.0.1:9/" in answer.stdout
    assert "already served" in answer.stdout
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    (data_dir / "coordinator.json").write_text(
        json.dumps({"url": "http://127.0.0.1:9", "pid": int(dead.stdout)})
    )
    assert read_address(data_dir) is None


def test_python_m_worker_is_the_autoswarm_worker_command_with_its_options_and_help() -> None:
    """`python -m autoswarm.worker --help` is `autoswarm worker --help`: the same text, every
    option and control command, but for the name it is called by."""
    by_module = subprocess.run(
        [sys.executable, "-m", "autoswarm.worker", "--help"], cwd=REPO, capture_output=True,
        text=True, env=clean_env(COLUMNS="100", TERM="dumb"), check=True,
    )  # fmt: skip
    by_cli = subprocess.run(
        [sys.executable, "-m", "autoswarm", "worker", "--help"], cwd=REPO, capture_output=True,
        text=True, env=clean_env(COLUMNS="100", TERM="dumb"), check=True,
    )  # fmt: skip
    assert "--join" in by_cli.stdout and "pause" in by_cli.stdout
    # The same words; rich pads and wraps the box to the longer program name.
    assert (
        by_module.stdout.split()
        == by_cli.stdout.replace("autoswarm worker [", "python -m autoswarm.worker [").split()
    )


def test_a_join_url_without_a_scheme_is_refused_at_once(tmp_path: Path) -> None:
    """A typo in --join is not an outage: worker and propose exit 2 saying how to write it."""
    for command in (
        ("worker", "--join", "127.0.0.1:8470", "--token", "t", "--state-dir", str(tmp_path)),
        ("propose", "--task", "tiny", "--join", "127.0.0.1:8470", "--token", "t"),
    ):
        answer = invoke(*command)
        assert answer.exit_code == 2, answer.output
        assert "http://HOST:PORT" in answer.output and "Traceback" not in answer.output


def test_task_run_runs_once_and_prints_the_summary_block(tmp_path: Path) -> None:
    """A run here prints its metric and summary block (exit 0); a crashing one exits 1."""
    task = make_task(tmp_path, "once", sleep_s=0.1, score=0.25)
    work = tmp_path / "work"
    ok = invoke("task", "run", str(task), "--budget", "2", "--trust", "trusted-code",
                "--work-dir", str(work))  # fmt: skip
    assert ok.exit_code == 0, ok.output
    assert "once: ok" in ok.stdout and "0.250000" in ok.stdout
    assert "---\nscore: 0.250000" in ok.stdout  # the summary block, as the run printed it

    crash = make_task(tmp_path, "crash", sleep_s=0.1, crash=True)
    failed = invoke("task", "run", str(crash), "--trust", "trusted-code", "--work-dir", str(work))
    assert failed.exit_code == 1
    assert "crashed on purpose" in failed.stdout


# ---- against `autoswarm coordinator` -------------------------------------------------------


@dataclass
class Served:
    url: str
    data_dir: Path
    process: subprocess.Popen[bytes]
    log: Path
    task: Path
    task_id: str = ""

    @property
    def admin_token(self) -> str:
        return (self.data_dir / "admin.token").read_text().strip()

    def admin(self) -> CoordinatorClient:
        return CoordinatorClient(self.url, self.admin_token)

    def token(self, scope: str, name: str) -> str:
        with self.admin() as client:
            return client.create_token(scope, name)

    def hypotheses(self) -> list[dict[str, Any]]:
        with self.admin() as client:
            found: list[dict[str, Any]] = client.get_json(f"tasks/{self.task_id}/hypotheses")
            return found


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`autoswarm coordinator --port P --data-dir D`: no Redis URL, so its own Redis; the
    sleepy task registered with `autoswarm task register`."""
    root = tmp_path_factory.mktemp("cli")
    port = free_port()
    data_dir, log = root / "data", root / "coordinator.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "autoswarm", "coordinator", "--port", str(port),
             "--data-dir", str(data_dir)],
            cwd=REPO, env=clean_env(**WORKER_SETTINGS), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        assert process.poll() is None, log.read_text()[-3000:]
        try:
            return httpx.get(f"{url}/readyz", timeout=1, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    running = Served(url, data_dir, process, log, make_task(root, "clitask", sleep_s=1.5))
    try:
        wait_until(ready, 60, "autoswarm coordinator")
        with running.admin() as client:
            files = read_task_files(running.task, load_task(running.task))
            running.task_id = client.register_task(files)["task_id"]
        yield running
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_coordinator_runs_its_own_redis_and_keeps_its_token(served: Served) -> None:
    """Its Redis keeps an append-only file under the data folder; the admin token file is
    readable only by its owner."""
    redis = served.data_dir / "redis"
    assert "appendonly yes" in (redis / "redis.conf").read_text()
    assert list(redis.glob("appendonly*"))  # appendonly.aof, or Redis 7's appendonlydir
    assert stat.S_IMODE((served.data_dir / "admin.token").stat().st_mode) == 0o600
    answer = httpx.get(f"{served.url}/api/v1/tasks", timeout=5, trust_env=False)
    assert answer.status_code == 401  # not public: reading needs a token


def test_task_register_is_idempotent(served: Served) -> None:
    args = ("task", "register", str(served.task), "--join", served.url,
            "--data-dir", str(served.data_dir))  # fmt: skip
    first, again = invoke(*args), invoke(*args)
    assert first.exit_code == 0 and again.exit_code == 0, first.output + again.output
    assert first.stdout == again.stdout == f"task {served.task_id} registered\n"


def test_token_create_prints_a_token_with_its_scope(served: Served) -> None:
    """The admin token comes from the data folder; the printed token works for its scope only."""
    answer = invoke("token", "create", "--scope", "worker", "--name", "alice",
                    "--join", served.url, "--data-dir", str(served.data_dir))  # fmt: skip
    assert answer.exit_code == 0, answer.output
    token = answer.stdout.strip()
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"{served.url}/api/v1", headers=headers, trust_env=False) as http:
        worker = http.post("/workers", json={"name": "alice", "hardware": "cpu:test-1c"})
        assert worker.status_code == 201, worker.text
        hypothesis = {"task_id": served.task_id, "title": "not allowed", "change": None}
        assert http.post("/hypotheses", json=hypothesis).status_code == 403
    bad = invoke("token", "create", "--scope", "root", "--name", "x", "--join", served.url,
                 "--data-dir", str(served.data_dir))  # fmt: skip
    assert bad.exit_code == 2 and "root" in bad.output


def test_token_list_shows_each_token_and_revoke_refuses_it_and_requeues_its_lease(
    served: Served,
) -> None:
    """`token list` shows a new worker token; `token revoke ID` (its 12-character id): the
    token is refused at once and the experiment its worker held is queued again."""
    from autoswarm.shared.models import WorkerCreate
    from autoswarm.worker.hardware import detect_hardware

    admin = ("--join", served.url, "--data-dir", str(served.data_dir))
    token = served.token("worker", "gina")
    listed = invoke("token", "list", *admin)
    assert listed.exit_code == 0 and "gina" in listed.stdout, listed.output
    [token_id] = [line.split()[1] for line in listed.stdout.splitlines() if "gina" in line]
    train = SLEEPY_TRAIN.format(sleep_s=1.5, score=0.75, noise=0.0, crash=False)
    with httpx.Client(base_url=served.url, trust_env=False) as http:
        http.post(
            "/api/v1/hypotheses",
            headers={"Authorization": f"Bearer {served.admin_token}"},
            json={
                "task_id": served.task_id,
                "title": "three quarters",
                "change": {"train.py": train},
            },
        ).raise_for_status()
    hardware = detect_hardware().hardware_class
    with CoordinatorClient(served.url, token) as worker:
        worker_id = worker.register_worker(WorkerCreate(name="gina", hardware=hardware, slot="cpu"))
        lease = worker.lease(worker_id, 5.0)
        assert lease is not None
        revoked = invoke("token", "revoke", token_id, *admin)
        assert revoked.exit_code == 0 and "leases handed back to the queue: 1" in revoked.stdout
        with pytest.raises(Unauthorized):
            worker.lease(worker_id, 0.0)
    with served.admin() as client:
        assert client.get_json(f"experiments/{lease.experiment_id}")["state"] == "queued"
    again = invoke("token", "list", *admin)
    assert "gina" not in again.stdout


def test_hypothesis_add_queues_a_change_with_its_author(served: Served, tmp_path: Path) -> None:
    """A changed train.py goes into the queue under its author; the same code again does not."""
    train = tmp_path / "train.py"
    train.write_text(SLEEPY_TRAIN.format(sleep_s=1.5, score=0.5, noise=0.0, crash=False))
    token = served.token("proposer", "carol")
    args = ("hypothesis", "add", "--task", served.task_id, "--title", "half the score",
            "--file", str(train), "--author", "carol",
            "--join", served.url, "--token", token)  # fmt: skip
    answer = invoke(*args)
    assert answer.exit_code == 0, answer.output
    hypothesis_id = json.loads(answer.stdout)["hypothesis_id"]
    [added] = [h for h in served.hypotheses() if h["hypothesis_id"] == hypothesis_id]
    assert added["title"] == "half the score" and added["author"] == "carol"
    again = invoke(*args)
    assert again.exit_code == 0 and "already tried" in again.stdout
    missing = invoke("hypothesis", "add", "--task", served.task_id, "--title", "x",
                     "--file", str(tmp_path / "nope.py"),
                     "--join", served.url, "--token", token)  # fmt: skip
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_propose_with_the_mutation_proposer(served: Served) -> None:
    """Offline, no key: two hypotheses that each move one constant of train.py."""
    before = {h["hypothesis_id"] for h in served.hypotheses()}
    answer = invoke("propose", "--task", served.task_id, "--proposer", "mutation",
                    "--max-hypotheses", "2", "--queue-ahead", "50", "--join", served.url,
                    "--token", served.token("proposer", "mutation"))  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert f"submitted 2 hypotheses to task {served.task_id}" in answer.stdout
    new = [h for h in served.hypotheses() if h["hypothesis_id"] not in before]
    assert len(new) == 2
    assert all(re.match(r"^[A-Z_]+ \S+ -> \S+$", h["title"]) for h in new), new
    without_token = invoke("propose", "--task", served.task_id, "--join", served.url)
    assert without_token.exit_code == 2 and "no token" in without_token.stderr


def test_propose_with_an_llm_through_litellms_mock(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--proposer llm --model openai/gpt-4o-mini --cap-usd 5`: the model's answer (litellm's
    own mock_response) becomes a hypothesis, and its cost is written to the ledger."""
    from autoswarm.coordinator.proposers import llm

    reply = {
        "title": "Score a third",
        "rationale": "Lower is better.",
        "edits": [{"file": "train.py", "search": "SCORE = 1.0", "replace": "SCORE = 0.33"}],
        "journal": "- the score constant is the lever",
    }

    class Mocked(llm.LLMProposer):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs |= {"mock_response": json.dumps(reply), "num_retries": 0}
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(llm, "LLMProposer", Mocked)
    before = {h["hypothesis_id"] for h in served.hypotheses()}
    ledger = tmp_path / "spend.jsonl"
    answer = invoke("propose", "--task", served.task_id, "--proposer", "llm",
                    "--model", "openai/gpt-4o-mini", "--cap-usd", "5", "--ledger", str(ledger),
                    "--max-hypotheses", "1", "--queue-ahead", "50", "--join", served.url,
                    "--token", served.token("proposer", "llm"))  # fmt: skip
    assert answer.exit_code == 0, answer.output
    [new] = [h for h in served.hypotheses() if h["hypothesis_id"] not in before]
    assert new["title"] == "Score a third" and new["proposer"].startswith("llm")
    assert ledger.read_text().strip()  # the call and its cost, kept across runs
    no_model = invoke("propose", "--task", served.task_id, "--proposer", "llm",
                      "--join", served.url, "--token", "x")  # fmt: skip
    assert no_model.exit_code == 2 and "--model" in no_model.stderr


def control(state: Path, *args: str) -> Result:
    answer = invoke("worker", *args, "--state-dir", str(state))
    assert answer.exit_code == 0, answer.output
    return answer


def slot(state: Path) -> dict[str, Any]:
    slots: list[dict[str, Any]] = json.loads(control(state, "status", "--json").stdout)["slots"]
    return slots[0] if slots else {}


def test_worker_joins_and_is_paused_resumed_and_finished(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`autoswarm worker --join URL --token T` runs the task's experiments; from a second
    terminal `pause` stops it leasing, `status` shows it, `resume` lets it lease again, and
    `finish` ends it after the experiment it is running (exit 0)."""
    state = tmp_path_factory.mktemp("w")  # short: the control socket's path
    token = invoke("token", "create", "--scope", "worker", "--name", "dave", "--join", served.url,
                   "--data-dir", str(served.data_dir)).stdout.strip()  # fmt: skip
    log = state.parent / "worker.log"
    with log.open("ab") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", "autoswarm", "worker", "--join", served.url, "--token", token,
             "--name", "dave", "--gpus", "none", "--trust", "trusted-code",
             "--state-dir", str(state)],
            cwd=REPO, env=clean_env(), stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def worker_state(wanted: str) -> bool:
        assert worker.poll() is None, log.read_text()[-3000:]
        try:
            return slot(state).get("state") == wanted
        except AssertionError:
            return False  # its control socket is not up yet

    try:
        wait_until(lambda: worker_state("running"), 60, "the worker running an experiment")
        assert "paused" in control(state, "pause").stdout
        wait_until(lambda: worker_state("paused"), 30, "the worker paused")
        table = control(state, "status").stdout
        assert "worker dave (paused)" in table
        assert " ok " in table and "{" not in table  # its last result, as words, not a dict
        with served.admin() as client:
            queued = client.get_json("experiments", {"task_id": served.task_id, "status": "queued"})
            leased_before = {e["experiment_id"] for e in _leased_by(client, served, "dave")}
        assert queued["experiments"], "the queue has work the paused worker leaves alone"
        time.sleep(2)  # ten lease polls of 0.2 s would have leased
        with served.admin() as client:
            assert {e["experiment_id"] for e in _leased_by(client, served, "dave")} <= leased_before
        assert "resumed" in control(state, "resume").stdout
        wait_until(lambda: worker_state("running"), 30, "the worker running again")
        assert "finishing" in control(state, "finish").stdout
        assert worker.wait(60) == 0, log.read_text()[-3000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    with served.admin() as client:
        done = [e for e in _leased_by(client, served, "dave") if e["state"] == "done"]
    assert len(done) >= 2  # one before the pause, one after the resume
    gone = invoke("worker", "status", "--state-dir", str(state))
    assert gone.exit_code == 1 and "no worker is running" in gone.stderr


def test_one_ctrl_c_finishes_the_run_and_reports_it_a_second_hands_it_back(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Ctrl-C once: the run goes on past the stop grace, is reported, the worker exits 0,
    saying so; Ctrl-C twice: the run is stopped at once and handed back, saying so."""
    token = served.token("worker", "erin")
    grace = {"AUTOSWARM_STOP_GRACE_S": "0.1"}  # far shorter than a run: no time to finish
    for name, presses in (("erin", 1), ("erin2", 2)):
        state = tmp_path_factory.mktemp("c")
        worker = subprocess.Popen(
            [sys.executable, "-m", "autoswarm", "worker", "--join", served.url, "--token", token,
             "--name", name, "--gpus", "none", "--trust", "trusted-code",
             "--state-dir", str(state)],
            cwd=REPO, env=clean_env(**grace), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True,
        )  # fmt: skip
        try:
            wait_until(partial(_running, state, worker), 60, "the worker running an experiment")
            running = slot(state)["experiment_id"]
            for press in range(presses):
                worker.send_signal(signal.SIGINT)
                if press + 1 < presses:  # two signals at once can reach Python as one
                    wait_until(partial(_finishing, state), 10, "the first Ctrl-C taken")
            out, _ = worker.communicate(timeout=60)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert worker.returncode == 0, out
        with served.admin() as client:
            exp = client.get_json(f"experiments/{running}")
        if presses == 1:
            assert "finishing: the current run completes and is reported" in out
            assert exp["result"] is not None and "abandoned" not in out, out
        else:
            assert "stopping now" in out and "abandoned" in out, out
            assert exp["result"] is None, exp


def _finishing(state: Path) -> bool:
    return bool(send_command(state, "status").get("finishing"))


def _running(state: Path, worker: subprocess.Popen[str]) -> bool:
    assert worker.poll() is None, worker.communicate()[0]
    try:
        return slot(state).get("state") == "running"
    except AssertionError:
        return False  # its control socket is not up yet


def test_the_workers_screen_shows_task_budget_bar_time_left_runs_and_a_summary() -> None:
    """A slot mid-run: its task, kind, hypothesis title, a bar of its budget and the time
    left; the totals with runs kept and credit; then the summary line when it stops."""
    from rich.console import Console

    from autoswarm.cli.worker_screen import render, summary

    status = {
        "name": "alice", "state": "running", "outbox": 0,
        "slots": [{
            "slot": "gpu0", "state": "running", "completed": 3, "recorded": 2,
            "kept": 1, "credit": 612.5, "title": "warmup 2x [red]longer[/red]\x1b[2J",
            "experiment_id": "e0123456789abcd", "task_id": "tinylm", "kind": "explore",
            "budget_s": 300.0, "elapsed_s": 75.0, "time_left_s": 225.0,
        }],
    }  # fmt: skip
    screen = Console(record=True, width=120, color_system=None)
    screen.print(render(status, running_s=3725.0))
    drawn = screen.export_text()
    assert "worker alice (running)" in drawn and "tinylm: explore e0123456789abcd" in drawn
    assert "0:03:45 left" in drawn and "━" in drawn  # the bar
    assert "warmup 2x [red]longer[/red][2J" in drawn  # clean text, no markup, no escape
    assert "runs 3 · kept 1 · credit 612.5 · 2 reported, in 1:02:05" in drawn
    assert summary(status, 3725.0) == (
        "worker alice stopped after 1:02:05: runs 3 · kept 1 · credit 612.5, 2 reported"
    )


def test_doctor_and_the_worker_check_the_token_first_and_say_when_never_reached(
    served: Served, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """`doctor --join --token` passes a known token and fails a wrong one; a worker with a
    wrong token stops before its sandbox self-test; one whose URL answers nothing says it has
    never reached the coordinator."""
    good = served.token("worker", "frank")
    checks = json.loads(invoke("doctor", "--json", "--join", served.url, "--token", good).stdout)
    assert {c["name"]: c["status"] for c in checks}["token"] == "OK"
    wrong = invoke("doctor", "--json", "--join", served.url, "--token", "as_wrong")
    assert wrong.exit_code == 1
    assert {c["name"]: c["status"] for c in json.loads(wrong.stdout)}["token"] == "FAIL"
    state = tmp_path_factory.mktemp("t")
    refused = subprocess.run(
        [sys.executable, "-m", "autoswarm", "worker", "--join", served.url, "--token", "as_wrong",
         "--gpus", "none", "--trust", "sandboxed", "--state-dir", str(state)],
        cwd=REPO, env=clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "refused this token" in refused.stderr, refused.stderr
    assert "self-test" not in refused.stderr and "Traceback" not in refused.stderr
    away = f"http://127.0.0.1:{free_port()}"
    worker = subprocess.Popen(
        [sys.executable, "-m", "autoswarm", "worker", "--join", away, "--token", good,
         "--gpus", "none", "--trust", "trusted-code", "--state-dir", str(state)],
        cwd=REPO, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert worker.stdout is not None
        said = ""
        while "never reached" not in said:
            line = worker.stdout.readline()
            assert line, said
            said += line
        assert f"has never reached the coordinator at {away}" in said
    finally:
        worker.send_signal(signal.SIGINT)
        worker.send_signal(signal.SIGINT)
        worker.communicate(timeout=30)


def _leased_by(client: CoordinatorClient, served: Served, name: str) -> list[dict[str, Any]]:
    """The task's experiments last leased by the worker called `name`."""
    [worker_id] = [w["worker_id"] for w in client.get_json("workers") if w["name"] == name]
    params = {"task_id": served.task_id, "worker_id": worker_id, "limit": 500}
    found: list[dict[str, Any]] = client.get_json("experiments", params)["experiments"]
    return found


def test_doctor_checks_this_machine_and_the_coordinator(served: Served) -> None:
    """Python, torch, the sandbox, disk and the coordinator; the exit code is 1 only when a
    check failed."""
    answer = invoke("doctor", "--json", "--join", served.url)
    checks = {c["name"]: c for c in json.loads(answer.stdout)}
    assert {"python", "torch", "sandbox", "disk", "coordinator"} <= set(checks)
    assert checks["coordinator"]["status"] == "OK" and checks["python"]["status"] == "OK"
    assert checks["clock"]["status"] == "OK"  # the same machine's clock
    failed = [c for c in checks.values() if c["status"] == "FAIL"]
    assert answer.exit_code == (1 if failed else 0), failed
    away = invoke("doctor", "--json", "--join", f"http://127.0.0.1:{free_port()}")
    assert away.exit_code == 1
    assert {c["name"]: c["status"] for c in json.loads(away.stdout)}["coordinator"] == "FAIL"


# ---- the README ------------------------------------------------------------------------------


def readme_commands() -> list[list[str]]:
    """Every `autoswarm ...` line of the README's shell blocks, as argv after `autoswarm`,
    with each `a|b|c` alternative of a command name spelled out."""
    text = README.read_text()
    found: list[list[str]] = []
    for block in re.findall(r"```(?:bash|sh|console)\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip().removeprefix("$ ")
            if not line.startswith("autoswarm"):
                continue
            words = shlex.split(line.replace(" | ", "|"))[1:]
            variants: list[list[str]] = [[]]
            for word in words:
                if "|" in word and not word.startswith(("-", "[")):
                    variants = [[*v, w] for v in variants for w in word.split("|")]
                else:
                    variants = [[*v, word] for v in variants]
            found.extend(variants)
    return found


def subcommands(command: Any) -> dict[str, Any]:
    """A command group's commands by name ({} for a command)."""
    found: dict[str, Any] = getattr(command, "commands", {})
    return found


def resolve(argv: list[str]) -> tuple[str, Any, list[str]]:
    """The command path an argv names, its command, and the options the line shows."""
    path: list[str] = []
    command = typer.main.get_command(app)
    rest = list(argv)
    while rest and rest[0] in subcommands(command):
        path.append(rest.pop(0))
        command = subcommands(command)[path[-1]]
    if not path and rest and rest[0].startswith("--"):
        path.append(rest[0])  # `autoswarm --help`
    options = [
        re.sub(r"[=\]].*", "", w.lstrip("[")) for w in rest if w.lstrip("[").startswith("--")
    ]
    return " ".join(path), command, options


def test_readme_shows_only_real_commands_each_run_by_a_test() -> None:
    """Every command the README shows exists with the options it shows, and has a test here
    (or in the module named) that runs it through the command line."""
    lines = readme_commands()
    assert len(lines) >= 15, "the README's command blocks were not found"
    shown: set[str] = set()
    for argv in lines:
        path, command, options = resolve(argv)
        assert path, f"`autoswarm {' '.join(argv)}` names no command"
        shown.add(path)
        known = {name for p in command.params for name in (*p.opts, *p.secondary_opts)}
        known |= {"--help"}
        unknown = [o for o in options if o not in known]
        assert not unknown, f"`autoswarm {' '.join(argv)}`: no such option {unknown}"
    assert shown == set(README_COMMANDS), (
        f"README shows {sorted(shown - set(README_COMMANDS))} with no test named here; "
        f"{sorted(set(README_COMMANDS) - shown)} are named here but not in the README"
    )
    for test in {*README_COMMANDS.values(), LLM_PROPOSE_TEST}:
        module, name = test.split("::")
        assert callable(getattr(import_module(module[:-3].replace("/", ".")), name, None)), test
