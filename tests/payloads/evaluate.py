"""The evaluator: scores artifacts/prediction.txt against heldout/answer.txt."""

import os
import pathlib

artifacts = pathlib.Path(os.environ["AUTOSWARM_ARTIFACTS_DIR"])
heldout = pathlib.Path(os.environ["AUTOSWARM_HELDOUT_DIR"])
prediction = float((artifacts / "prediction.txt").read_text())
answer = float((heldout / "answer.txt").read_text())
print("artifacts", sorted(str(p.relative_to(artifacts)) for p in artifacts.rglob("*")))
print("---")
print(f"val_bpb: {abs(prediction - answer) / 100}")
