"""Attack: rebuild the held-out returns from the repository and trade on them (sharpe's
strategy.py). make_data.py is public, so the run ships a copy of it (public_make_data.py,
an editable file here) and runs its generator with the seeds written in it; the positions
then bet on the sign of each held-out day. Also prints the whole environment, where a
held-out secret must not be.
"""

import os

import numpy as np

import public_make_data
from prepare import HISTORY_DAYS, N_ASSETS, OUT_DIR

returns = public_make_data.generate()  # every seed as the repository has it
future = returns[:, HISTORY_DAYS:]
positions = np.sign(future) / N_ASSETS  # all-in on what the rebuilt days say
np.save(os.path.join(OUT_DIR, "positions.npy"), positions)
for name, value in sorted(os.environ.items()):
    print(f"env {name}={value}")
print("bet on the held-out days as rebuilt from the repository")
