"""
tinylm: a small byte-level GPT trained on the CPU for a fixed time budget.
Single file, no CLI flags. Usage: python train.py

The run writes out/model.pt2, a torch.export program taking (EVAL_BATCH_SIZE, MAX_SEQ_LEN)
int64 bytes and returning (EVAL_BATCH_SIZE, MAX_SEQ_LEN, 256) next-byte logits. The
evaluator (not this file) scores it on held-out text this file never sees.
"""

import math
import os
import resource
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import DATA_DIR, EVAL_BATCH_SIZE, MAX_SEQ_LEN, OUT_DIR, TIME_BUDGET, VOCAB_SIZE

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model
N_LAYER = 2  # transformer blocks
N_EMBD = 128  # width of the residual stream
N_HEAD = 4  # attention heads (N_EMBD must divide evenly)
MLP_RATIO = 4  # hidden width of the MLP, as a multiple of N_EMBD

# Optimization
BATCH_SIZE = 16  # sequences of MAX_SEQ_LEN bytes per step
LEARNING_RATE = 1e-3  # peak AdamW learning rate
WEIGHT_DECAY = 0.1  # AdamW weight decay on matrices
ADAM_BETA1 = 0.9  # AdamW first-moment decay
ADAM_BETA2 = 0.95  # AdamW second-moment decay
GRAD_CLIP = 1.0  # max global gradient norm
WARMUP_RATIO = 0.05  # fraction of the time budget spent warming the learning rate up
WARMDOWN_RATIO = 0.1  # fraction of the time budget spent decaying it at the end
FINAL_LR_FRAC = 0.1  # learning rate at the end, as a fraction of the peak
SEED = 1337  # parameter init and batch order

# ---------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------


class CausalSelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.qkv = nn.Linear(N_EMBD, 3 * N_EMBD, bias=False)
        self.proj = nn.Linear(N_EMBD, N_EMBD, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=2)
        q = q.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2)
        k = k.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2)
        v = v.view(B, T, N_HEAD, C // N_HEAD).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(N_EMBD, MLP_RATIO * N_EMBD, bias=False)
        self.proj = nn.Linear(MLP_RATIO * N_EMBD, N_EMBD, bias=False)

    def forward(self, x):
        return self.proj(F.gelu(self.fc(x)))


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1 = nn.LayerNorm(N_EMBD)
        self.attn = CausalSelfAttention()
        self.ln2 = nn.LayerNorm(N_EMBD)
        self.mlp = MLP()

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        x = x + self.mlp(self.ln2(x))
        return x


class GPT(nn.Module):
    def __init__(self):
        super().__init__()
        self.wte = nn.Embedding(VOCAB_SIZE, N_EMBD)
        self.wpe = nn.Embedding(MAX_SEQ_LEN, N_EMBD)
        self.blocks = nn.ModuleList(Block() for _ in range(N_LAYER))
        self.ln_f = nn.LayerNorm(N_EMBD)
        self.lm_head = nn.Linear(N_EMBD, VOCAB_SIZE, bias=False)
        for name, p in self.named_parameters():
            if p.dim() == 2:
                nn.init.normal_(p, mean=0.0, std=0.02)
            if name.endswith("proj.weight"):  # scale residual writes by depth (GPT-2)
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * N_LAYER))

    def forward(self, idx):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.lm_head(self.ln_f(x))


def get_lr(progress):
    """Learning rate at `progress` in [0, 1] of the time budget: warmup, flat, warmdown."""
    if progress < WARMUP_RATIO:
        return LEARNING_RATE * progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return LEARNING_RATE
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return LEARNING_RATE * (cooldown + (1.0 - cooldown) * FINAL_LR_FRAC)


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

t_start = time.time()
torch.manual_seed(SEED)
data = torch.from_numpy(np.fromfile(os.path.join(DATA_DIR, "train.bin"), dtype=np.uint8).astype(np.int64))
print(f"Train data: {len(data):,} bytes")
print(f"Time budget: {TIME_BUDGET:.0f}s, torch threads: {torch.get_num_threads()}")


def get_batch():
    ix = torch.randint(len(data) - MAX_SEQ_LEN - 1, (BATCH_SIZE,))
    offsets = torch.arange(MAX_SEQ_LEN)
    x = data[ix[:, None] + offsets]
    y = data[ix[:, None] + offsets + 1]
    return x, y


model = GPT()
num_params = sum(p.numel() for p in model.parameters())
print(f"Parameters: {num_params / 1e6:.2f}M")
decay = [p for p in model.parameters() if p.dim() >= 2]
no_decay = [p for p in model.parameters() if p.dim() < 2]
optimizer = torch.optim.AdamW(
    [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": no_decay, "weight_decay": 0.0}],
    lr=LEARNING_RATE,
    betas=(ADAM_BETA1, ADAM_BETA2),
)

# ---------------------------------------------------------------------------
# Training loop: runs until TIME_BUDGET seconds of training have passed
# ---------------------------------------------------------------------------

step = 0
training_time = 0.0
smooth_loss = 0.0
while training_time < TIME_BUDGET:
    t0 = time.time()
    lr = get_lr(training_time / TIME_BUDGET)
    for group in optimizer.param_groups:
        group["lr"] = lr
    x, y = get_batch()
    logits = model(x)
    loss = F.cross_entropy(logits.view(-1, VOCAB_SIZE), y.view(-1))
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), GRAD_CLIP)
    optimizer.step()
    loss_f = loss.item()
    if not math.isfinite(loss_f):
        print(f"step {step}: loss is {loss_f}, stopping")
        raise SystemExit(1)
    training_time += time.time() - t0
    step += 1
    smooth_loss = 0.9 * smooth_loss + 0.1 * loss_f
    debiased = smooth_loss / (1 - 0.9**step)
    if step % 50 == 0:
        print(f"step {step:05d} | loss {debiased:.4f} | lr {lr:.2e} | {training_time:.1f}s")

# ---------------------------------------------------------------------------
# Export: the evaluator runs this program on held-out text and computes val_bpb itself
# ---------------------------------------------------------------------------

model.eval()
example = torch.zeros((EVAL_BATCH_SIZE, MAX_SEQ_LEN), dtype=torch.long)
with torch.no_grad():  # non-strict: traces the Python as it runs, ~1 s faster than strict
    program = torch.export.export(model, (example,), strict=False)
os.makedirs(OUT_DIR, exist_ok=True)
torch.export.save(program, os.path.join(OUT_DIR, "model.pt2"))
print(f"Exported model to {os.path.join(OUT_DIR, 'model.pt2')}")

t_end = time.time()
peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
print("---")
print(f"train_bpb:        {debiased / math.log(2):.6f}")
print(f"training_seconds: {training_time:.1f}")
print(f"total_seconds:    {t_end - t_start:.1f}")
print(f"peak_rss_mb:      {peak_rss_mb:.1f}")
print(f"total_tokens_M:   {step * BATCH_SIZE * MAX_SEQ_LEN / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.2f}")
print(f"depth:            {N_LAYER}")
sys.stdout.flush()
os._exit(0)  # all is written: skip Python's teardown of torch (~1 s)
