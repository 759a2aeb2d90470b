"""Attack: fill the disk with one huge file."""

import signal

CHUNK = b"\0" * (1 << 20)  # 1 MiB per write
STOP_MB = 1024  # if it gets this far the cap failed

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of dying
written = 0
try:
    with open("one-huge-file.bin", "wb") as f:
        while written < STOP_MB << 20:
            f.write(CHUNK)
            f.flush()
            written += len(CHUNK)
    print(f"LEAK one file of {written >> 20} MB")
except OSError as exc:
    print(f"blocked one file at {written >> 20} MB: {exc}")
print("---")
print("val_bpb: 1.0")
