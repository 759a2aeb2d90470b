"""The judge: pure decisions on results, each with a one-line reason. No I/O.

The rule (docs/judging.md has it as tables, docs/benchmarks.md its measured operating
characteristic) is one object, `SequentialRule`, that the scheduler calls on each run. The
noise it rests on, per task and hardware class (remembered runs, per-worker offsets,
absurd scores held), is `autoswarm.coordinator.noise`.

The head's score is the offset-corrected mean of its baselines. A candidate's evidence is the
offset-corrected mean of its k runs; the statistic is

    T_k = (gain - min_effect) / se,   se^2 = V(candidate mean) + V(head mean) - 2 C

(C: offset uncertainty shared by workers that ran both), compared with Student's t at the
noise's degrees of freedom (each z boundary below is widened to t_df at its level).

The head's mean is that of its baselines alone when it has any: a kept change's own runs
become the new head's, but they were chosen for scoring well (the keep selected them: a
kept 2-sigma change's runs score 0.3 sigma above its true gain on average, a falsely kept
one's 1.7 sigma), so they would flatter the head and cost every later candidate power.

Sequential decisions (a truncated sequential test, at most MAX_RUNS = 8 runs of a candidate):
- run 1, the screen: T_1 >= SCREEN (0.90) continues, else the candidate is discarded;
- run k = 2..8: T_k >= KEEP_Z (2.80) keeps it (given a run by another worker), T_k <
  DRIFT*sqrt(k) - SLACK/sqrt(k) (1.27, 1.62, 1.90, 2.15, 2.37, 2.57 at k = 2..7)
  discards it, else one more run is asked for; at run 8, kept only at T_8 >= 2.80.
  Runs 2.. are replicates on other workers where any exist: each ADDS to the evidence.

Derivation. With the head exact and sigma known, T_k = sqrt(k) * m_k (m_k: the mean gain of
k runs in sigma). Between "no gain" and "a gain of d = 2 sigma", the log-likelihood ratio of
k runs is d * k * (m_k - d/2): Wald's SPRT runs again while it lies between two constants,
that is while m_k > d/2 - b/(d*k), or T_k > (d/2)*sqrt(k) - (b/d)/sqrt(k): the futility
boundary above, DRIFT = d/2 = 1, SLACK = b/d. Its upper boundary is replaced by a constant
z boundary (the cap makes the SPRT's own too late to matter), and the screen is the first
look's futility boundary, set apart. What bounds such a rule is the runs it may spend on
candidates with no gain: the Bayes-optimal test of the same two hypotheses with at most 8
runs (backward induction on the sum of the runs: `bench/judge_sim.py --frontier`) keeps
0.826 of 2-sigma candidates at 1.28 runs per zero-effect one, 0.808 at 1.24, 0.774 at
1.16, whatever its false keeps (0.02% to 0.4% give the same power): with a head known
exactly, P(keep) >= 0.8 at 2 sigma and <= 1.3 runs per zero-effect candidate sit on that
bound together. SCREEN, KEEP_Z, DRIFT and SLACK were chosen on a grid of 81 designs (3
screens, drifts, slacks and keep boundaries, at most 8 runs: `bench/judge_sim.py --search`)
for false keeps <= 0.6%, a margin under the 1%, runs at no gain <= 1.29, and the most
power at 2 sigma; 5 to 7 looks with boundaries linear in k did no better.

Its simulation (`bench/judge_sim.py`: this module's `SequentialRule` and `head_stats`, the
head grown as the decisions ask, sigma known; 20,000 candidates per cell, 95% intervals
about +-0.1% at 0 and +-0.6% at 2 sigma):

    head measured   false keeps   runs at 0   P(keep) at 1 / 2 / 3 / 4 sigma
    3 times         0.52%         1.29        0.20 / 0.74 / 0.955 / 0.995
    8 times         0.59%         1.29        0.21 / 0.77 / 0.967 / 0.998
    24 times        0.58%         1.29        0.23 / 0.81 / 0.978 / 0.999

Under no effect P(keep) = sum over k of P(reach k and T_k >= 2.80), alpha spent across the
looks; Bonferroni bounds it by 7 * (1 - Phi(2.80)) = 1.8% ignoring the screen and the
futility boundaries, which bring it to the simulated 0.5-0.6%. The head's own uncertainty
enters se, so a young head costs power, not error: each candidate on a head of 3 runs
compares its first run with a mean whose variance is a third of its own. The power lost at
2 sigma is the price of the runs budget, not of the error rate: see the bound above.
`bench/judge_power.py` measures the whole rule as the coordinator runs it.

Scores are only ever compared within one hardware class (the caller's job).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from enum import StrEnum

from autoswarm.coordinator.noise import BIG, Noise, Run, Sample, clamp, far_out, fit_noise, sample
from autoswarm.shared.models import Result, ResultStatus, Verdict
from autoswarm.shared.task import TaskSpec

# Relative float tolerance under which two scores are the same score.
_SAME = 1e-9
# The screen's boundary on T_1 (z scale): ~18% of zero-effect candidates get a second run.
SCREEN = 0.90
# At most this many runs of a candidate (its first and MAX_RUNS - 1 replicates).
MAX_RUNS = 8
# Keep at run k = 2..MAX_RUNS when T_k >= KEEP_Z (z scale, one boundary at every look).
KEEP_Z = 2.80
# Discard at run k = 2..MAX_RUNS-1 when T_k < DRIFT*sqrt(k) - SLACK/sqrt(k): the running
# mean gain has fallen under DRIFT - SLACK/k sigma (a truncated SPRT's lower boundary between
# no gain and a 2-sigma one, whose midpoint DRIFT is; module doc).
DRIFT = 1.0
SLACK = 0.2
KEEP_AT = tuple(KEEP_Z for _ in range(2, MAX_RUNS + 1))
STOP_BELOW = tuple(
    round(DRIFT * math.sqrt(k) - SLACK / math.sqrt(k), 2) for k in range(2, MAX_RUNS)
)
# Runs whose experiment id starts so are the head's baselines (autoswarm.coordinator.heads): the
# head's mean is theirs alone when it has any, for the runs a kept change brings with it were chosen
# for scoring well and would flatter the new head (module doc).
BASELINE_PREFIX = "b"
# While a candidate is measured again, the head is measured up to this many times per run of
# the candidate (up to max_baseline_runs): a head of 4k runs costs a k-run comparison ~11%
# of its T, one of k runs ~41% (docs/judging.md).
HEAD_RUNS_PER_RUN = 4


@dataclass(frozen=True)
class Design:
    """The boundaries of the sequential test (z scale): the screen's on T_1, the keep
    boundary at runs 2..max_runs and the futility one at runs 2..max_runs-1. The coordinator
    runs `DESIGN`; `bench/judge_sim.py` searches others through the same rule."""

    screen: float = SCREEN
    keep_at: tuple[float, ...] = KEEP_AT
    stop_below: tuple[float, ...] = STOP_BELOW

    @property
    def max_runs(self) -> int:
        return len(self.keep_at) + 1


DESIGN = Design()


@dataclass(frozen=True)
class HeadStats:
    """The head's mean on one class, its number of runs, and the class's noise."""

    mean: float | None
    runs: int
    std: float
    df: int
    sample: Sample | None = None
    noise: Noise = field(default_factory=Noise)

    def describe(self, metric: str) -> str:
        if self.mean is None:
            return f"head {metric} unmeasured"
        return f"head {metric} {self.mean:.6g} ± {self.std:.3g} (n={self.runs}, df={self.df})"


class Action(StrEnum):
    REPLICATE = "replicate"  # one more run (a replicate by another worker where one exists)
    DISCARD = "discard"
    CRASHED = "crashed"
    KEEP = "keep"
    NOT_REPRODUCED = "not-reproduced"


@dataclass(frozen=True)
class Decision:
    action: Action
    verdict: Verdict
    reason: str
    # The judged metric minus the head mean, sign as the metric (None: nothing measured).
    delta: float | None = None
    metric: float | None = None
    # For a replication: did the replicate agree with the claim (a worker's claim checked)?
    agreed: bool | None = None
    # How many runs the head should have while this candidate is measured again (0: no
    # more): HEAD_RUNS_PER_RUN per run of the candidate, so the head's mean weighs at most
    # a quarter of the candidate's in the comparison's variance.
    head_runs: int = 0
    # The head mean its reason names ("vs head ..."; None: compared with no head).
    head_mean: float | None = None


def gain(value: float, mean: float, spec: TaskSpec) -> float:
    """How much `value` improves on `mean` in the task's direction (negative: worse); halves
    first when the difference would overflow."""
    diff = mean - value if spec.lower_is_better else value - mean
    if math.isfinite(diff):
        return diff
    half = mean / 2 - value / 2 if spec.lower_is_better else value / 2 - mean / 2
    return clamp(half * 2)


def head_stats(
    runs: list[Run] | dict[str, list[float]], head_code: str, noise: Noise | None = None
) -> HeadStats:
    """The head's stats: the offset-corrected mean of its baselines (of all its runs when it
    has none) and the class's noise (`fit_noise` of the same runs unless given). A dict of
    code -> scores is taken as runs of no known worker."""
    if isinstance(runs, dict):
        runs = [Run("", code, "", v) for code, values in runs.items() for v in values]
    noise = noise if noise is not None else fit_noise(runs)
    measured = [r for r in runs if r.code == head_code]
    baselines = [r for r in measured if r.experiment_id.startswith(BASELINE_PREFIX)]
    head = sample(baselines or measured, noise)
    if head is None:
        return HeadStats(None, 0, noise.std, noise.df, None, noise)
    return HeadStats(head.mean, head.runs, noise.std, noise.df, head, noise)


# -- quantiles ------------------------------------------------------------------------------


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile: exact for df 1 and 2, Cornish-Fisher (4 terms) beyond."""
    if df <= 0:
        return statistics.NormalDist().inv_cdf(p)
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = statistics.NormalDist().inv_cdf(p)
    v = float(df)
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def multiplier(z: float, df: int) -> float:
    """z, widened to Student's t for a sigma estimated with df degrees of freedom."""
    return t_quantile(statistics.NormalDist().cdf(z), df) if df > 0 else z


