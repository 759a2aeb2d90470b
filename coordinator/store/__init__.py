"""The Redis store: the only package that imports `redis`.

`Store` guarantees that every state change that must be atomic is one Lua script (see
`coordinator/scripts/`), that every key is built in `coordinator.keys`, and that errors
are `shared.errors` exceptions, but for Redis being away (`UNAVAILABLE`). It does not
retry on a lost connection (the API answers 503 with Retry-After and the client retries)
and holds no state of its own beyond connection pools and the task records it has read (a
registered task never changes).
"""

from __future__ import annotations

from coordinator.store.base import UNAVAILABLE
from coordinator.store.judging import PRIORITY, JudgeOps, NewExperiment, Submitted
from coordinator.store.leases import Leased, LeaseOps, Preemption, Renewal
from coordinator.store.reads import ReadOps
from coordinator.store.records import RecordOps
from coordinator.store.stats import StatsOps

__all__ = [
    "PRIORITY",
    "UNAVAILABLE",
    "Leased",
    "NewExperiment",
    "Preemption",
    "Renewal",
    "Store",
    "Submitted",
]


class Store(LeaseOps, RecordOps, JudgeOps, StatsOps, ReadOps):
    """All of the coordinator's state in one Redis (see the package docstring)."""
