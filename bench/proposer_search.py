"""How fast each offline search finds a good configuration: best score after 10/20/40 explores
and after as many runs of any kind, mean ± sd over seeds.

Searches: the study proposer (Optuna TPE) and the mutation proposer, each feeding the real
coordinator, and plain Optuna TPE and random search over the same space (each trial one run,
no head, no replication). Tasks: tasks/sharpe, scored in-process exactly as the runner scores
it (strategy.py run as __main__, then evaluate.py as __main__, its `sharpe:` line read; data
made once by make_data.py), and `noisy`, a known function of seven constants with Gaussian
noise (minimised, sigma 0.003), where the best score is the true value of what is held.

The swarm is the coordinator's own `Scheduler`, store scripts on a redis-server started here
and lineage in real git, judged by its sequential rule with default settings; two workers of
two owners run one experiment at a time, in turn, and the proposer is asked whenever neither
has anything to run. Every run leased counts, of any kind (baselines, explores, replicates,
merges). After the last explore the runs still queued are judged, and the bench says in how
many seeds the head ends below the best configuration measured by more than min_effect.

    .venv/bin/python bench/proposer_search.py [--task sharpe|noisy] [--seeds 5] [--first-seed 0]
    .venv/bin/python bench/proposer_search.py --check 4   # in-process scores vs the runner's
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import hashlib
import io
import math
import os
import platform
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from judge_power import start_redis  # bench/, beside this file

from autoswarm.coordinator.hypotheses import build_context, submit_hypothesis
from autoswarm.coordinator.judge_loop import JudgeLoop
from autoswarm.coordinator.proposers.base import Proposer
from autoswarm.coordinator.proposers.mutation import MutationProposer, find_constants
from autoswarm.coordinator.proposers.space import build_space
from autoswarm.coordinator.proposers.study import StudyProposer, rewrite
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.tasks import register_task
from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.task import Direction, MetricSpec, TaskSpec, load_task

REPO = Path(__file__).resolve().parents[1]
CHECKPOINTS = (10, 20, 40)
Z = 2.0  # the judge's default noise multiplier (autoswarm/coordinator/settings.py)


@dataclass
class Task:
    """An editable file, its scorer (None: the run crashed) and its true value."""

    spec: TaskSpec
    path: str
    source: str
    score: Callable[[str, random.Random], float | None]
    truth: Callable[[str], float | None]
    noisy: bool


# ---- sharpe, in-process --------------------------------------------------------------------


def sharpe_task(work: Path) -> Task:
    """tasks/sharpe scored as the runner scores it, in this process (see the module doc)."""
    task_dir = work / "task"
    shutil.copytree(REPO / "tasks" / "sharpe", task_dir)
    env = {
        "AUTOSWARM_DATA_DIR": str(work / "data"),
        "AUTOSWARM_HELDOUT_DIR": str(work / "heldout"),
        "AUTOSWARM_OUT_DIR": str(work / "out"),
        "AUTOSWARM_ARTIFACTS_DIR": str(work / "out"),
    }
    os.environ.update(env)
    subprocess.run([sys.executable, "make_data.py"], cwd=task_dir, check=True, capture_output=True)
    sys.path.insert(0, str(task_dir))
    evaluate = compile((task_dir / "evaluate.py").read_text(), "evaluate.py", "exec")
    cache: dict[str, float | None] = {}

    def run(source: str) -> float | None:
        key = hashlib.sha256(source.encode()).hexdigest()
        if key not in cache:
            cache[key] = _run_sharpe(source, evaluate, task_dir)
        return cache[key]

    return Task(
        spec=load_task(task_dir),
        path="strategy.py",
        source=(task_dir / "strategy.py").read_text(),
        score=lambda source, _rng: run(source),
        truth=run,
        noisy=False,
    )


def _run_sharpe(source: str, evaluate: object, task_dir: Path) -> float | None:
    out = io.StringIO()
    cwd = Path.cwd()
    try:
        os.chdir(task_dir)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
            exec(compile(source, "strategy.py", "exec"), {"__name__": "__main__"})
            exec(evaluate, {"__name__": "__main__"})  # type: ignore[arg-type]
    except (Exception, SystemExit):  # a crash of the run or an evaluator refusal: no score
        return None
    finally:
        os.chdir(cwd)
    found = re.findall(r"^sharpe:\s+(\S+)$", out.getvalue(), re.MULTILINE)
    return float(found[-1]) if found else None


# ---- the noisy stand-in --------------------------------------------------------------------

NOISY_SOURCE = """LEARNING_RATE = 3e-4  # step size
BATCH_SIZE = 2**5  # rows per step
DEPTH = 4  # layers
WARMUP_STEPS = 100  # steps of linear warmup
WEIGHT_DECAY = 0.1  # AdamW weight decay
ADAM_BETA2 = 0.95  # second-moment decay
DROPOUT = 0.1  # dropout probability
"""
NOISE = 0.003


def noisy_value(source: str) -> float | None:
    """The true val_bpb of a configuration; None where it diverges (LR above 0.03)."""
    c = {k.name: float(k.value) for k in find_constants(source)}
    lr, batch = c["LEARNING_RATE"], c["BATCH_SIZE"]
    if lr > 0.03 or batch < 1 or c["DEPTH"] < 1 or not 0 < c["ADAM_BETA2"] < 1:
        return None
    best_lr = 3e-3 * math.sqrt(batch / 128)  # the best rate grows with the batch
    return (
        1.0
        + 0.05 * math.log10(lr / best_lr) ** 2
        + 0.02 * math.log2(batch / 128) ** 2
        + 0.03 * ((c["DEPTH"] - 8) / 4) ** 2
        + 0.01 * math.log10(max(c["WARMUP_STEPS"], 1) / 400) ** 2
        + 0.01 * math.log10(max(c["WEIGHT_DECAY"], 1e-6) / 0.03) ** 2
        + 0.02 * math.log10((1 - c["ADAM_BETA2"]) / 0.005) ** 2
        + 0.1 * max(c["DROPOUT"], 0.0)
    )


def noisy_task() -> Task:
    spec = TaskSpec(
        name="noisy",
        editable=("train.py",),
        min_effect=0.002,
        metric=MetricSpec(name="val_bpb", direction=Direction.MINIMIZE),
    )

    def score(source: str, rng: random.Random) -> float | None:
        value = noisy_value(source)
        return None if value is None else value + rng.gauss(0.0, NOISE)

    return Task(spec, "train.py", NOISY_SOURCE, score, noisy_value, noisy=True)


# ---- the swarm: the real coordinator -----------------------------------------------------

HW = "cpu:bench"
NOISY_TOML = """\
[task]
name = "noisy"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 5
min_effect = 0.002

