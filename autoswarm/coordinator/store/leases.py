"""Leases: lease, heartbeat, release, report and the reaper, each one Lua script.

Guarantees (with Redis's append-only file on): a lease's fencing token grows every time
the experiment is leased; only the worker holding the current token may renew, release or
report; a report is accepted at most once; an expired lease is queued again with an
attempt counted, and dead-lettered after `max_attempts`. Not guaranteed: that a worker's
clock agrees with ours (every deadline is the coordinator's clock).
"""

from __future__ import annotations

from typing import NamedTuple, cast

from autoswarm.coordinator import keys
from autoswarm.coordinator.store.base import StoreBase
from autoswarm.coordinator.store.judging import PRIORITY
from autoswarm.shared.errors import Forbidden, NotFound, StaleLease
from autoswarm.shared.models import ExperimentKind, Result

# How deep a lease looks into each queue for an eligible experiment.
LEASE_SCAN = 512
REAP_BATCH = 500
# A queue entry's score is priority * PRIORITY_SCALE + its sequence number (lib.lua, enqueue).
PRIORITY_SCALE = 10**12
EXPLORE_SCORE = PRIORITY[ExperimentKind.EXPLORE] * PRIORITY_SCALE


def _raise_for(code: int, experiment_id: str) -> None:
    if code == -1:
        raise NotFound(f"experiment {experiment_id} does not exist")
    if code == -2:
        raise Forbidden(f"experiment {experiment_id}: the lease is another worker's")
    if code == -3:
        raise StaleLease(f"experiment {experiment_id}: the fencing token is no longer current")


class Leased(NamedTuple):
    """What a lease hands out, read by the lease script itself (no second round trip)."""

    experiment_id: str
    fencing_token: int
    kind: str
    task_id: str
    bundle_hash: str


class Preemption(NamedTuple):
    """A heartbeating worker that can switch runs: its explore, if it was leased less than
    `within` of its task's budget ago, is preempted by a baseline, replicate or merge
    waiting in the queue that this worker may take (0: never)."""

    owner: str
    hardware: str
    within: float
    replicate_wait_s: float


class Renewal(NamedTuple):
    """What a heartbeat decided: stop this run (`cancel`), and run `switched` instead."""

    cancel: bool
    switched: Leased | None = None


class LeaseOps(StoreBase):
    def lease(
        self,
        worker_id: str,
        owner: str,
        hardware: str,
        *,
        now: float,
        lease_ttl_s: float,
        replicate_wait_s: float = 120.0,
    ) -> Leased | None:
        """Lease the first eligible experiment, or None.

        An experiment excluding this worker (or owner) is eligible for it only after it has
        waited `replicate_wait_s` in the queue for another worker.
        """
        answer = self._run(
            "lease",
            [
                keys.queue(hardware),
                keys.QUEUE_ANY,
                keys.LEASES,
                keys.class_owners(hardware),
                keys.DISTRUSTED,
            ],
            [
                worker_id,
                owner,
                hardware,
                repr(now),
                repr(lease_ttl_s),
                keys.EXPERIMENT_PREFIX,
                keys.HEAD_PREFIX,
                LEASE_SCAN,
                repr(replicate_wait_s),
            ],
        )
        if not answer:
            return None
        experiment_id, token, kind, task_id, bundle_hash = answer
        return Leased(str(experiment_id), int(token), str(kind), str(task_id), str(bundle_hash))

    def heartbeat(
        self,
        experiment_id: str,
        worker_id: str,
        fencing_token: int,
        *,
        now: float,
        ttl_s: float,
        preemption: Preemption | None = None,
        running_s: float | None = None,
    ) -> Renewal:
        """Renew the lease: whether the experiment was cancelled, and with `preemption` (a
        worker that can switch runs), the lease it switches to when its young explore was
        preempted by a waiting baseline, replicate or merge (the explore is queued again at
        its place, no attempt counted). `running_s`: how long the explore's run has run, as
        its worker says (0 while it waits behind another run); None: since it was leased."""
        asked = preemption or Preemption("", "", 0.0, 0.0)
        # Only a worker that can switch runs hands the script the keys of a preemption.
        preemption_keys = (
            [
                keys.queue(asked.hardware),
                keys.QUEUE_ANY,
                keys.class_owners(asked.hardware),
                keys.DISTRUSTED,
                keys.EVENTS,
            ]
            if asked.hardware
            else []
        )
        answer = self._run(
            "heartbeat",
            [
                keys.experiment(experiment_id),
                keys.LEASES,
                *preemption_keys,
            ],
            [
                experiment_id,
                worker_id,
                fencing_token,
                repr(now),
                repr(ttl_s),
                repr(asked.within if asked.hardware else 0.0),
                asked.owner,
                asked.hardware,
                repr(asked.replicate_wait_s),
                keys.EXPERIMENT_PREFIX,
                keys.HEAD_PREFIX,
                keys.task(""),
                LEASE_SCAN,
                repr(EXPLORE_SCORE),
                "" if running_s is None else repr(running_s),
            ],
        )
        _raise_for(int(answer[0]), experiment_id)
        if len(answer) < 7:
            return Renewal(bool(int(answer[1])))
        switched_id, token, kind, task_id, bundle_hash = answer[2:7]
        switched = Leased(str(switched_id), int(token), str(kind), str(task_id), str(bundle_hash))
        return Renewal(True, switched)

    def release(self, experiment_id: str, worker_id: str, fencing_token: int) -> None:
        """Hand the lease back; the experiment is queued again without counting an attempt."""
        code = self._run(
            "release",
            [keys.experiment(experiment_id), keys.LEASES],
            [experiment_id, worker_id, fencing_token],
        )
        _raise_for(int(code), experiment_id)

    def report(
        self,
        experiment_id: str,
        worker_id: str,
        fencing_token: int,
        result: Result,
        *,
        now: float,
        max_attempts: int,
    ) -> bool:
        """Record a result once: True when recorded now, False when it was already recorded."""
        metric = "" if result.metric is None else repr(result.metric)
        code = int(
            self._run(
                "report",
                [
                    keys.experiment(experiment_id),
                    keys.LEASES,
                    keys.DEAD,
                    keys.JUDGE,
                    keys.EVENTS,
                ],
                [
                    experiment_id,
                    worker_id,
                    fencing_token,
                    result.model_dump_json(),
                    result.status.value,
                    repr(now),
                    max_attempts,
                    result.error or f"run ended with status {result.status.value}",
                    metric,
                ],
            )
        )
        _raise_for(code, experiment_id)
        return code == 1

    def reap(self, *, now: float, max_attempts: int) -> dict[str, str]:
        """Expired leases back to the queue (or dead-lettered): {experiment_id: new state}."""
        answer = self._run(
            "reap",
            [keys.LEASES, keys.DEAD, keys.JUDGE, keys.EVENTS],
            [repr(now), max_attempts, keys.EXPERIMENT_PREFIX, REAP_BATCH],
        )
        return {str(answer[i]): str(answer[i + 1]) for i in range(0, len(answer), 2)}

    def dead_letters(self, limit: int = 100) -> list[str]:
        """The newest dead-lettered experiments first."""
        return cast("list[str]", self._r.lrange(keys.DEAD, 0, limit - 1))
