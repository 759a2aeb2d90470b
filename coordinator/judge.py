"""The judge: pure decisions on results, each with a one-line reason. No I/O.

The rule (docs/judging.md has it as tables, docs/benchmarks.md its measured operating
characteristic) is one object, `SequentialRule`, that the scheduler calls on each run; the
rest of this module is the statistics it rests on.

Noise, per task and hardware class, remembered (`fit_noise`). Every ok run of a code version
measured at least twice on the class (every head's baselines, every candidate with its
replicates) is kept in Redis with its worker. The model is x = mu[code] + o[worker] + e:
o a worker's offset (machines of one class differ: clocks, power limits, other tenants),
drawn from N(0, tau^2), e the run's own noise, N(0, sigma^2). sigma, tau and each worker's
offset (shrunk towards 0 by lambda = sigma^2/tau^2, with its posterior variance
sigma^2/(n_w + lambda)) are fitted by a few EM sweeps. A task's prior `[metric] noise`
counts as `noise_runs` degrees of freedom of sigma that the data then outweighs. A worker
never seen on the class carries its whole tau^2 as uncertainty: a run's score is compared
net of its worker's estimated offset, with the offset's uncertainty added to its variance.

The head's score is the offset-corrected mean of its runs. A candidate's evidence is the
offset-corrected mean of its k runs; the statistic is

    T_k = (gain - min_effect) / se,   se^2 = V(candidate mean) + V(head mean) - 2 C

(C: offset uncertainty shared by workers that ran both), compared with Student's t at the
noise's degrees of freedom (each z boundary below is widened to t_df at its level).

Sequential decisions (a group-sequential test, at most MAX_RUNS runs of a candidate):
- run 1, the screen: T_1 >= SCREEN (0.90) continues, else the candidate is discarded;
- run k = 2..MAX_RUNS: T_k >= KEEP_AT[k] keeps it (given a run by another worker), T_k <
  STOP_BELOW[k] discards it, else one more run is asked for; at MAX_RUNS, not kept.
  Runs 2.. are replicates on other workers where any exist: each ADDS to the evidence.
Error rates over the whole sequence. Under no effect, P(keep) = sum over k of P(reach k and
T_k >= KEEP_AT[k]): the spending of alpha across looks. Bonferroni bounds it by
sum(1 - Phi(KEEP_AT)) = 2.2%, ignoring the screen and the futility boundaries; with them,
integrated numerically (10^6 simulated sequences, sigma known, the head measured 24 times)
it is 0.82%, under the 1% the rule is built for (0.87% with a head of 8 runs, 0.77% with
an exact one). In the same simulation P(keep) is 0.81 at 2 sigma and 0.999 at 4 sigma, and
a zero-effect candidate costs 1.30 runs on average. The boundaries are the best of 800
designs (K = 3..5 looks, constant or monotone boundaries) searched for those targets; the
head's own uncertainty enters se, so a head measured less costs power, not error.
`bench/judge_power.py` measures the whole rule as the coordinator runs it.

A score far outside the class's history (more than FAR scales from its median, the scale
the largest of 1.48 MAD, half the range while it has under three runs, and the median's
size: a thousand times the score itself is absurd, four times is a bad change) is held:
not counted as evidence nor in the noise, and measured again by another worker. All
arithmetic is on values scaled by a power of two and sums are `math.fsum`: no finite score
can overflow it.

Scores are only ever compared within one hardware class (the caller's job).
"""

from __future__ import annotations

import math
import statistics
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from shared.models import Result, ResultStatus, Verdict
from shared.task import TaskSpec

# Relative float tolerance under which two scores are the same score.
_SAME = 1e-9
# The screen's boundary on T_1 (z scale): ~18% of zero-effect candidates get a second run.
SCREEN = 0.90
# Keep boundaries at runs 2, 3, 4, 5 (z scale; see the module doc).
KEEP_AT = (2.87, 2.77, 2.49, 2.29)
# Futility boundaries at runs 2, 3, 4 (z scale): below, the candidate is discarded.
STOP_BELOW = (1.14, 1.60, 1.99)
MAX_RUNS = len(KEEP_AT) + 1
# While a candidate is measured again, the head is measured up to this many times per run of
# the candidate (up to max_baseline_runs): a head of 4k runs costs a k-run comparison ~11%
# of its T, one of k runs ~41% (docs/judging.md).
HEAD_RUNS_PER_RUN = 4
# A score more than this many robust scales from the class's median is held, not judged.
FAR = 1000.0
# EM sweeps of the noise fit, and the runs it looks at (the latest).
FIT_SWEEPS = 12
MIN_OFFSET_RUNS = 3
FIT_RUNS = 3000
_BIG = sys.float_info.max


