"""The LLM spend ledger and the research journal, per task: what was spent, on what, and why.

`SpendLedger` is the tiny interface the LLM proposer enforces its cap with (`total`,
`record`, `entries`); `JournalStore` keeps each task's research journal (short lessons the
model revises as evidence arrives). Two implementations serve both: `MemoryLedger` (tests,
one process) and `FileLedger` (one JSON-lines file, appended to; the CLI's default).
`ReportingLedger` wraps either and also tells the coordinator of every call's cost (its
/metrics shows each task's spend by model); the local ledger stays the cap's authority.

What they guarantee: `record` is durable before it returns (`FileLedger`: one line, one
`write`, flushed); `total` is the sum of every recorded cost of the task; both are safe to
share between threads. What they do not: reserve money ahead of a call (the proposer checks
its cap before each call; proposers sharing one ledger may each overshoot it by at most one
call's estimate), or lock a file across processes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from autoswarm.shared.errors import AutoswarmError
from autoswarm.shared.models import SpendReport

logger = logging.getLogger(__name__)

# A journal is a page of lessons, not a diary: past this it is cut at a line boundary.
MAX_JOURNAL_CHARS = 4_000


@dataclass(frozen=True)
class SpendEntry:
    """One LLM call: its cost, its tokens and the hypothesis title it produced (or why not)."""

    task_id: str
    model: str
    cost_usd: float
    tokens: int
    title: str
    at_s: float


class SpendLedger(Protocol):
    """What the LLM proposer spends, per task."""

    def total(self, task_id: str) -> float: ...

    def record(
        self, task_id: str, model: str, cost_usd: float, tokens: int, title: str
    ) -> None: ...

    def entries(self, task_id: str) -> list[SpendEntry]: ...


class JournalStore(Protocol):
    """A task's research journal, as the proposer last revised it."""

    def journal(self, task_id: str) -> str: ...

    def save_journal(self, task_id: str, text: str) -> None: ...


def clip_journal(text: str, limit: int = MAX_JOURNAL_CHARS) -> str:
    """The journal's first whole lines that fit in `limit` characters."""
    text = text.strip()
    if len(text) <= limit:
        return text
    kept: list[str] = []
    size = 0
    for line in text.splitlines():
        if size + len(line) + 1 > limit:
            break
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


class MemoryLedger:
    """Spend and journals in memory, for one process's lifetime (tests, `autoswarm up`)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: list[SpendEntry] = []
        self._journals: dict[str, str] = {}

    def total(self, task_id: str) -> float:
        return sum(e.cost_usd for e in self.entries(task_id))

    def record(self, task_id: str, model: str, cost_usd: float, tokens: int, title: str) -> None:
        entry = SpendEntry(task_id, model, cost_usd, tokens, title, time.time())
        with self._lock:
            self._entries.append(entry)

    def entries(self, task_id: str) -> list[SpendEntry]:
        with self._lock:
            return [e for e in self._entries if e.task_id == task_id]

    def journal(self, task_id: str) -> str:
        with self._lock:
            return self._journals.get(task_id, "")

    def save_journal(self, task_id: str, text: str) -> None:
        with self._lock:
            self._journals[task_id] = clip_journal(text)


class FileLedger:
    """Spend and journals as JSON lines in one file: `{"kind": "spend" | "journal", ...}`.

    The file is only appended to; the latest journal line of a task wins. A torn last line
    (a crash mid-write) is skipped with a warning, never fatal.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def _append(self, row: dict[str, object]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()

    def _rows(self, kind: str, task_id: str) -> list[dict[str, Any]]:
        with self._lock:
            if not self.path.exists():
                return []
            lines = self.path.read_text(encoding="utf-8").splitlines()
        rows = []
        for number, line in enumerate(lines, 1):
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                logger.warning("ledger %s: line %d is not JSON; skipped", self.path, number)
                continue
            if isinstance(row, dict) and row.get("kind") == kind and row.get("task_id") == task_id:
                rows.append(row)
        return rows

    def total(self, task_id: str) -> float:
        return sum(e.cost_usd for e in self.entries(task_id))

    def record(self, task_id: str, model: str, cost_usd: float, tokens: int, title: str) -> None:
        entry = SpendEntry(task_id, model, cost_usd, tokens, title, time.time())
        self._append({"kind": "spend", **asdict(entry)})

    def entries(self, task_id: str) -> list[SpendEntry]:
        out = []
        for row in self._rows("spend", task_id):
            try:
                out.append(
                    SpendEntry(
                        task_id=task_id,
                        model=str(row["model"]),
                        cost_usd=float(row["cost_usd"]),
                        tokens=int(row["tokens"]),
                        title=str(row["title"]),
                        at_s=float(row["at_s"]),
                    )
                )
            except (KeyError, TypeError, ValueError):
                logger.warning("ledger %s: task %s: a spend line is malformed", self.path, task_id)
        return out

    def journal(self, task_id: str) -> str:
        rows = self._rows("journal", task_id)
        return str(rows[-1].get("text", "")) if rows else ""

    def save_journal(self, task_id: str, text: str) -> None:
        self._append(
            {"kind": "journal", "task_id": task_id, "text": clip_journal(text), "at_s": time.time()}
        )


class SpendClient(Protocol):
    """The coordinator call a `ReportingLedger` makes."""

    def report_spend(self, task_id: str, spend: SpendReport) -> None: ...


class ReportingLedger:
    """A ledger that records locally, then tells the coordinator (see the module doc). A
    report the coordinator does not take is logged and dropped: spend shown on /metrics
    may then fall short of the ledger's, never the cap's enforcement."""

    def __init__(self, inner: SpendLedger, client: SpendClient) -> None:
        self.inner = inner
        self.client = client

    def total(self, task_id: str) -> float:
        return self.inner.total(task_id)

    def entries(self, task_id: str) -> list[SpendEntry]:
        return self.inner.entries(task_id)

    def record(self, task_id: str, model: str, cost_usd: float, tokens: int, title: str) -> None:
        self.inner.record(task_id, model, cost_usd, tokens, title)
        try:
            label = "".join(c if "!" <= c <= "~" else "_" for c in model)[:100] or "unknown"
            report = SpendReport(model=label, usd=cost_usd, tokens=tokens)
            self.client.report_spend(task_id, report)
        except (AutoswarmError, ValueError) as exc:
            logger.warning("llm: the coordinator did not take the spend of one call: %s", exc)
