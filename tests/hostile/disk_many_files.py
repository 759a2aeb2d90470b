"""Attack: fill the disk with many files, each under the per-file cap."""

CHUNK = b"\0" * (4 << 20)  # 4 MiB per write
FILE_MB = 16  # each file, under the task's per-file cap
STOP_MB = 1024  # if it gets this far the cap failed

written, i = 0, 0
while written < STOP_MB << 20:
    with open(f"fill-{i}.bin", "wb") as f:
        for _ in range(FILE_MB // 4):
            f.write(CHUNK)
            written += len(CHUNK)
    i += 1
    print(f"wrote {written >> 20} MB in {i} files", flush=True)
print(f"LEAK many files, {written >> 20} MB")
print("---")
print("val_bpb: 1.0")