@dataclass(frozen=True)
class Run:
    """One ok run on a class: the code it measured, the worker that ran it, its score."""

    experiment_id: str
    code: str
    worker: str
    value: float


@dataclass(frozen=True)
class Noise:
    """A class's noise: sigma of one run, its degrees of freedom, each known worker's offset
    with that offset's variance, and tau, the spread of offsets between workers."""

    std: float = 0.0
    df: int = 0
    offsets: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    between: float = 0.0

    def offset(self, worker: str) -> tuple[float, float]:
        """(estimated offset, its variance) of a worker; an unknown one: (0, tau^2)."""
        if not worker:
            return 0.0, 0.0
        return self.offsets.get(worker, (0.0, _clamp(self.between * self.between)))

    def describe(self) -> str:
        known = len(self.offsets)
        if known == 0:
            return "no per-worker offsets yet"
        return f"per-worker offsets estimated for {known} workers (tau {self.between:.3g})"


@dataclass(frozen=True)
class Sample:
    """Offset-corrected runs of one code: their mean, the variance of that mean, how many,
    and each worker's share of them (for the covariance of two samples)."""

    mean: float
    var: float
    runs: int
    shares: Mapping[str, float]


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


# -- safe arithmetic ------------------------------------------------------------------------


def _clamp(value: float) -> float:
    """A finite float: overflowed results end at the largest one, NaN at 0."""
    if math.isnan(value):
        return 0.0
    return max(-_BIG, min(_BIG, value))


def _scale_of(values: Iterable[float]) -> float:
    """A power of two that brings every value within [-1, 1] when they are huge (else 1):
    dividing by it is exact, and squares and sums of the scaled values cannot overflow."""
    top = max((abs(v) for v in values), default=0.0)
    if top < 2.0**400:
        return 1.0
    return math.ldexp(1.0, math.frexp(top)[1] - 1)  # values within [-2, 2]


