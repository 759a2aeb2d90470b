#!/usr/bin/env bash
# The sandbox on a CUDA machine: CUDA works inside bubblewrap, and a bf16 matmul inside runs
# within 10% of its speed outside. Prints PASS/FAIL lines; exits 1 on any FAIL.
#
#   bash bench/gpu_check.sh            (from the repository root; PYTHON=python3 by default)
#
# Needs: python3 with torch (pip-installed if missing and the network allows), and bubblewrap
# (installed if missing: first from a carried .deb in .debs/, offline; then apt-get; as a last
# resort the .deb's binary is unpacked and used through AUTOSWARM_BWRAP). Imports only the
# standard library and this repository's autoswarm/worker/ and autoswarm/shared/ (no venv needed). ~2 minutes.
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
say() { printf '%s\n' "$*"; }

say "== machine: $(uname -srm); $(nproc) cores; $($PY --version 2>&1); user $(id -un)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader | sed 's/^/== gpu: /'

# ---- bubblewrap -------------------------------------------------------------------------
if [ -z "${AUTOSWARM_BWRAP:-}" ] && ! command -v bwrap >/dev/null 2>&1; then
  say "== bubblewrap missing: installing it"
  debs=$(ls .debs/bubblewrap*.deb 2>/dev/null | head -n 1)
  if [ -n "$debs" ]; then dpkg -i "$debs" >/dev/null 2>&1 || say "   dpkg -i $debs failed"; fi
  if ! command -v bwrap >/dev/null 2>&1; then
    timeout 60 apt-get install -y -q bubblewrap >/dev/null 2>&1 \
      || { timeout 90 apt-get update -q >/dev/null 2>&1 \
           && timeout 120 apt-get install -y -q bubblewrap >/dev/null 2>&1; } \
      || say "   apt-get could not install bubblewrap"
  fi
  if ! command -v bwrap >/dev/null 2>&1 && [ -n "$debs" ]; then
    dpkg -x "$debs" /tmp/autoswarm-bwrap && export AUTOSWARM_BWRAP=/tmp/autoswarm-bwrap/usr/bin/bwrap
  fi
fi
say "== bwrap: ${AUTOSWARM_BWRAP:-$(command -v bwrap || echo none)} $("${AUTOSWARM_BWRAP:-bwrap}" --version 2>&1)"

# ---- torch --------------------------------------------------------------------------------
if ! "$PY" -c "import torch" >/dev/null 2>&1; then
  say "== torch missing: pip install torch"
  timeout 420 "$PY" -m pip install -q torch || say "   pip could not install torch"
fi

# ---- the checks ---------------------------------------------------------------------------
exec "$PY" - <<'EOF'
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from autoswarm.worker.bwrap import BwrapSandbox, probe_sandbox
from autoswarm.worker.doctor import sandbox_self_test

MIN_RATIO = 0.9  # inside / outside bf16 matmul throughput
ROUNDS = 2  # runs each way, interleaved; the best of each side counts
MATMUL = r'''
import json, os, sys, time
import torch
N, ITERS, REPEATS = 8192, 50, 5  # matrix side, matmuls per timing, timings (best counts)
if not torch.cuda.is_available():
    print(json.dumps({"cuda": False})); sys.exit(0)
a = torch.randn(N, N, device="cuda", dtype=torch.bfloat16)
b = torch.randn(N, N, device="cuda", dtype=torch.bfloat16)
for _ in range(10):
    a @ b
torch.cuda.synchronize()
best = 0.0
for _ in range(REPEATS):
    start = time.perf_counter()
    for _ in range(ITERS):
        c = a @ b
    torch.cuda.synchronize()
    best = max(best, 2 * N**3 * ITERS / (time.perf_counter() - start) / 1e12)
print(json.dumps({"cuda": True, "device": torch.cuda.get_device_name(0), "tflops": best,
                  "uid": os.getuid(), "torch": torch.__version__}))
'''
failed = []


def verdict(ok, what):
    print(("PASS " if ok else "FAIL ") + what, flush=True)
    if not ok:
        failed.append(what)


def run(argv, cwd, env):
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=240)
    try:
        return json.loads(done.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (done.stderr or done.stdout)[-1500:], "exit": done.returncode}


probe = probe_sandbox()
verdict(probe.ok, f"sandbox starts: {probe.explain()}")
if not probe.ok:
    sys.exit(1)
torch_spec = importlib.util.find_spec("torch")
if torch_spec is None or torch_spec.origin is None:
    verdict(False, "torch is importable")
    sys.exit(1)
site = Path(torch_spec.origin).parents[1]  # torch's site-packages, in case it is not the prefix's
sandbox = BwrapSandbox(probe.bwrap, extra_readonly=[site])
print(f"== devices passed through: {sandbox.gpu_devices}")

for row in sandbox_self_test(sandbox, cuda=True):
    verdict(row.status == "OK", f"self-test {row.name}: {row.detail}")

keep = ("PATH", "LD_LIBRARY_PATH", "CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES", "CUDA_HOME")
results = {"outside": [], "inside": []}
with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    env = {k: os.environ[k] for k in keep if k in os.environ} | {"HOME": tmp, "TMPDIR": tmp}
    argv = [sys.executable, "-c", MATMUL]
    wrapped = sandbox.wrap(argv, work_dir=work, readonly=[], writable=[], env=env)
    for _ in range(ROUNDS):
        results["outside"].append(run(argv, work, env))
        results["inside"].append(run(wrapped, work, env))
for side, found in results.items():
    for r in found:
        print(f"== {side}: {json.dumps(r)}")
inside = [r for r in results["inside"] if r.get("cuda")]
outside = [r for r in results["outside"] if r.get("cuda")]
verdict(bool(inside), "CUDA inside the sandbox: torch.cuda.is_available() is True"
        + (f", device {inside[0]['device']}, uid {inside[0]['uid']}" if inside else ""))
if inside and outside:
    best_in = max(r["tflops"] for r in inside)
    best_out = max(r["tflops"] for r in outside)
    ratio = best_in / best_out
    print(f"== bf16 matmul 8192x8192, 50 iters: outside {best_out:.1f} TFLOP/s, "
          f"inside {best_in:.1f} TFLOP/s, ratio {ratio:.3f}")
    verdict(ratio >= MIN_RATIO, f"bf16 matmul inside within 10% of outside (ratio {ratio:.3f})")
else:
    verdict(False, "bf16 matmul ran on both sides")
print("RESULT " + ("PASS" if not failed else f"FAIL ({len(failed)} failed)"))
sys.exit(1 if failed else 0)
EOF
