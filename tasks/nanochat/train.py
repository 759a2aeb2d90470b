"""
nanochat: a byte-level GPT pretrained on one GPU for a fixed time budget.
Single device, single file, no CLI flags. Usage: python train.py

The run writes out/model.pt2, a torch.export program taking (EVAL_BATCH_SIZE, MAX_SEQ_LEN)
int64 bytes and returning float32 next-byte logits of shape (EVAL_BATCH_SIZE, MAX_SEQ_LEN,
256). The evaluator (not this file) scores it on held-out text this file never sees.
"""

import os

os.environ["PYTORCH_CUDA_ALLOC_CONF"] = "expandable_segments:True"

import gc
import math
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from prepare import DATA_DIR, EVAL_BATCH_SIZE, MAX_SEQ_LEN, OUT_DIR, SMOKE, TIME_BUDGET, VOCAB_SIZE

# ---------------------------------------------------------------------------
# Hyperparameters (edit these directly, no CLI flags needed)
# ---------------------------------------------------------------------------

# Model
DEPTH = 8  # transformer blocks
ASPECT_RATIO = 64  # model width = DEPTH * ASPECT_RATIO, rounded up to a multiple of HEAD_DIM
HEAD_DIM = 128  # width of one attention head
MLP_RATIO = 4  # hidden width of the MLP, as a multiple of the model width
LOGIT_SOFTCAP = 15.0  # logits are squashed into (-LOGIT_SOFTCAP, LOGIT_SOFTCAP)

# Optimization (AdamW, three learning rates)
TOTAL_BATCH_SIZE = 2**18  # tokens (bytes) per optimizer step
DEVICE_BATCH_SIZE = 64  # sequences per forward/backward (lower it if out of memory)
EMBEDDING_LR = 0.01  # learning rate of the byte embedding
UNEMBEDDING_LR = 0.002  # learning rate of the output head
MATRIX_LR = 0.002  # learning rate of the transformer's matrices
WEIGHT_DECAY = 0.1  # AdamW weight decay on the transformer's matrices
ADAM_BETA1 = 0.9  # AdamW first-moment decay
ADAM_BETA2 = 0.95  # AdamW second-moment decay
WARMUP_RATIO = 0.02  # fraction of the time budget spent warming the learning rate up
WARMDOWN_RATIO = 0.4  # fraction of the time budget spent decaying it at the end
FINAL_LR_FRAC = 0.0  # learning rate at the end, as a fraction of the peak
SEED = 42  # parameter init and batch order

# Bookkeeping
ESTIMATE_TOKENS = 2**20  # bytes at the end of train.bin kept out of training for the val_bpb estimate
H100_BF16_PEAK_FLOPS = 989.5e12  # for mfu_percent

if SMOKE:  # a seconds-long CPU check of the code path for tests, never a scored run
    DEPTH, ASPECT_RATIO, HEAD_DIM = 1, 32, 16
    DEVICE_BATCH_SIZE, TOTAL_BATCH_SIZE, ESTIMATE_TOKENS = 4, 4 * MAX_SEQ_LEN, 4096

# ---------------------------------------------------------------------------
# Model: rotary embeddings, RMSNorm, QK-norm, ReLU^2 MLP, untied head, soft-capped logits
# ---------------------------------------------------------------------------


@dataclass
class GPTConfig:
    n_layer: int
    n_embd: int
    n_head: int


def norm(x):
    return F.rms_norm(x, (x.size(-1),))


def apply_rotary(x, cos, sin):
    cos, sin = cos.to(x.dtype), sin.to(x.dtype)
    d = x.shape[-1] // 2
    x1, x2 = x[..., :d], x[..., d:]
    return torch.cat([x1 * cos + x2 * sin, x2 * cos - x1 * sin], dim=-1)


class CausalSelfAttention(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.n_embd // config.n_head
        self.c_q = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_k = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_v = nn.Linear(config.n_embd, config.n_embd, bias=False)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=False)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q = self.c_q(x).view(B, T, self.n_head, self.head_dim)
        k = self.c_k(x).view(B, T, self.n_head, self.head_dim)
        v = self.c_v(x).view(B, T, self.n_head, self.head_dim)
        q, k = norm(apply_rotary(q, cos, sin)), norm(apply_rotary(k, cos, sin))
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class MLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, MLP_RATIO * config.n_embd, bias=False)
        self.c_proj = nn.Linear(MLP_RATIO * config.n_embd, config.n_embd, bias=False)

    def forward(self, x):
        return self.c_proj(F.relu(self.c_fc(x)).square())


class Block(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.attn = CausalSelfAttention(config)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin):
        x = x + self.attn(norm(x), cos, sin)
        x = x + self.mlp(norm(x))
        return x


