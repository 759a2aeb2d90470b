"""Attack: hold disk the work folder's listing never shows: files removed, kept open."""

import os

FILE_MB = 16  # each file, under the task's per-file cap of 32 MB
STOP_MB = 256  # the task's disk_mb is 32: if it gets this far the cap failed

chunk = b"\1" * (FILE_MB << 20)
held = []
while len(held) * FILE_MB < STOP_MB:
    f = open(f"hidden-{len(held)}.bin", "wb")  # noqa: SIM115 (kept open on purpose)
    f.write(chunk)
    f.flush()
    os.unlink(f.name)
    held.append(f)
    print(f"holding {len(held) * FILE_MB} MB in removed files", flush=True)
print(f"LEAK held {len(held) * FILE_MB} MB in removed files")
print("---")
print("val_bpb: 1.0")
