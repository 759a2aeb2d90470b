"""An evaluator started with the run: records that it is ready, waits for its line, scores."""

import os
import pathlib
import sys

artifacts = pathlib.Path(os.environ["AUTOSWARM_ARTIFACTS_DIR"])
pathlib.Path(os.environ["PAYLOAD_PID_DIR"], "evaluator").write_text(str(os.getpid()))
print("artifacts before the line", sorted(p.name for p in artifacts.iterdir()))
pathlib.Path(".tmp", "ready").write_text("")  # the run waits for this (tests only)
line = sys.stdin.readline()
print("line", repr(line))
prediction = float((artifacts / "prediction.txt").read_text())
answer = float(pathlib.Path(os.environ["AUTOSWARM_HELDOUT_DIR"], "answer.txt").read_text())
print("---")
print(f"val_bpb: {abs(prediction - answer) / 100}")
