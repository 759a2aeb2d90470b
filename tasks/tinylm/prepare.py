"""
Fixed constants shared by train.py and the evaluator. Protected: the run imports them and
cannot change them.

The data itself is made by the task's prepare step (make_data.py, which the run never
sees): data/train.bin for the run, heldout/val.bin for the evaluator only.
"""

import os

# ---------------------------------------------------------------------------
# Constants shared by train.py and evaluate.py (fixed, do not modify)
# ---------------------------------------------------------------------------

MAX_SEQ_LEN = 128  # bytes of context the evaluator scores the model at
EVAL_BATCH_SIZE = 32  # windows per call: the model is exported at (EVAL_BATCH_SIZE, MAX_SEQ_LEN)
VOCAB_SIZE = 256  # byte-level: one token per byte
TIME_BUDGET = float(os.environ.get("AUTOSWARM_BUDGET_S", "40"))  # seconds of training
DATA_DIR = os.environ.get("AUTOSWARM_DATA_DIR", "data")  # holds train.bin
OUT_DIR = os.environ.get("AUTOSWARM_OUT_DIR", "out")  # the run writes model.pt2 here
