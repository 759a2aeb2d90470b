"""`autoswarm up`: the original AutoResearch loop on one machine, as a small swarm.

One process runs the coordinator (embedded Redis, lineage under the data folder) and the
proposer; worker subprocesses run the experiments; the terminal shows a live table, and
`results.tsv` and `progress.png` are rewritten as results arrive. Ctrl-C, SIGTERM, SIGHUP
(the terminal closed) or `--max-experiments` stop it cleanly: workers hand back their
leases, the lineage is printed and then this run's hypotheses with the judge's reasons,
Redis is shut down. If `up` itself is killed, its workers and its Redis get SIGTERM from
the kernel (PR_SET_PDEATHSIG) rather than run on.

Workers: by default one for a CUDA task (a worker runs one slot per GPU), and for a CPU
task one per `resources.cpus` cores (one when the task does not say: a run has the whole
machine). The cores are shared out: each worker is pinned to its own (and told so by
OMP_NUM_THREADS and its kin), so two runs never compete for a core, and its hardware class
says how many it has (`cpu:x86_64-2c`): scores are compared only between workers with as
many cores.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from autoswarm.cli.console import console, err_console, plain, print_error
from autoswarm.cli.numbers import DEFAULT_DECIMALS, fixed, score_text, task_decimals
from autoswarm.cli.report import ExperimentRow, plot_progress, rows_from_summaries, to_tsv
from autoswarm.shared.errors import AutoswarmError, SandboxUnavailable
from autoswarm.shared.lifetime import die_with_parent
from autoswarm.shared.task import Device, TaskSpec, read_task_files

logger = logging.getLogger(__name__)

REFRESH_S = 2.0
# How many of the task's latest hypotheses `up` reads to tell its own from earlier runs'.
DECISIONS_READ = 1000
# How many of them its closing table shows (the latest).
DECISIONS_SHOWN = 20
WORKER_STOP_S = 30.0
# Log lines shown under the live table (the proposer's, and every warning).
LOG_LINES_SHOWN = 6


class RecentLog(logging.Handler):
    """The latest log lines, for the live view to show under its table (never printed: a
    line printed while the table is live would tear it)."""

    def __init__(self, keep: int = LOG_LINES_SHOWN) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING or record.name.startswith(
            "autoswarm.coordinator.proposers"
        ):
            stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
            message = " ".join(record.getMessage().split())
            self.lines.append(f"{stamp} {record.levelname.lower()} {message}"[:300])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def choose_trust(trust: str, proposer: str) -> str:
    """'auto': sandboxed where bubblewrap works; else trusted only for an offline proposer.

    The offline proposers (optuna, mutation) change only numeric constants of the code the
    researcher brought, so running their changes unsandboxed on the researcher's own machine
    is the original loop;
    code an LLM wrote never runs unsandboxed unless the researcher says so.
    """
    if trust != "auto":
        return trust
    from autoswarm.worker.bwrap import probe_sandbox

    probe = probe_sandbox()
    if probe.ok:
        return "sandboxed"
    if proposer in ("optuna", "mutation"):
        err_console.print(
            "[yellow]warning:[/yellow] no sandbox here, so experiments run unsandboxed "
            f"(the {proposer} proposer only retunes your own constants): {probe.explain()}"
        )
        return "trusted-code"
    raise SandboxUnavailable(
        f"{probe.explain()}; or pass --trust trusted-code to run LLM-written code unsandboxed"
    )


def default_workers(spec: TaskSpec) -> int:
    """One per `resources.cpus` cores for a CPU task that says, else one (a CUDA task's
    worker runs a slot per GPU)."""
    from autoswarm.worker.hardware import cpu_count

    cpus = spec.resources.cpus
    if spec.resources.device is Device.CUDA or cpus is None:
        return 1
    return max(1, cpu_count() // cpus)


def share_cores(workers: int, cpus: int | None) -> list[list[int]]:
    """The cores of this process dealt out, `cpus` to each worker (default: an equal share;
    spare ones unused); no pinning ([] each) when there are too few to go round."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    each = cpus or len(cores) // workers
    if each == 0 or each * workers > len(cores):
        return [[] for _ in range(workers)]
    return [cores[i * each : (i + 1) * each] for i in range(workers)]


THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def worker_start(cores: list[int]) -> tuple[Callable[[], None], dict[str, str]]:
    """The `preexec_fn` of a local worker (dies with `up`, pinned to `cores`) and its
    environment (thread counts set to its cores, unless the researcher set them)."""
    arm = die_with_parent()

    def start() -> None:  # pragma: no cover - runs in the child, between fork and exec
        if arm is not None:
            arm()
        if cores:
            os.sched_setaffinity(0, cores)

    env = dict(os.environ)
    if cores:
        for name in THREAD_VARIABLES:
            env.setdefault(name, str(len(cores)))
    return start, env


