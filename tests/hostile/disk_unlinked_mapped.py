"""Attack: hold disk in removed files kept only by a memory mapping (every fd closed)."""

import mmap
import os

FILE_MB = 16  # each file, under the task's per-file cap of 32 MB
STOP_MB = 256  # the task's disk_mb is 32: if it gets this far the cap failed

chunk = b"\1" * (FILE_MB << 20)
held = []
while len(held) * FILE_MB < STOP_MB:
    name = f"hidden-{len(held)}.bin"
    with open(name, "wb+") as f:
        f.write(chunk)
        f.flush()
        held.append(mmap.mmap(f.fileno(), 4096))  # one page mapped: the whole file kept
    os.unlink(name)
    print(f"holding {len(held) * FILE_MB} MB in removed, mapped files", flush=True)
print(f"LEAK held {len(held) * FILE_MB} MB in removed, mapped files")
print("---")
print("val_bpb: 1.0")
