"""
nanochat's evaluator: scores the run's artifacts/model.pt2 on held-out text and prints
val_bpb. Runs as its own process after the run, on the GPU when there is one (the CPU for
AUTOSWARM_SMOKE=1); never imports train.py. Usage: python evaluate.py

What it guarantees:
- the artifact is loaded by exported.py, the worker's loader that the runner writes beside
  this file (worker/exported.py, one module for the evaluators of exported programs, see
  its docstring): as data, torch reading exactly the bytes checked, nothing in it
  evaluated or unpickled, and a program that calls only listed pure aten operators (no
  file, process, network or random-state ones), takes one tensor and keeps no state;
- the loss is computed here from the raw logits, never taken from the model;
- causality and row independence, checked together in CHECK_PASSES extra passes per batch
  by exported.check_causal, the check tinylm's evaluator makes too: the rows are shuffled
  into new places, each row's bytes after a random cut point are replaced (a random eighth
  of the rows keep every byte), and each row's logits up to its cut must not move (whole
  rows: at every position). The cuts and the shuffle come from os.urandom, new per row,
  pass, batch and evaluation, so a model cannot know where they fall: one that peeks at a
  fraction f of the positions passes with probability about exp(-f * CUT_ROWS), with
  CUT_ROWS = 7,168 cut rows per evaluation: exp(-7) for one peek per 1024-byte window. A
  row cannot read the other rows or its own place in the batch, and since every check row
  is compared with its own scoring pass, behaving differently in check passes is caught;
- non-finite logits, a wrong output shape or any failed check print an error and exit 1
  with no metric.
What it does not guarantee: that the model is small or fast (the runner's timeout and the
sandbox cover that), or anything about the run's own printed numbers (they are ignored).
"""

import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

try:
    from exported import Refused, check_causal, load_model  # written here by the worker
except ModuleNotFoundError:  # run by hand, outside autoswarm
    from autoswarm.worker.exported import Refused, check_causal, load_model
from prepare import EVAL_BATCH_SIZE, MAX_SEQ_LEN, SMOKE, VOCAB_SIZE

# ---------------------------------------------------------------------------
# Evaluation settings (fixed)
# ---------------------------------------------------------------------------

ARTIFACTS_DIR = os.environ.get("AUTOSWARM_ARTIFACTS_DIR", "artifacts")  # the run's out/
HELDOUT_DIR = os.environ.get("AUTOSWARM_HELDOUT_DIR", "heldout")  # val.bin lives here
EVAL_WINDOWS = 8 if SMOKE else 2048  # held-out windows of MAX_SEQ_LEN bytes scored (2M predictions)
CAUSAL_TOL = 1e-3  # max change of an earlier logit when later bytes change (GPU kernels, fp32)
CHECK_PASSES = 4  # check passes per batch, each with fresh cuts and a fresh shuffle
WHOLE_ROWS = EVAL_BATCH_SIZE // 8  # rows per check pass kept whole: compared at every position
CUT_ROWS = CHECK_PASSES * EVAL_WINDOWS // EVAL_BATCH_SIZE * (EVAL_BATCH_SIZE - WHOLE_ROWS)  # 7168


def fail(message):
    print(f"error: {message}")
    sys.exit(1)


# ---------------------------------------------------------------------------
# Score
# ---------------------------------------------------------------------------


def run(model, x):
    try:
        with torch.inference_mode():
            logits = model(x)
    except Exception as exc:  # the program's failure, reported as such
        fail(f"the program failed on a {tuple(x.shape)} batch: {type(exc).__name__}: {exc}")
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        fail("the program must return a floating-point logits tensor")
    if tuple(logits.shape) != (x.shape[0], x.shape[1], VOCAB_SIZE):
        fail(f"logits shape {tuple(logits.shape)}, expected {(x.shape[0], x.shape[1], VOCAB_SIZE)}")
    logits = logits.float()
    if not torch.isfinite(logits).all():
        fail("the logits are not all finite")
    return logits


if __name__ == "__main__":
    val = np.fromfile(os.path.join(HELDOUT_DIR, "val.bin"), dtype=np.uint8)
    assert len(val) >= EVAL_WINDOWS * MAX_SEQ_LEN + 1, "held-out data is too short"
    val = torch.from_numpy(val[: EVAL_WINDOWS * MAX_SEQ_LEN + 1].astype(np.int64))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cuda.matmul.allow_tf32 = False  # score in full fp32
    torch.backends.cudnn.allow_tf32 = False
    try:
        model = load_model(os.path.join(ARTIFACTS_DIR, "model.pt2"))
    except Refused as exc:
        fail(str(exc))
    val = val.to(device)
    seed = int.from_bytes(os.urandom(8), "little")  # unpredictable cuts, shuffles and noise
    generator = torch.Generator().manual_seed(seed)

    n_batches = EVAL_WINDOWS // EVAL_BATCH_SIZE
    total_nats = 0.0
    for b in range(n_batches):
        # batch b holds windows b, b + n_batches, ...: its rows are far apart in the text
        starts = (b + n_batches * torch.arange(EVAL_BATCH_SIZE, device=device)) * MAX_SEQ_LEN
        idx = starts[:, None] + torch.arange(MAX_SEQ_LEN, device=device)
        x, y = val[idx], val[idx + 1]
        logits = run(model, x)
        for _ in range(CHECK_PASSES):
            try:
                check_causal(lambda rows: run(model, rows), x, logits, generator, whole_rows=WHOLE_ROWS, tol=CAUSAL_TOL)
            except Refused as exc:
                fail(str(exc))
        total_nats += F.cross_entropy(logits.view(-1, VOCAB_SIZE), y.reshape(-1), reduction="sum").item()

    val_bpb = total_nats / (n_batches * EVAL_BATCH_SIZE * MAX_SEQ_LEN) / math.log(2)
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"eval_tokens:      {n_batches * EVAL_BATCH_SIZE * MAX_SEQ_LEN}")
