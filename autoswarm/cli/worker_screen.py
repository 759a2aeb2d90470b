"""The volunteer's screen while `autoswarm worker` runs at a terminal: per slot the task,
the experiment's kind and what it tests (its hypothesis's title), a progress bar of its
budget and the time left; runs done, kept and credit since the worker started (kept and
credit as the coordinator counts them); a summary when it stops. Drawn from `Worker.status()`
(what `autoswarm worker status` shows), refreshed every second."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from autoswarm.cli.console import plain

REFRESH_S = 1.0


def _clock(seconds: float) -> str:
    whole = int(max(0.0, seconds))
    return f"{whole // 3600:d}:{whole % 3600 // 60:02d}:{whole % 60:02d}"


def totals(status: dict[str, Any]) -> tuple[int, int]:
    """(runs done, reports the coordinator recorded) over every slot."""
    slots = status.get("slots", [])
    return sum(s.get("completed", 0) for s in slots), sum(s.get("recorded", 0) for s in slots)


def account(status: dict[str, Any]) -> str:
    """`runs N · kept K · credit C` over every slot (credit in H100-seconds)."""
    slots = status.get("slots", [])
    done = sum(int(s.get("completed", 0)) for s in slots)
    kept = sum(int(s.get("kept", 0)) for s in slots)
    credit = sum(float(s.get("credit", 0.0)) for s in slots)
    return f"runs {done} · kept {kept} · credit {credit:.1f}"


def render(status: dict[str, Any], running_s: float) -> Panel:
    """One frame: a row per slot, then the totals."""
    table = Table.grid(padding=(0, 2))
    for _ in range(5):
        table.add_column()
    for slot in status.get("slots", []):
        name = plain(str(slot.get("slot", "")))
        if slot.get("experiment_id"):
            budget = float(slot.get("budget_s") or 0.0)
            elapsed = float(slot.get("elapsed_s") or 0.0)
            what = plain(
                f"{slot.get('task_id', '')}: {slot.get('kind', '')} {slot['experiment_id']}"
            )
            if slot.get("title"):
                what.append("\n").append_text(plain(str(slot["title"])))
            bar = ProgressBar(total=budget or 1.0, completed=min(elapsed, budget), width=30)
            left = Text(f"{_clock(float(slot.get('time_left_s') or 0.0))} left")
            table.add_row(name, what, bar, left, Text(str(slot.get("state", ""))))
        else:
            table.add_row(name, Text(str(slot.get("state", ""))), Text(""), Text(""), Text(""))
    _, recorded = totals(status)
    said = (
        f"{account(status)} · {recorded} reported, in {_clock(running_s)} · "
        f"{status.get('outbox', 0)} reports waiting · Ctrl-C finishes the run, twice stops now"
    )
    title = plain(f"worker {status.get('name', '')} ({status.get('state', '')})")
    return Panel(Group(table, Text(said)), title=title, expand=False)


def summary(status: dict[str, Any], running_s: float) -> str:
    """The line printed when the worker stops."""
    _, recorded = totals(status)
    waiting = status.get("outbox", 0)
    line = f"worker {status.get('name', '')} stopped after {_clock(running_s)}: "
    line += f"{account(status)}, {recorded} reported"
    if waiting:
        line += f", {waiting} reports wait in the outbox for the next start"
    return line


class Screen:
    """Draws `render(read())` on `console` in its own thread until `stop()`."""

    def __init__(self, console: Console, read: Callable[[], dict[str, Any]]) -> None:
        self.console = console
        self.read = read
        self.started = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._draw, name="screen", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        status = self.read()
        self.console.print(plain(summary(status, time.monotonic() - self.started)))

    def _draw(self) -> None:
        with Live(console=self.console, refresh_per_second=2, transient=True) as live:
            while not self._stop.is_set():
                live.update(render(self.read(), time.monotonic() - self.started))
                self._stop.wait(REFRESH_S)
