"""Swarm scaling: time to reach a target score with 1, 2, 4 ... 64 simulated workers.

One real coordinator (its own process, embedded Redis, on loopback) per run; one mutation
proposer (`autoswarm.coordinator.proposers.mutation`, the same seed for every worker count) keeping
the queue as deep as there are workers; N simulated workers, threads speaking the worker
protocol through `autoswarm.shared.client.CoordinatorClient` with a token each (as N volunteers).
A simulated worker leases, fetches the bundle, reads the editable file's constants and
"runs" the experiment: it sleeps `--duration-s`, heartbeating as a real worker does (and
stopping or switching runs when a heartbeat says so), and reports a score that is a smooth
function of the constants plus Gaussian noise. So the benchmark measures the swarm's
coordination and judging (baselines, replication, merges, preemption, the proposer), not
the CPU. The task's budget is the run's length, and the times a real swarm lives by are
scaled as the run is to a 300 s budget: `replicate_wait_s` (120 s: 0.8 s for a 2 s run)
and the heartbeat (every 20 s: 0.133 s).

Time to target: from the workers' start until the head (the lineage's tip) has a true,
noise-free score at or below `--target`. Speedup = T(first N) / T(N) (medians over seeds);
efficiency = speedup * first N / N. Landscapes: `sparse` (most constants do nothing: the
search is the work) and `dense` (every constant is off: many changes to keep).

    .venv/bin/python bench/swarm_scaling.py                       # sparse, 1..64 workers
    .venv/bin/python bench/swarm_scaling.py --landscape dense --workers 1,4 --seeds 1
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import random
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoswarm.coordinator.proposers.base import run_proposer_loop
from autoswarm.coordinator.proposers.mutation import MutationProposer, find_constants
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import AutoswarmError
from autoswarm.shared.lifetime import die_with_parent
from autoswarm.shared.models import Lease, Result, ResultReport, ResultStatus, WorkerCreate

REPO = Path(__file__).resolve().parents[1]

logger = logging.getLogger("swarm_scaling")

TASK = "swarmsim"
HARDWARE = "cpu:swarm-sim"
# The score: BASE + WEIGHT * sum of squared log2-distances of each constant to its best value;
# a doubling towards the best from d doublings away gains WEIGHT * (2d - 1): 4 to 20 noise sds.
BASE = 1.0
WEIGHT = 0.04


@dataclass(frozen=True)
class Landscape:
    """The editable file's constants: (name, start value, best value or None: no effect)."""

    constants: tuple[tuple[str, float, float | None], ...]
    target: float  # the default target score
    about: str

    @property
    def best(self) -> dict[str, float]:
        return {name: best for name, _, best in self.constants if best is not None}


LANDSCAPES = {
    # Most knobs do nothing, four are each two doublings off: finding them is the work.
    "sparse": Landscape(
        (
            ("LEARNING_RATE", 0.001, 0.004),
            ("WEIGHT_DECAY", 0.4, 0.1),
            ("WARMUP_STEPS_FRAC", 0.01, None),
            ("INIT_SCALE", 2.0, 0.5),
            ("LABEL_SMOOTHING", 0.1, None),
            ("LR_DECAY_RATE", 0.1, None),
            ("EMBED_LR_SCALE", 1.0, None),
            ("GRAD_CLIP", 0.25, 1.0),
            ("DROPOUT", 0.1, None),
            ("ADAM_BETA1", 0.9, None),
            ("ADAM_BETA2", 0.95, None),
            ("ADAM_EPS", 1e-8, None),
            ("EMA_DECAY", 0.999, None),
            ("UNEMBED_LR_SCALE", 1.0, None),
            ("LOGIT_SOFTCAP", 15.0, None),
            ("ROPE_BASE", 10000.0, None),
        ),
        target=1.16,
        about="16 constants, 4 of them two doublings from their best, 12 without effect",
    ),
    # Every knob is off by two or three doublings: improvements are easy, there are many.
    "dense": Landscape(
        (
            ("LEARNING_RATE", 0.001, 0.008),
            ("WEIGHT_DECAY", 0.4, 0.05),
            ("WARMUP_STEPS_FRAC", 0.01, 0.04),
            ("INIT_SCALE", 2.0, 0.25),
            ("LABEL_SMOOTHING", 0.2, 0.025),
            ("GRAD_CLIP", 0.25, 2.0),
            ("LR_DECAY_RATE", 0.1, 0.4),
            ("EMBED_LR_SCALE", 8.0, 1.0),
        ),
        target=1.5,
        about="8 constants, each two or three doublings from its best",
    ),
}

