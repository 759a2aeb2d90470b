"""The experiment runner: prepare a task once, run one experiment from outside, score it.

Layout of one experiment under `work_root/run-<id>/`:
    work/        the run's working folder and HOME: editable and protected files,
                 data/ (the prepared data, read-only), out/ (its artifacts), .tmp/, and
                 what prepare left under its HOME, at the same place (read-only)
    run.log      the run's stdout and stderr
    eval/        evaluator mode: protected and evaluator files, exported.py (this
                 worker's worker/exported.py, never the task's), data/, heldout/,
                 artifacts/ (copies of the regular files in the run's out/)
    eval.log     the evaluator's stdout and stderr
The prepare cache is `cache_root/prepare/<key>/` with data/, heldout/ and home/ (the
prepare step's HOME); a task's own environment is `cache_root/envs/<key>/`
(`worker.environments`).
"""

from __future__ import annotations

import ast
import contextlib
import fcntl
import hashlib
import logging
import math
import os
import shutil
import signal
import stat
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from shared.environment import read_environment_files
from shared.errors import AutoswarmError, SummaryError, TaskError
from shared.models import MAX_LOG_TAIL_CHARS, Result, ResultStatus
from shared.summary import parse_summary, read_metric
from shared.task import (
    EVALUATOR_MODULE,
    PYTHON_NAMES,
    TASK_FILE,
    Device,
    EvaluatorStart,
    ScoringMode,
    TaskSpec,
    hash_files,
    protected_hashes,
    task_environment,
)
from worker.environments import (
    HOME,
    KERNELS_WARM,
    EnvironmentBuildFailed,
    TaskEnvironment,
    build_environment,
    environment_key,
    link_home,
    ready_environment,
)
from worker.hardware import VramSampler
from worker.leftovers import ArtifactsRefused, copy_artifacts, hash_file, remove_tree
from worker.prepare_network import PrepareNetwork, declare_in_task, prepare_hosts
from worker.process import TICK_S, Limits, Outcome, Started, supervise
from worker.sandbox import Sandbox, is_secret_name, scrub_env
from worker.workfs import CARRY_REFUSED

logger = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 3600.0
OPEN_FILES = 4096
LOG_WINDOW_BYTES = 4 * 2**20  # the summary block is read from the log's last 4 MiB
EVAL_TAIL_CHARS = 4000
# The variable that hands a task's held-out secret to its prepare step, and to nothing else:
# runs and evaluators get scrubbed environments, and the prepare cache key holds its hash.
HELDOUT_SECRET_ENV = "AUTOSWARM_HELDOUT_SECRET"

OnTick = Callable[[float], None]
WarmNext = Callable[[], bool]
# The interpreter of a preloaded run (`[run] preload`), as `python -c` arguments:
# MODULES... -- SCRIPT ARGS... It imports the modules (one that fails is only named: the
# script imports it itself, or fails as it would anyway), says so by creating
# $TMPDIR/PRELOADED and waits for its line. Then it runs the script as `python SCRIPT
# ARGS...` would (the script's folder first on sys.path). No line (the worker dropped it):
# it exits without running anything.
PRELOADED = ".autoswarm-preloaded"
PRELOAD_MAIN = f"""\
import importlib, os, runpy, sys
split = sys.argv.index("--")
for module in sys.argv[1:split]:
    try:
        importlib.import_module(module)
    except BaseException as exc:
        print(f"autoswarm: preload {{module}}: {{type(exc).__name__}}: {{exc}}", file=sys.stderr)
ready = os.path.join(os.environ.get("TMPDIR", "."), "{PRELOADED}")
open(ready, "w").close()
if not sys.stdin.readline():
    sys.exit("autoswarm: a preloaded run was dropped before its turn")
os.unlink(ready)
sys.argv = sys.argv[split + 1:]
sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
runpy.run_path(sys.argv[0], run_name="__main__")
"""


# The loader of exported programs, written beside every evaluator as exported.py from this
# worker's own installation (the sandbox holds no source tree of ours): one loader for all
# evaluators, versioned with the worker; a task cannot bring its own (shared.task).
LOADER_FILE = Path(__file__).with_name("exported.py")


class PrepareError(AutoswarmError):
    """A task's prepare step failed: the machinery cannot run it, the experiment is not at fault."""


def prepare_key(
    task_dir: Path, spec: TaskSpec, heldout_secret: str | None = None, environment: str = ""
) -> str:
    """The cache key of a task version: its protected and evaluator files, task.toml, prepare,
    the kernels it fetches, the hash of its held-out secret (a new secret: new held-out
    data) and the key of its environment (prepare runs in it)."""
    files = {path: (task_dir / path).read_bytes() for path in spec.protected + spec.scoring.files}
    toml_path = task_dir / TASK_FILE
    if toml_path.is_file():
        files[TASK_FILE] = toml_path.read_bytes()
    files["\0prepare"] = repr(spec.run.prepare).encode()
    if spec.run.kernels:
        files["\0kernels"] = repr(spec.run.kernels).encode()
    if environment:
        files["\0environment"] = environment.encode()
    if heldout_secret:
        files["\0heldout-secret"] = hashlib.sha256(heldout_secret.encode()).hexdigest().encode()
    return hash_files(files)[:32]


