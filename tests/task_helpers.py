"""The one builder of task folders in tests (`write_task`). Standard library only:
bench/ar_check.sh builds a task where pytest may be absent."""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path

TaskFile = str | bytes | Path  # a file's text, its bytes, or a file to copy


def write_task(folder: Path, files: Mapping[str, TaskFile]) -> Path:
    """A task folder with these files, each by its relative path (its folders made); the
    folder. Every test builds its task folders with this."""
    folder.mkdir(parents=True, exist_ok=True)
    for relative, content in files.items():
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        elif isinstance(content, bytes):
            target.write_bytes(content)
        else:
            target.write_text(content)
    return folder
