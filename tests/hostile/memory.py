"""Attack: allocate memory without bound (64 MiB at a time, touched so it is real)."""

STEP_MB = 64
STOP_MB = 16384  # if it gets this far the cap failed

blocks = []
while len(blocks) * STEP_MB < STOP_MB:
    block = bytearray(STEP_MB << 20)
    block[:: 4096] = b"x" * len(block[:: 4096])  # touch every page
    blocks.append(block)
    print(f"holding {len(blocks) * STEP_MB} MB", flush=True)
print(f"LEAK allocated {STOP_MB} MB")
