"""Exports of a task's experiments: karpathy/autoresearch's results.tsv and progress.png.

The TSV's first five columns are exactly autoresearch's (`commit`, the metric, `memory_gb`,
`status` as keep/discard/crash, `description`), the metric column named after the task's
metric; our own columns follow.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from autoswarm.cli.numbers import DEFAULT_DECIMALS, fixed, signed

EXTRA_COLUMNS = (
    "experiment_id",
    "kind",
    "verdict",
    "hardware",
    "worker_id",
    "proposer",
    "delta",
    "wall_s",
    "finished_at",
)


@dataclass(frozen=True, slots=True)
class ExperimentRow:
    """One experiment as the exports show it."""

    commit: str
    metric: float | None
    memory_gb: float
    status: str  # keep | discard | crash, as autoresearch writes it
    description: str
    experiment_id: str = ""
    kind: str = ""
    verdict: str = ""
    hardware: str = ""
    worker_id: str = ""
    proposer: str = ""
    delta: float | None = None
    wall_s: float | None = None
    finished_at: float | None = None


# autoresearch's results.tsv: the first baseline, then every experiment on a new version.
EXPORT_KINDS = ("baseline", "explore", "merge")


def rows_from_summaries(experiments: Sequence[Mapping[str, Any]]) -> list[ExperimentRow]:
    """results.tsv rows from the read API's experiment summaries (`view=summary`): the
    first finished baseline, then explores and merges as they finished. A kept hypothesis
    that ran as an explore and then as a merge is `keep` on its last run only."""
    done = [
        e
        for e in experiments
        if e.get("state") == "done" and e.get("status") and e.get("kind") in EXPORT_KINDS
    ]
    done = sorted(done, key=lambda e: (e.get("finished_s") or 0.0, e.get("seq") or 0))
    last_run = {e["hypothesis_id"]: e["experiment_id"] for e in done if e.get("hypothesis_id")}
    rows: list[ExperimentRow] = []
    seen_baseline = False
    for exp in done:
        if exp["kind"] == "baseline":
            if seen_baseline:
                continue
            seen_baseline = True
        verdict = exp.get("verdict") or ""
        keeper = last_run.get(exp.get("hypothesis_id") or "", exp["experiment_id"])
        if exp["status"] != "ok":
            status = "crash"
        elif exp["kind"] == "baseline" or (verdict == "kept" and keeper == exp["experiment_id"]):
            status = "keep"
        else:
            status = "discard"
        rows.append(
            ExperimentRow(
                commit=exp.get("code_commit") or exp.get("parent_commit") or "",
                metric=exp.get("metric"),
                memory_gb=(exp.get("memory_mb") or 0.0) / 1024,
                status=status,
                description=exp.get("title") or exp["kind"],
                experiment_id=exp["experiment_id"],
                kind=exp["kind"],
                verdict=verdict,
                hardware=exp.get("hardware") or "",
                worker_id=exp.get("worker_id") or "",
                proposer=exp.get("proposer") or "",
                delta=_against_head(exp),
                wall_s=exp.get("wall_s"),
                finished_at=exp.get("finished_s"),
            )
        )
    return rows


def _against_head(exp: Mapping[str, Any]) -> float | None:
    """The row's metric minus the head mean its reason names (None: not compared)."""
    metric, head = exp.get("metric"), exp.get("head_metric")
    if metric is None or head is None or exp.get("status") != "ok":
        return None
    return float(metric) - float(head)


def _cells(row: ExperimentRow, decimals: int) -> list[str]:
    """One row as people read it: the metric and delta at the noise's decimals
    (`autoswarm.cli.numbers`), seconds to 0.1, the time as ISO 8601 in UTC."""
    metric = fixed(0.0 if row.metric is None else row.metric, decimals)
    head = [row.commit[:7], metric, f"{row.memory_gb:.1f}", row.status, _one_line(row.description)]
    shown: dict[str, str] = {
        "delta": signed(row.delta, decimals),
        "wall_s": "" if row.wall_s is None else f"{row.wall_s:.1f}",
        "finished_at": iso_time(row.finished_at),
    }
    extra = []
    for name in EXTRA_COLUMNS:
        value = getattr(row, name)
        extra.append(shown.get(name, "" if value is None else str(value)))
    return head + extra


def iso_time(seconds: float | None) -> str:
    """`2026-12-07T22:05:42Z` ("" for none)."""
    if seconds is None:
        return ""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def _one_line(text: str) -> str:
    return " ".join(text.replace("\t", " ").split())


