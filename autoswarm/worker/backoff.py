"""Exponential back-off with equal jitter, for retrying a coordinator that is away."""

from __future__ import annotations

import random


class Backoff:
    """The n-th failure in a row waits uniform(w / 2, w), w = min(max_s, min_s * 2**n).

    Equal jitter (AWS Architecture Blog, "Exponential Backoff And Jitter"): the waits grow
    with each failure and never drop back below half the window (full jitter's 0.3 s right
    after a 9.6 s wait reads as erratic), while a thousand workers that lost the coordinator
    at once still spread over half of it instead of arriving in waves.
    """

    def __init__(self, min_s: float = 0.5, max_s: float = 30.0, rng: random.Random | None = None):
        self.min_s = min_s
        self.max_s = max(max_s, min_s)
        self.failures = 0
        self._rng = rng or random.Random()

    def next_delay_s(self) -> float:
        """The delay before the next try, counting one more failure."""
        window = min(self.max_s, self.min_s * 2.0 ** min(self.failures, 32))
        self.failures += 1
        return self._rng.uniform(window / 2, window)

    def reset(self) -> None:
        self.failures = 0
