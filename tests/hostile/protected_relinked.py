"""Attack: rename the protected lib/ away, train under rules of its own, then leave a
symbolic link to the task folder's untouched lib/rules.py for the worker's check to follow."""

import importlib
import os
import sys

TASK_DIR = os.environ.get("HOSTILE_TASK_DIR", "/nonexistent")  # worst case: its real path

os.rename("lib", "lib_moved")
os.mkdir("lib")
with open("lib/rules.py", "w") as f:
    f.write("RULE = 'the run wrote its own rules'\n")
sys.path.insert(0, os.getcwd())
rules = importlib.import_module("lib.rules")
print(f"trained under: {rules.RULE}")
os.remove("lib/rules.py")
os.symlink(os.path.join(TASK_DIR, "lib", "rules.py"), "lib/rules.py")
print("---")
print("val_bpb: 0.01")