TASK_TOML = """\
[task]
name = "{task}"
description = "A simulated training run: a smooth function of its constants, plus noise."
editable = ["train.py"]
protected = []
budget_s = {budget_s}

[metric]
name = "val_bpb"
direction = "minimize"
"""

PROGRAM_MD = """\
# swarmsim

A stand-in for a training run, for the swarm-scaling benchmark. Some constants in
`train.py` have a best value; the score is the sum of squared log-distances to them, plus
noise. Lower is better.
"""


def train_py(landscape: Landscape) -> str:
    """The editable file: the same score as `true_score`, with noise, as a real payload."""
    lines = [
        '"""swarmsim: the score is a smooth function of the constants below, plus noise."""',
        "import math",
        "import random",
        "",
        "# ---- hyperparameters ----",
    ]
    lines += [f"{name} = {start!r}" for name, start, _ in landscape.constants]
    lines += [
        "",
        "# ---- the simulated run ----",
        f"BEST = {landscape.best!r}",
        "loss = "
        f"{BASE!r} + {WEIGHT!r} * sum(math.log2(globals()[k] / v) ** 2 for k, v in BEST.items())",
        "loss += random.gauss(0.0, 0.01)",
        "print('---')",
        "print(f'val_bpb: {loss:.6f}')",
        "",
    ]
    return "\n".join(lines)


def true_score(landscape: Landscape, source: str) -> float:
    """The noise-free score of an editable file's constants."""
    values = {c.name: float(c.value) for c in find_constants(source)}
    return BASE + WEIGHT * sum(
        math.log2(values[name] / best) ** 2 for name, best in landscape.best.items()
    )


# ---- one coordinator ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Coordinator:
    """A coordinator process on loopback with its own data folder and embedded Redis."""

    data_dir: Path
    fsync: str
    replicate_wait_s: float
    preempt_within: float
    port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: secrets.token_hex(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        env = os.environ | {
            "AUTOSWARM_DATA_DIR": str(self.data_dir),
            "AUTOSWARM_PORT": str(self.port),
            "AUTOSWARM_ADMIN_TOKEN": self.admin_token,
            "AUTOSWARM_REDIS_APPENDFSYNC": self.fsync,
            "AUTOSWARM_REPLICATE_WAIT_S": str(self.replicate_wait_s),
            "AUTOSWARM_PREEMPT_WITHIN": str(self.preempt_within),
            "AUTOSWARM_LOG_LEVEL": "WARNING",
        }
        log_path = self.data_dir / "coordinator.log"
        with log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "autoswarm.coordinator"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=log,
                preexec_fn=die_with_parent(),  # a benchmark stopped by a signal leaves no server
            )
        with self.client() as client:
            deadline = time.monotonic() + 60
            while True:
                try:
                    client.get_json("/readyz")
                    return
                except AutoswarmError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        raise RuntimeError(f"coordinator did not start; see {log_path}") from None
                    time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def client(self) -> CoordinatorClient:
        """An admin client (the benchmark makes tokens, registers the task, reads the head)."""
        return CoordinatorClient(self.url, self.admin_token, timeout_s=30)

    def register_task(self, landscape: Landscape, budget_s: float) -> None:
        files = {
            "task.toml": TASK_TOML.format(task=TASK, budget_s=budget_s),
            "train.py": train_py(landscape),
            "program.md": PROGRAM_MD,
        }
        with self.client() as client:
            client.register_task({path: text.encode() for path, text in files.items()})


# ---- simulated workers -------------------------------------------------------------------------


@dataclass
class Scorer:
    """True scores of bundles (fetched once each), shared by the workers of one run."""

    landscape: Landscape
    scores: dict[str, float] = field(default_factory=dict)
    experiments: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def score(self, client: CoordinatorClient, bundle_hash: str) -> float:
        with self.lock:
            known = self.scores.get(bundle_hash)
        if known is None:
            files = client.fetch_bundle(bundle_hash)
            known = true_score(self.landscape, files["train.py"].decode())
            with self.lock:
                self.scores[bundle_hash] = known
        return known

    def count(self) -> None:
        with self.lock:
            self.experiments += 1


