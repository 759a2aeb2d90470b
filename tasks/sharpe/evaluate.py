"""
sharpe's evaluator: scores the run's artifacts/positions.npy on held-out returns and
prints the annualised Sharpe ratio. Runs as its own process after the run; never imports
strategy.py. Usage: python evaluate.py

What it guarantees:
- the positions are read as data (np.load with allow_pickle=False, size checked first);
- the held-out returns (heldout/future_returns.npy) are never visible to the run, and the
  positions for a market are fixed before any of its held-out days, so there is no
  look-ahead by construction;
- the P&L, costs and Sharpe ratio are computed here; a wrong shape, a non-finite position
  or more than MAX_GROSS of total exposure prints an error and exits 1 with no metric.
What it does not guarantee: that a high score will last. The score is deterministic (same
positions, same number) but the held-out sample is finite: N_EPISODES x HORIZON_DAYS days.
"""

import os
import sys

import numpy as np

from prepare import (
    COST_PER_UNIT,
    HORIZON_DAYS,
    MAX_GROSS,
    N_ASSETS,
    N_EPISODES,
    TRADING_DAYS_PER_YEAR,
)

# ---------------------------------------------------------------------------
# Evaluation settings (fixed)
# ---------------------------------------------------------------------------

ARTIFACTS_DIR = os.environ.get("AUTOSWARM_ARTIFACTS_DIR", "artifacts")  # the run's out/
HELDOUT_DIR = os.environ.get("AUTOSWARM_HELDOUT_DIR", "heldout")  # future_returns.npy lives here
MAX_FILE_BYTES = 16 * 2**20  # positions.npy is ~0.7 MB as float64; refuse anything far bigger
GROSS_TOL = 1e-9  # rounding allowed above MAX_GROSS


def fail(message):
    print(f"error: {message}")
    sys.exit(1)


def load_positions(path):
    if not os.path.isfile(path):
        fail(f"{path} is missing: the strategy must write out/positions.npy")
    if os.path.getsize(path) > MAX_FILE_BYTES:
        fail(f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        positions = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as exc:
        fail(f"cannot read {path} as a numpy array: {exc}")
    expected = (N_EPISODES, HORIZON_DAYS, N_ASSETS)
    if positions.shape != expected:
        fail(f"positions have shape {positions.shape}, expected {expected}")
    if positions.dtype.kind not in "fiub":
        fail(f"positions have dtype {positions.dtype}, expected numbers")
    positions = positions.astype(np.float64)
    if not np.isfinite(positions).all():
        fail("positions are not all finite")
    gross = np.abs(positions).sum(axis=2).max()
    if gross > MAX_GROSS + GROSS_TOL:
        fail(f"total exposure {gross:.6g} exceeds MAX_GROSS = {MAX_GROSS}")
    return positions


if __name__ == "__main__":
    positions = load_positions(os.path.join(ARTIFACTS_DIR, "positions.npy"))
    returns = np.load(os.path.join(HELDOUT_DIR, "future_returns.npy"), allow_pickle=False)
    assert returns.shape == positions.shape, "held-out returns do not match the task"

    # daily P&L per market: positions times returns, minus the cost of every change
    # (the first day's position is bought from flat)
    previous = np.concatenate([np.zeros_like(positions[:, :1]), positions[:, :-1]], axis=1)
    turnover = np.abs(positions - previous).sum(axis=2)
    pnl = (positions * returns).sum(axis=2) - COST_PER_UNIT * turnover
    std = pnl.std()
    sharpe = 0.0 if std == 0.0 else pnl.mean() / std * np.sqrt(TRADING_DAYS_PER_YEAR)

    print("---")
    print(f"sharpe:           {sharpe:.6f}")
    print(f"annual_return:    {pnl.mean() * TRADING_DAYS_PER_YEAR:.6f}")
    print(f"annual_vol:       {std * np.sqrt(TRADING_DAYS_PER_YEAR):.6f}")
    print(f"mean_turnover:    {turnover.mean():.6f}")
    print(f"scored_days:      {pnl.size}")
