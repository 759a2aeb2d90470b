"""Attack: the protected lib/rules.py cannot be changed, but its folder can be renamed: put a
FIFO in its place, on which a worker hashing the file blocks for ever."""

import os

os.rename("lib", "lib_moved")
os.mkdir("lib")
os.mkfifo("lib/rules.py")
print("lib/rules.py is now a FIFO")
print("---")
print("val_bpb: 1.0")
