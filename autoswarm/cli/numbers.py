"""How a score and its noise are written, everywhere the CLI writes them (the live table,
the closing tables, `status`, `leaderboard`, results.tsv), and as the dashboard writes
them (`autoswarm/coordinator/dashboard/app.js`, `noise`): the noise's first significant digit and
one more, no further; a run count as `(n=N)`."""

from __future__ import annotations

import math
from typing import Any

# Decimals when the noise says nothing (unknown, zero): as autoresearch writes val_bpb.
DEFAULT_DECIMALS = 6
# A noise below 1e-6 is shown as 0 at 6 decimals, not as 7.49e-17.
MAX_DECIMALS = 6


def decimals_for(std: float | None) -> int:
    """The decimals that show `std`'s first significant digit and one more (at most 6)."""
    if std is None or not math.isfinite(std) or std <= 0:
        return DEFAULT_DECIMALS
    return max(0, min(MAX_DECIMALS, 1 - math.floor(math.log10(std))))


def fixed(value: float | None, decimals: int) -> str:
    """`value` at `decimals` ("" for none)."""
    return "" if value is None else f"{value:.{decimals}f}"


def signed(value: float | None, decimals: int) -> str:
    return "" if value is None else f"{value:+.{decimals}f}"


def score_text(mean: float | None, std: float | None, runs: int | None) -> str:
    """`0.2847 ± 0.0012 (n=5)`; `—` when nothing is measured yet."""
    if mean is None:
        return "—"
    decimals = decimals_for(std)
    spread = "?" if std is None else fixed(std, decimals)
    return f"{fixed(mean, decimals)} ± {spread} (n={runs or 0})"


def task_decimals(heads: list[dict[str, Any]]) -> int:
    """The decimals a task's scores are written with: its smallest measured noise's."""
    positive = [float(h["std"]) for h in heads if h.get("std") and float(h["std"]) > 0]
    return decimals_for(min(positive)) if positive else DEFAULT_DECIMALS
