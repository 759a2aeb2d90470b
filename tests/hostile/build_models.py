"""Builds the model archives the evaluator-mode payloads hand in (trusted test code, run once).

Exporting in every payload would import torch twice per test; the attacks are about what the
evaluator receives, so the archives are built here, outside the sandbox, and each payload
ships its archive as the editable file `model_in.pt2` and copies it to out/model.pt2.
Usage: python build_models.py OUT_FOLDER TINYLM_FOLDER
"""

import io
import os
import sys
import zipfile

OUT, TINYLM = sys.argv[1], sys.argv[2]
sys.path[0] = TINYLM  # tinylm's prepare.py, not the payloads beside this file

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

from prepare import EVAL_BATCH_SIZE, MAX_SEQ_LEN, VOCAB_SIZE  # noqa: E402

CONFIDENCE = 30.0  # logit the peeking model gives the byte it peeked at
CANARY_COMMAND = "touch pwned-canary; touch /tmp/pwned-canary; echo PWNED"


class Bigram(nn.Module):
    """An honest (untrained) model: logits from the current byte only."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(VOCAB_SIZE, VOCAB_SIZE)

    def forward(self, idx):
        return self.table(idx)


class Peek(nn.Module):
    """Peeks at the future: the logits at position t put byte t+1 first."""

    def __init__(self):
        super().__init__()
        self.table = nn.Embedding(VOCAB_SIZE, VOCAB_SIZE)
        with torch.no_grad():
            self.table.weight.copy_(torch.eye(VOCAB_SIZE) * CONFIDENCE)

    def forward(self, idx):
        nxt = torch.cat([idx[:, 1:], idx[:, -1:]], dim=1)
        return self.table(nxt)


class RowAwarePeek(Peek):
    """Peeks at the future everywhere except where the evaluator's causality check looks.

    tinylm's evaluator once cut row i of every batch at i * (T - 1) // B, a fixed point, and
    compared logits only up to that cut; this model looks ahead at every other position.
    """

    def __init__(self):
        super().__init__()
        cuts = torch.arange(EVAL_BATCH_SIZE) * (MAX_SEQ_LEN - 1) // EVAL_BATCH_SIZE
        self.register_buffer("peek", (torch.arange(MAX_SEQ_LEN)[None, :] != cuts[:, None]).long())

    def forward(self, idx):
        nxt = torch.cat([idx[:, 1:], idx[:, -1:]], dim=1)
        return self.table(nxt * self.peek + idx * (1 - self.peek))


class Liar(Bigram):
    """Returns a loss it made up next to its logits."""

    def forward(self, idx):
        logits = self.table(idx)
        return logits, logits.sum() * 0.0 + 0.01


class Evil:
    """Unpickling this runs a shell command that writes a canary and prints PWNED."""

    def __reduce__(self):
        return (os.system, (CANARY_COMMAND,))


def export(model):
    torch.manual_seed(0)
    x = torch.zeros(EVAL_BATCH_SIZE, MAX_SEQ_LEN, dtype=torch.long)
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(model.eval(), (x,)), buffer)
    return buffer.getvalue()


def with_evil_member(archive):
    """The archive with its sample inputs (a name the evaluator accepts) replaced by Evil."""
    evil = io.BytesIO()
    torch.save({"inputs": Evil()}, evil)
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(archive)) as src, zipfile.ZipFile(out, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("data/sample_inputs/model.pt"):
                data = evil.getvalue()
            dst.writestr(item, data)
    return out.getvalue()


torch.manual_seed(0)
honest = export(Bigram())
archives = {
    "honest.pt2": honest,
    "lookahead.pt2": export(Peek()),
    "lookahead_row_aware.pt2": export(RowAwarePeek()),
    "made_up_loss.pt2": export(Liar()),
    "pickle_model.pt2": with_evil_member(honest),
}
os.makedirs(OUT, exist_ok=True)
for name, data in archives.items():
    with open(os.path.join(OUT, name), "wb") as f:
        f.write(data)
    print(f"wrote {name}: {len(data)} bytes")
