"""What every part of the decision layer is handed: the store, the settings, the clock, the
lineage of each task, the per-task locks, and the doorbell for queued experiments.

Guarantees: decisions on one task are serialised within this process by its lock (an
`RLock`: a decision may make another on the same task). Does not: lock across processes
(under several API processes only the leader judges, see `autoswarm.coordinator.leader`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from autoswarm.coordinator.lineage import Lineage
from autoswarm.coordinator.models import ExperimentRecord, TaskRecord
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.shared.errors import NotFound


def hardware_of(exp: ExperimentRecord) -> str:
    """The class an experiment's score belongs to: where it was measured, else where queued."""
    return exp.measured_on or exp.hardware or ""


class Plumbing:
    """The shared means of the decision layer's parts (see the module doc)."""

    def __init__(
        self,
        store: Store,
        settings: CoordinatorSettings,
        *,
        on_enqueue: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self._on_enqueue = on_enqueue or (lambda count: None)
        self._locks: dict[str, threading.RLock] = {}
        self._locks_guard = threading.Lock()

    def lineage(self, task_id: str) -> Lineage:
        return Lineage(self.settings.lineage_dir, task_id)

    def task_lock(self, task_id: str) -> threading.RLock:
        with self._locks_guard:
            return self._locks.setdefault(task_id, threading.RLock())

    def get_task(self, task_id: str) -> TaskRecord:
        task = self.store.get_task(task_id)
        if task is None:
            raise NotFound(f"task {task_id} does not exist")
        return task

    def notify(self, count: int) -> None:
        """Tell waiting lease requests that `count` experiments were queued."""
        if count > 0:
            self._on_enqueue(count)
