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
- causality: for every batch scored, each row's bytes after a random cut point are
  replaced and the logits up to the cut must not move, CAUSAL_CUTS times with fresh cuts.
  The cuts come from os.urandom, new per row, batch, pass and evaluation, so a model cannot
  know where they fall: one that peeks at a fraction f of the positions passes with
  probability about exp(-f * EVAL_WINDOWS * CAUSAL_CUTS), exp(-8) for one peek per window;
- row independence: for every batch the rows are shuffled and half of them replaced; each
  kept row's logits must move with it unchanged (a row cannot read the other rows or its
  own place in the batch);
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
    from exported import Refused, load_model  # written here by the worker
except ModuleNotFoundError:  # run by hand, outside autoswarm
    from worker.exported import Refused, load_model
from prepare import EVAL_BATCH_SIZE, MAX_SEQ_LEN, SMOKE, VOCAB_SIZE

# ---------------------------------------------------------------------------
# Evaluation settings (fixed)
# ---------------------------------------------------------------------------

ARTIFACTS_DIR = os.environ.get("AUTOSWARM_ARTIFACTS_DIR", "artifacts")  # the run's out/
HELDOUT_DIR = os.environ.get("AUTOSWARM_HELDOUT_DIR", "heldout")  # val.bin lives here
EVAL_WINDOWS = 8 if SMOKE else 2048  # held-out windows of MAX_SEQ_LEN bytes scored (2M predictions)
CAUSAL_TOL = 1e-3  # max change of an earlier logit when later bytes change (GPU kernels, fp32)
CAUSAL_CUTS = 4  # random cut points per row per batch (a forward pass each)


def fail(message):
    print(f"error: {message}")
    sys.exit(1)


# ---------------------------------------------------------------------------
# Score
# ---------------------------------------------------------------------------


def run(model, x):
    try:
        with torch.no_grad():
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


def scramble(x, generator):
    """x with every byte replaced by a different, random byte."""
    noise = torch.randint(1, VOCAB_SIZE, x.shape, generator=generator).to(x.device)
    return (x + noise) % VOCAB_SIZE


def check_causal(model, x, logits, generator):
    """Each row's bytes after a random cut are replaced; its logits up to the cut must not move."""
    B, T = x.shape
    positions = torch.arange(T, device=x.device)
    for _ in range(CAUSAL_CUTS):
        cuts = torch.randint(0, T - 1, (B, 1), generator=generator).to(x.device)  # 0 .. T-2
        later = positions[None, :] > cuts
        changed = run(model, torch.where(later, scramble(x, generator), x))
        drift = (changed - logits).abs().amax(dim=2).masked_fill(later, 0.0)  # (row, position)
        if drift.max().item() > CAUSAL_TOL:
            row = int(drift.amax(dim=1).argmax())
            fail(
                f"not causal: logits at positions <= {int(cuts[row])} moved by "
                f"{drift[row].max().item():.3g} when later bytes changed"
            )


def check_rows_independent(model, x, logits, generator):
    """Shuffle the rows and replace half of them: each kept row's logits move with it, unchanged."""
    B = x.shape[0]
    order = torch.randperm(B, generator=generator).to(x.device)
    replaced = (torch.randperm(B, generator=generator) < B // 2).to(x.device)
    shuffled = torch.where(replaced[:, None], scramble(x, generator), x[order])
    drift = (run(model, shuffled) - logits[order]).abs().amax(dim=(1, 2)).masked_fill(replaced, 0.0)
    if drift.max().item() > CAUSAL_TOL:
        fail(
            f"rows are not independent: a row's logits moved by {drift.max().item():.3g} "
            "when the other rows were shuffled or replaced"
        )


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
        check_causal(model, x, logits, generator)
        check_rows_independent(model, x, logits, generator)
        total_nats += F.cross_entropy(logits.view(-1, VOCAB_SIZE), y.reshape(-1), reduction="sum").item()

    val_bpb = total_nats / (n_batches * EVAL_BATCH_SIZE * MAX_SEQ_LEN) / math.log(2)
    print("---")
    print(f"val_bpb:          {val_bpb:.6f}")
    print(f"eval_tokens:      {n_batches * EVAL_BATCH_SIZE * MAX_SEQ_LEN}")
