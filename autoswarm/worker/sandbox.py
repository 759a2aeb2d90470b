"""The sandbox seam: how a command is wrapped before it runs, and the environment it gets.

The runner prepares a work folder, builds the environment with `scrub_env`, and asks a
`Sandbox` to turn the command's argv into one that runs confined. Implementations live in
their own modules; `Unsandboxed` is the one that confines nothing.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol, runtime_checkable

logger = logging.getLogger(__name__)

# Passed through from the worker's environment when present; everything else is dropped.
SAFE_ENV_NAMES = frozenset(
    {
        "PATH",
        "LANG",
        "LANGUAGE",
        "LC_ALL",
        "LC_CTYPE",
        "TZ",
        "TERM",
        "CUDA_VISIBLE_DEVICES",
        "CUDA_DEVICE_ORDER",
        "CUDA_HOME",
        "NVIDIA_VISIBLE_DEVICES",
        "NVIDIA_DRIVER_CAPABILITIES",
        "LD_LIBRARY_PATH",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "PYTHONHASHSEED",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
        "PYTHONIOENCODING",
        "PYTHONUTF8",
    }
)
# A name matching this never reaches a run, even when allowed explicitly.
SECRET_NAME = re.compile(
    r"TOKEN|SECRET|PASSW|CREDENTIAL|API_?KEY|ACCESS_?KEY|PRIVATE|AUTH|COOKIE|SESSION",
    re.IGNORECASE,
)
# The runner sets its own AUTOSWARM_* variables; the worker's (its token among them) stay out.
OWN_PREFIX = "AUTOSWARM_"
DEFAULTS = {
    "PATH": "/usr/local/bin:/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONUNBUFFERED": "1",  # the log tail must be current when the run is killed
    "PYTHONDONTWRITEBYTECODE": "1",
}


def is_secret_name(name: str) -> bool:
    """True for a variable name that looks like it holds a token, key or password."""
    return bool(SECRET_NAME.search(name))


def scrub_env(
    env: Mapping[str, str],
    *,
    home: Path,
    tmp_dir: Path,
    allow: Iterable[str] = (),
) -> dict[str, str]:
    """The allow-listed environment of a run: safe names from `env`, HOME and TMPDIR set.

    Guarantees: only names in `SAFE_ENV_NAMES` or `allow` pass; a secret-looking name or an
    `AUTOSWARM_*` one never does. Values are passed as they are.
    """
    allowed = SAFE_ENV_NAMES | set(allow)
    out = dict(DEFAULTS)
    for name, value in env.items():
        if name in allowed and not is_secret_name(name) and not name.startswith(OWN_PREFIX):
            out[name] = value
    out["HOME"] = str(home)
    out["TMPDIR"] = str(tmp_dir)
    return out


@runtime_checkable
class Sandbox(Protocol):
    """Confines one command to its work folder.

    An implementation guarantees, for the argv that `wrap` returns:
    - `work_dir` and the `writable` paths are writable; the `readonly` paths are visible
      read-only, also where they lie inside a writable one (the run's `data/` and protected
      files lie inside its work folder);
    - no other file of the host is writable, and none is visible beyond what the command
      needs to run (system libraries, the interpreter);
    - no network, and the environment is exactly `env`;
    - nothing inside survives when the wrapped process is killed.
    It does not enforce the budget or the resource limits: the runner does, from outside.
    """

    name: str

    def wrap(
        self,
        argv: Sequence[str],
        *,
        work_dir: Path,
        readonly: Sequence[Path],
        writable: Sequence[Path],
        env: Mapping[str, str],
        carry: Sequence[Path] = (),
    ) -> list[str]:
        """The argv that runs `argv` confined, with `work_dir` as its working folder; the
        folders `carry` (inside `work_dir`) hold what the host reads once it has ended."""
        ...


class Unsandboxed:
    """No confinement at all: the command runs as the worker's own user. For trusted code only.

    The runner's other guarantees still hold (scrubbed environment, budget, limits, the whole
    process tree killed), and read-only modes keep honest code from writing where it should
    not; code that means harm can read and write anything the worker can.
    """

    name = "none"

    def wrap(
        self,
        argv: Sequence[str],
        *,
        work_dir: Path,
        readonly: Sequence[Path],
        writable: Sequence[Path],
        env: Mapping[str, str],
        carry: Sequence[Path] = (),
    ) -> list[str]:
        """`argv` unchanged."""
        return list(argv)
