"""Sets a variable before importing a module that reads it at import (`envprobe`, named in
`[run] preload`), as `os.environ["OMP_NUM_THREADS"] = "1"` before `import torch` would: the
module must see it, as under `python train.py`."""

import os

os.environ["PROBE_ENV"] = "set"

import envprobe

print("---")
print("val_bpb:          1.0")
print(f"seen:             {int(envprobe.SEEN == 'set')}")
print(f"pid:              {os.getpid()}")
