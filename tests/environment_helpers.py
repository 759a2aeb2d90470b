"""An autoresearch-shaped task folder for tests with no GPU and no network.

Like karpathy/autoresearch: pyproject.toml + uv.lock, prepare.py writing to
~/.cache/<name>/, train.py reading it, importing a package the worker lacks (`kernels`,
a tiny wheel built here into a find-links folder) and loading a "kernel" with
`kernels.get_kernel` from a hub-style cache at import, program.md saying `uv run train.py`.
The fake `kernels` downloads from a local folder baked into the wheel (the "hub"), which
only the prepare phase can see, unless HF_HUB_OFFLINE is set.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
import zipfile
from dataclasses import dataclass
from pathlib import Path

from autoswarm.worker.environments import find_uv
from tests.task_helpers import write_task

NAME = "arfix"
KERNEL_REPO = "kernels-community/tiny-attn"

KERNELS_INIT = '''\
"""A stand-in for the hub's `kernels`: get_kernel loads kernel.py from the hub cache."""
import importlib.util, os, shutil
REMOTE = {remote!r}  # the "hub": a folder only the prepare phase can read


def get_kernel(repo_id):
    org, name = repo_id.split("/")
    cache = os.path.join(os.path.expanduser("~"), ".cache", "huggingface")
    home = os.environ.get("HF_HOME") or cache
    folder = os.path.join(home, "hub", f"models--{{org}}--{{name}}")
    ref = os.path.join(folder, "refs", "main")
    if not os.path.isfile(ref):
        if os.environ.get("HF_HUB_OFFLINE") == "1":
            raise OSError(f"{{repo_id}} is not in the hub cache and HF_HUB_OFFLINE is set")
        snapshot = os.path.join(folder, "snapshots", "c0ffee")
        shutil.copytree(os.path.join(REMOTE, org, name), snapshot)
        os.makedirs(os.path.dirname(ref), exist_ok=True)
        with open(ref, "w") as f:
            f.write("c0ffee")
    with open(ref) as f:
        revision = f.read().strip()
    path = os.path.join(folder, "snapshots", revision, "kernel.py")
    spec = importlib.util.spec_from_file_location(name.replace("-", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
'''
KERNEL = """\
def score(text):
    return len(text) / 1000.0
"""
PYPROJECT = f'''\
[project]
name = "{NAME}"
version = "0.1.0"
requires-python = ">=3.10"
dependencies = ["kernels==0.0.1"]
'''
PREPARE = '''\
"""Downloads nothing: writes a shard and a held-out answer, as AR's prepare.py would."""
import os
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "{name}")  # where train.py reads
os.makedirs(CACHE_DIR, exist_ok=True)
with open(os.path.join(CACHE_DIR, "shard.txt"), "w") as f:
    f.write("hello autoresearch " * 100)
heldout = os.environ.get("AUTOSWARM_HELDOUT_DIR")
if heldout:
    with open(os.path.join(heldout, "answers.txt"), "w") as f:
        f.write("the held-out answers")
print("prepared", CACHE_DIR)
'''
TRAIN = '''\
"""Trains nothing: reads prepare's shard through a hub kernel and probes its sandbox."""
import glob, os, socket
from kernels import get_kernel
attn = get_kernel("{repo}")  # at import, like AR's flash attention 3
CACHE_DIR = os.path.join(os.path.expanduser("~"), ".cache", "{name}")
HOST_PORT = {port}  # a listener on the host's loopback
HELDOUT_GLOB = {heldout_glob!r}  # where the worker keeps held-out data
with open(os.path.join(CACHE_DIR, "shard.txt")) as f:
    text = f.read()
try:
    with open(os.path.join(CACHE_DIR, "shard.txt"), "a") as f:
        f.write("changed by a run")
    cache_writable = 1
except OSError:
    cache_writable = 0
try:
    socket.create_connection(("127.0.0.1", HOST_PORT), timeout=2).close()
    network = 1
except OSError:
    network = 0
heldout = len(glob.glob(HELDOUT_GLOB))
print("---")
print(f"val_bpb:          {{attn.score(text):.6f}}")
print(f"cache_writable:   {{cache_writable}}")
print(f"network_reached:  {{network}}")
print(f"heldout_seen:     {{heldout}}")
'''
PROGRAM = "# arfix\n\nRun `uv run train.py`; lower val_bpb is better.\n"


def build_wheel(folder: Path, name: str, version: str, files: dict[str, str]) -> Path:
    """A pure-Python wheel holding `files` (path: text), written by hand: no build backend,
    no network."""
    info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    record = []
    for path, text in contents.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.append(f"{path},sha256={encoded},{len(text.encode())}")
    contents[f"{info}/RECORD"] = "\n".join([*record, f"{info}/RECORD,,"]) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        for path, text in contents.items():
            archive.writestr(path, text)
    return wheel


@dataclass(frozen=True)
class ArFixture:
    folder: Path
    wheels: Path
    remote: Path


def uv_or_skip() -> str:
    import pytest  # bench/ar_check.sh makes the fixture where pytest may be absent

    uv = find_uv()
    if uv is None:
        pytest.skip("uv is not installed (pip install uv)")
    return uv


def make_ar_fixture(
    root: Path, *, port: int, heldout_glob: str, task_toml: str | None = None
) -> ArFixture:
    """The AR-shaped folder under `root`, its uv.lock made offline against a find-links
    folder holding the one wheel it needs."""
    uv = find_uv() or uv_or_skip()
    remote = root / "hub-remote"
    kernel = remote / KERNEL_REPO
    kernel.mkdir(parents=True)
    (kernel / "kernel.py").write_text(KERNEL)
    wheels = root / "wheels"
    init = KERNELS_INIT.format(remote=str(remote))
    build_wheel(wheels, "kernels", "0.0.1", {"kernels/__init__.py": init})
    train = TRAIN.format(repo=KERNEL_REPO, name=NAME, port=port, heldout_glob=heldout_glob)
    files = {
        "pyproject.toml": PYPROJECT,
        "prepare.py": PREPARE.format(name=NAME),
        "train.py": train,
        "program.md": PROGRAM,
    }
    folder = write_task(
        root / NAME, files | ({} if task_toml is None else {"task.toml": task_toml})
    )
    subprocess.run(
        [uv, "lock", "--offline", "--no-index", "--find-links", str(wheels)],
        cwd=folder,
        check=True,
        capture_output=True,
        env={"PATH": "/usr/bin:/bin", "UV_CACHE_DIR": str(root / "uv-lock-cache")},
    )
    shutil.rmtree(root / "uv-lock-cache", ignore_errors=True)
    return ArFixture(folder, wheels, remote)
