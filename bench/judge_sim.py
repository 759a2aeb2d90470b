"""The sequential rule's operating characteristic in a fast simulation, and the best any
rule could do.

`simulate` puts candidates of a known true gain through the coordinator's own rule
(`SequentialRule.screen` and `.decide`, `head_stats`: the functions the scheduler calls,
not a copy of them) against a head measured by `head_runs` baselines, sigma = 1 known (the
remembered noise, df 200). The head grows as the rule's decisions ask (`head_runs`, up to
`--max-head` runs, as the scheduler queues them before each look). It prints, per effect and
head size, P(keep) with a 95% Wilson interval and runs per candidate.

`frontier` is the bound the rule's design is judged by: for a head known exactly, the
Bayes-optimal sequential test of "no gain" against "a 2 sigma gain" with at most `looks`
runs, found by backward induction on the sum of the runs (keep / discard / run again, with
a cost per run under no gain and per false keep), swept over those costs. No rule can keep
more 2-sigma candidates at as few runs per zero-effect candidate and as few false keeps.

    .venv/bin/python bench/judge_sim.py                        # the coordinator's DESIGN
    .venv/bin/python bench/judge_sim.py --frontier              # the bound
    .venv/bin/python bench/judge_sim.py --search --candidates 4000 --heads 24  # the grid
    .venv/bin/python bench/judge_sim.py --candidates 20000 --heads 3 8 24
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
import time

import numpy as np

from autoswarm.coordinator import judge
from autoswarm.coordinator.noise import Noise, Run
from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.task import TaskSpec

SPEC = TaskSpec(name="sim")  # minimize, min_effect 0
NOISE = Noise(std=1.0, df=200)
EFFECTS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0)


def simulate(
    effect: float,
    rng: random.Random,
    head_runs: int,
    rule: judge.SequentialRule,
    max_head: int = 24,
) -> tuple[bool, int]:
    """One candidate of true gain `effect` (sigma 1) through the rule: (kept, its runs)."""
    head = [Run(f"b{i}", "head", "", rng.gauss(0.0, 1.0)) for i in range(head_runs)]

    def grow(target: int) -> judge.HeadStats:
        while len(head) < min(target, max_head):
            head.append(Run(f"b{len(head)}", "head", "", rng.gauss(0.0, 1.0)))
        return judge.head_stats(head, "head", NOISE)

    stats = grow(0)
    first = rng.gauss(-effect, 1.0)
    got = rule.screen(Result(status=ResultStatus.OK, metric=first), stats, SPEC)
    if got.action is not judge.Action.REPLICATE:
        return False, 1
    runs = [Run("c0", "cand", "", first)]
    while True:
        stats = grow(got.head_runs)
        runs.append(Run(f"c{len(runs)}", "cand", "", rng.gauss(-effect, 1.0)))
        got = rule.decide(judge.Evidence(list(runs), confirmed_by="replicated"), stats, SPEC)
        if got.action is not judge.Action.REPLICATE:
            return got.action is judge.Action.KEEP, len(runs)


def wilson(hits: int, n: int) -> tuple[float, float]:
    """The 95% Wilson interval of a binomial proportion."""
    z = 1.96
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def table(candidates: int, heads: list[int], seed: int, rule: judge.SequentialRule) -> None:
    print("| head runs | effect (sigma) | candidates | P(keep) | 95% interval | runs each |")
    print("|---|---|---|---|---|---|")
    for n0 in heads:
        for effect in EFFECTS:
            rng = random.Random(f"{seed}-{n0}-{effect}")
            got = [simulate(effect, rng, n0, rule) for _ in range(candidates)]
            kept = sum(k for k, _ in got)
            low, high = wilson(kept, candidates)
            runs = statistics.fmean(r for _, r in got)
            print(f"| {n0} | {effect:g} | {candidates} | {kept / candidates:.4f} | "
                  f"{low:.4f}-{high:.4f} | {runs:.3f} |", flush=True)  # fmt: skip


def search(candidates: int, head_runs: int, seed: int) -> None:
    """The grid the coordinator's design was chosen on: screen x drift x slack x keep, at
    most 8 runs; each design's false keeps, runs at 0 and P(keep) at 2 sigma."""
    print("| screen | drift | slack | keep | false keeps | runs at 0 | P(keep) at 2 sigma |")
    print("|---|---|---|---|---|---|---|")
    looks = range(2, judge.MAX_RUNS)
    for screen in (0.8, 0.9, 1.0):
        for drift in (0.9, 1.0, 1.1):
            for slack in (0.0, 0.2, 0.4):
                for keep in (2.6, 2.8, 3.0):
                    stop = tuple(drift * math.sqrt(k) - slack / math.sqrt(k) for k in looks)
                    design = judge.Design(screen, (keep,) * (judge.MAX_RUNS - 1), stop)
                    rule = judge.SequentialRule(design=design)
                    rng = random.Random(seed)
                    zero = [simulate(0.0, rng, head_runs, rule) for _ in range(candidates)]
                    two = [simulate(2.0, rng, head_runs, rule) for _ in range(candidates)]
                    p0 = sum(k for k, _ in zero) / candidates
                    r0 = statistics.fmean(r for _, r in zero)
                    p2 = sum(k for k, _ in two) / candidates
                    print(f"| {screen} | {drift} | {slack} | {keep} | {p0:.4f} | {r0:.3f} | "
                          f"{p2:.3f} |", flush=True)  # fmt: skip