@dataclass(frozen=True, slots=True)
class _Experiment:
    """What one experiment's steps share: its folder, ids, task, data, budget, hashes."""

    exp_dir: Path
    run_id: str
    task_dir: Path
    spec: TaskSpec
    prepared: Path
    budget_s: float
    hashes: dict[str, str]
    # The task's own environment (None: the worker's).
    environment: TaskEnvironment | None = None
    # Through PRELOAD_MAIN (`[run] preload`), unless the editable code writes its own
    # environment, which must then come before every import, as in `python train.py`.
    preload: bool = False


@dataclass(frozen=True, slots=True)
class _Warm:
    """A run started ahead (`[run] preload`): its folder ready but for the editable files,
    its interpreter importing or waiting for its line. Used by the next `run` of the same
    task version and budget, dropped otherwise."""

    key: str
    x: _Experiment
    process: Started


class _Tick:
    """The caller's `on_tick`, remembering the exception it raised to stop a run: once it
    has raised, what follows goes back to the caller; otherwise an exception after the run
    started makes the run `invalid`."""

    def __init__(self, on_tick: OnTick | None) -> None:
        self.on_tick = on_tick
        self.raised: BaseException | None = None
        self.wrapped: OnTick | None = None if on_tick is None else self._call

    def _call(self, elapsed_s: float) -> None:
        assert self.on_tick is not None
        try:
            self.on_tick(elapsed_s)
        except BaseException as exc:
            self.raised = exc
            raise