def sim_worker(
    url: str,
    token: str,
    index: int,
    scorer: Scorer,
    args: argparse.Namespace,
    seed: int,
    stop: threading.Event,
) -> None:
    """Lease, fetch, "run" (sleep, heartbeating), report, until stopped: the worker protocol,
    no runner. A heartbeat may cancel the run (withdrawn) or switch it (a preempted explore)."""
    with CoordinatorClient(url, token, timeout_s=30) as client:
        create = WorkerCreate(name=f"sim-{index}", hardware=HARDWARE, slot="cpu")
        worker_id = client.register_worker(create)
        lease: Lease | None = None
        while not stop.is_set():
            try:
                lease = lease or client.lease(worker_id, wait_s=1.0)
                if lease is not None:
                    lease = sim_run(client, worker_id, lease, scorer, args, seed, stop)
            except AutoswarmError as exc:  # a stale lease as the run stops, a busy moment
                logger.debug("sim-%d: %s", index, exc)
                lease = None
                stop.wait(0.2)


def sim_run(
    client: CoordinatorClient,
    worker_id: str,
    lease: Lease,
    scorer: Scorer,
    args: argparse.Namespace,
    seed: int,
    stop: threading.Event,
) -> Lease | None:
    """One simulated run; the lease a heartbeat switched it to, if one did."""
    true = scorer.score(client, lease.bundle_hash)
    rng = random.Random(f"{seed}:{lease.experiment_id}:{lease.fencing_token}")
    metric = true + rng.gauss(0.0, args.noise)
    end = time.monotonic() + args.duration_s
    while (left := end - time.monotonic()) > 0:
        if stop.wait(min(left, args.heartbeat_s)):
            return None
        if end - time.monotonic() <= 0:
            break
        answer = client.heartbeat(
            lease.experiment_id, worker_id, lease.fencing_token, can_switch=True
        )
        if answer.switch_to is not None or answer.cancel:
            return answer.switch_to
    result = Result(
        status=ResultStatus.OK,
        metric=metric,
        metrics={"val_bpb": metric},
        wall_s=args.duration_s,
        training_s=args.duration_s,
        hardware=HARDWARE,
    )
    report = ResultReport(
        experiment_id=lease.experiment_id, fencing_token=lease.fencing_token, result=result
    )
    client.report(report, worker_id)
    scorer.count()
    return None


# ---- one run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunResult:
    workers: int
    seed: int
    time_to_target_s: float | None
    experiments: int
    kept: int
    head_score: float


def head_score(client: CoordinatorClient, scorer: Scorer) -> tuple[float, float] | None:
    """The true score of the task's head on the simulated class and when (wall clock) it
    became the head; None before it has one."""
    task = client.get_json(f"tasks/{TASK}")
    for head in task.get("heads", []):
        if head["hardware"] == HARDWARE:
            return scorer.score(client, head["bundle_hash"]), float(head["updated_s"])
    return None


def verdicts(client: CoordinatorClient) -> int:
    """Log the hypotheses' verdicts; the number kept."""
    hypotheses = client.get_json(f"tasks/{TASK}/hypotheses", {"limit": 1000})
    tally = Counter(h["verdict"] for h in hypotheses)
    logger.info("verdicts %s", dict(tally))
    return tally.get("kept", 0)


def _all_experiments(client: CoordinatorClient) -> list[dict[str, Any]]:
    experiments: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 500, "task_id": TASK}
        if cursor:
            params["cursor"] = cursor
        page = client.get_json("experiments", params)
        experiments += page["experiments"]
        cursor = page.get("next_cursor")
        if not cursor:
            return experiments


