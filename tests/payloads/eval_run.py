"""Evaluator-mode run: writes a prediction to out/, reports what it can see, claims a fake score."""

import os
import pathlib

data = pathlib.Path(os.environ["AUTOSWARM_DATA_DIR"])
out = pathlib.Path(os.environ["AUTOSWARM_OUT_DIR"])
train = (data / "train.txt").read_text()
(out / "prediction.txt").write_text("40\n")
(out / "sub").mkdir()
(out / "sub" / "note.txt").write_text(train)
os.symlink("/etc/hostname", out / "planted_link")
print("visible", sorted(os.listdir(".")))
print("visible_data", sorted(os.listdir(data)))
print("data_parent", sorted(os.listdir(data.resolve().parent)))
print("---")
print("val_bpb: 0.0001")
