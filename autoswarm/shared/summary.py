"""The summary block parser: `---` then `key: value` lines, as karpathy/autoresearch prints.

Tolerance matches the original `grep "^val_bpb:" run.log`: a key counts only at the
start of a line, spaces around the value are ignored, and when a key appears more than
once the last occurrence wins. Lines after the last `---` are preferred; with no `---`
at all the whole log is read, as grep would. Values that are not numbers are ignored.
"""

from __future__ import annotations

import math
import re

from autoswarm.shared.errors import SummaryError
from autoswarm.shared.wire import MAX_METRIC_NAME_CHARS, MAX_METRICS

_LINE = re.compile(r"^([A-Za-z_][A-Za-z0-9_.]*):[ \t]*([^ \t\r\n]+)[ \t\r]*$")
_SEPARATOR = re.compile(r"^-{3,}[ \t\r]*$")


def parse_summary(log: str) -> dict[str, float]:
    """All numeric `key: value` pairs of the summary block (non-finite values kept)."""
    lines = log.splitlines()
    start = 0
    for i, line in enumerate(lines):
        if _SEPARATOR.match(line):
            start = i + 1
    found = _scan(lines[start:])
    if not found and start:
        found = _scan(lines)
    return found


def _scan(lines: list[str]) -> dict[str, float]:
    found: dict[str, float] = {}
    for line in lines:
        m = _LINE.match(line)
        if not m:
            continue
        try:
            found[m.group(1)] = float(m.group(2))
        except ValueError:
            continue
    return found


def read_metric(log: str, name: str) -> tuple[float, dict[str, float]]:
    """The named metric and all metrics; `SummaryError` if missing, NaN or infinite."""
    metrics = parse_summary(log)
    if name not in metrics:
        raise SummaryError(f"metric {name!r} missing from the summary block")
    value = metrics[name]
    if math.isnan(value):
        raise SummaryError(f"metric {name!r} is NaN")
    if math.isinf(value):
        raise SummaryError(f"metric {name!r} is infinite")
    # What a result carries on the wire: finite, short names, at most MAX_METRICS of them.
    fit = [
        (k, v) for k, v in metrics.items() if math.isfinite(v) and len(k) <= MAX_METRIC_NAME_CHARS
    ]
    return value, dict(fit[:MAX_METRICS])