def tolerance(stats: HeadStats, spec: TaskSpec, z: float) -> float:
    """How far a replicate may fall short of the run it checks and still agree with it: a
    worker's claim checked, for its trust (at z + 1: a claim it cannot confirm)."""
    scale = _SAME * max(1.0, abs(stats.mean or 0.0))
    return max(spec.min_effect, multiplier(z + 1, stats.df) * stats.std * math.sqrt(2), scale)


# -- the rule -------------------------------------------------------------------------------


def _failure(result: Result | None, last_error: str | None) -> str:
    if result is None:
        return f"no result: {last_error or 'unknown error'}"
    detail = result.error or last_error or f"exit code {result.exit_code}"
    return f"run {result.status.value}: {detail}"


@dataclass(frozen=True)
class Evidence:
    """What a candidate's decision pools: its ok runs that count, how many of its runs were
    held (far outside the class's history), and who confirmed it (None: no run by another
    worker yet; else a phrase such as "replicated by w2 of another owner")."""

    runs: list[Run]
    held: int = 0
    confirmed_by: str | None = None


@dataclass(frozen=True)
class Comparison:
    """A candidate's pooled runs against the head: the gain, its standard error, T."""

    mean: float
    gain: float
    se: float
    stat: float


def compare(runs: list[Run], stats: HeadStats, spec: TaskSpec) -> Comparison | None:
    """The statistic T_k of the module doc; None when the head or the runs have no score."""
    cand = sample(runs, stats.noise)
    head = stats.sample
    if cand is None or head is None:
        return None
    shared = math.fsum(
        share * head.shares.get(w, 0.0) * stats.noise.offset(w)[1]
        for w, share in cand.shares.items()
    )
    var = max(cand.var + head.var - 2 * shared, 0.0)
    se = clamp(math.sqrt(var))
    got = gain(cand.mean, head.mean, spec)
    margin = got - spec.min_effect
    if se > 0:
        stat = clamp(margin / se) if math.isfinite(margin / se) else math.copysign(BIG, margin)
    else:
        stat = math.copysign(BIG, margin) if margin != 0 else 0.0
    return Comparison(cand.mean, got, se, stat)


