"""The Redis store: the only package that imports `redis`.

`Store` guarantees that every state change that must be atomic is one Lua script (see
`autoswarm/coordinator/scripts/`), that every key is built in `autoswarm.coordinator.keys`, and that
errors are `autoswarm.shared.errors` exceptions, but for Redis being away (`UNAVAILABLE`). It does
not retry on a lost connection (the API answers 503 with Retry-After and the client retries)
and holds no state of its own beyond connection pools and the task records it has read (a
registered task never changes).
"""

from __future__ import annotations

from autoswarm.coordinator.store.base import UNAVAILABLE
from autoswarm.coordinator.store.judging import PRIORITY, JudgeOps, NewExperiment, Submitted
from autoswarm.coordinator.store.leases import Leased, LeaseOps, Preemption, Renewal
from autoswarm.coordinator.store.reads import ReadOps
from autoswarm.coordinator.store.records import RecordOps
from autoswarm.coordinator.store.stats import StatsOps

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
