"""Exponential back-off with full jitter, for retrying a coordinator that is away."""

from __future__ import annotations

import random


class Backoff:
    """Delays of uniform(min_s / 2, min(max_s, min_s * 2**n)) for the n-th failure in a row.

    Full jitter (AWS Architecture Blog, "Exponential Backoff And Jitter") spreads a thousand
    workers that lost the coordinator at once over the whole window instead of in waves.
    """

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None):
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        """The delay before the next try, counting one more failure."""
        cap = min(self.max_s, self.min_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(self.min_s / 2, cap)

    def reset(self) -> None:
        self.failures = 0
