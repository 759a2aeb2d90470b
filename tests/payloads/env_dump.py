"""Prints its environment's names and the budget it was given."""

import os

for name in sorted(os.environ):
    print(f"env {name}")
print(f"budget {os.environ['AUTOSWARM_BUDGET_S']}")
print("---")
print("val_bpb: 1.0")
