"""Running `autoswarm` in the test's own process."""

from __future__ import annotations

import logging

from typer.testing import CliRunner, Result

from autoswarm.cli.app import app


def invoke(*args: str) -> Result:
    """`autoswarm ARGS` in this process; the root logger is put back as it was after (the
    CLI points it at the runner's stream, which closes, while the coordinator logs on)."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        return CliRunner().invoke(app, list(args), catch_exceptions=False)
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