class Runner:
    """Runs one experiment of a task on this machine and returns its `Result`.

    Guarantees:
    - each run gets a fresh work folder holding copies of the editable and protected files
      (protected ones read-only) and the prepared `data/`; never the evaluator files, never
      `heldout/`; the environment is scrubbed (`worker.sandbox.scrub_env`);
    - a task with its own locked project runs its `python` commands, prepare and evaluator
      included, with its own environment's interpreter, built in `prepare` (a build that
      fails is a `PrepareError` naming the package and the lock), read-only in the run;
    - what the prepare step left under its HOME is under the run's HOME at the same
      place, read-only, and the hub is offline (`HF_HUB_OFFLINE=1`);
    - under the bubblewrap sandbox the prepare phase (build, kernels, prepare) reaches only
      the hosts `worker.prepare_network` allows it, through the worker's allow-list proxy;
    - the budget is enforced from outside: the tree gets SIGTERM at budget + startup_s +
      grace_s and SIGKILL a second later; when `run` returns, no process of the run or of
      the evaluator is alive, however it ended (see `worker.process` for the exact rules);
    - an experiment's failure is a status (`crash`, `timeout`, `invalid`), never an exception;
      a protected or evaluator file that changed during the run makes it `invalid`; so does,
      once the run has started, any exception while it is watched, collected, checked or
      scored, and a folder it left that cannot be removed (only `on_tick`'s own exception
      goes back to the caller): nothing a run leaves makes the worker hand it back;
    - what the run left is read without following its links or blocking on its FIFOs, and
      in evaluator mode only copies of out/'s regular files reach the evaluator, bounded in
      number and bytes (`worker.leftovers`);
    - in evaluator mode the score comes only from the evaluator's summary block; an evaluator
      that starts `with-run` is started just before the run, sees an empty artifacts/ until
      the run has ended well, then gets its line; when the run fails it is killed unscored;
    - with `[run] preload` every run's interpreter imports those modules first and waits;
      once they are in, its with-run evaluator starts, it gets its line (its script and its
      clock, wall time and deadline, start only now) and, given `warm_next`, the next run
      is started ahead in a fresh folder and sandbox, to import while this one trains. The
      next `run` of the same task version and budget copies its editable files into that
      one and goes on as above; any other `run` drops it, as `drop_warm` does, and so does
      this run's end when `warm_next()` says no. So every run's script starts in the same
      company, whether it was started ahead or not (importing ahead takes its CPU from
      the run that trains beside it, alike in every run). Editable code that writes its
      environment (`sets_environment`) runs as its command says instead, imports after
      the writes, and leaves the run ahead waiting for the next `run`.
    Does not:
    - confine the code: the sandbox does, and `Unsandboxed` confines nothing;
    - limit a CUDA task's memory (CPU tasks: RLIMIT_DATA per process, and the tree is killed
      when its RSS passes `memory_mb`); `disk_mb` limits each file's size here, the sandbox
      the total (see `worker.bwrap`);
    - limit the number of processes (RLIMIT_NPROC counts all of the user's processes; a
      sandbox's pid namespace is the place for that).
    Infrastructure faults (a failed prepare, a full disk) are raised as exceptions.
    """

    def __init__(
        self,
        *,
        work_root: Path,
        cache_root: Path,
        sandbox: Sandbox,
        hardware: str = "",
        keep_work: bool = False,
        env: Mapping[str, str] | None = None,
    ) -> None:
        # Absolute: the run and its sandbox have other working folders than ours.
        self.work_root = work_root.resolve()
        self.cache_root = cache_root.resolve()
        self.sandbox = sandbox
        self.network = PrepareNetwork.for_sandbox(sandbox)  # what the prepare phase reaches
        self.hardware = hardware
        self.keep_work = keep_work
        self.extra_env = _without_secrets(env or {})
        self.last_experiment_dir: Path | None = None
        self._vram: VramSampler | None = None
        self._warm: _Warm | None = None
        self._environments: dict[Path, TaskEnvironment | None] = {}

    # ---- prepare -------------------------------------------------------------------------

    def prepare(
        self,
        task_dir: Path,
        spec: TaskSpec,
        *,
        on_tick: OnTick | None = None,
        heldout_secret: str | None = None,
    ) -> Path:
        """The prepared folder of this task version, running `run.prepare` once (trusted), in
        the task's own environment, built first when it has one (`worker.environments`);
        `heldout_secret` reaches the prepare step alone (see `HELDOUT_SECRET_ENV`)."""
        environment = self._environment(task_dir, spec, on_tick)
        env_key = "" if environment is None else environment.root.name
        key = prepare_key(task_dir, spec, heldout_secret, env_key)
        root = self.cache_root / "prepare"
        final = root / key
        self._environments[final] = environment
        if final.is_dir():
            return final
        root.mkdir(parents=True, exist_ok=True)
        if spec.run.prepare is None and not spec.run.kernels:
            for name in ("data", "heldout", HOME):
                (final / name).mkdir(parents=True, exist_ok=True)
            return final
        with _locked(root / f"{key}.lock", on_tick):
            if final.is_dir():  # another runner prepared it while we waited
                return final
            tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            try:
                self._run_prepare(task_dir, spec, tmp, on_tick, heldout_secret, environment)
                for name in ("data", "heldout", HOME):
                    _make_readonly(tmp / name)
                tmp.rename(final)
            finally:
                remove_tree(tmp)
        logger.info("runner: task %s prepared in %s", spec.name, final)
        return final

    def _environment(
        self, task_dir: Path, spec: TaskSpec, on_tick: OnTick | None
    ) -> TaskEnvironment | None:
        """The task's own environment, built once per lock and platform; None: the worker's."""
        try:
            plan = task_environment(task_dir, spec)
        except TaskError as exc:
            raise PrepareError(f"task {spec.name}: {exc}") from None
        if not plan.own:
            return None
        envs = self.cache_root / "envs"
        root = envs / environment_key(read_environment_files(task_dir), plan)
        built = ready_environment(root)
        if built is not None:
            return built
        envs.mkdir(parents=True, exist_ok=True)
        with _locked(envs / f"{root.name}.lock", on_tick):
            built = ready_environment(root)  # another runner built it while we waited
            if built is not None:
                return built
            try:
                return build_environment(
                    task_dir, plan, root, on_tick=on_tick, network=self.network
                )
            except EnvironmentBuildFailed as exc:
                raise PrepareError(f"task {spec.name}: {exc}") from None

    def _run_prepare(
        self,
        task_dir: Path,
        spec: TaskSpec,
        tmp: Path,
        on_tick: OnTick | None,
        heldout_secret: str | None,
        environment: TaskEnvironment | None,
    ) -> None:
        """The prepare step, then the hub kernels the run loads at import (`[run] kernels`),
        with HOME at tmp/home: what they leave there every run finds under its own HOME."""
        for name in ("data", "heldout", ".tmp", HOME):
            (tmp / name).mkdir(parents=True)
        _copy_files(task_dir, tmp, spec.protected + spec.scoring.files, readonly=False)
        env = scrub_env(os.environ, home=tmp / HOME, tmp_dir=tmp / ".tmp") | self.extra_env
        env["AUTOSWARM_DATA_DIR"] = str(tmp / "data")
        env["AUTOSWARM_HELDOUT_DIR"] = str(tmp / "heldout")
        python = sys.executable if environment is None else environment.python
        if spec.run.kernels:
            self._prepare_step(
                spec, [python, "-c", KERNELS_WARM, *spec.run.kernels], tmp, env, on_tick
            )
        if spec.run.prepare is not None:
            if heldout_secret:
                env[HELDOUT_SECRET_ENV] = heldout_secret
            self._prepare_step(spec, _resolve(spec.run.prepare, python), tmp, env, on_tick)

    def _prepare_step(
        self,
        spec: TaskSpec,
        argv: list[str],
        tmp: Path,
        env: dict[str, str],
        on_tick: OnTick | None,
    ) -> None:
        log_path = tmp / "prepare.log"
        hosts = prepare_hosts(spec.run.prepare_hosts, kernels=bool(spec.run.kernels))
        with self.network.narrowed(
            argv, env, hosts=hosts, declare=declare_in_task, log_path=log_path
        ) as step:
            outcome = supervise(
                step.argv,
                cwd=tmp,
                env=step.env,
                log_path=log_path,
                marker=f"prepare-{uuid.uuid4().hex[:16]}",
                deadline_s=PREPARE_TIMEOUT_S,
                limits=Limits(open_files=None),
                on_tick=on_tick,
            )
        if outcome.timed_out or outcome.exit_code != 0:
            why = "timed out" if outcome.timed_out else _describe_exit(outcome.exit_code)
            tail = _read_log(log_path)[-2000:]
            raise PrepareError(f"task {spec.name}: prepare {why}; its log ends:\n{tail}")

    # ---- run -----------------------------------------------------------------------------

    def run(
        self,
        task_dir: Path,
        spec: TaskSpec,
        *,
        budget_s: float | None = None,
        on_tick: OnTick | None = None,
        warm_next: WarmNext | None = None,
        heldout_secret: str | None = None,
    ) -> Result:
        """Run the task's code once for its budget and score it (see the class docstring).
        `warm_next`, asked once the run has ended: whether to keep the next run started
        ahead (None: start none). `heldout_secret`: as for `prepare`."""
        hashes = protected_hashes(task_dir, spec)
        prepared = self.prepare(task_dir, spec, on_tick=on_tick, heldout_secret=heldout_secret)
        budget = spec.budget_s if budget_s is None else budget_s
        preload = bool(spec.run.preload)
        if preload and (writer := _environment_writer(task_dir, spec)):
            logger.info(
                "runner: %s sets environment variables: it runs in a fresh interpreter, its"
                " modules not imported ahead",
                writer,
            )
            preload = False
        warm = self._take_warm(_warm_key(prepared, spec, budget)) if preload else None
        if warm is not None:
            x = replace(warm.x, task_dir=task_dir, hashes=hashes)
        else:
            run_id = uuid.uuid4().hex[:16]
            x = _Experiment(
                exp_dir=self.work_root / f"run-{run_id}",
                run_id=run_id,
                task_dir=task_dir,
                spec=spec,
                prepared=prepared,
                budget_s=budget,
                hashes=hashes,
                environment=self._environments.get(prepared),
                preload=preload,
            )
        self.last_experiment_dir = x.exp_dir
        try:
            result = self._run_in(x, on_tick, warm, warm_next)
        finally:
            removed = self.keep_work or remove_tree(x.exp_dir)
        if not removed:  # what the run left defeats the worker: its result cannot stand
            error = f"the run left files in {x.exp_dir} that the worker could not remove"
            result = result.model_copy(
                update={
                    "status": ResultStatus.INVALID,
                    "error": error,
                    "metric": None,
                    "metrics": {},
                }
            )
        logger.info(
            "runner: experiment %s of task %s: %s (metric %s) in %.1f s%s",
            x.run_id,
            spec.name,
            result.status,
            result.metric,
            result.wall_s,
            ", started ahead" if warm is not None else "",
        )
        return result

    def drop_warm(self) -> None:
        """Kill the run started ahead, if any, and remove its folder (idempotent)."""
        warm, self._warm = self._warm, None
        if warm is not None:
            warm.process.kill()
            remove_tree(warm.x.exp_dir)

    def _take_warm(self, key: str) -> _Warm | None:
        """The run started ahead when it fits `key` and its interpreter lives; else None."""
        warm, self._warm = self._warm, None
        if warm is None:
            return None
        if warm.key == key and warm.process.proc.poll() is None:
            return warm
        if warm.key == key:  # killed meanwhile (out of memory?): not this experiment's fault
            logger.warning(
                "runner: the interpreter started ahead for task %s exited (%s); starting"
                " afresh: %s",
                warm.x.spec.name,
                warm.process.proc.returncode,
                _read_log(warm.x.exp_dir / "run.log")[-500:].strip(),
            )
        self._warm = warm
        self.drop_warm()
        return None

    def _start_warm(self, x: _Experiment) -> None:
        """Start the next run of `x`'s task version ahead (see the class docstring)."""
        run_id = uuid.uuid4().hex[:16]
        nxt = replace(x, exp_dir=self.work_root / f"run-{run_id}", run_id=run_id, preload=True)
        try:
            process = self._start_run(nxt, *self._setup_run(nxt, editable=False))
        except Exception:  # only ahead of time: the next run starts the usual way instead
            logger.exception("runner: could not start the next run ahead")
            remove_tree(nxt.exp_dir)
            return
        self._warm = _Warm(_warm_key(nxt.prepared, nxt.spec, nxt.budget_s), nxt, process)

    def _setup_run(
        self, x: _Experiment, *, editable: bool
    ) -> tuple[Path, dict[str, str], list[Path], list[Path]]:
        """The run's work folder, filled (the editable files only with `editable`): the
        folder, the environment, and the paths the sandbox binds read-only and writable."""
        spec, work = x.spec, x.exp_dir / "work"
        for name in ("out", ".tmp"):
            (work / name).mkdir(parents=True)
        if editable:
            _copy_files(x.task_dir, work, spec.editable, readonly=False)
        _copy_files(x.task_dir, work, spec.protected, readonly=True)
        _link_tree(x.prepared / "data", work / "data")
        caches = self._compile_caches(work)
        env = self._env(work) | _cache_env(caches)
        env["AUTOSWARM_BUDGET_S"] = f"{x.budget_s:g}"
        env["AUTOSWARM_OUT_DIR"] = str(work / "out")
        env["AUTOSWARM_DATA_DIR"] = str(work / "data")
        env["HF_HUB_OFFLINE"] = "1"  # the hub cache prepare warmed; runs have no network
        readonly = [work / p for p in spec.protected] + [work / "data"]
        readonly += link_home(x.prepared / HOME, work, _link_tree)
        return work, env, readonly, [work]

    def _start_run(
        self,
        x: _Experiment,
        work: Path,
        env: dict[str, str],
        readonly: list[Path],
        writable: list[Path],
    ) -> Started:
        """The run's process, not yet released. With `[run] preload` every run, started
        ahead or not, goes through `PRELOAD_MAIN`, so its script always starts with the same
        modules imported (a fresh one imports them before its clock starts, as `_run_in`
        waits for them)."""
        command = list(x.spec.run.command)
        if x.preload:
            command = ["python", "-c", PRELOAD_MAIN, *x.spec.run.preload, "--", *command[1:]]
        return self._start(
            x.spec, command, work, env, x.exp_dir / "run.log", x.run_id,
            readonly=readonly, writable=writable, gated=x.preload, environment=x.environment,
            carry=_carried(x.spec, work),
        )  # fmt: skip

    def _run_in(
        self,
        x: _Experiment,
        on_tick: OnTick | None,
        warm: _Warm | None,
        warm_next: WarmNext | None,
    ) -> Result:
        spec = x.spec
        process = None if warm is None else warm.process
        evaluator = None
        try:
            if warm is None:
                work, env, readonly, writable = self._setup_run(x, editable=True)
                if x.preload:
                    process = self._start_run(x, work, env, readonly, writable)
            if process is not None:  # whether started ahead or now, alike from here on
                _ready_preloaded(x, process, on_tick, ahead=warm is not None)
            if spec.scoring.start is EvaluatorStart.WITH_RUN:
                evaluator = self._start_evaluator(x)
            if process is None:
                process = self._start_run(x, work, env, readonly, writable)
            process.release()  # its turn: the script starts now, and its clock
            if spec.run.preload and warm_next is not None and self._warm is None:
                self._start_warm(x)  # (one kept through a run that wrote its environment)
            tick = _Tick(on_tick)
            try:
                outcome = process.finish(
                    x.budget_s + spec.run.startup_s + spec.run.grace_s,
                    **self._watching(spec),
                    on_tick=tick.wrapped,
                )
                if warm_next is not None and not warm_next():
                    self.drop_warm()
                return self._score(x, outcome, tick.wrapped, evaluator)
            except Exception as exc:
                if tick.raised is not None:  # the caller stopping the run: its exception
                    raise
                # From here on the folder is the run's work: whatever fails while it is
                # watched, collected, checked or scored is this run's `invalid`, never a fault
                # that hands the experiment back to run again (and fail again).
                logger.exception("runner: experiment %s could not be scored", x.run_id)
                error = f"the worker could not score this run: {type(exc).__name__}: {exc}"
                tail = _read_log(x.exp_dir / "run.log")[-MAX_LOG_TAIL_CHARS:]
                return Result(
                    status=ResultStatus.INVALID,
                    error=_clip(error),
                    log_tail=tail,
                    hardware=self.hardware,
                )
        finally:
            if process is not None:
                process.kill()
            if evaluator is not None:
                evaluator.kill()

    def _score(
        self,
        x: _Experiment,
        outcome: Outcome,
        on_tick: OnTick | None,
        evaluator: Started | None,
    ) -> Result:
        """The result of a run that ended: its failure, its summary's metric or its score."""
        spec, work = x.spec, x.exp_dir / "work"
        log = _read_log(x.exp_dir / "run.log")
        summary = parse_summary(log)
        fields: dict[str, Any] = {
            "exit_code": outcome.exit_code,
            "wall_s": outcome.wall_s,
            "training_s": _finite(summary.get("training_seconds")),
            "peak_rss_mb": round(outcome.peak_rss_mb, 1),
            "peak_vram_mb": _max_or_none(
                _finite(summary.get("peak_vram_mb")), outcome.peak_vram_mb
            ),
            "log_tail": log[-MAX_LOG_TAIL_CHARS:],
            "hardware": self.hardware,
        }
        if outcome.leftovers_killed:
            logger.info(
                "runner: experiment %s left %d processes, killed",
                x.run_id,
                outcome.leftovers_killed,
            )
        problem = _tampered(x.task_dir, work, spec, x.hashes) or _run_failure(
            outcome, spec, x.budget_s, log
        )
        if problem is not None:
            return Result(status=problem[0], error=_clip(problem[1]), **fields)
        if spec.scoring.mode is ScoringMode.SUMMARY:
            try:
                metric, metrics = read_metric(log, spec.metric.name)
            except SummaryError as exc:
                return Result(status=ResultStatus.INVALID, error=str(exc), **fields)
            return Result(status=ResultStatus.OK, metric=metric, metrics=metrics, **fields)
        artifacts = x.exp_dir / "eval" / "artifacts"
        artifacts.mkdir(parents=True, exist_ok=True)
        refused = work / CARRY_REFUSED  # the sandbox's own note: the run cannot write here
        if refused.is_file() and not refused.is_symlink():
            why = refused.read_text(errors="replace").strip() or "out/ was not carried back"
            return Result(status=ResultStatus.INVALID, error=_clip(f"artifacts: {why}"), **fields)
        try:
            copied = copy_artifacts(
                work / "out", artifacts, max_bytes=spec.resources.disk_mb * 2**20
            )
        except ArtifactsRefused as exc:
            return Result(status=ResultStatus.INVALID, error=f"artifacts: {exc}", **fields)
        logger.info(
            "runner: experiment %s: %d artifacts, %d bytes, %d entries left out",
            x.run_id,
            copied.files,
            copied.bytes,
            copied.left_out,
        )
        if evaluator is None:  # after the run: it starts with its artifacts in place
            evaluator = self._start_evaluator(x)
        return self._evaluate(x.exp_dir, evaluator, spec, fields, on_tick)

    def _start_evaluator(self, x: _Experiment) -> Started:
        """The task's evaluator, a second fresh process, on the eval/ folder. Started with
        the run (`with-run`), before artifacts/ has anything in it, it is gated: its input is
        a pipe, and it waits for the line `_evaluate` writes there."""
        spec, ev = x.spec, x.exp_dir / "eval"
        assert spec.scoring.command is not None
        (ev / ".tmp").mkdir(parents=True, exist_ok=True)
        (ev / "artifacts").mkdir(exist_ok=True)
        _copy_files(x.task_dir, ev, spec.protected + spec.scoring.files, readonly=True)
        loader = ev / f"{EVALUATOR_MODULE}.py"
        shutil.copyfile(LOADER_FILE, loader)
        loader.chmod(0o444)
        _link_tree(x.prepared / "data", ev / "data")
        _link_tree(x.prepared / "heldout", ev / "heldout")
        env = self._env(ev)
        env["AUTOSWARM_ARTIFACTS_DIR"] = str(ev / "artifacts")
        env["AUTOSWARM_DATA_DIR"] = str(ev / "data")
        env["AUTOSWARM_HELDOUT_DIR"] = str(ev / "heldout")
        readonly = [ev / p for p in spec.protected + spec.scoring.files]
        readonly += [loader, ev / "data", ev / "heldout", ev / "artifacts"]
        return self._start(
            spec, spec.scoring.command, ev, env, x.exp_dir / "eval.log", f"{x.run_id}-eval",
            readonly=readonly, writable=[ev],
            gated=spec.scoring.start is EvaluatorStart.WITH_RUN, environment=x.environment,
        )  # fmt: skip

    def _evaluate(
        self,
        exp_dir: Path,
        evaluator: Started,
        spec: TaskSpec,
        fields: dict[str, Any],
        on_tick: OnTick | None,
    ) -> Result:
        """Score the run's artifacts, now in the evaluator's artifacts/: release it (a gated
        one gets its line) and watch it for the task's timeout_s."""
        evaluator.release()
        offset_s = fields["wall_s"]
        outcome = evaluator.finish(
            spec.scoring.timeout_s,
            **self._watching(spec),
            on_tick=None if on_tick is None else (lambda s: on_tick(offset_s + s)),
        )
        log = _read_log(exp_dir / "eval.log")
        fields["log_tail"] = _join_tails(fields["log_tail"], log)
        if outcome.timed_out:
            error = f"the evaluator ran past its timeout_s ({spec.scoring.timeout_s:g} s)"
        elif outcome.exit_code != 0:
            error = f"the evaluator failed: {_describe_exit(outcome.exit_code, log)}"
        else:
            try:
                metric, metrics = read_metric(log, spec.metric.name)
            except SummaryError as exc:
                error = f"the evaluator's summary: {exc}"
            else:
                return Result(status=ResultStatus.OK, metric=metric, metrics=metrics, **fields)
        return Result(status=ResultStatus.INVALID, error=_clip(error), **fields)

    def _start(
        self,
        spec: TaskSpec,
        command: Sequence[str],
        cwd: Path,
        env: dict[str, str],
        log_path: Path,
        marker: str,
        *,
        readonly: Sequence[Path],
        writable: Sequence[Path],
        gated: bool = False,
        environment: TaskEnvironment | None = None,
        carry: Sequence[Path] = (),
    ) -> Started:
        """`command` started in the sandbox, under the task's limits (not yet watched), in
        the task's environment (read-only) when it has one."""
        cpu = spec.resources.device is Device.CPU
        python = sys.executable if environment is None else environment.python
        readonly = [*readonly, *(() if environment is None else environment.readonly)]
        argv = self.sandbox.wrap(
            _resolve(command, python),
            work_dir=cwd,
            readonly=readonly,
            writable=writable,
            env=env,
            carry=carry,
        )
        limits = Limits(
            open_files=OPEN_FILES,
            file_size_mb=spec.resources.disk_mb,
            data_mb=spec.resources.memory_mb if cpu else None,
        )
        return Started(
            argv, cwd=cwd, env=env, log_path=log_path, marker=marker, limits=limits, gated=gated
        )

    def _watching(self, spec: TaskSpec) -> dict[str, Any]:
        """How `Started.finish` watches a run or evaluator of this task: memory, VRAM."""
        cpu = spec.resources.device is Device.CPU
        return {
            "memory_limit_mb": spec.resources.memory_mb if cpu else None,
            "sample_vram_mb": None if cpu else self._vram_sampler(),
        }

    def _env(self, home: Path) -> dict[str, str]:
        return scrub_env(os.environ, home=home, tmp_dir=home / ".tmp") | self.extra_env

    def _compile_caches(self, work: Path) -> dict[str, Path]:
        """Inductor and Triton caches of this run only, in its work folder and so in its disk
        cap: code one run puts there is never run by another; each run compiles afresh."""
        caches = {
            "TORCHINDUCTOR_CACHE_DIR": work / ".cache" / "inductor",
            "TRITON_CACHE_DIR": work / ".cache" / "triton",
        }
        for path in caches.values():
            path.mkdir(parents=True, exist_ok=True)
        return caches

    def _vram_sampler(self) -> VramSampler | None:
        if self._vram is None:
            self._vram = VramSampler()
        return self._vram if self._vram.available else None