def header(metric_name: str) -> list[str]:
    return ["commit", metric_name, "memory_gb", "status", "description", *EXTRA_COLUMNS]


def to_tsv(
    rows: Sequence[ExperimentRow], metric_name: str, decimals: int = DEFAULT_DECIMALS
) -> str:
    """results.tsv: tab-separated, a header, one line per experiment, scores at `decimals`
    (what the task's noise justifies: `autoswarm.cli.numbers.task_decimals`)."""
    lines = ["\t".join(header(metric_name))]
    lines += ["\t".join(_cells(row, decimals)) for row in rows]
    return "\n".join(lines) + "\n"


def to_csv(
    rows: Sequence[ExperimentRow], metric_name: str, decimals: int = DEFAULT_DECIMALS
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header(metric_name))
    for row in rows:
        writer.writerow(_cells(row, decimals))
    return buffer.getvalue()


def to_jsonl(rows: Sequence[ExperimentRow], metric_name: str, decimals: int = 0) -> str:
    """One JSON object per experiment, numbers as measured (`decimals` is not used)."""
    out = []
    for row in rows:
        record = asdict(row)
        record[metric_name] = record.pop("metric")
        out.append(json.dumps(record))
    return "\n".join(out) + ("\n" if out else "")


def write_parquet(rows: Sequence[ExperimentRow], metric_name: str, path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame([asdict(r) for r in rows], columns=list(ExperimentRow.__slots__))
    frame = frame.rename(columns={"metric": metric_name})
    frame.to_parquet(path, index=False)


def plot_progress(
    rows: Sequence[ExperimentRow],
    *,
    metric_name: str,
    lower_is_better: bool,
    path: Path,
    title: str = "",
) -> None:
    """progress.png: every experiment a dot, kept ones highlighted, the running best a step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [(i, r) for i, r in enumerate(rows) if r.status != "crash" and r.metric is not None]
    fig, ax = plt.subplots(figsize=(16, 8))
    discarded = [(i, r.metric) for i, r in scored if r.status != "keep"]
    kept = [(i, r) for i, r in scored if r.status == "keep"]
    if discarded:
        xs, ys = zip(*discarded, strict=True)
        ax.scatter(xs, ys, c="#cccccc", s=12, alpha=0.5, zorder=2, label="Discarded")
    if kept:
        ax.scatter(
            [i for i, _ in kept],
            [r.metric or 0.0 for _, r in kept],
            c="#2ecc71",
            s=50,
            zorder=4,
            edgecolors="black",
            linewidths=0.5,
            label="Kept",
        )
        best_x, best_y = _running_best(kept, lower_is_better)
        best_x.append(max(len(rows) - 1, best_x[-1]))
        best_y.append(best_y[-1])
        ax.step(
            best_x,
            best_y,
            where="post",
            color="#27ae60",
            linewidth=2,
            alpha=0.7,
            zorder=3,
            label="Running best",
        )
        for n, (i, r) in enumerate(kept):
            # Neighbouring kept changes sit close: their labels take turns above and below.
            ax.annotate(
                _one_line(r.description)[:45],
                (i, r.metric),
                textcoords="offset points",
                xytext=(6, 6 if n % 2 == 0 else -18),
                fontsize=8,
                color="#1a7a3a",
                alpha=0.9,
                rotation=30,
                ha="left",
                va="bottom",
            )
    word = "lower" if lower_is_better else "higher"
    ax.set_xlabel("Experiment #", fontsize=12)
    ax.set_ylabel(f"{metric_name} ({word} is better)", fontsize=12)
    ax.set_title(title or progress_title(rows), fontsize=14)
    ax.legend(loc="upper right" if lower_is_better else "lower right", fontsize=9)
    ax.grid(True, alpha=0.2)
    fig.tight_layout()
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def progress_title(rows: Sequence[ExperimentRow]) -> str:
    """`Progress: N Experiments, K Kept Improvements`; the first baseline is `keep`
    (autoresearch's first row) but no improvement, so not counted."""
    improvements = sum(1 for r in rows if r.status == "keep" and r.kind != "baseline")
    return f"Progress: {len(rows)} Experiments, {improvements} Kept Improvements"


def _running_best(
    kept: list[tuple[int, ExperimentRow]], lower_is_better: bool
) -> tuple[list[int], list[float]]:
    xs: list[int] = []
    ys: list[float] = []
    for i, r in kept:
        assert r.metric is not None
        if not ys or (r.metric < ys[-1] if lower_is_better else r.metric > ys[-1]):
            xs.append(i)
            ys.append(r.metric)
    return xs, ys
