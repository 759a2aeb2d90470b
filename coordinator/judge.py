"""The judge: pure decisions on results, each with a one-line reason. No I/O.

Rules (DESIGN.md, "The coordinator's decisions"), with the statistics made explicit:
- The head's score on a hardware class is the mean of its ok runs there; the noise sigma is the
  pooled standard deviation of every code version measured at least twice on that class
  (baselines of every head, and every agreeing replication), with df degrees of freedom.
- One run beats the head when its gain (improvement over the head mean, in the task's
  direction) exceeds max(min_effect, k·sigma·√(1 + 1/n)), n the head's runs, and k the
  Student-t quantile of the one-sided level Φ(z) with df degrees of freedom (k → z as
  df grows). sigma from three runs is itself uncertain: with k = z, a zero-effect candidate
  was kept ~3.5% of the time in simulation; with k it is ~0.5%.
- A candidate (explore or merge) that beats the head is replicated. It is kept only if the
  replicate beats the head too (a single lucky run never advances the lineage) and agrees
  with the claim: it falls short of it by at most max(min_effect, k'·sigma·√2), k' the
  t-quantile of Φ(z + 1). One-sided and at z + 1 because the replicate's own gain is what
  keeps a change; agreement only catches a claim it cannot confirm (an inflated one, a
  flaky worker) and counts for the worker's trust. In simulation (a true gain of 10 sigma,
  sigma from 3 runs), |a - b| ≤ k·sigma·√2 threw away 4.6% of real winners; this rule
  0.13%, at any df.
- A near miss held back only by how few runs measured the head (`measured_too_little`) asks for
  one more baseline of the head, up to `max_baseline_runs`; the near miss stays discarded, the
  candidates after it are judged with the better-measured head.
- A tie in score goes to the shorter code: with no measurable noise (sigma = 0), a candidate
  scoring exactly the head's mean with fewer bytes of editable code counts as better.
- Scores are only ever compared within one hardware class (the caller's job: it passes
  the stats of the class the result was measured on).
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from enum import StrEnum

from shared.models import Result, ResultStatus, Verdict
from shared.task import TaskSpec

# Relative float tolerance under which two scores are the same score.
_SAME = 1e-9


@dataclass(frozen=True)
class HeadStats:
    """The head's mean on one class, its number of runs, and the class's pooled noise."""

    mean: float | None
    runs: int
    std: float
    df: int

    def describe(self, metric: str) -> str:
        if self.mean is None:
            return f"head {metric} unmeasured"
        return f"head {metric} {self.mean:.6g} ± {self.std:.3g} (n={self.runs}, df={self.df})"


class Action(StrEnum):
    REPLICATE = "replicate"
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
    # For a replication: did the two runs agree (a worker's claim checked by another)?
    agreed: bool | None = None


def head_stats(runs: dict[str, list[float]], head_commit: str) -> HeadStats:
    """Mean of the head's runs; sigma pooled over every code version run at least twice."""
    head_runs = runs.get(head_commit, [])
    mean = statistics.fmean(head_runs) if head_runs else None
    squares, df = 0.0, 0
    for values in runs.values():
        if len(values) >= 2:
            centre = statistics.fmean(values)
            squares += sum((v - centre) ** 2 for v in values)
            df += len(values) - 1
    std = math.sqrt(squares / df) if df else 0.0
    return HeadStats(mean=mean, runs=len(head_runs), std=std, df=df)


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


def gain(value: float, mean: float, spec: TaskSpec) -> float:
    """How much `value` improves on `mean` in the task's direction (negative: worse)."""
    return mean - value if spec.lower_is_better else value - mean


def threshold(stats: HeadStats, spec: TaskSpec, z: float) -> float:
    """The gain one run needs to count as better than the head."""
    n = max(stats.runs, 1)
    noise = multiplier(z, stats.df) * stats.std * math.sqrt(1 + 1 / n)
    return max(spec.min_effect, noise)


def tolerance(stats: HeadStats, spec: TaskSpec, z: float) -> float:
    """How far a replicate may fall short of the run it checks and still agree with it (at
    z + 1: see the module's rules)."""
    scale = _SAME * max(1.0, abs(stats.mean or 0.0))
    return max(spec.min_effect, multiplier(z + 1, stats.df) * stats.std * math.sqrt(2), scale)