# ---- outcomes ----------------------------------------------------------------------------


# A run's own error when its work folder's cap refused a write (ENOSPC) or a file (EFBIG).
_DISK_FULL = ("[Errno 28] No space left on device", "[Errno 27] File too large")


def _run_failure(
    outcome: Outcome, spec: TaskSpec, budget_s: float, log: str
) -> tuple[ResultStatus, str] | None:
    if outcome.timed_out:
        return ResultStatus.TIMEOUT, (
            f"killed at the deadline: budget {budget_s:g} s + startup {spec.run.startup_s:g} s"
            f" + grace {spec.run.grace_s:g} s"
        )
    if outcome.out_of_memory:
        return ResultStatus.CRASH, (
            f"out of memory: the process tree used more than {spec.resources.memory_mb} MB"
        )
    if outcome.exit_code != 0:
        why = _describe_exit(outcome.exit_code, log)
        if any(e in log[-2000:] for e in _DISK_FULL) and "disk cap" not in why:
            why = f"writes went over its disk cap of {spec.resources.disk_mb} MB: {why}"
        return ResultStatus.CRASH, why
    return None


def _tampered(
    task_dir: Path, work: Path, spec: TaskSpec, before: dict[str, str]
) -> tuple[ResultStatus, str] | None:
    """An `invalid` status when a protected file changed, in the task folder or the work copy."""
    try:
        after = protected_hashes(task_dir, spec)
    except OSError:
        after = {}
    changed = [p for p in before if after.get(p) != before[p]]
    for path in spec.protected:
        # The work copy's folders are the run's: a link, a FIFO or a renamed folder there
        # is a change (and is never followed or waited on).
        if hash_file(work, path) != before[path] and path not in changed:
            changed.append(path)
    if not changed:
        return None
    return ResultStatus.INVALID, f"protected files changed during the run: {', '.join(changed)}"


