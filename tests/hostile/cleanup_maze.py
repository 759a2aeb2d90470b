"""Attack: leave a work folder the worker cannot remove: folders of mode 0000, 0300 (no
listing) and 0500 (no removing) holding files, and folders nested 3,000 deep (deeper than
a recursive remover's stack or its open files)."""

import os

DEPTH = 3000  # nested folders

for name, mode in (("locked", 0o000), ("blind", 0o300), ("sealed", 0o500)):
    os.makedirs(f"{name}/inner")
    for folder in (name, f"{name}/inner"):
        with open(f"{folder}/file.bin", "wb") as f:
            f.write(b"x" * 4096)
    os.chmod(f"{name}/inner", mode)
    os.chmod(name, mode)
top = os.open(".", os.O_RDONLY)
for _ in range(DEPTH):
    os.mkdir("d")
    os.chdir("d")
os.fchdir(top)
print(f"left locked folders and a {DEPTH}-deep tree")
print("---")
print("val_bpb: 1.0")