def measured_too_little(value: float, stats: HeadStats, spec: TaskSpec, z: float) -> bool:
    """Whether a run that did not beat the head was held back by how little the head was
    measured rather than by the noise itself: its gain is more than min_effect and more than
    z·sigma, but not more than the threshold, whose widening for few runs (Student's t for
    sigma's df, √(1 + 1/n) for the mean) is what more runs of the head narrow. Such a near
    miss asks for another baseline; it is not judged again (that would be a second chance)."""
    if stats.mean is None or stats.runs == 0:
        return False
    got = gain(value, stats.mean, spec)
    return max(spec.min_effect, z * stats.std) < got <= threshold(stats, spec, z)


def _beats(
    value: float, stats: HeadStats, spec: TaskSpec, z: float, shorter: bool
) -> tuple[bool, str]:
    """(better, why) for one run against the head."""
    if stats.mean is None:
        return False, "the head is unmeasured"
    need = threshold(stats, spec, z)
    got = gain(value, stats.mean, spec)
    if got > need:
        return True, f"gain {got:.4g} > {need:.4g}"
    tie = stats.std == 0 and abs(got) <= _SAME * max(1.0, abs(stats.mean))
    if tie and shorter:
        return True, "tie with the head, shorter code"
    return False, f"gain {got:.4g} <= {need:.4g}"


def _failure(result: Result | None, last_error: str | None) -> str:
    if result is None:
        return f"no result: {last_error or 'unknown error'}"
    detail = result.error or last_error or f"exit code {result.exit_code}"
    return f"run {result.status.value}: {detail}"


def judge_candidate(
    result: Result | None,
    stats: HeadStats,
    spec: TaskSpec,
    z: float,
    *,
    shorter: bool = False,
    last_error: str | None = None,
) -> Decision:
    """An explore or merge result: replicate it if it beats the head, else its verdict."""
    if result is None or result.status is not ResultStatus.OK or result.metric is None:
        return Decision(Action.CRASHED, Verdict.CRASHED, _failure(result, last_error))
    metric, name = result.metric, spec.metric.name
    if stats.mean is None:
        reason = f"{name} {metric:.6g}, but the head has no ok run on this class"
        return Decision(Action.DISCARD, Verdict.DISCARDED, reason, None, metric)
    delta = metric - stats.mean
    better, why = _beats(metric, stats, spec, z, shorter)
    head = stats.describe(name)
    if better:
        reason = f"{name} {metric:.6g} vs {head}: {why}; replicating on another worker"
        return Decision(Action.REPLICATE, Verdict.PENDING, reason, delta, metric)
    reason = f"{name} {metric:.6g} vs {head}: not better ({why})"
    return Decision(Action.DISCARD, Verdict.DISCARDED, reason, delta, metric)


def judge_replication(
    candidate: float,
    replicate: Result | None,
    stats: HeadStats,
    spec: TaskSpec,
    z: float,
    *,
    shorter: bool = False,
    last_error: str | None = None,
) -> Decision:
    """A replicate's result: keep the candidate only if both runs beat the head and agree.

    Agreement is one-sided: the replicate confirms the claim unless it falls short of it by
    more than the tolerance (the claim was lucky, or overstated). A replicate that scores
    better than the claim confirms it: rejecting it would only throw away real gains that
    two runs measured, at the rate at which two honest runs land far apart.
    """
    name = spec.metric.name
    if replicate is None or replicate.status is not ResultStatus.OK or replicate.metric is None:
        reason = f"the replicate did not run to a score ({_failure(replicate, last_error)})"
        return Decision(Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason)
    b = replicate.metric
    if stats.mean is None:
        reason = f"{name} {candidate:.6g} then {b:.6g}, but the head has no ok run"
        return Decision(Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason, None, b)
    pair = (candidate + b) / 2
    delta = pair - stats.mean
    head = stats.describe(name)
    shortfall, allowed = gain(candidate, b, spec), tolerance(stats, spec, z)
    agreed = shortfall <= allowed
    runs = f"{name} {candidate:.6g} then {b:.6g}"
    if not agreed:
        short = f"the replicate falls {shortfall:.4g} short, more than {allowed:.4g}"
        reason = f"{runs}: the runs disagree ({short})"
        return Decision(Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason, delta, pair, False)
    first, why_first = _beats(candidate, stats, spec, z, shorter)
    second, why = _beats(b, stats, spec, z, shorter)
    if first and second:
        reason = f"{runs} vs {head}: both beat the head, replicate {why}"
        return Decision(Action.KEEP, Verdict.KEPT, reason, delta, pair, True)
    if not second:
        reason = f"{runs} vs {head}: the replicate is not better ({why})"
    else:
        reason = f"{runs} vs {head}: the first run no longer beats the head ({why_first})"
    return Decision(Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason, delta, pair, True)
