"""Says how it was started, for a run started ahead (`[run] preload = ["colorsys"]`): whether
the preloaded module was there before it ran, when it started, and whether it saw what
`python train.py` gives a script (its name, __main__, argv, its folder first on sys.path)."""

import os
import sys
import time

started_at = time.time()
here = os.path.dirname(os.path.abspath(__file__))
print("---")
print("val_bpb:          1.0")
print(f"preloaded:        {int('colorsys' in sys.modules)}")
print(f"started_at:       {started_at:.3f}")
print(f"pid:              {os.getpid()}")
print(f"as_main:          {int(__name__ == '__main__')}")
print(f"argv_ok:          {int(sys.argv == ['train.py'])}")
print(f"file_ok:          {int(os.path.basename(__file__) == 'train.py')}")
print(f"path_ok:          {int(sys.path[0] == here)}")
print(f"stdin_empty:      {int(sys.stdin.read() == '')}")
