"""Attack: hold memory outside RSS, in files on the sandbox's tmpfs mounts (/dev/shm, /tmp)."""

import itertools

FILE_MB = 16  # each file, under the per-file cap (RLIMIT_FSIZE, 32 MB)
STOP_MB = 1400  # the task's memory_mb is 512 (the two tmpfs hold 1024 + 512 MB)

chunk = b"x" * (FILE_MB << 20)
held = 0
try:
    for i in itertools.count():
        if held >= STOP_MB:
            break
        with open(f"{('/dev/shm', '/tmp')[i % 2]}/hold-{i}", "wb") as f:
            f.write(chunk)
        held += FILE_MB
        print(f"holding {held} MB in tmpfs files", flush=True)
except OSError as exc:
    print(f"blocked tmpfs at {held} MB: {exc}", flush=True)
    raise SystemExit(1) from exc
print(f"LEAK held {held} MB in tmpfs files")
print("---")
print("val_bpb: 1.0")
