"""The bundle cache: task files by bundle hash on disk, verified every time they are used.

Layout under the cache folder:
- `bundles/<hash>.json` — the bundle as it came over the wire (`{path: base64}`);
- `tasks/<hash>/` — the task folder written from it, files read-only.

A bundle is fetched once per hash, written atomically, and checked against its hash on every
load; a cached bundle or task folder that no longer matches (a flipped bit, an edit by hand)
is thrown away and rebuilt, never used. Nothing is evicted: a task version is a few hundred
kilobytes.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

from autoswarm.shared.client import BundleMismatch, check_bundle_path, decode_bundle
from autoswarm.shared.task import hash_files
from autoswarm.worker.outbox import write_atomic

logger = logging.getLogger(__name__)

_HASH = re.compile(r"^[0-9a-f]{16,128}$")


def check_bundle_hash(bundle_hash: str) -> str:
    if not _HASH.match(bundle_hash):
        raise BundleMismatch(f"bundle hash {bundle_hash!r} is not a hex digest")
    return bundle_hash


class BundleCache:
    """Task folders by bundle hash (see module doc); safe for several slots and processes."""

    def __init__(self, root: Path) -> None:
        self.bundles = root / "bundles"
        self.tasks = root / "tasks"
        self.bundles.mkdir(parents=True, exist_ok=True)
        self.tasks.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def bundle_path(self, bundle_hash: str) -> Path:
        return self.bundles / f"{check_bundle_hash(bundle_hash)}.json"

    def load(self, bundle_hash: str) -> dict[str, bytes] | None:
        """The cached bundle's files if present and intact; a corrupt one is deleted."""
        path = self.bundle_path(bundle_hash)
        try:
            body = json.loads(path.read_bytes())
            return decode_bundle(bundle_hash, {"files": body})
        except FileNotFoundError:
            return None
        except (ValueError, BundleMismatch) as exc:
            logger.warning("bundle cache %s: dropping corrupt %s: %s", self.bundles, path.name, exc)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            return None

    def store(self, bundle_hash: str, files: dict[str, bytes]) -> None:
        body = {p: base64.b64encode(content).decode() for p, content in files.items()}
        write_atomic(self.bundle_path(bundle_hash), json.dumps(body).encode())

    def get(self, bundle_hash: str, fetch: Callable[[str], dict[str, bytes]]) -> dict[str, bytes]:
        """The bundle's files, from the cache or else from `fetch` (which must verify them)."""
        files = self.load(bundle_hash)
        if files is None:
            files = fetch(bundle_hash)
            if hash_files(files) != bundle_hash:
                raise BundleMismatch(f"bundle {bundle_hash}: fetched content hashes otherwise")
            self.store(bundle_hash, files)
        return files

    def task_dir(self, bundle_hash: str, fetch: Callable[[str], dict[str, bytes]]) -> Path:
        """A task folder holding exactly the bundle's files, verified now."""
        files = self.get(bundle_hash, fetch)
        final = self.tasks / check_bundle_hash(bundle_hash)
        with self._lock:
            if _matches(final, files):
                return final
            if final.exists():
                logger.warning("bundle cache %s: %s changed, rebuilding", self.tasks, final.name)
            tmp = Path(tempfile.mkdtemp(prefix=f".{bundle_hash[:16]}-", dir=self.tasks))
            _write_files(tmp, files)
            trash = self.tasks / f".trash-{bundle_hash[:16]}-{uuid.uuid4().hex[:12]}"
            with contextlib.suppress(FileNotFoundError):
                os.replace(final, trash)
            try:
                os.replace(tmp, final)
            except OSError:  # another process put its copy there first
                shutil.rmtree(tmp, ignore_errors=True)
            shutil.rmtree(trash, ignore_errors=True)
        if not _matches(final, files):
            raise BundleMismatch(f"task folder {final} does not match bundle {bundle_hash}")
        return final


def _write_files(root: Path, files: dict[str, bytes]) -> None:
    for rel, content in files.items():
        path = root / check_bundle_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o444)
    root.chmod(0o755)


def _matches(folder: Path, files: dict[str, bytes]) -> bool:
    try:
        return all((folder / rel).read_bytes() == content for rel, content in files.items())
    except OSError:
        return False
