"""The summary block parser."""

from __future__ import annotations

import pytest

from autoswarm.shared.errors import SummaryError
from autoswarm.shared.summary import parse_summary, read_metric

KARPATHY_BLOCK = """step 00953 (100.0%) | loss: 3.0 | lrm: 0.00 | dt: 315ms
---
val_bpb:          0.997900
training_seconds: 300.1
total_seconds:    325.9
peak_vram_mb:     45060.2
mfu_percent:      39.80
total_tokens_M:   499.6
num_steps:        953
num_params_M:     50.3
depth:            8
"""


def test_reads_karpathy_summary_block() -> None:
    """Every key of karpathy/autoresearch's block is read with its padded value."""
    metrics = parse_summary(KARPATHY_BLOCK)
    assert metrics["val_bpb"] == pytest.approx(0.9979)
    assert metrics["num_steps"] == 953
    assert metrics["peak_vram_mb"] == pytest.approx(45060.2)


def test_last_block_wins() -> None:
    """With two blocks, the values after the last `---` count."""
    log = "---\nval_bpb: 2.0\nsome log\n---\nval_bpb: 1.5\n"
    assert read_metric(log, "val_bpb")[0] == 1.5


def test_without_separator_reads_like_grep() -> None:
    """No `---` at all: a key at the start of any line is found, as grep would."""
    assert read_metric("noise\nval_bpb: 1.25\nmore noise\n", "val_bpb")[0] == 1.25


def test_key_must_start_the_line() -> None:
    """An indented or embedded key does not count, as `grep "^val_bpb:"` would not."""
    with pytest.raises(SummaryError, match="missing"):
        read_metric("---\n  val_bpb: 1.0\nfoo val_bpb: 2.0\n", "val_bpb")


def test_separator_with_no_metric_falls_back_to_whole_log() -> None:
    """A stray `---` after the block does not hide the metric printed before it."""
    assert read_metric("---\nval_bpb: 0.9\n---\ntrailing\n", "val_bpb")[0] == 0.9


def test_missing_metric_is_an_explicit_error() -> None:
    """A block without the metric raises SummaryError naming it."""
    with pytest.raises(SummaryError, match="'val_bpb' missing"):
        read_metric("---\nloss: 1.0\n", "val_bpb")


@pytest.mark.parametrize("text", ["nan", "NaN", "-nan"])
def test_nan_is_an_explicit_error(text: str) -> None:
    """NaN metrics are rejected by name."""
    with pytest.raises(SummaryError, match="NaN"):
        read_metric(f"---\nval_bpb: {text}\n", "val_bpb")


@pytest.mark.parametrize("text", ["inf", "-inf", "Infinity"])
def test_infinite_is_an_explicit_error(text: str) -> None:
    """Infinite metrics are rejected by name."""
    with pytest.raises(SummaryError, match="infinite"):
        read_metric(f"---\nval_bpb: {text}\n", "val_bpb")


def test_non_numeric_values_are_ignored() -> None:
    """`device: cuda` in the block does not break parsing of numbers."""
    value, metrics = read_metric("---\ndevice: cuda\nval_bpb: 1.1\n", "val_bpb")
    assert value == 1.1
    assert "device" not in metrics


def test_carriage_returns_are_tolerated() -> None:
    """A log written with CRLF line endings parses the same."""
    assert read_metric("---\r\nval_bpb:   0.8  \r\n", "val_bpb")[0] == 0.8