def _describe_exit(code: int, log: str = "") -> str:
    if code < 0:
        try:
            what = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            what = f"killed by signal {-code}"
    else:
        what = f"exit code {code}"
    last = next((line.strip() for line in reversed(log.splitlines()) if line.strip()), "")
    return f"{what}: {last[:300]}" if last else what


def _join_tails(run_log: str, eval_log: str) -> str:
    """The run's tail, then the evaluator's, within the result's log limit."""
    eval_part = f"\n==> evaluator <==\n{eval_log[-EVAL_TAIL_CHARS:]}"
    return run_log[-(MAX_LOG_TAIL_CHARS - len(eval_part)) :] + eval_part


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _max_or_none(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None


def _clip(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _without_secrets(env: Mapping[str, str]) -> dict[str, str]:
    kept = {}
    for name, value in env.items():
        if is_secret_name(name):
            logger.warning("runner: variable %s looks like a secret, not passed to runs", name)
        else:
            kept[name] = value
    return kept


def _cache_env(caches: Mapping[str, Path]) -> dict[str, str]:
    return {name: str(path) for name, path in caches.items()}


def _resolve(command: Sequence[str], python: str) -> list[str]:
    """The command with a leading `python` replaced by `python` (the task's interpreter)."""
    argv = list(command)
    if argv and argv[0] in PYTHON_NAMES:
        argv[0] = python
    return argv


# ---- files -------------------------------------------------------------------------------


def _copy_files(src: Path, dst: Path, paths: Sequence[str], *, readonly: bool) -> None:
    for path in paths:
        target = dst / path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / path, target)
        target.chmod(0o444 if readonly else 0o644)


def _ready_preloaded(
    x: _Experiment, process: Started, on_tick: OnTick | None, *, ahead: bool
) -> None:
    """Wait for a preloaded run's modules; one started ahead then gets its editable files,
    copied where it sees its work folder (its script is read only once it gets its line)."""
    work = x.exp_dir / "work"
    _wait_preloaded(process, work, x.spec.run.startup_s, on_tick)
    if ahead:
        try:
            _copy_editable(x.task_dir, _seen_by(process, work), x.spec.editable)
        except OSError:
            if not process.exited():  # else its namespace went with it: it fails as it ended
                raise


def _carried(spec: TaskSpec, work: Path) -> list[Path]:
    """What of a run's work folder the host reads after it: out/, for an evaluator only."""
    return [work / "out"] if spec.scoring.mode is ScoringMode.EVALUATOR else []


def _seen_by(process: Started | None, path: Path) -> Path:
    """`path` as the running `process` sees it, through its /proc root: a sandbox may have
    mounted the run's work folder in a namespace of its own (`worker.workfs`); the path
    itself once the process has gone."""
    if process is None or process.exited():
        return path
    return Path(f"/proc/{process.proc.pid}/root") / path.relative_to(path.anchor)


def _wait_preloaded(process: Started, work: Path, limit_s: float, on_tick: OnTick | None) -> None:
    """Wait until a preloaded run's modules are imported (it created PRELOADED), it exited,
    or `limit_s` passed: its script, the evaluator that starts with it and the next run
    started ahead then start together in every run, ahead or not. Ticks at 0 s (the run's
    clock has not started) every TICK_S, so a worker that stops or loses the lease
    meanwhile hears of it at once; an exception from `on_tick` ends the wait."""
    ready = _seen_by(process, work) / ".tmp" / PRELOADED
    deadline, ticked = time.monotonic() + limit_s, -math.inf
    while not ready.exists() and not process.exited() and time.monotonic() < deadline:
        if on_tick is not None and time.monotonic() - ticked >= TICK_S:
            ticked = time.monotonic()
            on_tick(0.0)
        time.sleep(0.01)


_ENVIRON = ("environ", "environb")
_ENVIRON_WRITES = ("update", "setdefault", "pop", "popitem", "clear", "__setitem__", "__delitem__")


def _environment_writer(task_dir: Path, spec: TaskSpec) -> str | None:
    """The first editable Python file that writes the process environment, if any. Such a
    write (`os.environ["OMP_NUM_THREADS"] = "1"` before `import torch`) would come too late
    for a module imported ahead (`[run] preload`), so its run starts as `python train.py`."""
    for path in spec.editable:
        file = task_dir / path
        if path.endswith(".py") and file.is_file() and sets_environment(file.read_bytes()):
            return path
    return None


def sets_environment(source: bytes) -> bool:
    """Whether Python source writes its environment: an item of `os.environ` (or `environ`,
    `environb`) set or deleted, one of its mutating methods, `os.putenv` or `os.unsetenv`.
    Reading it is fine. Source that does not parse: False (it fails alike either way)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return False

    def is_environ(node: ast.expr) -> bool:
        if isinstance(node, ast.Attribute):
            return node.attr in _ENVIRON
        return isinstance(node, ast.Name) and node.id in _ENVIRON

    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Store | ast.Del):
            if is_environ(node.value):
                return True
        elif isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute):
                if func.attr in ("putenv", "unsetenv"):
                    return True
                if func.attr in _ENVIRON_WRITES and is_environ(func.value):
                    return True
            elif isinstance(func, ast.Name) and func.id in ("putenv", "unsetenv"):
                return True
    return False


def _copy_editable(src: Path, work: Path, paths: Sequence[str]) -> None:
    """The editable files into a work folder made ahead, owned as the folder is (a sandbox
    run as root has handed the folder to its own user by now)."""
    _copy_files(src, work, paths, readonly=False)
    owner = work.stat()
    if os.geteuid() == 0 and (owner.st_uid, owner.st_gid) != (0, 0):
        for path in paths:
            target = work / path
            while target != work:
                os.chown(target, owner.st_uid, owner.st_gid, follow_symlinks=False)
                target = target.parent


def _warm_key(prepared: Path, spec: TaskSpec, budget_s: float) -> str:
    """What a run started ahead must share with the run that uses it: the task version
    (its prepared folder's name is its key), the whole spec and the budget."""
    return f"{prepared.name}\0{spec.model_dump_json()}\0{budget_s:g}"


def _link_tree(src: Path, dst: Path) -> None:
    """Rebuild `src` at `dst` from hard links (copies across file systems), regular files only.

    For the prepared data/ and heldout/ only, which trusted code wrote: a tree a run wrote
    is copied by `worker.leftovers.copy_artifacts`, never linked.
    """
    dst.mkdir(parents=True, exist_ok=True)
    if not src.is_dir():
        return
    copied = 0
    for dirpath, dirnames, filenames in os.walk(src):
        rel = Path(dirpath).relative_to(src)
        for name in dirnames:
            if not (Path(dirpath) / name).is_symlink():
                (dst / rel / name).mkdir(exist_ok=True)
        for name in filenames:
            source = Path(dirpath) / name
            if not stat.S_ISREG(source.lstat().st_mode):
                logger.warning("runner: %s is not a regular file, left out", source)
                continue
            try:
                os.link(source, dst / rel / name)
            except OSError:
                shutil.copyfile(source, dst / rel / name)
                copied += 1
    if copied:
        logger.warning(
            "runner: copied %d files from %s instead of linking them: keep the work and cache"
            " folders on one file system",
            copied,
            src,
        )


def _make_readonly(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                path.chmod(0o444)


def _read_log(path: Path) -> str:
    """The last `LOG_WINDOW_BYTES` of a log, decoded leniently."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - LOG_WINDOW_BYTES))
            return f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


@contextlib.contextmanager
def _locked(path: Path, on_tick: OnTick | None) -> Iterator[None]:
    """Hold an exclusive lock on `path`, ticking while another process holds it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    started = time.monotonic()
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                time.sleep(TICK_S)
                if on_tick is not None:
                    on_tick(time.monotonic() - started)
        yield
    finally:
        os.close(fd)
