"""Allocates far more memory than its task allows."""

import time

blocks = []
for _ in range(64):
    blocks.append(bytearray(32 * 2**20))
    time.sleep(0.02)
print("---")
print("val_bpb: 1.0")