def timeline(client: CoordinatorClient, start_s: float, duration_s: float) -> list[str]:
    """Where the time to target went: each kept change's chain (when its candidate and its
    replicate were queued and finished), how many runs were made on a head that had moved on
    by the time they were leased ("stale"), how many were withdrawn (no result: before they
    ran, or while they ran, stopped at a heartbeat) and how many explores were preempted."""
    experiments = _all_experiments(client)
    by_id = {e["experiment_id"]: e for e in experiments}
    events = client.get_json("events", {"limit": 1000})
    kept = [
        e
        for e in events
        if e.get("type") == "verdict" and e.get("verdict") == "kept" and e.get("commit")
    ]
    heads = sorted((float(e["time_s"]), str(e["commit"])) for e in kept)

    def at(t: float | str | None) -> str:
        return "-" if t is None else f"{float(t) - start_s:.1f}"

    def head_at(t: float) -> str | None:
        current = None
        for moved_s, commit in heads:
            if moved_s <= t:
                current = commit
        return current

    lines = []
    for event in kept:
        cand = by_id.get(str(event["experiment_id"]), {})
        reps = [
            e
            for e in experiments
            if e["kind"] == "replicate" and e.get("candidate_id") == event["experiment_id"]
        ]
        lines.append(
            f"kept at {at(event['time_s'])} s: {cand.get('kind')} queued "
            f"{at(cand.get('created_s'))} finished {at(cand.get('finished_s'))}; replicate queued "
            f"{', '.join(at(r.get('created_s')) for r in reps)} finished "
            f"{', '.join(at(r.get('finished_s')) for r in reps)}"
        )
    runs: Counter[str] = Counter()
    for e in experiments:
        if not e.get("finished_s") or e.get("state") != "done":
            continue
        if e.get("result") is None:  # withdrawn before it ran, or while it ran
            runs[f"{e['kind']} (withdrawn)"] += 1
            continue
        leased_s = float(e["finished_s"]) - duration_s
        head = head_at(leased_s)
        stale = head is not None and e["parent_commit"] != head and e["kind"] != "baseline"
        runs[f"{e['kind']}{' (stale)' if stale else ''}"] += 1
    # A preempted explore's run stopped at a heartbeat; the explore ran again later.
    runs["explore (preempted)"] = sum(1 for e in events if e.get("type") == "preempted")
    lines.append("runs: " + ", ".join(f"{k} {v}" for k, v in sorted(runs.items())))
    return lines


def run_once(workers: int, seed: int, args: argparse.Namespace) -> RunResult:
    """One swarm of `workers` from the task's first code until the target (or the timeout)."""
    landscape = LANDSCAPES[args.landscape]
    scorer = Scorer(landscape)
    stop = threading.Event()
    threads: list[threading.Thread] = []
    reached: float | None = None
    score, kept = math.inf, 0
    with tempfile.TemporaryDirectory(prefix="swarm-scaling-") as tmp:
        coordinator = Coordinator(Path(tmp), args.fsync, args.replicate_wait_s, args.preempt_within)
        coordinator.start()
        try:
            coordinator.register_task(landscape, args.duration_s)
            with coordinator.client() as admin:
                proposer_token = admin.create_token("proposer", "mutation")
                tokens = [admin.create_token("worker", f"sim-{i}") for i in range(workers)]
            proposer_client = CoordinatorClient(coordinator.url, proposer_token, timeout_s=30)
            threads.append(
                threading.Thread(
                    target=run_proposer_loop,
                    args=(proposer_client, TASK, MutationProposer(seed)),
                    kwargs={"queue_ahead": max(2, workers), "poll_s": 0.1, "stop": stop},
                    daemon=True,
                )
            )
            for i, token in enumerate(tokens):
                threads.append(
                    threading.Thread(
                        target=sim_worker,
                        args=(coordinator.url, token, i, scorer, args, seed, stop),
                        daemon=True,
                    )
                )
            start, wall_start = time.monotonic(), time.time()
            for thread in threads:
                thread.start()
            with coordinator.client() as reader:
                while time.monotonic() - start < args.timeout_s:
                    score, since = head_score(reader, scorer) or (math.inf, 0.0)
                    if score <= args.target:
                        # when the head moved there (the coordinator's clock, this machine's),
                        # not when this poll saw it: up to 0.2 s later
                        reached = since - wall_start
                        break
                    time.sleep(0.2)
                kept = verdicts(reader)
                if args.timeline:
                    for line in timeline(reader, wall_start, args.duration_s):
                        logger.info("%s", line)
        finally:
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            coordinator.stop()
    result = RunResult(workers, seed, reached, scorer.experiments, kept, score)
    logger.info("%s", result)
    return result