class GPT(nn.Module):
    def __init__(self, config):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(VOCAB_SIZE, config.n_embd)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.lm_head = nn.Linear(config.n_embd, VOCAB_SIZE, bias=False)
        head_dim = config.n_embd // config.n_head
        inv_freq = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        angles = torch.outer(torch.arange(MAX_SEQ_LEN, dtype=torch.float32), inv_freq)
        self.register_buffer("cos", angles.cos()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angles.sin()[None, :, None, :], persistent=False)

    @torch.no_grad()
    def init_weights(self):
        scale = 3**0.5 * self.config.n_embd**-0.5  # uniform with std 1/sqrt(n_embd)
        nn.init.normal_(self.wte.weight, std=1.0)
        nn.init.normal_(self.lm_head.weight, std=0.001)
        for block in self.blocks:
            for linear in (block.attn.c_q, block.attn.c_k, block.attn.c_v, block.mlp.c_fc):
                nn.init.uniform_(linear.weight, -scale, scale)
            nn.init.zeros_(block.attn.c_proj.weight)  # each block starts as the identity
            nn.init.zeros_(block.mlp.c_proj.weight)

    def forward(self, idx):
        T = idx.shape[1]
        cos, sin = self.cos[:, :T], self.sin[:, :T]
        x = norm(self.wte(idx))
        for block in self.blocks:
            x = block(x, cos, sin)
        logits = self.lm_head(norm(x)).float()
        return LOGIT_SOFTCAP * torch.tanh(logits / LOGIT_SOFTCAP)


def get_lr_multiplier(progress):
    """Learning-rate multiplier at `progress` in [0, 1] of the time budget."""
    if progress < WARMUP_RATIO:
        return progress / WARMUP_RATIO
    if progress < 1.0 - WARMDOWN_RATIO:
        return 1.0
    cooldown = (1.0 - progress) / WARMDOWN_RATIO
    return cooldown + (1.0 - cooldown) * FINAL_LR_FRAC


# ---------------------------------------------------------------------------
# Setup
# ---------------------------------------------------------------------------

t_start = time.time()
if not torch.cuda.is_available() and not SMOKE:
    print("error: nanochat needs a CUDA GPU and torch.cuda.is_available() is False.")
    print("Run it on a worker with an NVIDIA GPU (AUTOSWARM_SMOKE=1 checks the code path on a CPU).")
    raise SystemExit(1)
device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
torch.manual_seed(SEED)
torch.backends.cuda.matmul.allow_tf32 = True
torch.backends.cudnn.allow_tf32 = True
autocast = torch.amp.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")

data = np.fromfile(os.path.join(DATA_DIR, "train.bin"), dtype=np.uint8)
train_data = torch.from_numpy(data[:-ESTIMATE_TOKENS]).to(device)
estimate_data = torch.from_numpy(data[-ESTIMATE_TOKENS:].astype(np.int64)).to(device)
print(f"Train data: {len(train_data):,} bytes on {device}")
offsets = torch.arange(MAX_SEQ_LEN, device=device)


def get_batch():
    ix = torch.randint(len(train_data) - MAX_SEQ_LEN - 1, (DEVICE_BATCH_SIZE, 1), device=device)
    x = train_data[ix + offsets].long()
    y = train_data[ix + offsets + 1].long()
    return x, y


