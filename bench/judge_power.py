"""The judge's operating characteristic, measured on the real decision code.

Drives the coordinator's own scheduler and judge loop (`Scheduler`, `JudgeLoop.drain`, the
store's Lua scripts against a real redis-server started here, the lineage in real git) with
simulated workers: each run's score is the code's true score plus seed noise (sigma), the
worker's fixed offset (drawn once per worker, N(0, tau^2)), and a slow drift shared by all
(a sine of amplitude `--drift` sigma over `--drift-period` runs). Candidates of true effect
0, 1, 2, 3, 4 and 6 sigma are submitted one at a time, in random order, each adding one
line `EFFECT_<n> = <effect>` to the head's train.py; the score of a code is 1 - sigma times
the sum of the effects it carries, so a kept change moves the head as a real one would.
Workers lease in turn; a candidate is followed until its hypothesis has a verdict.

Prints, per effect: candidates, P(keep), runs per decided candidate (its explore and
replicates), and time to decision (every run leased, of any kind, from its first run to its
verdict). The false-keep rate is P(keep) at 0.

    .venv/bin/python bench/judge_power.py                    # tau 0 and tau 1 sigma
    .venv/bin/python bench/judge_power.py --per-effect 200 --taus 0.5
"""

from __future__ import annotations

import argparse
import math
import platform
import random
import re
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoswarm.coordinator.hypotheses import submit_hypothesis
from autoswarm.coordinator.judge_loop import JudgeLoop
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.tasks import register_task
from autoswarm.shared.models import HypothesisCreate, Result, ResultStatus, Verdict

HW = "cpu:bench-1c"
SIGMA = 0.01
EFFECTS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)
TRAIN = 'SCORE = 1.0\nprint("---")\nprint(f"score: {SCORE}")\n'
TOML = """\
[task]
name = "power"
editable = ["train.py"]
protected = ["prepare.py"]
budget_s = 5

[metric]
name = "score"
direction = "minimize"
"""
EFFECT_LINE = re.compile(r"^EFFECT_\d+ = ([0-9.eE+-]+)", re.M)


@dataclass
class Tally:
    """What became of the candidates of one effect."""

    candidates: int = 0
    kept: int = 0
    runs: int = 0
    elapsed: int = 0
    undecided: int = 0
    reasons: list[str] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--dir", str(folder), "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return server, url
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("redis-server did not start")


class Swarm:
    """Simulated workers on one class of the real coordinator's decision code."""

    def __init__(self, folder: Path, url: str, args: argparse.Namespace, tau: float) -> None:
        self.rng = random.Random(args.seed)
        self.args = args
        self.now = 0.0
        self.settings = CoordinatorSettings(
            data_dir=folder / "data", redis_url=url, baseline_runs=args.baseline_runs
        )
        self.store = Store(url)
        self.scheduler = Scheduler(self.store, self.settings, clock=lambda: self.now)
        self.loop = JudgeLoop(self.scheduler, interval_s=1.0)
        task_dir = folder / "task"
        task_dir.mkdir()
        (task_dir / "task.toml").write_text(TOML)
        (task_dir / "train.py").write_text(TRAIN)
        (task_dir / "prepare.py").write_text("print('nothing')\n")
        (task_dir / "program.md").write_text("# power\n")
        task = register_task(self.store, self.settings, task_dir)
        self.task_id = task.task_id
        self.scheduler.ensure_class(task, HW)
        self.offsets = {f"w{i}": self.rng.gauss(0, tau * SIGMA) for i in range(args.workers)}
        self.ran = 0
        self.turn = 0

    def score(self, commit: str, worker: str) -> float:
        files = self.scheduler.reads.lineage(self.task_id).files_at(commit)
        effects = sum(float(e) for e in EFFECT_LINE.findall(files["train.py"].decode()))
        drift = self.args.drift * SIGMA * math.sin(2 * math.pi * self.ran / self.args.drift_period)
        noise = self.rng.gauss(0.0, SIGMA)
        return 1.0 - SIGMA * effects + self.offsets[worker] + drift + noise

    def step(self) -> str | None:
        """One worker (the next in turn that has something) runs one experiment; the
        hypothesis it served, or None when no worker had anything."""
        workers = list(self.offsets)
        for i in range(len(workers)):
            worker = workers[(self.turn + i) % len(workers)]
            got = self.store.lease(
                worker,
                worker,
                HW,
                now=self.now,
                lease_ttl_s=1e9,
                replicate_wait_s=self.settings.replicate_wait_s,
            )
            if got is None:
                continue
            self.turn = (self.turn + i + 1) % len(workers)
            exp = self.store.get_experiment(got.experiment_id)
            assert exp is not None
            metric = self.score(exp.code_commit or exp.parent_commit, worker)
            result = Result(status=ResultStatus.OK, metric=metric)
            self.store.report(
                got.experiment_id, worker, got.fencing_token, result, now=self.now, max_attempts=3
            )
            self.ran += 1
            self.now += self.args.run_s
            self.loop.drain()
            return exp.hypothesis_id or ""
        return None

    def head_code(self) -> str:
        head = self.store.get_head(self.task_id, HW)
        assert head is not None
        return self.scheduler.reads.lineage(self.task_id).files_at(head.commit)["train.py"].decode()

    def candidate(self, n: int, effect: float, tally: Tally) -> None:
        """Submit one candidate of this effect and follow it to its verdict."""
        while not (head := self.store.get_head(self.task_id, HW)) or not head.ready:
            if self.step() is None:
                self.now += self.settings.replicate_wait_s
        train = self.head_code() + f"EFFECT_{n} = {effect!r}\n"
        create = HypothesisCreate(task_id=self.task_id, title=f"c{n}", change={"train.py": train})
        hypothesis_id = submit_hypothesis(self.scheduler.reads, create).hypothesis_id
        started, runs, idle = self.ran, 0, 0
        while True:
            hyp = self.store.get_hypothesis(hypothesis_id)
            assert hyp is not None
            if hyp.verdict is not Verdict.PENDING:
                break
            served = self.step()
            if served is None:
                idle += 1
                self.now += self.settings.replicate_wait_s  # waits end; none came
                if idle > 20:
                    tally.undecided += 1
                    return
                continue
            runs += served == hypothesis_id
        tally.candidates += 1
        tally.kept += hyp.verdict is Verdict.KEPT
        tally.runs += runs
        tally.elapsed += self.ran - started
        if len(tally.reasons) < 2:
            tally.reasons.append(f"{hyp.verdict.value}: {hyp.reason}")
        if hyp.verdict is not Verdict.KEPT and effect >= 3 and len(tally.misses) < 3:
            tally.misses.append(f"{hyp.verdict.value}: {hyp.reason}")


