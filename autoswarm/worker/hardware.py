"""Hardware detection: what this machine has, its hardware class, which GPUs a worker uses.

CUDA devices are read through torch in a short child process: the worker never imports
torch nor holds a CUDA context on a GPU its runs need. Without torch, or without CUDA, the
machine is a CPU machine and `note` says why.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from autoswarm.shared.errors import InvalidInput

logger = logging.getLogger(__name__)

DETECT_TIMEOUT_S = 120.0
_PROBE = """
import json
try:
    import torch
except Exception as exc:
    print(json.dumps({"note": f"torch is not importable ({type(exc).__name__}: {exc})"}))
    raise SystemExit(0)
if torch.version.cuda is None:
    print(json.dumps({"note": f"torch {torch.__version__} is a CPU build"}))
elif not torch.cuda.is_available():
    print(json.dumps({"note": f"torch {torch.__version__} sees no CUDA device"}))
else:
    gpus = []
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        gpus.append({"index": i, "name": p.name, "memory_mb": p.total_memory // 2**20})
    note = f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    print(json.dumps({"gpus": gpus, "note": note}))
"""


@dataclass(frozen=True, slots=True)
class GpuInfo:
    """One CUDA device as torch numbers it (after CUDA_VISIBLE_DEVICES)."""

    index: int
    name: str
    memory_mb: int

    @property
    def hardware_class(self) -> str:
        return f"cuda:{normalise(self.name)}"


@dataclass(frozen=True, slots=True)
class HardwareInfo:
    """What this machine offers for experiments."""

    machine: str
    cpu_count: int
    gpus: tuple[GpuInfo, ...] = ()
    note: str = ""

    @property
    def cpu_class(self) -> str:
        return f"cpu:{normalise(self.machine)}-{self.cpu_count}c"

    @property
    def hardware_class(self) -> str:
        """The class of the first GPU, else of the CPU (e.g. `cuda:NVIDIA-H100-80GB-HBM3`)."""
        return self.gpus[0].hardware_class if self.gpus else self.cpu_class

    def describe(self) -> str:
        """One line a volunteer can read: what was found, and why no GPU if none."""
        if not self.gpus:
            cpu = f"CPU {self.machine}, {self.cpu_count} cores"
            return f"no GPU ({self.note}); {cpu}: {self.cpu_class}"
        found = ", ".join(
            f"{g.index}: {g.name} ({g.memory_mb / 1024:.0f} GiB) {g.hardware_class}"
            for g in self.gpus
        )
        return f"{len(self.gpus)} GPU(s) [{found}]; {self.note}"


def normalise(name: str) -> str:
    """A device name as a hardware class writes it: runs of spaces become one dash."""
    return re.sub(r"[^A-Za-z0-9._-]", "", re.sub(r"\s+", "-", name.strip())) or "unknown"


def cpu_count() -> int:
    """CPUs this process may use (its affinity), not those of the host."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def detect_hardware(*, python: str = sys.executable) -> HardwareInfo:
    """This machine's CPU and CUDA devices; never raises (a failed probe means CPU only)."""
    machine, cpus = platform.machine() or "unknown", cpu_count()
    try:
        done = subprocess.run(
            [python, "-c", _PROBE],
            capture_output=True,
            text=True,
            timeout=DETECT_TIMEOUT_S,
            check=False,
        )
        probe: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError) as exc:
        logger.warning("hardware: the CUDA probe failed, using the CPU: %s", exc)
        return HardwareInfo(machine, cpus, note=f"the CUDA probe failed: {exc}")
    gpus = tuple(
        GpuInfo(int(g["index"]), str(g["name"]), int(g["memory_mb"])) for g in probe.get("gpus", ())
    )
    info = HardwareInfo(machine, cpus, gpus, str(probe.get("note", "")))
    logger.info("hardware: %s", info.describe())
    return info


def select_gpus(spec: str | None, *, count: int) -> tuple[int, ...]:
    """The GPU indices a `--gpus` value names: `0,1`, `all` (or None), or `none`."""
    if spec is None or spec.strip().lower() == "all":
        return tuple(range(count))
    if spec.strip().lower() in ("none", ""):
        return ()
    try:
        indices = tuple(int(part) for part in spec.split(","))
    except ValueError:
        raise InvalidInput(f"--gpus: {spec!r} is not a list of GPU indices like 0,1") from None
    for index in indices:
        if not 0 <= index < count:
            raise InvalidInput(f"--gpus: GPU {index} does not exist here ({count} found)")
    if len(set(indices)) != len(indices):
        raise InvalidInput(f"--gpus: {spec!r} names a GPU twice")
    return indices


class VramSampler:
    """GPU memory used by a set of processes, through NVML when `pynvml` imports.

    Best effort: returns None without NVML, and sees only processes NVML reports by the
    same pids this machine's /proc uses.
    """

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml  # optional: nvidia-ml-py

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
        except Exception as exc:  # no library, no driver: no sampling
            logger.debug("hardware: no NVML, VRAM comes from the summary only: %s", exc)

    @property
    def available(self) -> bool:
        return self._nvml is not None

    def __call__(self, pids: Sequence[int]) -> float | None:
        """Total VRAM in MiB used by `pids` on all devices, or None when unknown."""
        if self._nvml is None:
            return None
        wanted, used = set(pids), 0
        try:
            for handle in self._handles:
                for proc in self._nvml.nvmlDeviceGetComputeRunningProcesses(handle):
                    if proc.pid in wanted and proc.usedGpuMemory:
                        used += proc.usedGpuMemory
        except Exception as exc:  # a driver hiccup must not end a run
            logger.debug("hardware: NVML sampling failed: %s", exc)
            return None
        return used / 2**20