class SequentialRule:
    """The coordinator's decision rule (module doc): `screen` a candidate's first run,
    `decide` on its pooled runs after each further one. `z` sets only how far a replicate
    may fall short of the claim it checks and still agree with it (the worker's trust)."""

    def __init__(self, z: float = 2.0, design: Design = DESIGN) -> None:
        self.z = z
        self.design = design

    def screen(
        self,
        result: Result | None,
        stats: HeadStats,
        spec: TaskSpec,
        *,
        shorter: bool = False,
        last_error: str | None = None,
        history: list[float] | None = None,
        worker: str = "",
    ) -> Decision:
        """A candidate's first run (an explore or merge): measured again, or its verdict."""
        if result is None or result.status is not ResultStatus.OK or result.metric is None:
            return Decision(Action.CRASHED, Verdict.CRASHED, _failure(result, last_error))
        metric, name = result.metric, spec.metric.name
        if stats.mean is None:
            reason = f"{name} {metric:.6g}, but the head has no ok run on this class"
            return Decision(Action.DISCARD, Verdict.DISCARDED, reason, None, metric)
        if far_out(metric, history or [], stats.std):
            reason = (
                f"{name} {metric:.6g} is far outside this class's history (head "
                f"{stats.mean:.6g} ± {stats.std:.3g}): held, not judged on; measured again"
            )
            return Decision(Action.REPLICATE, Verdict.PENDING, reason, None, None)
        run = Run("", "", worker, metric)
        cmp = compare([run], stats, spec)
        assert cmp is not None
        delta = clamp(metric - stats.mean) if math.isfinite(metric - stats.mean) else None
        bound = multiplier(self.design.screen, stats.df)
        head = stats.describe(name)
        tie = stats.std == 0 and shorter and abs(cmp.gain) <= _SAME * max(1.0, abs(stats.mean))
        line = self._line(name, cmp, 1, 0, stats, bound)
        if cmp.stat >= bound or tie:
            why = "tie with the head, shorter code" if tie and cmp.stat < bound else line
            reason = f"{why} ({head}): promising, replicating on another worker"
            # A first run past the keep boundary already: the head's runs will not decide it.
            decisive = cmp.stat >= multiplier(self.design.keep_at[0], stats.df)
            head_runs = 0 if decisive else HEAD_RUNS_PER_RUN * 2
            return Decision(
                Action.REPLICATE,
                Verdict.PENDING,
                reason,
                delta,
                metric,
                None,
                head_runs,
                head_mean=stats.mean,
            )
        reason = f"{line} ({head}): not better"
        return Decision(
            Action.DISCARD, Verdict.DISCARDED, reason, delta, metric, head_mean=stats.mean
        )

    def decide(
        self,
        evidence: Evidence,
        stats: HeadStats,
        spec: TaskSpec,
        *,
        shorter: bool = False,
        claim: Run | None = None,
        replicate: Run | None = None,
    ) -> Decision:
        """A candidate after its k-th run: keep, discard (not reproduced) or one more run.

        `claim`, `replicate`: the first run and the first replicate, whose agreement (net of
        their workers' offsets) is the worker's claim checked: a claim the replicate cannot
        confirm ends the candidate, and counts against the claimant's trust."""
        name = spec.metric.name
        total = len(evidence.runs) + evidence.held
        agreed = self._agreed(claim, replicate, stats, spec)
        if stats.mean is None:
            reason = f"{name}: {total} runs, but the head has no ok run"
            return Decision(Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason)
        if agreed is False and claim is not None and replicate is not None:
            short, allowed = self._shortfall(claim, replicate, stats, spec)
            reason = (
                f"{name} {claim.value:.6g} then {replicate.value:.6g}: the runs disagree (net "
                f"of their workers' offsets the replicate falls {short:.4g} short, more than "
                f"{allowed:.4g})"
            )
            return Decision(
                Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason, None, None, False
            )
        cmp = compare(evidence.runs, stats, spec)
        k = len(evidence.runs)
        if cmp is None or k < 2 or evidence.confirmed_by is None:
            return self._more(evidence, stats, spec, cmp, total, agreed)
        delta = clamp(cmp.mean - stats.mean) if math.isfinite(cmp.mean - stats.mean) else None
        design = self.design
        look = min(k, design.max_runs)
        keep_at = multiplier(design.keep_at[look - 2], stats.df)
        line = self._line(name, cmp, k, evidence.held, stats, keep_at)
        tie = stats.std == 0 and shorter and abs(cmp.gain) <= _SAME * max(1.0, abs(stats.mean))
        if cmp.stat >= keep_at or tie:
            reason = f"{line}: kept, {evidence.confirmed_by}"
            return Decision(
                Action.KEEP, Verdict.KEPT, reason, delta, cmp.mean, agreed, head_mean=stats.mean
            )
        last = look >= design.max_runs
        stop = keep_at if last else multiplier(design.stop_below[look - 2], stats.df)
        if cmp.stat < stop or total >= design.max_runs:
            why = "not better" if cmp.stat < stop else f"not shown in {design.max_runs} runs"
            reason = f"{line}: {why} (T below {stop:.2f})"
            return Decision(
                Action.NOT_REPRODUCED,
                Verdict.NOT_REPRODUCED,
                reason,
                delta,
                cmp.mean,
                agreed,
                head_mean=stats.mean,
            )
        reason = f"{line}: undecided (T within [{stop:.2f}, {keep_at:.2f})): measured again"
        return Decision(
            Action.REPLICATE,
            Verdict.PENDING,
            reason,
            delta,
            cmp.mean,
            agreed,
            head_runs=HEAD_RUNS_PER_RUN * (k + 1),
            head_mean=stats.mean,
        )

    def _more(
        self,
        evidence: Evidence,
        stats: HeadStats,
        spec: TaskSpec,
        cmp: Comparison | None,
        total: int,
        agreed: bool | None,
    ) -> Decision:
        """Too few counted runs, or none by another worker: one more run, up to MAX_RUNS."""
        name = spec.metric.name
        why = (
            "no run by another worker yet"
            if evidence.runs and len(evidence.runs) >= 2
            else f"{len(evidence.runs)} counted runs"
        )
        line = (
            self._line(name, cmp, len(evidence.runs), evidence.held, stats, None)
            if cmp is not None
            else f"{name}: {total} runs, {evidence.held} not counted"
        )
        if total >= self.design.max_runs:
            reason = f"{line}: {why} after {total} runs: not reproduced"
            return Decision(
                Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason, None, None, agreed
            )
        reason = f"{line}: {why}: measured again"
        return Decision(Action.REPLICATE, Verdict.PENDING, reason, None, None, agreed)

    def _agreed(
        self, claim: Run | None, replicate: Run | None, stats: HeadStats, spec: TaskSpec
    ) -> bool | None:
        if claim is None or replicate is None or stats.mean is None:
            return None
        short, allowed = self._shortfall(claim, replicate, stats, spec)
        return short <= allowed

    def _shortfall(
        self, claim: Run, replicate: Run, stats: HeadStats, spec: TaskSpec
    ) -> tuple[float, float]:
        """How far the replicate falls short of the claim, net of both workers' offsets, and
        how far it may: `tolerance`, widened by the offsets' own uncertainty."""
        (a, va), (b, vb) = stats.noise.offset(claim.worker), stats.noise.offset(replicate.worker)
        short = gain(claim.value - a, replicate.value - b, spec)
        base = tolerance(stats, spec, self.z)
        if stats.std > 0 and (va or vb):
            widen = math.sqrt(1 + (va + vb) / (2 * stats.std * stats.std))
            base = max(base, base * widen)
        return short, base

    @staticmethod
    def _line(
        name: str, cmp: Comparison, k: int, held: int, stats: HeadStats, bound: float | None
    ) -> str:
        """One line: what was compared with what, runs pooled, T and its boundary."""
        held_note = f", {held} not counted" if held else ""
        against = f"{bound:.2f}" if bound is not None else "-"
        stat = f"{cmp.stat:.3g}" if abs(cmp.stat) < BIG else ("+inf" if cmp.stat > 0 else "-inf")
        over = "1 run" if k == 1 else f"{k} runs"
        return (
            f"{name} {cmp.mean:.6g} over {over}{held_note} vs head {stats.mean:.6g} over "
            f"{stats.runs} runs: gain {cmp.gain:.4g} ± {cmp.se:.3g}, T {stat} vs "
            f"{against} (df {stats.df}; {stats.noise.describe()})"
        )