[metric]
name = "val_bpb"
direction = "minimize"
"""


@dataclass
class Trace:
    """The true score of what the search holds, after each explore and after each run, and
    how many runs of each kind it spent."""

    by_explore: list[float] = field(default_factory=list)
    by_run: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    # The true score of the best configuration an explore or merge measured (None: none).
    best_measured: float | None = None
    # The true score of the head once the runs queued at the end have been judged too.
    final: float | None = None


def task_folder(task: Task, work: Path) -> Path:
    """The task as the coordinator registers it: sharpe's own folder, or noisy's made here."""
    if task.spec.name == "sharpe":
        return REPO / "tasks" / "sharpe"
    folder = work / "noisy"
    folder.mkdir(exist_ok=True)
    (folder / "task.toml").write_text(NOISY_TOML)
    (folder / task.path).write_text(task.source)
    (folder / "prepare.py").write_text("print('nothing to prepare')\n")
    (folder / "program.md").write_text("# noisy\n\nMake `val_bpb` lower.\n")
    return folder


class Swarm:
    """The coordinator's scheduler, store (a real redis-server) and lineage (real git), with
    two workers of two owners that run one experiment at a time, in turn."""

    def __init__(self, task: Task, url: str, work: Path, seed: int) -> None:
        self.task = task
        self.rng = random.Random(seed)
        self.now = 0.0
        self.settings = CoordinatorSettings(data_dir=work / "data", redis_url=url)
        self.store = Store(url)
        self.scheduler = Scheduler(self.store, self.settings, clock=lambda: self.now)
        self.loop = JudgeLoop(self.scheduler, interval_s=1.0)
        record = register_task(self.store, self.settings, task_folder(task, work))
        self.task_id = record.task_id
        self.scheduler.ensure_class(record, HW)
        self.turn = 0
        self.truths: dict[str, float] = {}

    def source_at(self, commit: str) -> str:
        return self.scheduler.reads.lineage(self.task_id).files_at(commit)[self.task.path].decode()

    def held(self) -> float:
        """The true score of the head."""
        head = self.store.get_head(self.task_id, HW)
        assert head is not None
        if head.commit not in self.truths:
            self.truths[head.commit] = self.task.truth(self.source_at(head.commit)) or 0.0
        return self.truths[head.commit]

    def step(self) -> tuple[str, float | None] | None:
        """The next worker in turn with something to lease runs it, judged: its kind, and the
        true score of the code it ran (None: it crashed)."""
        for i in range(2):
            worker = f"w{(self.turn + i) % 2}"
            got = self.store.lease(worker, worker, HW, now=self.now, lease_ttl_s=1e9)
            if got is None:
                continue
            self.turn = (self.turn + i + 1) % 2
            exp = self.store.get_experiment(got.experiment_id)
            assert exp is not None
            source = self.source_at(exp.code_commit or exp.parent_commit)
            metric = self.task.score(source, self.rng)
            result = (
                Result(status=ResultStatus.OK, metric=metric)
                if metric is not None
                else Result(status=ResultStatus.CRASH, error="no score")
            )
            self.store.report(
                got.experiment_id, worker, got.fencing_token, result, now=self.now, max_attempts=3
            )
            self.now += 60.0
            self.loop.drain()
            return exp.kind.value, None if metric is None else self.task.truth(source)
        return None


def swarm_loop(task: Task, proposer: Proposer, explores: int, seed: int) -> Trace:
    """The proposer feeding the real coordinator (see the module doc) until `explores`
    explores (and merges) ran; a proposal is made whenever no worker has anything to run."""
    trace = Trace()
    with tempfile.TemporaryDirectory(prefix="proposer-search-") as tmp:
        server, url = start_redis(Path(tmp))
        try:
            swarm = Swarm(task, url, Path(tmp), seed)
            while len(trace.by_explore) < explores:
                ran = swarm.step()
                if ran is None:
                    context = build_context(swarm.scheduler.reads, swarm.task_id)
                    hypothesis = proposer.propose(context)
                    if hypothesis is None:
                        break
                    submit_hypothesis(swarm.scheduler.reads, hypothesis)
                    continue
                kind, truth = ran
                trace.kinds[kind] += 1
                trace.by_run.append(swarm.held())
                if kind in ("explore", "merge"):
                    trace.by_explore.append(swarm.held())
                    best = trace.best_measured
                    if truth is not None and (best is None or task.spec.is_better(truth, best)):
                        trace.best_measured = truth
            while swarm.step() is not None:  # the last winner's replicate, say: judged
                pass
            trace.final = swarm.held()
            swarm.store.close()
        finally:
            server.terminate()
            server.wait()
    return trace


# ---- plain optimizers ----------------------------------------------------------------------


# Ranges a person who knows the task would give TPE ("well set up"), on the scales the
# proposer infers (a decay as its distance to 1): lookbacks up to most of the 250-day history,
# a learning rate up to where training diverges.
HAND_RANGES = {
    "sharpe": {
        "LOOKBACK_DAYS": (1, 200),
        "SKIP_DAYS": (0, 20),
        "VOL_LOOKBACK_DAYS": (2, 200),
        "THRESHOLD": (0.01, 5.0),
        "VOL_EXPONENT": (0.01, 2.0),
        "HORIZON_DECAY": (1e-3, 0.5),
    },
    "noisy": {
        "LEARNING_RATE": (1e-5, 0.1),
        "BATCH_SIZE": (2, 10),
        "DEPTH": (1, 32),
        "WARMUP_STEPS": (1, 2000),
        "WEIGHT_DECAY": (1e-4, 1.0),
        "ADAM_BETA2": (1e-3, 0.5),
        "DROPOUT": (1e-3, 0.5),
    },
}


def optimizer_search(
    task: Task, sampler: optuna.samplers.BaseSampler, trials: int, seed: int, *, hand: bool
) -> Trace:
    """Optuna with `sampler`, the shipped values first; each trial one run. It holds the
    configuration with the best score seen. The space is the proposer's inferred one around
    the shipped values, or (`hand`) HAND_RANGES on the same scales."""
    constants = find_constants(task.source, task.path)
    dimensions = build_space(constants, [])
    if hand:
        ranges = HAND_RANGES[task.spec.name]
        dimensions = [
            dataclasses.replace(d, low=float(ranges[d.label][0]), high=float(ranges[d.label][1]))
            for d in dimensions
        ]
    rng = random.Random(seed)
    study = optuna.create_study(
        direction="minimize" if task.spec.lower_is_better else "maximize", sampler=sampler
    )
    study.enqueue_trial({d.label: d.coordinate(d.constant.value) for d in dimensions})
    trace = Trace()
    best: tuple[float, float] | None = None  # (observed, true)
    worst = math.inf if task.spec.lower_is_better else -math.inf
    for _ in range(trials):
        trial = study.ask()
        values = {}
        for d in dimensions:
            if d.integer:
                x: float = trial.suggest_int(
                    d.label, int(d.low), int(d.high), log=d.log and d.low >= 1
                )
            else:
                x = trial.suggest_float(d.label, d.low, d.high, log=d.log and d.low > 0)
            values[d.label] = d.value(x)
        moved = {
            d.label: values[d.label] for d in dimensions if values[d.label] != d.constant.value
        }
        source = rewrite({task.path: task.source}, dimensions, moved).get(task.path, task.source)
        observed = task.score(source, rng)
        if observed is None:
            study.tell(trial, -worst if math.isinf(worst) else worst)
        else:
            study.tell(trial, observed)
            worst = max(worst, observed) if task.spec.lower_is_better else min(worst, observed)
            if best is None or task.spec.is_better(observed, best[0]):
                best = (observed, task.truth(source) or 0.0)
        held = best[1] if best else (task.truth(task.source) or 0.0)
        trace.by_explore.append(held)
        trace.by_run.append(held)
    return trace


# ---- the in-process score checked against the runner -------------------------------------


def check_against_runner(task: Task, count: int, work: Path) -> None:
    """Score the shipped file and `count - 1` random configurations both in-process and
    through autoswarm.worker.runner.Runner (unsandboxed), and print both."""
    from autoswarm.worker.runner import Runner
    from autoswarm.worker.sandbox import Unsandboxed

    runner = Runner(work_root=work / "runs", cache_root=work / "cache", sandbox=Unsandboxed())
    dimensions = build_space(find_constants(task.source, task.path), [])
    rng = random.Random(0)
    for n in range(count):
        moved = {} if n == 0 else {d.label: d.value(rng.uniform(d.low, d.high)) for d in dimensions}
        source = rewrite({task.path: task.source}, dimensions, moved).get(task.path, task.source)
        task_dir = work / f"check-{n}"
        shutil.copytree(REPO / "tasks" / "sharpe", task_dir)
        (task_dir / task.path).write_text(source)
        result = runner.run(task_dir, load_task(task_dir))
        print(f"in-process {task.truth(source)!r}, runner {result.metric!r} ({result.status})")


# ---- the table -----------------------------------------------------------------------------

SEARCHES: dict[str, Callable[[Task, int, int], Trace]] = {
    "study proposer (swarm)": lambda t, n, s: swarm_loop(t, StudyProposer(seed=s), n, s),
    "mutation proposer (swarm)": lambda t, n, s: swarm_loop(t, MutationProposer(seed=s), n, s),
    "Optuna TPE, hand-set ranges": lambda t, n, s: optimizer_search(
        t, optuna.samplers.TPESampler(seed=s, multivariate=True), n, s, hand=True
    ),
    "Optuna TPE, inferred ranges": lambda t, n, s: optimizer_search(
        t, optuna.samplers.TPESampler(seed=s, multivariate=True), n, s, hand=False
    ),
    "random search, hand-set ranges": lambda t, n, s: optimizer_search(
        t, optuna.samplers.RandomSampler(seed=s), n, s, hand=True
    ),
}


def _below(task: Task, trace: Trace) -> bool:
    """Whether the final head's true score (every run queued at the end judged) is below the
    best measured by more than min_effect."""
    if trace.best_measured is None or trace.final is None:
        return False
    gap = trace.best_measured - trace.final
    return (-gap if task.spec.lower_is_better else gap) > task.spec.min_effect


def _cell(traces: list[list[float]], at: int) -> str:
    values = [trace[min(at, len(trace)) - 1] for trace in traces if trace]
    if not values:
        return "-"
    return f"{statistics.fmean(values):.3f} ± {statistics.pstdev(values):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", choices=("sharpe", "noisy"), default="sharpe")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--explores", type=int, default=max(CHECKPOINTS))
    parser.add_argument("--only", default="", help="run only the searches whose name has this")
    parser.add_argument("--check", type=int, default=0, help="sharpe: check N scores, then stop")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        task = sharpe_task(Path(tmp)) if args.task == "sharpe" else noisy_task()
        if args.check:
            check_against_runner(task, args.check, Path(tmp))
            return
        shipped = task.truth(task.source)
        started = time.monotonic()
        print(
            f"{args.task}: shipped {task.spec.metric.name} {shipped:.4f}, "
            f"seeds {args.first_seed}-{args.first_seed + args.seeds - 1}, "
            f"{datetime.date.today()}, {platform.node()}, "
            f"{os.cpu_count()} CPUs"
        )
        header = " | ".join(f"@{n}" for n in CHECKPOINTS)
        print(f"| search | per | {header} |")
        print("| --- | --- | " + " | ".join("---" for _ in CHECKPOINTS) + " |")
        for name, search in SEARCHES.items():
            if args.only not in name:
                continue
            seeds = range(args.first_seed, args.first_seed + args.seeds)
            traces = [search(task, args.explores, seed) for seed in seeds]
            for per, runs in (
                ("explore", [t.by_explore for t in traces]),
                ("run", [t.by_run for t in traces]),
            ):
                if per == "run" and runs == [t.by_explore for t in traces]:
                    continue
                cells = " | ".join(_cell(runs, n) for n in CHECKPOINTS)
                print(
                    f"| {name} | {per if 'swarm' in name else 'explore = run'} | {cells} |",
                    flush=True,
                )
            spent = sum((t.kinds for t in traces), Counter())
            if spent:
                kinds = ", ".join(f"{k} {n / len(traces):.1f}" for k, n in sorted(spent.items()))
                below = [t for t in traces if _below(task, t)]
                print(
                    f"|   runs per seed: {kinds}; the head ends below the best configuration "
                    f"measured (by more than min_effect) in {len(below)} of {len(traces)} "
                    "seeds | | | | |",
                    flush=True,
                )
        print(f"({time.monotonic() - started:.0f} s)")


if __name__ == "__main__":
    main()