class WatchedProposer:
    """The proposer, and whether its latest answer was "nothing new" (`spent`)."""

    def __init__(self, inner: Any, kind: str) -> None:
        self.inner = inner
        self.kind = kind
        self.spent = threading.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def propose(self, context: Any) -> Any:
        found = self.inner.propose(context)
        if found is None:
            self.spent.set()
        else:
            self.spent.clear()
        return found


def spent_line(kind: str) -> str:
    """The live screen's one line once the proposer has nothing new."""
    return (
        f"the {kind} proposer has nothing new to propose; `autoswarm hypothesis add` queues "
        "ideas of your own"
    )


@dataclass
class Swarm:
    """The processes `up` started, and how to stop them in order."""

    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    proposer_thread: threading.Thread | None = None
    proposer_error: Exception | None = None  # why the proposers stopped (a cap, a key)
    log: RecentLog = field(default_factory=RecentLog)
    proposer: WatchedProposer | None = None  # the first; all share its `spent`

    def run_proposers(self, client: Any, task_id: str, proposers: list[Any], **kw: Any) -> None:
        """The proposer loops (in this thread); an error they end with stops the swarm."""
        from autoswarm.coordinator.proposers.base import run_proposer_loops

        try:
            run_proposer_loops(client, task_id, proposers, stop=self.stop, **kw)
        except Exception as exc:  # shown by run_up, in one line
            self.proposer_error = exc
            self.stop.set()

    def start_worker(
        self, index: int, url: str, token: str, trust: str, data_dir: Path, cores: list[int]
    ) -> None:
        state = data_dir / "workers" / f"w{index}"
        state.mkdir(parents=True, exist_ok=True)
        log = (data_dir / "logs" / f"worker-{index}.log").open("ab")
        argv = [
            sys.executable, "-m", "autoswarm.worker", "--join", url, "--token", token,
            "--trust", trust, "--state-dir", str(state), "--name", f"local-{index}",
            "--wait-s", "5",
        ]  # fmt: skip
        # The token goes in argv of a local child only; the sandbox never sees it. Started
        # from the main thread, so the child's SIGTERM comes when this process ends.
        start, env = worker_start(cores)
        self.workers.append(
            subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                preexec_fn=start,
            )
        )

    def shut_down(self) -> None:
        self.stop.set()
        for proc in self.workers:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + WORKER_STOP_S
        for proc in self.workers:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self.proposer_thread is not None:
            self.proposer_thread.join(10)


