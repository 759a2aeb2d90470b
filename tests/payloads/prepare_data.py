"""Writes the run's data and the evaluator's held-out answer; counts its own runs."""

import os
import pathlib
import time

pathlib.Path(os.environ["AUTOSWARM_DATA_DIR"], "train.txt").write_text("some training text\n")
pathlib.Path(os.environ["AUTOSWARM_HELDOUT_DIR"], "answer.txt").write_text("42\n")
time.sleep(float(os.environ.get("PAYLOAD_PREPARE_SLEEP_S", "0")))
with open(pathlib.Path(os.environ["PAYLOAD_PID_DIR"], "prepare_runs"), "a") as f:
    f.write("ran\n")