def run(args: argparse.Namespace, tau: float) -> dict[float, Tally]:
    folder = Path(tempfile.mkdtemp(prefix="judge-power-"))
    server, url = start_redis(folder)
    try:
        swarm = Swarm(folder, url, args, tau)
        counts = {e: args.per_effect * (args.zero_weight if e == 0 else 1) for e in EFFECTS}
        plan = [e for e in EFFECTS for _ in range(counts[e])]
        swarm.rng.shuffle(plan)
        tallies = {e: Tally() for e in EFFECTS}
        for n, effect in enumerate(plan):
            swarm.candidate(n, effect, tallies[effect])
        swarm.store.close()
        return tallies
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-effect", type=int, default=60, help="candidates per effect")
    parser.add_argument("--zero-weight", type=int, default=5, help="x as many at effect 0")
    parser.add_argument("--workers", type=int, default=6)
    parser.add_argument("--taus", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--drift", type=float, default=0.3, help="amplitude, in sigma")
    parser.add_argument("--drift-period", type=float, default=2000.0, help="in runs")
    parser.add_argument("--run-s", type=float, default=60.0, help="simulated seconds per run")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--baseline-runs", type=int, default=3, help="per new head")
    args = parser.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(f"# judge power: {platform.node()}, {platform.machine()}, {when}")
    print(
        f"# workers {args.workers}, drift {args.drift} sigma over {args.drift_period:g} runs,"
        f" seed {args.seed}, {args.baseline_runs} baselines per new head"
    )
    for tau in args.taus:
        started = time.monotonic()
        tallies = run(args, tau)
        print(f"\nper-worker offsets tau = {tau:g} sigma ({time.monotonic() - started:.0f} s)")
        print(
            "| effect (sigma) | candidates | P(keep) | runs per candidate "
            "| time to decision (runs) | undecided |"
        )
        print("|---|---|---|---|---|---|")
        for effect, t in tallies.items():
            n = max(t.candidates, 1)
            print(f"| {effect:g} | {t.candidates} | {t.kept / n:.3f} | {t.runs / n:.2f} | "
                  f"{t.elapsed / n:.2f} | {t.undecided} |")  # fmt: skip
        for effect, t in tallies.items():
            for reason in t.reasons[:1]:
                print(f"#   {effect:g} sigma: {reason}")
        for effect, t in tallies.items():
            for reason in t.misses:
                print(f"#   missed at {effect:g} sigma: {reason}")


if __name__ == "__main__":
    main()