def run_up(
    task_dir: Path,
    spec: TaskSpec,
    *,
    workers: int,
    proposers: list[Any],
    proposer_kind: str,
    trust: str,
    data_dir: Path,
    port: int | None,
    out_dir: Path,
    max_experiments: int | None,
) -> int:
    """Run the loop until Ctrl-C (or `max_experiments` more judged); the exit code (1: an error,
    or every worker stopped)."""
    from autoswarm.cli.propose_cmd import wire_proposers
    from autoswarm.coordinator.service import serve_in_thread
    from autoswarm.coordinator.settings import CoordinatorSettings
    from autoswarm.shared.client import CoordinatorClient

    trust = choose_trust(trust, proposer_kind)
    code = 0
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "logs").mkdir(exist_ok=True)
    # One worker cannot hand a replicate to another: it replicates its own find at once.
    settings = CoordinatorSettings.load(
        None,
        data_dir=data_dir,
        port=port or free_port(),
        replicate_wait_s=0.0 if workers == 1 else None,
        # Loopback only, for the researcher at this machine: the dashboard needs no token.
        public_read=True,
    )
    with console.status("starting the coordinator (embedded Redis, lineage)"):
        coordinator = serve_in_thread(settings)
    swarm = Swarm()
    logging.getLogger().addHandler(swarm.log)
    logging.getLogger("autoswarm.coordinator.proposers").setLevel(logging.INFO)
    previous = _install_stop(swarm.stop)
    admin: CoordinatorClient | None = None
    task_id = ""
    earlier: set[str] = set()  # hypotheses of the data folder's earlier runs
    try:
        admin = CoordinatorClient(coordinator.url, coordinator.admin_token, timeout_s=60)
        task_id = admin.register_task(read_task_files(task_dir, spec))["task_id"]
        earlier = {h["hypothesis_id"] for h in list_hypotheses(admin, task_id)}
        worker_token = admin.create_token("worker", "local")
        proposer_token = admin.create_token("proposer", proposer_kind)
        cpu_task = spec.resources.device is Device.CPU
        pinned = share_cores(workers, spec.resources.cpus) if cpu_task else []
        for index in range(workers):
            cores = pinned[index] if pinned else []
            swarm.start_worker(index, coordinator.url, worker_token, trust, data_dir, cores)
        client = CoordinatorClient(coordinator.url, proposer_token, timeout_s=60)
        wire_proposers(proposers, client, swarm.stop)
        watched = [WatchedProposer(p, proposer_kind) for p in proposers]
        for other in watched[1:]:
            other.spent = watched[0].spent
        swarm.proposer = watched[0]
        swarm.proposer_thread = threading.Thread(
            target=swarm.run_proposers,
            args=(client, task_id, watched),
            kwargs={
                "queue_ahead": max(2, workers),
                "poll_s": 1.0,
                # Bounded: no more than it will judge (fast runs judged dozens before the
                # watch saw the count, spending moves a later run on this folder needed).
                "max_hypotheses": max_experiments,
            },
            name="proposer",
            daemon=True,
        )
        swarm.proposer_thread.start()
        console.print(
            f"dashboard and API: [link]{coordinator.url}/[/link] (API under "
            f"{coordinator.url}/api/v1)\nadmin token: {coordinator.admin_token} "
            f"(also in {settings.admin_token_file}, readable only by you)\n"
            f"workers: {workers_line(workers, pinned)}   trust: {trust}\n"
            f"logs: {data_dir / 'logs'}   Ctrl-C stops"
        )
        if not _watch(admin, spec, task_id, swarm, out_dir, max_experiments):
            code = 1
        if swarm.proposer_error is not None:
            print_error(f"the proposer stopped: {swarm.proposer_error}")
            code = 1
    except AutoswarmError as exc:
        print_error(f"{exc}")
        return 1
    finally:
        with console.status("stopping workers (leases are handed back)"):
            swarm.shut_down()
        if admin is not None and task_id:
            print_lineage(admin, task_id)
            print_decisions(admin, task_id, earlier)
        with console.status("stopping the coordinator"):
            coordinator.stop()
        console.print(plain(reopen_hint(data_dir)), soft_wrap=True)
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        logging.getLogger().removeHandler(swarm.log)
    return code


def reopen_hint(data_dir: Path) -> str:
    """What reads the results once `up` has ended (they stay in its data folder)."""
    from autoswarm.cli.reach import DEFAULT_DATA_DIR

    flag = "" if data_dir == DEFAULT_DATA_DIR else f" --data-dir {data_dir}"
    return (
        f"results kept in {data_dir}: `autoswarm dashboard{flag}` reopens the dashboard; "
        f"`autoswarm leaderboard{flag}` (and status, experiments, show, export, plot) read them"
    )


def workers_line(workers: int, pinned: list[list[int]]) -> str:
    if pinned and pinned[0]:
        each = len(pinned[0])
        return f"{workers}, {each} core{'s' if each > 1 else ''} each"
    return str(workers)


def print_lineage(client: Any, task_id: str) -> None:
    """The chain of kept changes per hardware class, as `autoswarm leaderboard` shows it."""
    from autoswarm.cli.results_cmd import board_tables

    try:
        board = client.get_json(f"tasks/{task_id}/leaderboard")
    except AutoswarmError as exc:
        err_console.print(f"[yellow]the lineage could not be read:[/yellow] {exc}")
        return
    for table in board_tables(board):
        console.print(table)


def list_hypotheses(client: Any, task_id: str) -> list[dict[str, Any]]:
    """The task's latest hypotheses (up to the API's page of 1,000), newest first."""
    hypotheses: list[dict[str, Any]] = client.get_json(
        f"tasks/{task_id}/hypotheses", params={"limit": DECISIONS_READ}
    )
    return hypotheses


def print_decisions(client: Any, task_id: str, earlier: set[str]) -> None:
    """This run's hypotheses with the judge's reasons (`decisions_table`)."""
    try:
        hypotheses = list_hypotheses(client, task_id)
    except AutoswarmError as exc:
        err_console.print(f"[yellow]the decisions could not be read:[/yellow] {exc}")
        return
    table = decisions_table(hypotheses, earlier)
    if table is not None:
        console.print(table)


