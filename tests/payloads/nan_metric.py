"""Prints a NaN metric."""

print("---")
print("val_bpb: nan")
