"""
The prepare step of sharpe: writes data/history.npy (for the run) and
heldout/future_returns.npy (for the evaluator only). Usage: python make_data.py

Synthetic markets, generated, not downloaded: N_EPISODES independent markets of N_ASSETS
assets each. Daily returns have a slowly drifting trend per asset (momentum pays), a
market factor, volatility clustering (GARCH) and a bid-ask bounce (yesterday's shock
partly reverses today, so very short lookbacks are noise). The run sees HISTORY_DAYS of
returns per market; the evaluator scores the HORIZON_DAYS that follow.

Every number comes from our own counter-based 64-bit PRNG and from IEEE operations that
round the same way everywhere (+, -, *, /, sqrt; no log, exp or trig), applied in a fixed
order, so the bytes are identical on every machine; the history's sha256 is checked below.

The held-out days' random draws come from a seed derived from a secret the runner passes
in AUTOSWARM_HELDOUT_SECRET (the coordinator makes one per task and hands it to workers
only; `autoswarm task run` keeps one in its local folder), never from a seed in this file:
this file is public, and a run that rebuilt the held-out returns from it could trade on
them. The markets themselves (volatilities, betas, the state at the end of the history)
stay public, so the held-out days continue the history the run sees. Without a secret (by
hand, in tests) the held-out days use the public SEED, which anyone can recompute, and it
says so.
"""

import hashlib
import math
import os

import numpy as np

from prepare import HISTORY_DAYS, HORIZON_DAYS, N_ASSETS, N_EPISODES

# ---------------------------------------------------------------------------
# Market settings (fixed)
# ---------------------------------------------------------------------------

SEED = 0x243F6A8885A308D3  # the markets, their history, and the held-out days with no secret
SECRET_ENV = "AUTOSWARM_HELDOUT_SECRET"  # the secret the held-out days' seed comes from
TREND_PERSISTENCE = 0.98  # AR(1) coefficient of each asset's daily drift (half-life ~34 days)
TREND_SHOCK = 0.0003  # daily shock to the drift (so the drift itself has a std of 0.15%/day)
MARKET_VOL = 0.006  # daily std of the market factor
BOUNCE = 0.3  # fraction of yesterday's idiosyncratic shock that reverses today
GARCH_ALPHA = 0.08  # weight of yesterday's squared shock in today's variance
GARCH_BETA = 0.90  # weight of yesterday's variance in today's variance
# sha256 (float64 little-endian) of all the returns, history and held-out from SEED alone,
# then of the history alone
RETURNS_SHA256 = "ced57508f130f575068a33984b008399b0f7f11029663b12d48748c7229dcf93"
HISTORY_SHA256 = "8aa01a32f9c54909057ba8e53a24650386f91374a274461a39597ef1ca2b5ef9"

# ---------------------------------------------------------------------------
# PRNG: splitmix64 over a counter, vectorised (integer-only, identical everywhere)
# ---------------------------------------------------------------------------


def uniforms(stream, n, seed=SEED):
    """n floats in [0, 1): the stream-th independent stream of `seed`."""
    counter = np.arange(1, n + 1, dtype=np.uint64) + np.uint64(stream << 32)
    z = np.uint64(seed) + counter * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def normals(stream, shape, seed=SEED):
    """Approximately standard normal: (sum of 4 uniforms - 2) * sqrt(3), added in order."""
    n = int(np.prod(shape))
    u = uniforms(stream, 4 * n, seed).reshape(4, n)
    total = ((u[0] + u[1]) + u[2]) + u[3]
    return ((total - 2.0) * SQRT3).reshape(shape)


SQRT3 = math.sqrt(3.0)  # correctly rounded, like every operation used here

# ---------------------------------------------------------------------------
# Markets
# ---------------------------------------------------------------------------


def generate(heldout_seed=SEED):
    """Daily returns, shape (N_EPISODES, HISTORY_DAYS + HORIZON_DAYS, N_ASSETS); the
    held-out days' draws from `heldout_seed`."""
    days = HISTORY_DAYS + HORIZON_DAYS
    shape = (N_EPISODES, N_ASSETS)
    u_asset = uniforms(0, 2 * N_EPISODES * N_ASSETS).reshape(2, *shape)
    base_vol = 0.008 + 0.017 * u_asset[0]  # 0.8% .. 2.5% daily, per asset
    beta = 0.5 + u_asset[1]  # exposure to the market factor, 0.5 .. 1.5
    omega = base_vol * base_vol * (1.0 - GARCH_ALPHA - GARCH_BETA)
    drift_std = TREND_SHOCK / math.sqrt(1.0 - TREND_PERSISTENCE * TREND_PERSISTENCE)

    drift = drift_std * normals(1, shape)  # start each drift in its stationary distribution
    variance = base_vol * base_vol
    shock = np.zeros(shape)
    returns = np.zeros((N_EPISODES, days, N_ASSETS))
    for t in range(days):  # three fresh streams per day: trend, market, idiosyncratic
        seed = SEED if t < HISTORY_DAYS else heldout_seed
        drift = TREND_PERSISTENCE * drift + TREND_SHOCK * normals(3 * t + 2, shape, seed)
        market = MARKET_VOL * normals(3 * t + 3, (N_EPISODES, 1), seed)
        variance = omega + GARCH_ALPHA * (shock * shock) + GARCH_BETA * variance
        new_shock = np.sqrt(variance) * normals(3 * t + 4, shape, seed)
        returns[:, t] = ((drift + beta * market) + new_shock) - BOUNCE * shock
        shock = new_shock
    return returns


def write(path, array):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    np.save(path, array)
    print(f"wrote {path}: shape {array.shape}")


def heldout_seed():
    """The held-out days' seed: from the secret when given, else the public SEED."""
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        print(f"warning: no {SECRET_ENV}: held-out days from the public SEED (recomputable)")
        return SEED
    digest = hashlib.sha256(b"sharpe held-out days\0" + secret.encode()).digest()
    return int.from_bytes(digest[:8], "little")


def sha256(array):
    return hashlib.sha256(array.astype("<f8").tobytes()).hexdigest()


if __name__ == "__main__":
    seed = heldout_seed()
    returns = generate(seed)
    digest = sha256(returns[:, :HISTORY_DAYS])
    assert digest == HISTORY_SHA256, f"history sha256 {digest} != {HISTORY_SHA256}"
    if seed == SEED:
        digest = sha256(returns)
        assert digest == RETURNS_SHA256, f"returns sha256 {digest} != {RETURNS_SHA256}"
    data_dir = os.environ.get("AUTOSWARM_DATA_DIR", os.path.join(os.getcwd(), "data"))
    heldout_dir = os.environ.get("AUTOSWARM_HELDOUT_DIR", os.path.join(os.getcwd(), "heldout"))
    write(os.path.join(data_dir, "history.npy"), returns[:, :HISTORY_DAYS])
    write(os.path.join(heldout_dir, "future_returns.npy"), returns[:, HISTORY_DAYS:])
    print("done")
