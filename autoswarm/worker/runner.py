"""The experiment runner: prepare a task once, run one experiment from outside, score it.

Layout of one experiment under `work_root/run-<id>/`:
    work/        the run's working folder and HOME: editable and protected files,
                 data/ (the prepared data, read-only), out/ (its artifacts), .tmp/, and
                 what prepare left under its HOME, at the same place (read-only)
    run.log      the run's stdout and stderr
    eval/        evaluator mode: protected and evaluator files, exported.py (this
                 worker's autoswarm/worker/exported.py, never the task's), data/, heldout/,
                 artifacts/ (copies of the regular files in the run's out/)
    eval.log     the evaluator's stdout and stderr
The prepare cache is `cache_root/prepare/<key>/` (`autoswarm.worker.prepare`); a task's own
environment is `cache_root/envs/<key>/` (`autoswarm.worker.environments`). Preloaded runs and the
run started ahead: `autoswarm.worker.preload`; scoring and the evaluator:
`autoswarm.worker.scoring`; how processes start in the sandbox: `autoswarm.worker.launch`.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path

from autoswarm.shared.models import MAX_LOG_TAIL_CHARS, Result, ResultStatus
from autoswarm.shared.task import EvaluatorStart, ScoringMode, TaskSpec, protected_hashes
from autoswarm.worker.environments import HOME, link_home
from autoswarm.worker.launch import ExperimentRun, Launcher, clip, without_secrets
from autoswarm.worker.leftovers import remove_tree
from autoswarm.worker.preload import (
    PRELOAD_MAIN,
    WarmRun,
    environment_writer,
    ready_preloaded,
    warm_key,
)
from autoswarm.worker.prepare import Preparer
from autoswarm.worker.prepare_network import PrepareNetwork
from autoswarm.worker.process import Started
from autoswarm.worker.runfiles import OnTick, copy_files, link_tree, read_log
from autoswarm.worker.sandbox import Sandbox
from autoswarm.worker.scoring import score, start_evaluator

logger = logging.getLogger(__name__)

WarmNext = Callable[[], bool]


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
      `heldout/`; the environment is scrubbed (`autoswarm.worker.sandbox.scrub_env`);
    - a task with its own locked project runs its `python` commands, prepare and evaluator
      included, with its own environment's interpreter, built in `preparer.prepare` (a build that
      fails is a `PrepareError` naming the package and the lock), read-only in the run;
    - what the prepare step left under its HOME is under the run's HOME at the same
      place, read-only, and the hub is offline (`HF_HUB_OFFLINE=1`);
    - under the bubblewrap sandbox the prepare phase (build, kernels, prepare) reaches only
      the hosts `autoswarm.worker.prepare_network` allows it, through the worker's allow-list proxy;
    - the budget is enforced from outside: the tree gets SIGTERM at budget + startup_s +
      grace_s and SIGKILL a second later; when `run` returns, no process of the run or of
      the evaluator is alive, however it ended (see `autoswarm.worker.process` for the exact rules);
    - an experiment's failure is a status (`crash`, `timeout`, `invalid`), never an exception;
      a protected or evaluator file that changed during the run makes it `invalid`; so does,
      once the run has started, any exception while it is watched, collected, checked or
      scored, and a folder it left that cannot be removed (only `on_tick`'s own exception
      goes back to the caller): nothing a run leaves makes the worker hand it back;
    - what the run left is read without following its links or blocking on its FIFOs, and
      in evaluator mode only copies of out/'s regular files reach the evaluator, bounded in
      number and bytes (`autoswarm.worker.leftovers`);
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
      the total (see `autoswarm.worker.bwrap`);
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
        self.hardware = hardware
        self.keep_work = keep_work
        extra_env = without_secrets(env or {})
        self.preparer = Preparer(self.cache_root, extra_env, PrepareNetwork.for_sandbox(sandbox))
        self.launcher = Launcher(sandbox, extra_env)
        self.last_experiment_dir: Path | None = None
        self._warm: WarmRun | None = None

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
        ahead (None: start none). `heldout_secret`: as for `Preparer.prepare`."""
        hashes = protected_hashes(task_dir, spec)
        prepared = self.preparer.prepare(
            task_dir, spec, on_tick=on_tick, heldout_secret=heldout_secret
        )
        budget = spec.budget_s if budget_s is None else budget_s
        preload = bool(spec.run.preload)
        if preload and (writer := environment_writer(task_dir, spec)):
            logger.info(
                "runner: %s sets environment variables: it runs in a fresh interpreter, its"
                " modules not imported ahead",
                writer,
            )
            preload = False
        warm = self._take_warm(warm_key(prepared, spec, budget)) if preload else None
        if warm is not None:
            run = replace(warm.run, task_dir=task_dir, hashes=hashes)
        else:
            run_id = uuid.uuid4().hex[:16]
            run = ExperimentRun(
                exp_dir=self.work_root / f"run-{run_id}",
                run_id=run_id,
                task_dir=task_dir,
                spec=spec,
                prepared=prepared,
                budget_s=budget,
                hashes=hashes,
                environment=self.preparer.environment_of(prepared),
                preload=preload,
            )
        self.last_experiment_dir = run.exp_dir
        try:
            result = self._run_in(run, on_tick, warm, warm_next)
        finally:
            removed = self.keep_work or remove_tree(run.exp_dir)
        if not removed:  # what the run left defeats the worker: its result cannot stand
            error = f"the run left files in {run.exp_dir} that the worker could not remove"
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
            run.run_id,
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
            remove_tree(warm.run.exp_dir)

    def _take_warm(self, key: str) -> WarmRun | None:
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
                warm.run.spec.name,
                warm.process.proc.returncode,
                read_log(warm.run.exp_dir / "run.log")[-500:].strip(),
            )
        self._warm = warm
        self.drop_warm()
        return None

    def _start_warm(self, run: ExperimentRun) -> None:
        """Start the next run of `run`'s task version ahead (see the class docstring)."""
        run_id = uuid.uuid4().hex[:16]
        nxt = replace(run, exp_dir=self.work_root / f"run-{run_id}", run_id=run_id, preload=True)
        try:
            process = self._start_run(nxt, *self._setup_run(nxt, editable=False))
        except Exception:  # only ahead of time: the next run starts the usual way instead
            logger.exception("runner: could not start the next run ahead")
            remove_tree(nxt.exp_dir)
            return
        self._warm = WarmRun(warm_key(nxt.prepared, nxt.spec, nxt.budget_s), nxt, process)

    def _setup_run(
        self, run: ExperimentRun, *, editable: bool
    ) -> tuple[Path, dict[str, str], list[Path], list[Path]]:
        """The run's work folder, filled (the editable files only with `editable`): the
        folder, the environment, and the paths the sandbox binds read-only and writable."""
        spec, work = run.spec, run.exp_dir / "work"
        for name in ("out", ".tmp"):
            (work / name).mkdir(parents=True)
        if editable:
            copy_files(run.task_dir, work, spec.editable, readonly=False)
        copy_files(run.task_dir, work, spec.protected, readonly=True)
        link_tree(run.prepared / "data", work / "data")
        caches = self._compile_caches(work)
        env = self.launcher.env(work) | _cache_env(caches)
        env["AUTOSWARM_BUDGET_S"] = f"{run.budget_s:g}"
        env["AUTOSWARM_OUT_DIR"] = str(work / "out")
        env["AUTOSWARM_DATA_DIR"] = str(work / "data")
        env["HF_HUB_OFFLINE"] = "1"  # the hub cache prepare warmed; runs have no network
        readonly = [work / p for p in spec.protected] + [work / "data"]
        readonly += link_home(run.prepared / HOME, work, link_tree)
        return work, env, readonly, [work]

    def _start_run(
        self,
        run: ExperimentRun,
        work: Path,
        env: dict[str, str],
        readonly: list[Path],
        writable: list[Path],
    ) -> Started:
        """The run's process, not yet released. With `[run] preload` every run, started
        ahead or not, goes through `PRELOAD_MAIN`, so its script always starts with the same
        modules imported (a fresh one imports them before its clock starts, as `_run_in`
        waits for them)."""
        command = list(run.spec.run.command)
        if run.preload:
            command = ["python", "-c", PRELOAD_MAIN, *run.spec.run.preload, "--", *command[1:]]
        return self.launcher.start(
            run.spec, command, work, env, run.exp_dir / "run.log", run.run_id,
            readonly=readonly, writable=writable, gated=run.preload, environment=run.environment,
            carry=_carried(run.spec, work),
        )  # fmt: skip

    def _run_in(
        self,
        run: ExperimentRun,
        on_tick: OnTick | None,
        warm: WarmRun | None,
        warm_next: WarmNext | None,
    ) -> Result:
        spec = run.spec
        process = None if warm is None else warm.process
        evaluator = None
        try:
            if warm is None:
                work, env, readonly, writable = self._setup_run(run, editable=True)
                if run.preload:
                    process = self._start_run(run, work, env, readonly, writable)
            if process is not None:  # whether started ahead or now, alike from here on
                ready_preloaded(run, process, on_tick, ahead=warm is not None)
            if spec.scoring.start is EvaluatorStart.WITH_RUN:
                evaluator = start_evaluator(self.launcher, run)
            if process is None:
                process = self._start_run(run, work, env, readonly, writable)
            process.release()  # its turn: the script starts now, and its clock
            if spec.run.preload and warm_next is not None and self._warm is None:
                self._start_warm(run)  # (one kept through a run that wrote its environment)
            tick = _Tick(on_tick)
            try:
                outcome = process.finish(
                    run.budget_s + spec.run.startup_s + spec.run.grace_s,
                    **self.launcher.watching(spec),
                    on_tick=tick.wrapped,
                )
                if warm_next is not None and not warm_next():
                    self.drop_warm()
                return score(
                    self.launcher,
                    run,
                    outcome,
                    evaluator=evaluator,
                    hardware=self.hardware,
                    on_tick=tick.wrapped,
                )
            except Exception as exc:
                if tick.raised is not None:  # the caller stopping the run: its exception
                    raise
                # From here on the folder is the run's work: whatever fails while it is
                # watched, collected, checked or scored is this run's `invalid`, never a fault
                # that hands the experiment back to run again (and fail again).
                logger.exception("runner: experiment %s could not be scored", run.run_id)
                error = f"the worker could not score this run: {type(exc).__name__}: {exc}"
                tail = read_log(run.exp_dir / "run.log")[-MAX_LOG_TAIL_CHARS:]
                return Result(
                    status=ResultStatus.INVALID,
                    error=clip(error),
                    log_tail=tail,
                    hardware=self.hardware,
                )
        finally:
            if process is not None:
                process.kill()
            if evaluator is not None:
                evaluator.kill()

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


def _cache_env(caches: Mapping[str, Path]) -> dict[str, str]:
    return {name: str(path) for name, path in caches.items()}


def _carried(spec: TaskSpec, work: Path) -> list[Path]:
    """What of a run's work folder the host reads after it: out/, for an evaluator only."""
    return [work / "out"] if spec.scoring.mode is ScoringMode.EVALUATOR else []
