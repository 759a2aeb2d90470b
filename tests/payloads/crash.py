"""Exits with code 3 after a line of output."""

import sys

print("about to fail")
sys.exit(3)
