"""Attack: fill a mode-0300 folder (write and enter, no listing) that a watcher cannot read."""

import os

FILE_MB = 16  # each file, under the task's per-file cap of 32 MB
STOP_MB = 256  # the task's disk_mb is 32: if it gets this far the cap failed

os.mkdir("hidden", 0o300)
chunk = b"\1" * (FILE_MB << 20)
written = 0
while written < STOP_MB:
    with open(f"hidden/fill-{written}.bin", "wb") as f:
        f.write(chunk)
    written += FILE_MB
    print(f"wrote {written} MB in an unreadable folder", flush=True)
print(f"LEAK wrote {written} MB in an unreadable folder")
print("---")
print("val_bpb: 1.0")
