"""A run that writes its prediction only once the evaluator started with it is ready.

Unsandboxed only: it reads the evaluator's folder beside its own. Exits 3 after 30 s, or
at once when it is ready with PAYLOAD_CRASH set."""

import os
import pathlib
import time

out = pathlib.Path(os.environ["AUTOSWARM_OUT_DIR"])
ready = out.parent.parent / "eval" / ".tmp" / "ready"
deadline = time.monotonic() + 30
while not ready.exists():
    if time.monotonic() > deadline:
        print("the evaluator never got ready")
        raise SystemExit(3)
    time.sleep(0.05)
if os.environ.get("PAYLOAD_CRASH"):
    print("crashing with the evaluator ready")
    raise SystemExit(3)
(out / "prediction.txt").write_text("40\n")
print("---")
print("val_bpb: 0.0001")
