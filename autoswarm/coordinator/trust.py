"""Trust: whether a worker's claims still count. Pure; no I/O.

A claim is a candidate's run that beat the head; its replicate, run by another worker,
agrees with it or not. Honest workers' claims fail too (a lucky run on a noisy task does
not reproduce), so a worker loses trust only when its claims fail far more often than
everyone else's: at least `MIN_FAILED` failed, and a one-sided binomial test against the
other workers' failure rate (with one failure and one success added, so a swarm whose
claims all reproduced so far is not taken as certain) below `DISTRUST_P`. A worker alone,
or among workers with fewer than `MIN_OTHERS` checked claims, keeps its trust.

What losing trust does is the scheduler's (`autoswarm.coordinator.rechecks`): the worker's runs that
other decisions rest on unchecked (baselines, discarded candidates) are measured again by
other workers, and it leases no baseline or replicate from then on.
"""

from __future__ import annotations

import math

from autoswarm.coordinator.store.records import Agreement

DISTRUST_P = 1e-3
MIN_FAILED = 3
MIN_OTHERS = 3


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(max(k, 0), n + 1))


def failure_odds(counts: Agreement) -> float | None:
    """How likely a worker failing as often as the others would fail this often (None:
    too little evidence to say)."""
    others_agreed = counts.all_agreed - counts.agreed
    others_failed = counts.all_disagreed - counts.disagreed
    if counts.disagreed < MIN_FAILED or others_agreed + others_failed < MIN_OTHERS:
        return None
    rate = (others_failed + 1) / (others_agreed + others_failed + 2)
    return binomial_tail(counts.disagreed, counts.agreed + counts.disagreed, rate)


def distrusted(counts: Agreement) -> bool:
    """Whether these counts make a worker lose trust (see the module doc)."""
    odds = failure_odds(counts)
    return odds is not None and odds < DISTRUST_P
