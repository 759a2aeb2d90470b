"""An evaluator that reports the `exported` module Python finds beside it (without importing
it: that would import torch)."""

import hashlib
import importlib.util
import os
import pathlib
import stat

spec = importlib.util.find_spec("exported")
origin = pathlib.Path(spec.origin) if spec is not None and spec.origin else None
if origin is None:
    print("loader none")
else:
    print("loader_beside", origin.parent == pathlib.Path.cwd())
    print("loader_sha", hashlib.sha256(origin.read_bytes()).hexdigest())
    print("loader_mode", oct(stat.S_IMODE(os.stat(origin).st_mode)))
print("---")
print("val_bpb: 0.5")
