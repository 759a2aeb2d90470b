"""Holds 200 MB resident for a moment, then prints a good summary."""

import time

block = bytearray(200 * 2**20)
for i in range(0, len(block), 4096):
    block[i] = 1
time.sleep(0.8)
print("---")
print("val_bpb: 1.0")