# ---- the table ---------------------------------------------------------------------------------


def _median_time(runs: list[RunResult]) -> float:
    return statistics.median(
        math.inf if r.time_to_target_s is None else r.time_to_target_s for r in runs
    )


def table(results: dict[int, list[RunResult]]) -> list[str]:
    """The markdown rows: speedup and efficiency against the smallest worker count."""
    first = min(results)
    base = _median_time(results[first])
    rows = [
        f"| workers | time to target s: median (per seed) | speedup vs {first} "
        "| efficiency | experiments (median) | kept (median) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for n, runs in sorted(results.items()):
        median = _median_time(runs)
        per_seed = ", ".join(
            "-" if r.time_to_target_s is None else f"{r.time_to_target_s:.0f}" for r in runs
        )
        speedup = base / median if math.isfinite(median) and math.isfinite(base) else None
        # efficiency: the speedup per added worker, 1.0 when N workers are N/first times faster
        shown = ("-", "-") if speedup is None else (f"{speedup:.1f}", f"{speedup * first / n:.2f}")
        rows.append(
            f"| {n} | {median:.0f} ({per_seed}) | {shown[0]} | {shown[1]} "
            f"| {statistics.median(r.experiments for r in runs):.0f} "
            f"| {statistics.median(r.kept for r in runs):.0f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4,8,16,32,64")
    parser.add_argument("--seeds", type=int, default=3, help="proposer seeds 0..n-1 per N")
    parser.add_argument("--landscape", choices=sorted(LANDSCAPES), default="sparse")
    parser.add_argument("--duration-s", type=float, default=2.0, help="one simulated run")
    parser.add_argument("--noise", type=float, default=0.01, help="the score's noise (std)")
    parser.add_argument("--target", type=float, help="the true score to reach")
    parser.add_argument("--timeout-s", type=float, default=1200.0, help="per run")
    parser.add_argument("--fsync", choices=("always", "everysec"), default="everysec")
    parser.add_argument(
        "--timeline",
        action="store_true",
        help="log each kept change's chain of runs, and the runs made on a stale head",
    )
    parser.add_argument(
        "--replicate-wait-s",
        type=float,
        help="how long a replicate waits for another worker before its own may run it "
        "(default: the coordinator's 120 s scaled as the run is to a 300 s budget)",
    )
    parser.add_argument(
        "--heartbeat-s",
        type=float,
        help="how often a simulated worker heartbeats (default: a real worker's 20 s, "
        "lease_ttl_s / 3, scaled as the run is to a 300 s budget)",
    )
    parser.add_argument(
        "--preempt-within",
        type=float,
        default=CoordinatorSettings.model_fields["preempt_within"].default,
        help="the coordinator's preempt_within: an explore younger than this share of the "
        "budget is preempted by a waiting baseline, replicate or merge (0: never)",
    )
    args = parser.parse_args()
    landscape = LANDSCAPES[args.landscape]
    args.target = args.target or landscape.target
    if args.replicate_wait_s is None:
        args.replicate_wait_s = round(120.0 * args.duration_s / 300.0, 3)
    if args.heartbeat_s is None:
        args.heartbeat_s = round(20.0 * args.duration_s / 300.0, 3)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for quiet in ("httpx", "coordinator"):
        logging.getLogger(quiet).setLevel(logging.WARNING)
    counts = [int(n) for n in args.workers.split(",")]
    print(
        f"# swarm scaling, {time.strftime('%Y-%m-%d')}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}"
    )
    start = true_score(landscape, train_py(landscape))
    print(
        f"# {args.landscape}: {landscape.about}; start {start:.3f}, target {args.target}; "
        f"noise {args.noise}; run {args.duration_s} s; replicate wait {args.replicate_wait_s} s; "
        f"heartbeat {args.heartbeat_s} s; preempt within {args.preempt_within}; "
        f"fsync {args.fsync}; seeds {args.seeds}"
    )
    results = {n: [run_once(n, seed, args) for seed in range(args.seeds)] for n in counts}
    print("\n".join(["", *table(results)]))


if __name__ == "__main__":
    main()
