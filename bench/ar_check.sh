#!/usr/bin/env bash
# Issue 28 on a lent GPU machine (one NVIDIA GPU, no network), in one script (~7 minutes):
#   fixture   the AR-shaped folder of tests/environment_helpers.py with AR's defaults (no
#             task.toml: CUDA, its own uv.lock environment, a hub kernel): `task check`, then
#             `task run --trust sandboxed`; then tests/test_environments.py (a real sandboxed
#             worker) when pytest is importable;
#   ar        the real karpathy/autoresearch checkout, copied beforehand into .ar-checkout/
#             (ignored by git): `task check`, then `task run --trust sandboxed`. Offline its
#             environment build stops at the first package it must download: the summary
#             records how far it got;
#   nanochat  tasks/nanochat through `task run --trust sandboxed`, budget 60 s.
#
# Prepare here, online, once:
#   bash bench/device_wheels.sh      (.whl/: the coordinator's packages, uv, pytest)
#   mkdir -p .ar-checkout && git -C /work/.mirror/karpathy+autoresearch/repo archive HEAD \
#     | tar -x -C .ar-checkout
# Then, with the device tool: command "bash bench/ar_check.sh", carry [".whl", ".ar-checkout"],
# timeout_s 580. Output: $OUT/summary.txt and one file per step.
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/device-out}"
PY="${PYTHON:-python3}"
SITE=/tmp/autoswarm-site
WORK=/tmp/autoswarm-ar
export PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 LITELLM_LOCAL_MODEL_COST_MAP=True UV_OFFLINE=1
mkdir -p "$OUT"
rm -rf "$WORK" && mkdir -p "$WORK"
say() { printf '%s\n' "$*" | tee -a "$OUT/summary.txt"; }
if ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --disable-pip-version-check --target "$SITE" .whl/*.whl >"$OUT/pip.txt" 2>&1
  export PYTHONPATH="$SITE" PATH="$SITE/bin:$PATH"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
say "== $(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -n 1); $($PY --version 2>&1); uv: $("$PY" -c "from autoswarm.worker.environments import find_uv; print(find_uv())" 2>/dev/null); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"

task() { # NAME ARGS...: `autoswarm task ARGS`, its output in $OUT/NAME.txt
  local name=$1
  shift
  timeout 400 "$PY" -m autoswarm task "$@" >"$OUT/$name.txt" 2>&1
  local rc=$?
  say "-- $name: exit $rc"
  grep -E '^(environment|device|budget|kernels|prepare hosts|build hosts|warning|error)|refused|val_bpb|network_reached|heldout_seen|cache_writable|: (ok|crash|timeout|invalid)|could not be built' \
    "$OUT/$name.txt" | head -n 20 | tee -a "$OUT/summary.txt"
}

"$PY" - "$WORK" <<'PYEOF' >"$OUT/fixture_make.txt" 2>&1 || say "fixture: could not be made (see fixture_make.txt)"
import sys
from pathlib import Path
from tests.environment_helpers import make_ar_fixture
root = Path(sys.argv[1])
make_ar_fixture(root / "fixture", port=9, heldout_glob=f"{root}/local/cache/prepare/*/heldout/*")
PYEOF
task fixture_check check "$WORK/fixture/arfix"
task fixture_run run "$WORK/fixture/arfix" --budget 10 --trust sandboxed --work-dir "$WORK/local"
if "$PY" -c "import pytest" 2>/dev/null; then
  timeout 300 "$PY" -m pytest tests/test_environments.py -q -p no:cacheprovider >"$OUT/pytest.txt" 2>&1
  say "-- pytest tests/test_environments.py: exit $? ($(tail -n 1 "$OUT/pytest.txt"))"
fi
if [ -d .ar-checkout ]; then
  task ar_check check .ar-checkout
  task ar_run run .ar-checkout --trust sandboxed --work-dir "$WORK/ar"
else
  say "-- ar: no .ar-checkout/ carried"
fi
task nanochat_run run tasks/nanochat --budget 60 --trust sandboxed --work-dir "$WORK/nanochat"