def _median(values: list[float]) -> float:
    """The lower median (no averaging: cannot overflow)."""
    ordered = sorted(values)
    return ordered[(len(ordered) - 1) // 2]


def gain(value: float, mean: float, spec: TaskSpec) -> float:
    """How much `value` improves on `mean` in the task's direction (negative: worse); halves
    first when the difference would overflow."""
    diff = mean - value if spec.lower_is_better else value - mean
    if math.isfinite(diff):
        return diff
    half = mean / 2 - value / 2 if spec.lower_is_better else value / 2 - mean / 2
    return _clamp(half * 2)


def far_out(value: float, history: list[float], std: float = 0.0) -> bool:
    """Whether a score lies more than FAR robust scales from the median of the class's
    history (at least two runs): held for replication, not judged on. (`std`: unused, the
    noise a polluted history would inflate.)"""
    if not math.isfinite(value):
        return True
    limits = _far_limits(history)
    return limits is not None and abs(value - limits[0]) > limits[1]


def _far_limits(history: list[float]) -> tuple[float, float] | None:
    """(median, how far from it a score may lie) of a history of at least two runs."""
    if len(history) < 2:
        return None
    centre = _median(history)
    mad = _median([abs(v - centre) for v in history])
    # With two runs either may be the absurd one: half their distance is the scale.
    spread = max(history) / 2 - min(history) / 2 if len(history) < 3 else 0.0
    # |median| in the scale: a deterministic task (MAD 0) may still make a score 4x worse.
    return centre, FAR * max(1.4826 * mad, spread, abs(centre), 1e-300)


# -- the noise model ------------------------------------------------------------------------


def fit_noise(runs: list[Run], prior: tuple[float, int] | None = None) -> Noise:
    """sigma, tau and per-worker offsets from every code run at least twice (module doc);
    `prior` (sigma, weight in runs) as the task declares it."""
    groups: dict[str, list[Run]] = defaultdict(list)
    for run in runs[-FIT_RUNS:]:
        if math.isfinite(run.value):
            groups[run.code].append(run)
    multi = [g for g in groups.values() if len(g) >= 2]
    scale = _scale_of(r.value for g in multi for r in g)
    prior_var, prior_df = (0.0, 0)
    if prior is not None and prior[1] > 0:
        prior_var, prior_df = (prior[0] / scale) * (prior[0] / scale), prior[1]
    if not multi:
        std = math.sqrt(prior_var) * scale if prior_df else 0.0
        return Noise(std=_clamp(std), df=prior_df)
    data = [[(r.worker, r.value / scale) for r in g] for g in multi]
    sigma2, tau2, offsets = _em(data, prior_var, prior_df)
    free = sum(len(g) for g in data) - len(data)
    df = max(free, 0) + prior_df
    variances = _offset_variances(data, sigma2, tau2)
    known = {
        w: (_clamp(o * scale), _clamp(variances[w] * scale * scale))
        for w, o in offsets.items()
        if tau2 > 0
    }
    return Noise(
        std=_clamp(math.sqrt(sigma2) * scale),
        df=df,
        offsets=known,
        between=_clamp(math.sqrt(tau2) * scale),
    )


def _offset_variances(
    data: list[list[tuple[str, float]]], sigma2: float, tau2: float
) -> dict[str, float]:
    counts: dict[str, int] = defaultdict(int)
    for group in data:
        for worker, _ in group:
            if worker:
                counts[worker] += 1
    lam = _lam(sigma2, tau2)
    return {w: (sigma2 / (n + lam) if tau2 > 0 else 0.0) for w, n in counts.items()}


def _em(
    data: list[list[tuple[str, float]]], prior_var: float, prior_df: int
) -> tuple[float, float, dict[str, float]]:
    """EM sweeps of the random-offset model on scaled values: (sigma^2, tau^2, offsets)."""
    counts: dict[str, int] = defaultdict(int)
    for group in data:
        for w, _ in group:
            counts[w] += 1
    # Offsets only for workers with MIN_OFFSET_RUNS runs of codes run twice (fewer cannot
    # tell a worker's offset from its noise); the others count as unknown workers.
    workers = sorted(w for w, n in counts.items() if w and n >= MIN_OFFSET_RUNS)
    offsets = dict.fromkeys(workers, 0.0)
    n_runs = sum(len(g) for g in data)
    pooled = [v - math.fsum(x for _, x in g) / len(g) for g in data for _, v in g]
    sigma2 = math.fsum(e * e for e in pooled) / max(n_runs - len(data), 1)
    tau2 = sigma2 if len(workers) >= 2 else 0.0
    for _ in range(FIT_SWEEPS):
        means = [math.fsum(v - offsets.get(w, 0.0) for w, v in g) / len(g) for g in data]
        resid: dict[str, list[float]] = defaultdict(list)
        squares = []
        for group, mean in zip(data, means, strict=True):
            for w, v in group:
                r = v - mean
                if w:
                    resid[w].append(r)
                e = r - offsets.get(w, 0.0)
                squares.append(e * e)
        used = sum(len(resid[w]) / (len(resid[w]) + _lam(sigma2, tau2)) for w in workers)
        free = max(n_runs - len(data) - used, 0.0)
        sigma2 = (math.fsum(squares) + prior_var * prior_df) / max(free + prior_df, 1.0)
        lam = _lam(sigma2, tau2)
        offsets = {w: math.fsum(resid[w]) / (len(resid[w]) + lam) for w in workers}
        if len(workers) >= 2:
            spread = [offsets[w] * offsets[w] + sigma2 / (len(resid[w]) + lam) for w in workers]
            tau2 = max(math.fsum(spread) / len(workers), 1e-6 * sigma2)
    return sigma2, tau2, offsets


def _lam(sigma2: float, tau2: float) -> float:
    """The shrinkage of an offset: sigma^2/tau^2 (no spread known yet: offsets stay 0)."""
    if tau2 <= 0:
        return 1e12
    return sigma2 / tau2 if math.isfinite(tau2) else 0.0


def sane(runs: list[Run]) -> list[Run]:
    """The runs that are not far outside the others (see `far_out`): an absurd score that
    was counted before the class had a history leaves it once it has one."""
    limits = _far_limits([r.value for r in runs])
    if limits is None:
        return [r for r in runs if math.isfinite(r.value)]
    centre, allowed = limits
    return [r for r in runs if math.isfinite(r.value) and abs(r.value - centre) <= allowed]


def sample(runs: list[Run], noise: Noise) -> Sample | None:
    """The offset-corrected mean of these runs and its variance under `noise`."""
    values = [r for r in runs if math.isfinite(r.value)]
    if not values:
        return None
    scale = _scale_of(r.value for r in values)
    n = len(values)
    corrected = [r.value / scale - noise.offset(r.worker)[0] / scale for r in values]
    mean = math.fsum(corrected) / n
    counts: dict[str, int] = defaultdict(int)
    for r in values:
        counts[r.worker] += 1
    shares = {w: c / n for w, c in counts.items()}
    sd = noise.std / scale
    var = sd * sd / n + math.fsum(
        s * s * noise.offset(w)[1] / scale / scale for w, s in shares.items()
    )
    return Sample(_clamp(mean * scale), _clamp(var * scale * scale), n, shares)


def head_stats(
    runs: list[Run] | dict[str, list[float]], head_code: str, noise: Noise | None = None
) -> HeadStats:
    """The head's stats: its offset-corrected mean and the class's noise (`fit_noise` of the
    same runs unless given). A dict of code -> scores is taken as runs of no known worker."""
    if isinstance(runs, dict):
        runs = [Run("", code, "", v) for code, values in runs.items() for v in values]
    noise = noise if noise is not None else fit_noise(runs)
    head = sample([r for r in runs if r.code == head_code], noise)
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
    se = _clamp(math.sqrt(var))
    got = gain(cand.mean, head.mean, spec)
    margin = got - spec.min_effect
    if se > 0:
        stat = _clamp(margin / se) if math.isfinite(margin / se) else math.copysign(_BIG, margin)
    else:
        stat = math.copysign(_BIG, margin) if margin != 0 else 0.0
    return Comparison(cand.mean, got, se, stat)


class SequentialRule:
    """The coordinator's decision rule (module doc): `screen` a candidate's first run,
    `decide` on its pooled runs after each further one. `z` sets only how far a replicate
    may fall short of the claim it checks and still agree with it (the worker's trust)."""

    def __init__(self, z: float = 2.0) -> None:
        self.z = z

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
        delta = _clamp(metric - stats.mean) if math.isfinite(metric - stats.mean) else None
        bound = multiplier(SCREEN, stats.df)
        head = stats.describe(name)
        tie = stats.std == 0 and shorter and abs(cmp.gain) <= _SAME * max(1.0, abs(stats.mean))
        line = self._line(name, cmp, 1, 0, stats, bound)
        if cmp.stat >= bound or tie:
            why = "tie with the head, shorter code" if tie and cmp.stat < bound else line
            reason = f"{why} ({head}): promising, replicating on another worker"
            # A first run past the keep boundary already: the head's runs will not decide it.
            decisive = cmp.stat >= multiplier(KEEP_AT[0], stats.df)
            head_runs = 0 if decisive else HEAD_RUNS_PER_RUN * 2
            return Decision(
                Action.REPLICATE, Verdict.PENDING, reason, delta, metric, None, head_runs
            )
        reason = f"{line} ({head}): not better"
        return Decision(Action.DISCARD, Verdict.DISCARDED, reason, delta, metric)

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
        delta = _clamp(cmp.mean - stats.mean) if math.isfinite(cmp.mean - stats.mean) else None
        look = min(k, MAX_RUNS)
        keep_at = multiplier(KEEP_AT[look - 2], stats.df)
        line = self._line(name, cmp, k, evidence.held, stats, keep_at)
        tie = stats.std == 0 and shorter and abs(cmp.gain) <= _SAME * max(1.0, abs(stats.mean))
        if cmp.stat >= keep_at or tie:
            reason = f"{line}: kept, {evidence.confirmed_by}"
            return Decision(Action.KEEP, Verdict.KEPT, reason, delta, cmp.mean, agreed)
        stop = multiplier(STOP_BELOW[look - 2], stats.df) if look < MAX_RUNS else keep_at
        if cmp.stat < stop or total >= MAX_RUNS:
            why = "not better" if cmp.stat < stop else f"not shown in {MAX_RUNS} runs"
            reason = f"{line}: {why} (T below {stop:.2f})"
            return Decision(
                Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason, delta, cmp.mean, agreed
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
            else f"{name}: {total} runs, {evidence.held} held"
        )
        if total >= MAX_RUNS:
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
        stat = f"{cmp.stat:.3g}" if abs(cmp.stat) < _BIG else ("+inf" if cmp.stat > 0 else "-inf")
        return (
            f"{name} {cmp.mean:.6g} over {k} runs{held_note} vs head {stats.mean:.6g} over "
            f"{stats.runs} runs: gain {cmp.gain:.4g} ± {cmp.se:.3g}, T {stat} vs "
            f"{against} (df {stats.df}; {stats.noise.describe()})"
        )
