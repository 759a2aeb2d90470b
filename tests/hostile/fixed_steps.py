"""Honest control (not an attack): a tiny byte-level model trained for a fixed number of steps.

Deterministic (fixed seed, one thread, fixed steps, generated text), so its val_bpb must be
the same inside the sandbox and outside it.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

STEPS = 40  # optimizer steps (not a time budget: the result must not depend on speed)
BATCH_SIZE = 16  # sequences per step
SEQ_LEN = 32  # bytes per sequence
TEXT_BYTES = 20_000  # generated training text, the last 2,000 held out

torch.manual_seed(0)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

text = bytes((i * 7 + (i // 13) * 3 + (i // 101)) % 251 for i in range(TEXT_BYTES))
data = torch.tensor(list(text), dtype=torch.long)
train, val = data[:-2000], data[-2000:]
model = nn.Sequential(nn.Embedding(256, 32), nn.Linear(32, 256))
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)

for step in range(STEPS):
    starts = torch.randint(0, len(train) - SEQ_LEN - 1, (BATCH_SIZE,))
    x = torch.stack([train[s : s + SEQ_LEN] for s in starts])
    y = torch.stack([train[s + 1 : s + SEQ_LEN + 1] for s in starts])
    loss = F.cross_entropy(model(x).view(-1, 256), y.view(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()

with torch.no_grad():
    val_loss = F.cross_entropy(model(val[:-1]), val[1:]).item()
print("---")
print(f"val_bpb:          {val_loss / math.log(2):.6f}")
