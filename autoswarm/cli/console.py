"""The CLI's rich consoles (results to stdout, talk to stderr), and `plain` for text from
outside: run logs, errors, hypotheses, names."""

from __future__ import annotations

import re

from rich.console import Console
from rich.text import Text

console = Console()
err_console = Console(stderr=True)

# C0 controls but \t and \n, DEL, C1 controls (ESC starts every escape sequence; CSI is
# also \x9b), and the bidirectional overrides that reorder what a line appears to say.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def plain(text: str) -> Text:
    """`text` to print as it was written: control characters removed (no escape sequence of a
    run's reaches the terminal), newlines and tabs kept; a `Text`, so rich reads no markup in
    it and highlights nothing."""
    return Text(_UNPRINTABLE.sub("", text))


def print_error(message: str) -> None:
    """A user's error as one line on stderr (`error: ...`, never wrapped at the terminal's
    width): what went wrong and what to do."""
    err_console.print(Text("error: ", style="red") + plain(message), soft_wrap=True)
