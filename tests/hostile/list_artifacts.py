"""Evaluator of the hostile artifact tasks (no attack): prints what it was handed, then a score.

Each artifact's path, mode and first bytes go to the log: a host file that reached the
evaluator would show there (and its secret in the log tail the test checks).
"""

import os

ARTIFACTS = os.environ["AUTOSWARM_ARTIFACTS_DIR"]
SHOW_BYTES = 200  # of each artifact, into the log

found = 0
for dirpath, dirnames, filenames in os.walk(ARTIFACTS):
    for name in sorted(dirnames + filenames):
        path = os.path.join(dirpath, name)
        st = os.lstat(path)
        head = b""
        if os.path.isfile(path) and not os.path.islink(path):
            with open(path, "rb") as f:
                head = f.read(SHOW_BYTES)
            found += 1
        print(f"artifact {os.path.relpath(path, ARTIFACTS)} mode {st.st_mode:o}: {head!r}")
print(f"artifacts: {found} files")
print("---")
print(f"val_bpb: {1.0 + found}")
