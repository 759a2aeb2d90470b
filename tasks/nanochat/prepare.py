"""
Fixed constants shared by train.py and the evaluator. Protected: the run imports them and
cannot change them.

The data itself is made by the task's prepare step (make_data.py, which the run never
sees): data/train.bin for the run, heldout/val.bin for the evaluator only.

AUTOSWARM_SMOKE=1 shrinks everything (context, corpus, budget) so the whole pipeline can be
checked on a CPU in seconds; it is for tests, never for a scored run.
"""

import os

# ---------------------------------------------------------------------------
# Constants shared by train.py and evaluate.py (fixed, do not modify)
# ---------------------------------------------------------------------------

SMOKE = os.environ.get("AUTOSWARM_SMOKE") == "1"  # tiny sizes for a seconds-long CPU check
MAX_SEQ_LEN = 64 if SMOKE else 1024  # bytes of context the evaluator scores the model at
EVAL_BATCH_SIZE = 4 if SMOKE else 32  # windows per call: the export shape is (EVAL_BATCH_SIZE, MAX_SEQ_LEN)
VOCAB_SIZE = 256  # byte-level: one token per byte
TIME_BUDGET = float(os.environ.get("AUTOSWARM_BUDGET_S", "2" if SMOKE else "300"))  # seconds of training
DATA_DIR = os.environ.get("AUTOSWARM_DATA_DIR", "data")  # holds train.bin
OUT_DIR = os.environ.get("AUTOSWARM_OUT_DIR", "out")  # the run writes model.pt2 here
