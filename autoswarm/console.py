"""The CLI's rich consoles: results to stdout, talk to stderr."""

from __future__ import annotations

from rich.console import Console

console = Console()
err_console = Console(stderr=True)
