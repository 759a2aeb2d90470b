"""
Fixed constants shared by strategy.py and the evaluator. Protected: the run imports them
and cannot change them.

The data itself is made by the task's prepare step (make_data.py, which the run never
sees): data/history.npy for the run, heldout/future_returns.npy for the evaluator only.
"""

import os

# ---------------------------------------------------------------------------
# Constants shared by strategy.py and evaluate.py (fixed, do not modify)
# ---------------------------------------------------------------------------

N_EPISODES = 512  # independent synthetic markets
N_ASSETS = 8  # assets per market
HISTORY_DAYS = 250  # trading days of returns the strategy sees, per market
HORIZON_DAYS = 20  # trading days that follow, which the strategy positions for and is scored on
TRADING_DAYS_PER_YEAR = 252  # to annualise the Sharpe ratio
COST_PER_UNIT = 0.0005  # cost of trading one unit of position (5 basis points)
MAX_GROSS = 1.0  # most total absolute position per market per day (sum over its assets)
DATA_DIR = os.environ.get("AUTOSWARM_DATA_DIR", "data")  # holds history.npy
OUT_DIR = os.environ.get("AUTOSWARM_OUT_DIR", "out")  # the run writes positions.npy here
