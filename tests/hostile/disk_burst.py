"""Attack: fill the disk in one burst, faster than any watch polls: fallocate, then write."""

import os

FILE_MB = 31  # each file, under the task's per-file cap of 32 MB (RLIMIT_FSIZE)
FILES = 16  # ~500 MB in well under 0.1 s; the task's disk_mb is 32

held = 0
for i in range(FILES):
    fd = os.open(f"burst-{i}.bin", os.O_WRONLY | os.O_CREAT, 0o644)
    os.posix_fallocate(fd, 0, FILE_MB << 20)  # ENOSPC ends the run here: the attack failed
    held += FILE_MB
    print(f"allocated {held} MB", flush=True)
print(f"LEAK allocated {held} MB", flush=True)
with open("burst-tail.bin", "wb") as f:
    while True:
        f.write(b"\1" * (1 << 20))
