"""One import root: everything installed is `autoswarm.*`, and every process we start names
its module under it (docs/architecture.md, the pieces)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OLD_ROOTS = ("coordinator", "worker", "shared")


def _sources() -> list[Path]:
    return [p for folder in ("autoswarm", "tests", "bench") for p in (REPO / folder).rglob("*.py")]


def test_the_only_package_installed_is_autoswarm() -> None:
    """pyproject installs `autoswarm*` alone, and the repository has no other package at its
    top (a researcher's own `worker/` or `shared/` cannot be shadowed by ours)."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["packages"]["find"]["include"] == ["autoswarm*"]
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    assert packages <= {"autoswarm", "tests"}, packages


def test_no_module_imports_a_top_level_name_of_ours_other_than_autoswarm() -> None:
    """No `import worker`, `from shared ...` or `from coordinator ...` anywhere."""
    pattern = re.compile(rf"^\s*(from|import) ({'|'.join(OLD_ROOTS)})\b", re.M)
    found = [str(p.relative_to(REPO)) for p in _sources() if pattern.search(p.read_text())]
    assert not found


def test_every_process_we_start_names_its_module_under_autoswarm() -> None:
    """`python -m worker` or `-m coordinator` would import whatever the user's folder holds
    under that name: every start says `-m autoswarm...`."""
    pattern = re.compile(rf"""["']-m["'],\s*["']({"|".join(OLD_ROOTS)})\b""")
    found = [str(p.relative_to(REPO)) for p in _sources() if pattern.search(p.read_text())]
    assert not found