# -- the bound ------------------------------------------------------------------------------


def _policy(
    cost_keep: float, cost_run: float, looks: int, gain: float
) -> tuple[list[float], list[float]]:
    """Backward induction on S_k (the sum of k runs, head exact): per look, the sum from
    which keeping is best and the one below which discarding is."""
    grid = np.linspace(-12.0, 6.0 * looks, 1 + 40 * (6 * looks + 12))
    step = grid[1] - grid[0]
    offsets = np.arange(-int(6 / step), int(6 / step) + 1) * step
    kernel = np.exp(-offsets * offsets / 2) / math.sqrt(2 * math.pi) * step
    value = np.zeros_like(grid)
    ups, lows = [0.0] * looks, [0.0] * looks
    for k in range(looks, 0, -1):
        ratio = np.exp(gain * grid - k * gain * gain / 2)  # likelihood ratio of the sum
        keep = cost_keep - ratio
        again = cost_run + np.convolve(value, kernel, mode="same") if k < looks else np.inf
        value = np.minimum(np.minimum(keep, 0.0), again)
        act = np.where(keep <= np.minimum(0.0, again), 2, np.where(again < 0.0, 1, 0))
        ups[k - 1] = float(grid[np.argmax(act == 2)]) if (act == 2).any() else math.inf
        cont = np.flatnonzero(act == 1)
        lows[k - 1] = float(grid[cont[0]]) if len(cont) else ups[k - 1]
    return ups, lows


def _run_policy(
    ups: list[float], lows: list[float], effect: float, n: int, seed: int
) -> tuple[float, float]:
    rng = np.random.default_rng(seed)
    total = np.zeros(n)
    alive = np.ones(n, bool)
    kept = np.zeros(n, bool)
    runs = np.zeros(n)
    for up, low in zip(ups, lows, strict=True):
        total += rng.normal(effect, 1.0, n)
        runs += alive
        now = alive & (total >= up)
        kept |= now
        alive &= ~now & (total >= low)
    return float(kept.mean()), float(runs.mean())


def frontier(looks: int = 8, n: int = 200_000) -> None:
    print(f"Bayes-optimal tests, head exact, at most {looks} runs (backward induction):")
    print("| cost per run | cost per false keep | false keeps | runs at 0 | P(keep) at 2 sigma |")
    print("|---|---|---|---|---|")
    for cost_run in (0.3, 0.4, 0.5, 0.6, 0.8):
        for cost_keep in (2.0, 8.0):
            ups, lows = _policy(cost_keep, cost_run, looks, 2.0)
            p0, r0 = _run_policy(ups, lows, 0.0, n, 1)
            p2, _ = _run_policy(ups, lows, 2.0, n, 2)
            print(f"| {cost_run} | {cost_keep} | {p0:.4f} | {r0:.3f} | {p2:.3f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--candidates", type=int, default=20_000, help="per effect and head")
    parser.add_argument("--heads", type=int, nargs="+", default=[3, 8, 24])
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--frontier", action="store_true", help="print the bound instead")
    parser.add_argument("--search", action="store_true", help="print the design grid instead")
    args = parser.parse_args()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.frontier:
        frontier()
        return
    if args.search:
        search(args.candidates, args.heads[-1], args.seed)
        return
    d = judge.DESIGN
    print(f"# judge_sim {when}: screen {d.screen}, keep {d.keep_at}, stop {d.stop_below}")
    table(args.candidates, args.heads, args.seed, judge.SequentialRule())


if __name__ == "__main__":
    main()