model_dim = ((DEPTH * ASPECT_RATIO + HEAD_DIM - 1) // HEAD_DIM) * HEAD_DIM
config = GPTConfig(n_layer=DEPTH, n_embd=model_dim, n_head=model_dim // HEAD_DIM)
model = GPT(config).to(device)
model.init_weights()
num_params = sum(p.numel() for p in model.parameters())
matrix_params = [p for p in model.blocks.parameters()]
flops_per_token = 6 * sum(p.numel() for p in matrix_params) + 12 * DEPTH * model_dim * MAX_SEQ_LEN
print(f"Model: depth {DEPTH}, width {model_dim}, {config.n_head} heads, {num_params / 1e6:.1f}M parameters")

dmodel_lr_scale = (model_dim / 768) ** -0.5  # embedding and head rates shrink as 1/sqrt(width), 1 at 768
param_groups = [
    {"params": [model.wte.weight], "lr": EMBEDDING_LR * dmodel_lr_scale, "weight_decay": 0.0},
    {"params": [model.lm_head.weight], "lr": UNEMBEDDING_LR * dmodel_lr_scale, "weight_decay": 0.0},
    {"params": matrix_params, "lr": MATRIX_LR, "weight_decay": WEIGHT_DECAY},
]
for group in param_groups:
    group["initial_lr"] = group["lr"]
fused = device.type == "cuda"
optimizer = torch.optim.AdamW(param_groups, betas=(ADAM_BETA1, ADAM_BETA2), eps=1e-10, fused=fused)

tokens_per_fwdbwd = DEVICE_BATCH_SIZE * MAX_SEQ_LEN
assert TOTAL_BATCH_SIZE % tokens_per_fwdbwd == 0
grad_accum_steps = TOTAL_BATCH_SIZE // tokens_per_fwdbwd
train_model = model if SMOKE else torch.compile(model, dynamic=False)
print(f"Time budget: {TIME_BUDGET:.0f}s, gradient accumulation steps: {grad_accum_steps}")

# ---------------------------------------------------------------------------
# Training loop: runs until TIME_BUDGET seconds of training (compile excluded) have passed
# ---------------------------------------------------------------------------

step = 0
total_training_time = 0.0
smooth_loss = 0.0
x, y = get_batch()
while True:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(grad_accum_steps):
        with autocast:
            logits = train_model(x)
        loss = F.cross_entropy(logits.view(-1, VOCAB_SIZE), y.view(-1))
        (loss / grad_accum_steps).backward()
        x, y = get_batch()  # prefetch the next micro-batch while the GPU works
    multiplier = get_lr_multiplier(total_training_time / TIME_BUDGET)
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * multiplier
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    loss_f = loss.item()  # syncs with the GPU
    if not math.isfinite(loss_f):
        print(f"step {step}: loss is {loss_f}, stopping")
        raise SystemExit(1)
    dt = time.time() - t0
    if step > 10 or SMOKE:  # the first steps include compilation: not counted
        total_training_time += dt
    smooth_loss = 0.9 * smooth_loss + 0.1 * loss_f
    debiased = smooth_loss / (1 - 0.9 ** (step + 1))
    if step % 25 == 0:
        tok_per_s = TOTAL_BATCH_SIZE / dt / 1e6
        print(
            f"step {step:05d} | loss {debiased:.4f} | lr x{multiplier:.2f} | "
            f"{tok_per_s:.2f}M tok/s | {total_training_time:.1f}s"
        )
    if step == 0:  # Python's GC stalls ~100 ms at random; freeze what exists and collect by hand
        gc.collect()
        gc.freeze()
        gc.disable()
    step += 1
    if total_training_time >= TIME_BUDGET:
        break

# ---------------------------------------------------------------------------
# Estimate val_bpb on the bytes kept out of training (the evaluator's held-out text decides)
# ---------------------------------------------------------------------------

model.eval()
total_nats, total_tokens = 0.0, 0
with torch.no_grad(), autocast:
    windows = estimate_data[: (len(estimate_data) - 1) // MAX_SEQ_LEN * MAX_SEQ_LEN + 1]
    for i in range(0, len(windows) - 1, EVAL_BATCH_SIZE * MAX_SEQ_LEN):
        chunk = windows[i : i + EVAL_BATCH_SIZE * MAX_SEQ_LEN + 1]
        n = (len(chunk) - 1) // MAX_SEQ_LEN
        xs = chunk[: n * MAX_SEQ_LEN].view(n, MAX_SEQ_LEN)
        ys = chunk[1 : n * MAX_SEQ_LEN + 1].view(n, MAX_SEQ_LEN)
        logits = model(xs)
        total_nats += F.cross_entropy(logits.view(-1, VOCAB_SIZE), ys.reshape(-1), reduction="sum").item()
        total_tokens += ys.numel()
val_bpb = total_nats / total_tokens / math.log(2)

# ---------------------------------------------------------------------------
# Export: float32, no autocast; the evaluator runs this program and computes val_bpb itself
# ---------------------------------------------------------------------------

example = torch.zeros((EVAL_BATCH_SIZE, MAX_SEQ_LEN), dtype=torch.long, device=device)
with torch.no_grad():
    program = torch.export.export(model.float(), (example,))
os.makedirs(OUT_DIR, exist_ok=True)
torch.export.save(program, os.path.join(OUT_DIR, "model.pt2"))
print(f"Exported model to {os.path.join(OUT_DIR, 'model.pt2')}")

t_end = time.time()
total_tokens_seen = step * TOTAL_BATCH_SIZE
steady_tokens = max(step - 11, 1) * TOTAL_BATCH_SIZE
mfu = 100 * flops_per_token * steady_tokens / max(total_training_time, 1e-9) / H100_BF16_PEAK_FLOPS
peak_vram_mb = torch.cuda.max_memory_allocated() / 1024 / 1024 if device.type == "cuda" else 0.0
print("---")
print(f"val_bpb:          {val_bpb:.6f}")
print(f"training_seconds: {total_training_time:.1f}")
print(f"total_seconds:    {t_end - t_start:.1f}")
print(f"peak_vram_mb:     {peak_vram_mb:.1f}")
print(f"mfu_percent:      {mfu:.2f}")
print(f"total_tokens_M:   {total_tokens_seen / 1e6:.1f}")
print(f"num_steps:        {step}")
print(f"num_params_M:     {num_params / 1e6:.1f}")
print(f"depth:            {DEPTH}")
