"""Registering tasks: from a folder on disk (`autoswarm up`) or from uploaded files (the
admin endpoint). Idempotent: the same files register to the same task; other files under
a registered name are refused."""

from __future__ import annotations

import base64
import binascii
import logging
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from autoswarm.coordinator.heads import INIT_BRANCH
from autoswarm.coordinator.lineage import Lineage
from autoswarm.coordinator.models import TaskRecord
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.shared.errors import Conflict, InvalidInput, PayloadTooLarge
from autoswarm.shared.models import MAX_FILE_BYTES
from autoswarm.shared.task import TaskSpec, hash_files, load_task, read_task_files

logger = logging.getLogger(__name__)

# A task's largest single file (bytes): protected files may carry data, unlike changes.
MAX_TASK_FILE_BYTES = 16 * 1024 * 1024
MAX_TASK_FILES = 1000
_OTHER_FILES = "task {name} is registered with other files; register it under a new name"


def register_task(store: Store, settings: CoordinatorSettings, task_dir: str | Path) -> TaskRecord:
    """Load a task folder and register it (see module doc); raises `TaskError` if broken."""
    spec = load_task(task_dir)
    files = read_task_files(task_dir, spec)
    return register_task_files(store, settings, spec, files)


def register_task_files(
    store: Store, settings: CoordinatorSettings, spec: TaskSpec, files: dict[str, bytes]
) -> TaskRecord:
    """Register a loaded task: its bundle, its lineage's first commit, its record."""
    total = sum(len(content) for content in files.values())
    if total > settings.max_task_bytes:
        raise PayloadTooLarge(f"task {spec.name}: {total} bytes > {settings.max_task_bytes}")
    for path in spec.editable:
        if len(files.get(path, b"")) > MAX_FILE_BYTES:
            raise PayloadTooLarge(f"task {spec.name}: editable {path} > {MAX_FILE_BYTES} bytes")
    # Every refusal comes before the first write: a refused task leaves no blob behind.
    bundle_hash = hash_files(files)
    known = store.get_task(spec.name)
    if known is not None and known.bundle_hash != bundle_hash:
        raise Conflict(_OTHER_FILES.format(name=spec.name))
    lineage = Lineage(settings.lineage_dir, spec.name)
    commit = lineage.init(files, branch=INIT_BRANCH, message=f"{spec.name}: the task as registered")
    if hash_files(lineage.files_at(commit)) != bundle_hash:
        raise Conflict(_OTHER_FILES.format(name=spec.name))
    store.put_bundle(files)
    outcome = store.record_task(
        spec.name,
        spec_json=spec.model_dump_json(),
        bundle_hash=bundle_hash,
        init_commit=commit,
        now=time.time(),
    )
    if outcome < 0:  # registered with other files since it was read, above
        raise Conflict(_OTHER_FILES.format(name=spec.name))
    store.heldout_secret(spec.name)  # made now, so every lease of the task carries one
    if outcome:
        logger.info("task %s: registered at %s (bundle %s)", spec.name, commit, bundle_hash)
    task = store.get_task(spec.name)
    if task is None:  # pragma: no cover - recorded just above
        raise Conflict(f"task {spec.name} vanished while registering")
    return task


def _check_upload_path(path: str) -> str:
    p = PurePosixPath(path)
    bad = (
        not path
        or len(path) > 255
        or p.is_absolute()
        or "\\" in path
        or "\0" in path
        or any(part in ("", ".", "..") for part in path.split("/"))
        or any(part.startswith(".git") for part in p.parts)
    )
    if bad:
        raise InvalidInput(f"file path {path!r} is not a relative path inside the task folder")
    return path


def _check_no_file_is_a_folder(paths: Iterable[str]) -> None:
    """Refuse `x` beside `x/y`: one name cannot be a file and a folder."""
    files = set(paths)
    for path in sorted(files):
        parts = path.split("/")
        for depth in range(1, len(parts)):
            folder = "/".join(parts[:depth])
            if folder in files:
                raise InvalidInput(f"file path {folder!r} is also a folder of {path!r}")


def decode_upload(files: dict[str, str], max_total: int) -> dict[str, bytes]:
    """Uploaded `{path: base64}`, checked: relative paths, file and total sizes."""
    if len(files) > MAX_TASK_FILES:
        raise PayloadTooLarge(f"{len(files)} files > {MAX_TASK_FILES}")
    out: dict[str, bytes] = {}
    total = 0
    for path in files:
        _check_upload_path(path)
    _check_no_file_is_a_folder(files)
    for path, encoded in files.items():
        try:
            content = base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise InvalidInput(f"file {path!r} is not base64") from None
        if len(content) > MAX_TASK_FILE_BYTES:
            raise PayloadTooLarge(f"file {path!r}: {len(content)} bytes > {MAX_TASK_FILE_BYTES}")
        total += len(content)
        if total > max_total:
            raise PayloadTooLarge(f"task files: more than {max_total} bytes")
        out[path] = content
    return out


def register_task_upload(
    store: Store, settings: CoordinatorSettings, files: dict[str, str]
) -> TaskRecord:
    """Register a task from uploaded files; the spec is read from them as from a folder."""
    decoded = decode_upload(files, settings.max_task_bytes)
    with tempfile.TemporaryDirectory(prefix="autoswarm-task-") as tmp:
        root = Path(tmp) / "task"
        for path, content in decoded.items():
            target = root / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
        root.mkdir(exist_ok=True)
        spec = load_task(root)
        task_files = read_task_files(root, spec)
    return register_task_files(store, settings, spec, task_files)
