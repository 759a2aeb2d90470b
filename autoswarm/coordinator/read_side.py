"""What the read side needs of the decision layer: tasks, their heads with their stats, and
their lineage; and, for a proposal, the doorbell.

The leaderboard, the proposer's context, the API's read views and a hypothesis's submission
depend on these Protocols, not on the `Scheduler` (`autoswarm.coordinator.heads.Heads` is the one
that serves them).
"""

from __future__ import annotations

from typing import Protocol

from autoswarm.coordinator import judge
from autoswarm.coordinator.lineage import Lineage
from autoswarm.coordinator.models import HeadRecord, TaskRecord
from autoswarm.coordinator.store import Store


class ReadSide(Protocol):
    """Tasks, heads and their stats, lineages: what a read of a task's state needs."""

    @property
    def store(self) -> Store: ...

    def get_task(self, task_id: str) -> TaskRecord:
        """The task; `NotFound` if there is none."""
        ...

    def lineage(self, task_id: str) -> Lineage: ...

    def primary_head(self, task: TaskRecord, hardware: str | None = None) -> HeadRecord | None:
        """The head proposers build on: of `hardware`, else of the first class used."""
        ...

    def stats(
        self, task_id: str, hardware: str, base: str | None = None
    ) -> tuple[HeadRecord | None, judge.HeadStats]:
        """The class's head and the stats a candidate on `base` (else the head) is judged by."""
        ...


class Proposals(ReadSide, Protocol):
    """The read side, and the doorbell a submitted hypothesis rings."""

    def notify(self, count: int) -> None:
        """Tell waiting lease requests that `count` experiments were queued."""
        ...
