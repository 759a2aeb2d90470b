"""The indexer: keeps the read model's indexes in step with what the write path records.

It follows three things the write path already keeps, and changes none of them: the
sequence numbers of new experiments (`as:experiments`), the event stream (every result,
verdict, baseline and expired lease), and the lease set (a lease starts or ends without an
event). Each experiment touched since the last look is re-read and filed again, whole, by
one script (`index.lua`), so indexing is idempotent and a crash only repeats work.

Guarantees: after `catch_up` returns with nothing left, every experiment recorded before
it began is filed under its current state, kind, verdict, result, worker, owner, hardware
class, proposer, model, score and time, and every finished run is credited once. The
coordinator runs it in the background every second and before each indexed read. Not
guaranteed: more than one indexer per Redis (the lock is per process, like the scheduler's).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

from autoswarm.coordinator.store import Store
from autoswarm.coordinator.store.filing import file_experiment

logger = logging.getLogger(__name__)

BATCH = 500


class Indexer:
    """Files experiments in the read model's indexes (see the module doc)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._budgets: dict[str, float | None] = {}

    def _budget(self, task_id: str) -> float | None:
        if task_id not in self._budgets:
            task = self.store.get_task(task_id)
            self._budgets[task_id] = task.spec.budget_s if task else None
        return self._budgets[task_id]

    def catch_up(self, limit: int = 2000) -> bool:
        """File what changed since the last look, up to about `limit` experiments and as
        many events; True when more is left."""
        with self._lock:
            seq, event = self.store.index_cursor()
            if event is None:
                # A fresh index: every experiment is read whole below, so older events are moot.
                event = self.store.last_event_id()
            touched: dict[str, None] = {}
            fresh = self.store.new_experiments(seq, limit)
            touched.update((eid, None) for eid, _ in fresh)
            events = self.store.read_events(event, limit)
            hypotheses = {e["hypothesis_id"] for e in events if e.get("hypothesis_id")}
            touched.update((e["experiment_id"], None) for e in events if e.get("experiment_id"))
            touched.update((eid, None) for eid in self.store.hypothesis_members(sorted(hypotheses)))
            started, ended = self.store.lease_changes()
            touched.update((eid, None) for eid in [*started, *ended])
            self.index(touched)
            self.store.mark_leases(started, ended)
            new_seq = fresh[-1][1] if fresh else seq
            new_event = events[-1]["event_id"] if events else event
            self.store.set_index_cursor(seq=new_seq, event=new_event)
            return len(fresh) >= limit or len(events) >= limit

    def catch_up_all(self, limit: int = 5000) -> None:
        """Catch up until nothing is left (a fresh index of a large store takes a while)."""
        while self.catch_up(limit):
            pass

    def index(self, experiment_ids: Iterable[str]) -> int:
        """File these experiments again from their current fields; how many were filed."""
        ids = list(experiment_ids)
        filed = 0
        for start in range(0, len(ids), BATCH):
            inputs = self.store.index_inputs(ids[start : start + BATCH])
            items = []
            for exp, hyp in inputs:
                filing = file_experiment(exp, hyp, self._budget(exp["task_id"]))
                items.append(
                    (exp["experiment_id"], exp["task_id"], filing.encoded(), filing.credits)
                )
            self.store.write_index(items)
            filed += len(items)
        return filed
