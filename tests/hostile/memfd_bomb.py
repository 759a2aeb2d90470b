"""Attack: hold memory outside RSS, in memfds filled by write() and never mapped."""

import os

STEP_MB = 16  # one memfd each, under the per-file cap (RLIMIT_FSIZE, 32 MB)
STOP_MB = 4096  # the task's memory_mb is 512: if it gets this far the cap failed

chunk = b"x" * (STEP_MB << 20)
fds, held = [], 0
try:
    while held < STOP_MB:
        fd = os.memfd_create(f"hold-{held}")
        if os.write(fd, chunk) != len(chunk):
            raise OSError("short write")
        fds.append(fd)
        held += STEP_MB
        print(f"holding {held} MB in memfds", flush=True)
except OSError as exc:
    print(f"blocked memfd at {held} MB: {exc}", flush=True)
    raise SystemExit(1) from exc
print(f"LEAK held {held} MB in memfds")
print("---")
print("val_bpb: 1.0")
