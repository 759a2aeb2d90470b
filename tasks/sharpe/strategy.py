"""
sharpe: a trading strategy for many synthetic markets, scored by annualised Sharpe ratio.
Single file, no CLI flags. Usage: python strategy.py

Reads data/history.npy, the daily returns of every market up to today, shape
(N_EPISODES, HISTORY_DAYS, N_ASSETS). Writes out/positions.npy, the position to hold in
each asset on each of the next HORIZON_DAYS days, shape (N_EPISODES, HORIZON_DAYS,
N_ASSETS). The evaluator (not this file) scores the positions on the returns that follow.
"""

import os
import time

import numpy as np

from prepare import (
    COST_PER_UNIT,
    DATA_DIR,
    HISTORY_DAYS,
    HORIZON_DAYS,
    MAX_GROSS,
    OUT_DIR,
    TRADING_DAYS_PER_YEAR,
)

# ---------------------------------------------------------------------------
# Strategy parameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

LOOKBACK_DAYS = 5  # trading days of returns the momentum signal sums
SKIP_DAYS = 0  # most recent trading days left out of the momentum signal
VOL_LOOKBACK_DAYS = 20  # trading days used to estimate each asset's volatility
THRESHOLD = 0.5  # smallest |signal| (in standard errors) worth a position
VOL_EXPONENT = 0.5  # position size ~ 1 / volatility**VOL_EXPONENT (0: equal weight)
HORIZON_DECAY = 1.0  # position on day h of the horizon, as a fraction of day h-1's

# ---------------------------------------------------------------------------
# Signal and positions
# ---------------------------------------------------------------------------


def make_positions(history):
    """Positions for the HORIZON_DAYS after the last day of `history` (market, day, asset)."""
    n_days = history.shape[1]
    # momentum: the sum of recent returns, in units of its standard error
    recent = history[:, n_days - SKIP_DAYS - LOOKBACK_DAYS : n_days - SKIP_DAYS]
    vol = history[:, -VOL_LOOKBACK_DAYS:].std(axis=1) + 1e-12  # (market, asset) daily volatility
    signal = recent.sum(axis=1) / (vol * np.sqrt(LOOKBACK_DAYS))
    # long the assets trending up, short those trending down, smaller where volatile
    position = np.where(np.abs(signal) > THRESHOLD, np.sign(signal), 0.0) / vol**VOL_EXPONENT
    gross = np.abs(position).sum(axis=1, keepdims=True)
    position = MAX_GROSS * position / np.maximum(gross, 1e-12)  # at most MAX_GROSS in total
    # hold it over the horizon, shrinking by HORIZON_DECAY each day
    decay = HORIZON_DECAY ** np.arange(HORIZON_DAYS)
    return position[:, None, :] * decay[None, :, None]


def sharpe(positions, returns):
    """Annualised Sharpe ratio of the daily P&L after costs, as the evaluator computes it."""
    previous = np.concatenate([np.zeros_like(positions[:, :1]), positions[:, :-1]], axis=1)
    pnl = (positions * returns).sum(axis=2) - COST_PER_UNIT * np.abs(positions - previous).sum(axis=2)
    return pnl.mean() / (pnl.std() + 1e-12) * np.sqrt(TRADING_DAYS_PER_YEAR)


t_start = time.time()
history = np.load(os.path.join(DATA_DIR, "history.npy"))
assert history.shape[1] == HISTORY_DAYS
print(f"History: {history.shape[0]} markets x {history.shape[1]} days x {history.shape[2]} assets")

# a backtest on the history alone: position at HORIZON_DAYS before its end, score the rest
backtest = sharpe(make_positions(history[:, :-HORIZON_DAYS]), history[:, -HORIZON_DAYS:])
positions = make_positions(history)

# ---------------------------------------------------------------------------
# Output: the evaluator scores these on the returns that follow
# ---------------------------------------------------------------------------

os.makedirs(OUT_DIR, exist_ok=True)
np.save(os.path.join(OUT_DIR, "positions.npy"), positions)
print(f"Wrote {os.path.join(OUT_DIR, 'positions.npy')}: shape {positions.shape}")
print("---")
print(f"backtest_sharpe:  {backtest:.4f}")
print(f"long_fraction:    {(positions[:, 0] > 0).mean():.3f}")
print(f"short_fraction:   {(positions[:, 0] < 0).mean():.3f}")
print(f"total_seconds:    {time.time() - t_start:.2f}")