def decisions_table(
    hypotheses: list[dict[str, Any]], earlier: set[str], limit: int = DECISIONS_SHOWN
) -> Table | None:
    """The hypotheses not in `earlier`, oldest first, each with its verdict and the judge's
    reason: why a change was kept, or what held it back (the head's noise, a crash, a
    duplicate). Only the latest `limit` when there are more (a long run's table would
    scroll its lineage away); None when there are none."""
    mine = sorted(
        (h for h in hypotheses if h["hypothesis_id"] not in earlier),
        key=lambda h: int(h.get("seq", 0)),
    )
    if not mine:
        return None
    title = f"this run's hypotheses ({len(mine)}), and why each was decided so"
    if len(mine) > limit:
        title += f": the latest {limit} (`autoswarm experiments` and the dashboard have all)"
    table = Table(title=title)
    for column in ("hypothesis", "verdict", "delta", "why"):
        table.add_column(column, overflow="fold")
    for h in mine[-limit:]:
        delta = h.get("delta")
        table.add_row(
            plain(h["title"]),
            h.get("verdict", ""),
            "" if delta is None else f"{delta:+.4g}",
            plain(
                h.get("reason") or ("waiting for its run" if h.get("verdict") == "pending" else "")
            ),
        )
    return table


def _install_stop(stop: threading.Event) -> dict[int, Any]:
    """SIGINT, SIGTERM and SIGHUP set `stop`; the handlers they had before, to restore."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return {
        signum: signal.signal(signum, on_signal)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    }


def _watch(
    client: Any,
    spec: TaskSpec,
    task_id: str,
    swarm: Swarm,
    out_dir: Path,
    max_experiments: int | None,
) -> bool:
    """The live view until stopped or `max_experiments` more hypotheses are judged (this run's:
    a data folder's earlier ones do not count); False if every worker stopped first."""
    since = time.time() - 5.0  # a worker registers after this; 5 s for clocks' rounding
    written: list[Any] | None = None
    judged_before: int | None = None
    workers_alive = True
    done_line = ""
    with Live(console=console, refresh_per_second=1, transient=False) as live:
        while not swarm.stop.is_set():
            task = client.get_json(f"tasks/{task_id}")
            experiments = list_experiments(client, task_id)
            hypotheses = {
                h["hypothesis_id"]: h for h in client.get_json(f"tasks/{task_id}/hypotheses")
            }
            rows = rows_from_summaries(experiments)
            # This run's workers: those an earlier `up` on the folder registered are gone.
            workers = [w for w in client.get_json("workers") if w.get("registered_s", 0) >= since]
            live.update(render(spec, task, experiments, hypotheses, workers, swarm))
            if rows != written:  # a verdict changing rewrites a row, too
                write_exports(rows, spec, out_dir, task_decimals(task.get("heads", [])))
                written = rows
            judged = sum(1 for h in hypotheses.values() if h.get("verdict") != "pending")
            judged_before = judged if judged_before is None else judged_before
            if max_experiments is not None and judged - judged_before >= max_experiments:
                break
            if swarm.proposer is not None and all_done(
                swarm.proposer, task, experiments, hypotheses
            ):
                done_line = (
                    f"{spent_line(swarm.proposer.kind)}, and every experiment is judged: "
                    "stopping (`up` again runs what you add)"
                )
                break
            if all(p.poll() is not None for p in swarm.workers):
                err_console.print("[red]every worker stopped[/red]; see the logs folder")
                workers_alive = False
                break
            swarm.stop.wait(REFRESH_S)
    if done_line:
        console.print(plain(done_line), soft_wrap=True)
    # The last verdicts may have landed after this pass read the experiments.
    rows = rows_from_summaries(list_experiments(client, task_id))
    if rows != written:
        heads = client.get_json(f"tasks/{task_id}").get("heads", [])
        write_exports(rows, spec, out_dir, task_decimals(heads))
    return workers_alive


def all_done(
    proposer: WatchedProposer,
    task: dict[str, Any],
    experiments: list[dict[str, Any]],
    hypotheses: dict[str, dict[str, Any]],
) -> bool:
    """Whether the proposer has nothing new and nothing is left to run or judge (a worker
    has started measuring the task: before, its baselines are not even queued)."""
    if not proposer.spent.is_set() or not task.get("heads"):
        return False
    if any(h.get("verdict") == "pending" for h in hypotheses.values()):
        return False
    return not any(e.get("state") in ("queued", "leased") for e in experiments)


def list_experiments(client: Any, task_id: str) -> list[dict[str, Any]]:
    """Every experiment of a task, oldest first, following the cursor."""
    found: list[dict[str, Any]] = []
    cursor: Any = None
    while True:
        params: dict[str, Any] = {"task_id": task_id, "limit": 500, "view": "summary"}
        if cursor is not None:
            params["cursor"] = cursor
        page = client.get_json("experiments", params)
        found.extend(page["experiments"])
        cursor = page.get("next_cursor")
        if not cursor:
            break
    found.sort(key=lambda e: e.get("seq", 0))
    return found


def write_exports(
    rows: list[ExperimentRow], spec: TaskSpec, out_dir: Path, decimals: int = DEFAULT_DECIMALS
) -> None:
    """results.tsv (scores at `decimals`) and progress.png, each replaced atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    tsv = out_dir / "results.tsv"
    tmp = tsv.with_suffix(".tsv.tmp")
    tmp.write_text(to_tsv(rows, spec.metric.name, decimals))
    os.replace(tmp, tsv)
    if rows:
        png = out_dir / "progress.png"
        tmp_png = out_dir / "progress.tmp.png"
        plot_progress(
            rows, metric_name=spec.metric.name, lower_is_better=spec.lower_is_better, path=tmp_png
        )
        os.replace(tmp_png, png)


def render(
    spec: TaskSpec,
    task: dict[str, Any],
    experiments: list[dict[str, Any]],
    hypotheses: dict[str, dict[str, Any]],
    workers: list[dict[str, Any]],
    swarm: Swarm,
) -> Group:
    """The live view: the head per hardware class, the workers, the latest experiments."""
    heads = Table(title=f"{spec.name}: {spec.metric.name} ({spec.metric.direction})")
    for column in ("hardware", "head", f"{spec.metric.name} ± noise (n)"):
        heads.add_column(column)
    for head in task.get("heads", []):
        heads.add_row(
            head["hardware"],
            head["commit"][:7],
            score_text(head.get("mean"), head.get("std"), head.get("runs")),
        )
    decimals = task_decimals(task.get("heads", []))
    latest = Table(title="latest experiments")
    for column in ("experiment", "kind", "state", spec.metric.name, "verdict", "hypothesis"):
        latest.add_column(column, overflow="ellipsis", no_wrap=True)
    for exp in experiments[-12:]:
        metric = exp.get("metric")
        latest.add_row(
            exp["experiment_id"][:12],
            exp["kind"],
            exp.get("status") or exp.get("state", ""),
            "—" if metric is None else fixed(metric, decimals),
            exp.get("verdict") or "" if exp["kind"] in ("explore", "merge") else "",
            plain(exp.get("title", "")),
        )
    kept = sum(1 for h in hypotheses.values() if h.get("verdict") == "kept")
    alive = sum(1 for p in swarm.workers if p.poll() is None)
    queued = sum(1 for e in experiments if e.get("state") == "queued")
    said = (
        f"{len(experiments)} experiments ({queued} queued) · {len(hypotheses)} hypotheses · "
        f"{kept} kept · {alive} workers running"
    )
    if swarm.proposer is not None and swarm.proposer.spent.is_set():
        said += "\n" + spent_line(swarm.proposer.kind)
    footer = Panel(plain(said), expand=False)
    parts: list[Any] = [heads, workers_table(spec, experiments, workers), latest, footer]
    if swarm.log.lines:
        parts.append(Panel(plain("\n".join(swarm.log.lines)), title="log", title_align="left"))
    return Group(*parts)


def workers_table(
    spec: TaskSpec, experiments: list[dict[str, Any]], workers: list[dict[str, Any]]
) -> Table:
    """Per worker: its class, what it runs now (leased), and its last result."""
    table = Table(title="workers")
    for column in ("worker", "hardware", "now", "last result"):
        table.add_column(column, overflow="ellipsis", no_wrap=True)
    for worker in sorted(workers, key=lambda w: str(w.get("name", ""))):
        mine = [e for e in experiments if e.get("worker_id") == worker["worker_id"]]
        running = [e for e in mine if e.get("state") == "leased"]
        done = [e for e in mine if e.get("state") == "done" and e.get("status")]
        now = "idle"
        if running:
            now = f"{running[-1]['kind']}: {running[-1].get('title') or running[-1]['kind']}"
        last = "—"
        if done:
            metric = done[-1].get("metric")
            shown = "" if metric is None else f" {spec.metric.name} {metric:.6f}"
            last = f"{done[-1]['status']}{shown}"
        name, hardware = plain(str(worker.get("name", ""))), plain(str(worker.get("hardware", "")))
        table.add_row(name, hardware, plain(now), last)
    return table
