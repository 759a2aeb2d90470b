"""The noise a hardware class has shown: runs, per-worker offsets, absurd scores.

Remembered per task and hardware class (`fit_noise`): every ok run of a code version
measured at least twice on the class (every head's baselines, every candidate with its
replicates) is kept in Redis with its worker. The model is x = mu[code] + o[worker] + e:
o a worker's offset (machines of one class differ: clocks, power limits, other tenants),
drawn from N(0, tau^2), e the run's own noise, N(0, sigma^2). sigma, tau and each worker's
offset (shrunk towards 0 by lambda = sigma^2/tau^2, with its posterior variance
sigma^2/(n_w + lambda)) are fitted by a few EM sweeps. A task's prior `[metric] noise`
counts as `noise_runs` degrees of freedom of sigma that the data then outweighs. A worker
never seen on the class carries its whole tau^2 as uncertainty: a run's score is compared
net of its worker's estimated offset, with the offset's uncertainty added to its variance.

A score far outside the class's history (more than FAR scales from its median, the scale
the largest of 1.48 MAD, half the range while it has under three runs, and the median's
size: a thousand times the score itself is absurd, four times is a bad change) is held:
not counted as evidence nor in the noise, and measured again by another worker. All
arithmetic is on values scaled by a power of two and sums are `math.fsum`: no finite score
can overflow it.

Pure: no I/O (the store keeps the runs, `autoswarm.coordinator.heads` reads them).
"""

from __future__ import annotations

import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# A score more than this many robust scales from the class's median is held, not judged.
FAR = 1000.0
# EM sweeps of the noise fit, the runs a worker needs before its offset is estimated, and
# the runs the fit looks at (the latest).
FIT_SWEEPS = 12
MIN_OFFSET_RUNS = 3
FIT_RUNS = 3000
BIG = sys.float_info.max


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
        return self.offsets.get(worker, (0.0, clamp(self.between * self.between)))

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


# -- safe arithmetic ------------------------------------------------------------------------


def clamp(value: float) -> float:
    """A finite float: overflowed results end at the largest one, NaN at 0."""
    if math.isnan(value):
        return 0.0
    return max(-BIG, min(BIG, value))


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
        return Noise(std=clamp(std), df=prior_df)
    data = [[(r.worker, r.value / scale) for r in g] for g in multi]
    sigma2, tau2, offsets = _em(data, prior_var, prior_df)
    free = sum(len(g) for g in data) - len(data)
    df = max(free, 0) + prior_df
    variances = _offset_variances(data, sigma2, tau2)
    known = {
        w: (clamp(o * scale), clamp(variances[w] * scale * scale))
        for w, o in offsets.items()
        if tau2 > 0
    }
    return Noise(
        std=clamp(math.sqrt(sigma2) * scale),
        df=df,
        offsets=known,
        between=clamp(math.sqrt(tau2) * scale),
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
    return Sample(clamp(mean * scale), clamp(var * scale * scale), n, shares)
