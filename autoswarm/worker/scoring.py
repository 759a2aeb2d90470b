"""Scoring a run that ended: its failure (timeout, out of memory, crash, changed protected
files), else its summary's metric, or in evaluator mode its artifacts handed to the task's
evaluator, whose summary alone scores it."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path
from typing import Any

from autoswarm.shared.errors import SummaryError
from autoswarm.shared.models import MAX_LOG_TAIL_CHARS, Result, ResultStatus
from autoswarm.shared.summary import parse_summary, read_metric
from autoswarm.shared.task import (
    EVALUATOR_MODULE,
    EvaluatorStart,
    ScoringMode,
    TaskSpec,
    protected_hashes,
)
from autoswarm.worker.launch import ExperimentRun, Launcher, clip, describe_exit
from autoswarm.worker.leftovers import ArtifactsRefused, copy_artifacts, hash_file
from autoswarm.worker.process import Outcome, Started
from autoswarm.worker.runfiles import OnTick, copy_files, link_tree, read_log
from autoswarm.worker.workfs import CARRY_REFUSED

logger = logging.getLogger(__name__)

EVAL_TAIL_CHARS = 4000
# The loader of exported programs, written beside every evaluator as exported.py from this
# worker's own installation (the sandbox holds no source tree of ours): one loader for all
# evaluators, versioned with the worker; a task cannot bring its own (autoswarm.shared.task).
LOADER_FILE = Path(__file__).with_name("exported.py")


def score(
    launcher: Launcher,
    run: ExperimentRun,
    outcome: Outcome,
    *,
    evaluator: Started | None,
    hardware: str,
    on_tick: OnTick | None,
) -> Result:
    """The result of a run that ended: its failure, its summary's metric or its score (by
    `evaluator`, started with the run, or else started now)."""
    spec, work = run.spec, run.exp_dir / "work"
    log = read_log(run.exp_dir / "run.log")
    summary = parse_summary(log)
    fields: dict[str, Any] = {
        "exit_code": outcome.exit_code,
        "wall_s": outcome.wall_s,
        "training_s": finite(summary.get("training_seconds")),
        "peak_rss_mb": round(outcome.peak_rss_mb, 1),
        "peak_vram_mb": max_or_none(finite(summary.get("peak_vram_mb")), outcome.peak_vram_mb),
        "log_tail": log[-MAX_LOG_TAIL_CHARS:],
        "hardware": hardware,
    }
    if outcome.leftovers_killed:
        logger.info(
            "runner: experiment %s left %d processes, killed",
            run.run_id,
            outcome.leftovers_killed,
        )
    problem = tampered(run.task_dir, work, spec, run.hashes) or run_failure(
        outcome, spec, run.budget_s, log
    )
    if problem is not None:
        return Result(status=problem[0], error=clip(problem[1]), **fields)
    if spec.scoring.mode is ScoringMode.SUMMARY:
        try:
            metric, metrics = read_metric(log, spec.metric.name)
        except SummaryError as exc:
            return Result(status=ResultStatus.INVALID, error=str(exc), **fields)
        return Result(status=ResultStatus.OK, metric=metric, metrics=metrics, **fields)
    artifacts = run.exp_dir / "eval" / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    refused = work / CARRY_REFUSED  # the sandbox's own note: the run cannot write here
    if refused.is_file() and not refused.is_symlink():
        why = refused.read_text(errors="replace").strip() or "out/ was not carried back"
        return Result(status=ResultStatus.INVALID, error=clip(f"artifacts: {why}"), **fields)
    try:
        copied = copy_artifacts(work / "out", artifacts, max_bytes=spec.resources.disk_mb * 2**20)
    except ArtifactsRefused as exc:
        return Result(status=ResultStatus.INVALID, error=f"artifacts: {exc}", **fields)
    logger.info(
        "runner: experiment %s: %d artifacts, %d bytes, %d entries left out",
        run.run_id,
        copied.files,
        copied.bytes,
        copied.left_out,
    )
    if evaluator is None:  # after the run: it starts with its artifacts in place
        evaluator = start_evaluator(launcher, run)
    return _evaluate(launcher, run.exp_dir, evaluator, spec, fields, on_tick)


def start_evaluator(launcher: Launcher, run: ExperimentRun) -> Started:
    """The task's evaluator, a second fresh process, on the eval/ folder. Started with
    the run (`with-run`), before artifacts/ has anything in it, it is gated: its input is
    a pipe, and it waits for the line `_evaluate` writes there."""
    spec, ev = run.spec, run.exp_dir / "eval"
    assert spec.scoring.command is not None
    (ev / ".tmp").mkdir(parents=True, exist_ok=True)
    (ev / "artifacts").mkdir(exist_ok=True)
    copy_files(run.task_dir, ev, spec.protected + spec.scoring.files, readonly=True)
    loader = ev / f"{EVALUATOR_MODULE}.py"
    shutil.copyfile(LOADER_FILE, loader)
    loader.chmod(0o444)
    link_tree(run.prepared / "data", ev / "data")
    link_tree(run.prepared / "heldout", ev / "heldout")
    env = launcher.env(ev)
    env["AUTOSWARM_ARTIFACTS_DIR"] = str(ev / "artifacts")
    env["AUTOSWARM_DATA_DIR"] = str(ev / "data")
    env["AUTOSWARM_HELDOUT_DIR"] = str(ev / "heldout")
    readonly = [ev / p for p in spec.protected + spec.scoring.files]
    readonly += [loader, ev / "data", ev / "heldout", ev / "artifacts"]
    return launcher.start(
        spec, spec.scoring.command, ev, env, run.exp_dir / "eval.log", f"{run.run_id}-eval",
        readonly=readonly, writable=[ev],
        gated=spec.scoring.start is EvaluatorStart.WITH_RUN, environment=run.environment,
    )  # fmt: skip


def _evaluate(
    launcher: Launcher,
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
        **launcher.watching(spec),
        on_tick=None if on_tick is None else (lambda s: on_tick(offset_s + s)),
    )
    log = read_log(exp_dir / "eval.log")
    fields["log_tail"] = join_tails(fields["log_tail"], log)
    if outcome.timed_out:
        error = f"the evaluator ran past its timeout_s ({spec.scoring.timeout_s:g} s)"
    elif outcome.exit_code != 0:
        error = f"the evaluator failed: {describe_exit(outcome.exit_code, log)}"
    else:
        try:
            metric, metrics = read_metric(log, spec.metric.name)
        except SummaryError as exc:
            error = f"the evaluator's summary: {exc}"
        else:
            return Result(status=ResultStatus.OK, metric=metric, metrics=metrics, **fields)
    return Result(status=ResultStatus.INVALID, error=clip(error), **fields)


# A run's own error when its work folder's cap refused a write (ENOSPC) or a file (EFBIG).
_DISK_FULL = ("[Errno 28] No space left on device", "[Errno 27] File too large")


def run_failure(
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
        why = describe_exit(outcome.exit_code, log)
        if any(e in log[-2000:] for e in _DISK_FULL) and "disk cap" not in why:
            why = f"writes went over its disk cap of {spec.resources.disk_mb} MB: {why}"
        return ResultStatus.CRASH, why
    return None


def tampered(
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


def join_tails(run_log: str, eval_log: str) -> str:
    """The run's tail, then the evaluator's, within the result's log limit."""
    eval_part = f"\n==> evaluator <==\n{eval_log[-EVAL_TAIL_CHARS:]}"
    return run_log[-(MAX_LOG_TAIL_CHARS - len(eval_part)) :] + eval_part


def finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def max_or_none(a: float | None, b: float | None) -> float | None:
    values = [v for v in (a, b) if v is not None]
    return max(values) if values else None
