"""Attack: more files in out/ than the worker will copy (10,000 entries), each empty, so
the disk cap never sees them."""

import os

FILES = 10_001  # one past the worker's bound

for i in range(FILES):
    os.close(os.open(f"out/f{i}", os.O_CREAT | os.O_WRONLY, 0o644))
print(f"wrote {FILES} empty files")
print("---")
print("val_bpb: 1.0")
