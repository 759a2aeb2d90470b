"""A lease the worker holds, kept alive by heartbeats until it is reported or handed back."""

from __future__ import annotations

import logging
import threading
import time

from autoswarm.shared.client import CoordinatorClient, CoordinatorUnavailable
from autoswarm.shared.errors import AutoswarmError, Forbidden, NotFound, StaleLease
from autoswarm.shared.models import Lease

logger = logging.getLogger(__name__)

MIN_INTERVAL_S = 0.05
# While an explore may still be preempted, it heartbeats this often: a quarter of its window,
# and not more often than once a second.
EARLY_BEATS = 4
EARLY_MIN_S = 1.0


class HeldLease:
    """One lease and its heartbeat thread, which renews it every `lease_ttl_s / 3`.

    Guarantees: `lost` is set as soon as a heartbeat learns that the fencing token is stale,
    or that the lease is another worker's or unknown; `cancelled` when the coordinator asks
    for the experiment to stop, and with it `successor` (already heartbeated) when it hands
    over another experiment to run in its place (a preempted explore, queued again by the
    coordinator: nothing to hand back; no heartbeat follows). A heartbeat that fails because
    the coordinator is away is tried again at the same pace; the lease may expire meanwhile,
    which the next heartbeat (or the report) learns as stale. After `close` no heartbeat is
    sent. Each heartbeat says how long the run has run (0 until `started`); `started` sends
    one at once, and while the run is within the lease's `preemptible_s` they come every
    quarter of it: a baseline, replicate or merge queued meanwhile preempts the young
    explore before it has cost much, not up to a whole heartbeat interval later.
    Does not: stop the run (the slot reads the flags), or retry a release that failed (an
    unreleased lease expires after its TTL and the experiment is queued again).
    """

    def __init__(
        self, lease: Lease, worker_id: str, client: CoordinatorClient, *, can_switch: bool = True
    ) -> None:
        self.lease = lease
        self.worker_id = worker_id
        self.client = client
        self.can_switch = can_switch
        self.lost = threading.Event()
        self.cancelled = threading.Event()
        self.successor: HeldLease | None = None  # final once `close` returns
        self._switch_lock = threading.Lock()
        self.leased_at = time.monotonic()
        self.run_started: float | None = None
        self._ttl_s = lease.lease_ttl_s
        self._closed = threading.Event()
        self._wake = threading.Event()  # beat now: closed, or the run just started
        self._thread = threading.Thread(
            target=self._beat, name=f"heartbeat-{lease.experiment_id}", daemon=True
        )

    @property
    def experiment_id(self) -> str:
        return self.lease.experiment_id

    @property
    def abandoned(self) -> bool:
        return self.lost.is_set() or self.cancelled.is_set()

    def start(self) -> HeldLease:
        self._thread.start()
        return self

    def started(self) -> None:
        """The run of this lease starts now: heartbeat at once."""
        self.run_started = time.monotonic()
        self._wake.set()

    def running_s(self) -> float:
        """How long the run has run; 0 while the lease waits (prefetched)."""
        return 0.0 if self.run_started is None else time.monotonic() - self.run_started

    def close(self, *, release: bool) -> None:
        """Stop heartbeats; with `release`, hand the lease back (best effort, logged)."""
        # Not joined: a heartbeat in flight to a hung coordinator must not hold up the slot,
        # and one that lands after the report or the release is answered 409 and ignored.
        with self._switch_lock:
            self._closed.set()
        self._wake.set()
        if release and not self.lost.is_set() and self.successor is None:
            self._release()

    def drop(self) -> None:
        """Hand back this lease and anything a preempting heartbeat handed over for it."""
        self.close(release=True)
        if self.successor is not None:
            self.successor.drop()

    def _release(self) -> None:
        try:
            self.client.release(self.experiment_id, self.worker_id, self.lease.fencing_token)
        except StaleLease:
            logger.info(
                "worker %s: lease of %s was already gone", self.worker_id, self.experiment_id
            )
        except AutoswarmError as exc:
            logger.warning(
                "worker %s: could not release %s (it expires in %.0f s): %s",
                self.worker_id,
                self.experiment_id,
                self._ttl_s,
                exc,
            )
        else:
            logger.info("worker %s: experiment %s handed back", self.worker_id, self.experiment_id)

    def _beat(self) -> None:
        while True:
            self._wake.wait(self._interval())
            self._wake.clear()
            if self._closed.is_set():
                return
            try:
                answer = self.client.heartbeat(
                    self.experiment_id,
                    self.worker_id,
                    self.lease.fencing_token,
                    can_switch=self.can_switch and not self._closed.is_set(),
                    running_s=self.running_s(),
                )
            except CoordinatorUnavailable as exc:
                logger.warning(
                    "worker %s: heartbeat of %s failed: %s", self.worker_id, self.experiment_id, exc
                )
                continue
            except (StaleLease, Forbidden, NotFound) as exc:
                if self._closed.is_set():
                    return  # reported or released meanwhile
                logger.warning(
                    "worker %s: lease of %s lost: %s", self.worker_id, self.experiment_id, exc
                )
                self.lost.set()
                return
            except AutoswarmError as exc:
                logger.error(
                    "worker %s: heartbeat of %s refused: %s",
                    self.worker_id,
                    self.experiment_id,
                    exc,
                )
                continue
            self._ttl_s = answer.lease_ttl_s
            if answer.switch_to is not None:
                self._switch(answer.switch_to)
                return  # its token is stale now
            if answer.cancel and not self.cancelled.is_set():
                logger.info(
                    "worker %s: coordinator cancelled %s", self.worker_id, self.experiment_id
                )
                self.cancelled.set()

    def _interval(self) -> float:
        interval = self._ttl_s / 3
        window = self.lease.preemptible_s
        if self.can_switch and window > 0 and self.running_s() < window:
            interval = min(interval, max(EARLY_MIN_S, window / EARLY_BEATS))
        return max(MIN_INTERVAL_S, interval)

    def _switch(self, lease: Lease) -> None:
        """The explore was preempted: hold (and heartbeat) the lease handed over, then stop."""
        successor = HeldLease(lease, self.worker_id, self.client, can_switch=self.can_switch)
        with self._switch_lock:
            taken = not self._closed.is_set()
            if taken:
                self.successor = successor.start()
                self.cancelled.set()
        if not taken:  # reported or handed back meanwhile: nobody would run it
            successor.close(release=True)
            return
        logger.info(
            "worker %s: %s preempted by %s %s (queued again for later)",
            self.worker_id,
            self.experiment_id,
            lease.kind,
            lease.experiment_id,
        )
