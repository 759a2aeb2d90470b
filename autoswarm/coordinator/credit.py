"""Credit for contributors: work done, normalised by hardware class, plus kept changes.

The formula, published on the contributors page (`FORMULA`):

    credit = sum over runs of  min(lease_s, budget_s) * f(class)
           + sum over kept changes of  KEPT_BONUS_RUNS * budget_s * f(class)

- a run counts once its result stands (the experiment is done, or dead after reporting);
  `lease_s` is the coordinator's own clock from lease to report, so a worker cannot claim
  more time than it held the lease, and no run counts more than its task's budget;
- `f(class)` is fixed per hardware class, relative to the reference (an H100: 1.0), from
  the class's dense bf16 tensor throughput (CPUs: per core). A fast GPU is paid for the
  compute its budget represents, not for the score its speed bought; scores are never
  compared across classes anyway;
- a kept change (its explore or merge experiment was kept) earns its worker's owner the
  bonus: as much as KEPT_BONUS_RUNS more budgeted runs on that class;
- credit is in reference seconds (one second of an H100);
- teams: an owner named `team/name` (the token's name) counts toward team `team`.
"""

from __future__ import annotations

import re

KEPT_BONUS_RUNS = 10.0
REFERENCE = "cuda:NVIDIA-H100"
# Per CPU core, for `cpu:<machine>-<N>c` classes.
CPU_CORE_FACTOR = 0.002
CPU_MAX_FACTOR = 0.25
UNKNOWN_GPU_FACTOR = 0.1

# (label, pattern searched in the class, factor), first match wins. Dense bf16 tensor
# TFLOPS relative to an H100 SXM (989): H200 shares its compute, A100 312, L40S 362, ...
GPU_FACTORS: tuple[tuple[str, str, float], ...] = (
    ("B200, GB200", "GB200|B200", 2.25),
    ("H100, H200, GH200", "H200|H100|GH200", 1.0),
    ("L40S", "L40S", 0.37),
    ("A100", "A100", 0.32),
    ("RTX 4090", "RTX-?4090", 0.17),
    ("L40", "L40", 0.18),
    ("A40, RTX A6000", "A6000|A40", 0.15),
    ("A10, A10G", "A10G|A10", 0.13),
    ("V100", "V100", 0.13),
    ("L4", "L4", 0.12),
    ("RTX 3090", "RTX-?3090", 0.07),
    ("T4", "T4", 0.07),
)

FORMULA = (
    "credit = sum over runs of min(lease_s, budget_s) * f(class) "
    f"+ sum over kept changes of {KEPT_BONUS_RUNS:g} * budget_s * f(class); "
    "f(class) is fixed per hardware class relative to an H100 = 1.0 (dense bf16 throughput; "
    f"CPUs {CPU_CORE_FACTOR:g} per core); credit is in H100-seconds; "
    "an owner named team/name counts toward the team."
)

_CORES = re.compile(r"-(\d+)c$")


def class_factor(hardware: str) -> float:
    """The fixed factor of one hardware class, relative to the reference (1.0)."""
    if hardware.startswith("cpu:"):
        found = _CORES.search(hardware)
        cores = int(found.group(1)) if found else 1
        return min(CPU_MAX_FACTOR, CPU_CORE_FACTOR * max(1, cores))
    name = hardware.upper()
    for _, pattern, factor in GPU_FACTORS:
        if re.search(pattern, name):
            return factor
    return UNKNOWN_GPU_FACTOR


def team_of(owner: str) -> str:
    """The team of an owner named `team/name`; '' for an owner without a team."""
    team, sep, name = owner.partition("/")
    return team if sep and team and name else ""


def run_credit(lease_s: float, budget_s: float, hardware: str) -> tuple[float, float]:
    """(credit, seconds counted) of one run whose result stands."""
    counted = max(0.0, min(lease_s, budget_s))
    return counted * class_factor(hardware), counted


def kept_bonus(budget_s: float, hardware: str) -> float:
    """The bonus of one kept change measured on this class."""
    return KEPT_BONUS_RUNS * budget_s * class_factor(hardware)


def factor_table() -> list[tuple[str, float]]:
    """The published table: (hardware, factor)."""
    rows = [(label, factor) for label, _, factor in GPU_FACTORS]
    rows.append(("other CUDA GPUs", UNKNOWN_GPU_FACTOR))
    rows.append((f"CPU, per core (at most {CPU_MAX_FACTOR:g})", CPU_CORE_FACTOR))
    return rows
