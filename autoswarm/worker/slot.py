"""One worker slot (one GPU, or the CPU): lease, fetch, prepare, run, report, and again.

A slot prefetches: `prefetch_lead_s` before its run's budget ends it leases the next
experiment and fetches its bundle in a background thread, so the machine does not wait on
the network between runs. A prefetched lease is heartbeated while it waits and handed back
when the slot pauses, finishes or stops. For a task with `[run] preload` the runner starts
the next run's interpreter ahead as each run starts; the slot keeps it while it wants more
work and drops it when it pauses or stops. A young explore (running or prefetched) may be
preempted: a heartbeat hands over a waiting baseline, replicate or merge in its place, which
the slot runs next (the coordinator has queued the explore again).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from autoswarm.shared.client import BundleMismatch, CoordinatorClient, CoordinatorUnavailable
from autoswarm.shared.errors import AutoswarmError, Forbidden, NotFound, Unauthorized
from autoswarm.shared.models import Result, ResultReport, ResultStatus, WorkerCreate
from autoswarm.worker.backoff import Backoff
from autoswarm.worker.bundles import BundleCache
from autoswarm.worker.lease import HeldLease
from autoswarm.worker.outbox import Delivery, Outbox, OutboxFlusher
from autoswarm.worker.prepare import PrepareError
from autoswarm.worker.runner import Runner
from autoswarm.worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

POLL_S = 0.2
# The worker's runs kept and credit are asked for after a report, at most this often, and
# as many times more after it (its verdict follows the report by a moment, or a while).
SUMMARY_EVERY_S = 5.0
SUMMARY_FOLLOW_UPS = 3
FAILED_REMEMBERED = 64  # experiments that failed in this slot, to report if leased again


class SlotState(StrEnum):
    STARTING = "starting"
    LEASING = "leasing"
    FETCHING = "fetching"
    PREPARING = "preparing"
    RUNNING = "running"
    REPORTING = "reporting"
    PAUSED = "paused"
    WAITING = "waiting"  # the coordinator is away; backing off
    STOPPED = "stopped"


@dataclass
class Controls:
    """What the volunteer and the signals ask of every slot of one worker."""

    stop_grace_s: float = 10.0
    stop: threading.Event = field(default_factory=threading.Event)
    kill: threading.Event = field(default_factory=threading.Event)
    paused: threading.Event = field(default_factory=threading.Event)
    finishing: threading.Event = field(default_factory=threading.Event)
    stop_requested_at: float = 0.0
    # Set when a slot cannot go on (its token is refused); the worker exits non-zero.
    fatal: str | None = None

    @property
    def winding_down(self) -> bool:
        return self.stop.is_set() or self.finishing.is_set()

    def past_grace(self) -> bool:
        if self.kill.is_set():
            return True
        if not self.stop.is_set():
            return False
        return time.monotonic() - self.stop_requested_at > self.stop_grace_s


class RunAbandoned(Exception):
    """Raised from the runner's tick to stop a run the slot no longer wants."""


class WorkerSlot:
    """One slot's loop in its own thread (see module doc)."""

    def __init__(
        self,
        *,
        slot: str,
        name: str,
        hardware: str,
        client: CoordinatorClient,
        runner: Runner,
        bundles: BundleCache,
        outbox: Outbox,
        flusher: OutboxFlusher,
        controls: Controls,
        settings: WorkerSettings,
    ) -> None:
        self.slot = slot
        self.name = name
        self.hardware = hardware
        self.client = client
        self.runner = runner
        self.bundles = bundles
        self.outbox = outbox
        self.flusher = flusher
        self.controls = controls
        self.settings = settings
        self.backoff = Backoff(settings.backoff_min_s, settings.backoff_max_s)
        self.worker_id = ""
        self.state = SlotState.STARTING
        self.current: HeldLease | None = None
        self.elapsed_s = 0.0
        self.completed = 0
        self.recorded = 0  # reports the coordinator recorded (the volunteer's screen)
        # Since this slot started (by the coordinator's clock), as the coordinator counts
        # them: the volunteer's screen.
        self.started_s = time.time()
        self.kept = 0
        self.credit = 0.0
        self._summary_due = False  # a report since the last answer
        self._reported = threading.Event()
        self._summary_thread = threading.Thread(
            target=self._follow_summary, name=f"summary-{slot}", daemon=True
        )
        self.last_result: dict[str, Any] | None = None
        self.thread = threading.Thread(target=self.run, name=f"slot-{slot}", daemon=True)
        self._lock = threading.Lock()
        self._prefetch_thread: threading.Thread | None = None
        self._prefetched: HeldLease | None = None
        self._accepting_prefetch = True
        self._switched: HeldLease | None = None  # handed over by a preempting heartbeat
        self._failed_here: deque[str] = deque(maxlen=FAILED_REMEMBERED)

    # ---- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        try:
            if self._register():
                self._summary_thread.start()
                while self._may_lease():
                    held = self._take_switched() or self._take_prefetched() or self._lease_now()
                    if held is not None:
                        self._run_guarded(held)
        finally:
            if self._summary_due and not self.controls.kill.is_set():
                self._ask_summary()  # the stop summary's last word
            self._drop_prefetched(final=True)
            self._drop_switched()
            self.runner.drop_warm()
            self.state = SlotState.STOPPED
            logger.info("worker %s: slot %s stopped", self.worker_id or self.name, self.slot)

    def _register(self) -> bool:
        create = WorkerCreate(name=self.name, hardware=self.hardware, slot=self.slot)
        while not self.controls.winding_down:
            try:
                self.worker_id = self.client.register_worker(create)
            except CoordinatorUnavailable as exc:
                self._back_off(exc)
                continue
            except (Unauthorized, Forbidden) as exc:
                self.controls.fatal = f"the coordinator refused this worker's token: {exc}"
                logger.error("worker %s: %s", self.name, self.controls.fatal)
                return False
            logger.info(
                "worker %s: slot %s registered as %s (%s)",
                self.name,
                self.slot,
                self.worker_id,
                self.hardware,
            )
            self.backoff.reset()
            self.started_s = self._server_now()
            return True
        return False

    def _server_now(self) -> float:
        """The coordinator's clock, which stamps leases (this machine's if it does not say)."""
        try:
            return self.client.server_time()
        except AutoswarmError:
            return time.time()

    def _may_lease(self) -> bool:
        while self.controls.paused.is_set() and not self.controls.winding_down:
            self.state = SlotState.PAUSED
            self._drop_prefetched()
            self._drop_switched()
            self.runner.drop_warm()
            self.controls.stop.wait(POLL_S)
        limit = self.settings.max_experiments
        return not self.controls.winding_down and (limit is None or self.completed < limit)

    def _wants_more(self) -> bool:
        """True while a lease taken now would be run (not paused, finishing, or at the limit)."""
        limit = self.settings.max_experiments
        busy = 1 if self.current is not None else 0
        return not (
            self.controls.winding_down
            or self.controls.paused.is_set()
            or (limit is not None and self.completed + busy >= limit)
        )

    def _lease_now(self) -> HeldLease | None:
        self.state = SlotState.LEASING
        try:
            lease = self.client.lease(self.worker_id, self.settings.wait_s)
        except CoordinatorUnavailable as exc:
            self._back_off(exc)
            return None
        except (NotFound, Forbidden) as exc:  # the coordinator forgot this slot: register again
            logger.warning("worker %s: unknown to the coordinator (%s)", self.worker_id, exc)
            self._register()
            return None
        except AutoswarmError as exc:
            logger.error("worker %s: lease refused: %s", self.worker_id, exc)
            self._back_off(exc)
            return None
        self.backoff.reset()
        if lease is None:
            return None
        held = HeldLease(lease, self.worker_id, self.client).start()
        logger.info(
            "worker %s: experiment %s leased (%s, task %s, token %d)",
            self.worker_id,
            lease.experiment_id,
            lease.kind,
            lease.task_id,
            lease.fencing_token,
        )
        if not self._wants_more():
            held.drop()
            return None
        return held

    def _back_off(self, exc: Exception) -> None:
        delay_s = self.backoff.next_delay_s()
        self.state = SlotState.WAITING
        if not self.worker_id:  # not once registered: a wrong --join, or a coordinator down
            logger.warning(
                "worker %s: has never reached the coordinator at %s (%s): is --join right, "
                "and is the coordinator running? retrying in %.1f s",
                self.name,
                self.settings.join,
                exc,
                delay_s,
            )
        else:
            logger.warning(
                "worker %s: coordinator away (%s), retrying in %.1f s",
                self.worker_id,
                exc,
                delay_s,
            )
        deadline = time.monotonic() + delay_s
        while not self.controls.winding_down and time.monotonic() < deadline:
            self.controls.stop.wait(min(POLL_S, delay_s))  # `finish` (Ctrl-C) ends it too

    # ---- one experiment --------------------------------------------------------------------

    def _run_guarded(self, held: HeldLease) -> None:
        self.current, self.elapsed_s = held, 0.0
        try:
            self._run_experiment(held)
        except RunAbandoned as exc:
            self._abandon(held, str(exc))
        except Exception as exc:  # a slot must outlive any one experiment's trouble
            logger.exception(
                "worker %s: experiment %s failed in the worker", self.worker_id, held.experiment_id
            )
            self._failed_in_worker(held, exc)
        finally:
            self.current = None

    def _failed_in_worker(self, held: HeldLease, exc: Exception) -> None:
        """The first time, hand the experiment back (maybe this machine's passing trouble)
        and back off; the second time, report it `invalid` (an attempt counted): one that
        always fails here must not circle between the queue and this slot."""
        if held.experiment_id not in self._failed_here:
            self._failed_here.append(held.experiment_id)
            self._close(held, release=True)
            self._back_off(exc)
            return
        error = f"the worker failed on this experiment twice: {type(exc).__name__}: {exc}"
        self.completed += 1
        try:
            self._report(
                held,
                Result(status=ResultStatus.INVALID, error=error[:4000], hardware=self.hardware),
            )
        except Exception:  # not even that: the lease expires, and the reaper counts an attempt
            logger.exception("worker %s: could not report %s", self.worker_id, held.experiment_id)
            self._close(held, release=False)

    def _run_experiment(self, held: HeldLease) -> None:
        lease = held.lease
        self.state = SlotState.FETCHING
        task_dir = self._task_dir(held)
        if task_dir is None:
            return
        self.state = SlotState.PREPARING
        try:
            self.runner.preparer.prepare(
                task_dir,
                lease.spec,
                on_tick=lambda _: self._check(held),
                heldout_secret=lease.heldout_secret,
            )
        except PrepareError as exc:
            # Reported, not handed back: a task whose prepare always fails must reach the
            # dead-letter list after max_attempts instead of circling between workers.
            logger.error("worker %s: %s", self.worker_id, exc)
            self.completed += 1
            error = f"prepare failed on this worker: {exc}"[:4000]
            self._report(
                held, Result(status=ResultStatus.CRASH, error=error, hardware=self.hardware)
            )
            return
        if self.controls.stop.is_set():
            raise RunAbandoned("the worker is stopping")
        self.state = SlotState.RUNNING
        held.started()
        result = self.runner.run(
            task_dir,
            lease.spec,
            budget_s=lease.budget_s,
            on_tick=lambda s: self._tick(held, s),
            warm_next=self._wants_more,
            heldout_secret=lease.heldout_secret,
        )
        self.completed += 1
        self._report(held, result)

    def _task_dir(self, held: HeldLease) -> Path | None:
        while True:
            self._check(held)
            if self.controls.stop.is_set():  # nothing has run yet: hand it back now
                raise RunAbandoned("the worker is stopping")
            try:
                return self.bundles.task_dir(held.lease.bundle_hash, self.client.fetch_bundle)
            except CoordinatorUnavailable as exc:
                self._back_off(exc)
            except (BundleMismatch, NotFound) as exc:
                logger.error(
                    "worker %s: bundle of %s unusable: %s", self.worker_id, held.experiment_id, exc
                )
                self._failed_in_worker(held, exc)
                return None

    def _check(self, held: HeldLease) -> None:
        if held.lost.is_set():
            raise RunAbandoned("the lease is stale")
        if held.cancelled.is_set():
            raise RunAbandoned("the coordinator cancelled it")
        if self.controls.past_grace():
            raise RunAbandoned("the worker is stopping")

    def _tick(self, held: HeldLease, elapsed_s: float) -> None:
        self.elapsed_s = elapsed_s
        self._check(held)
        lead_s = held.lease.budget_s - self.settings.prefetch_lead_s
        if self.settings.prefetch and elapsed_s >= lead_s and self._prefetch_thread is None:
            self._start_prefetch()

    def _abandon(self, held: HeldLease, why: str) -> None:
        # The coordinator asking for it is routine (a run no longer needed); anything else
        # lost the run's work.
        logger.log(
            logging.INFO if held.cancelled.is_set() else logging.WARNING,
            "worker %s: experiment %s abandoned, no report: %s",
            self.worker_id,
            held.experiment_id,
            why,
        )
        self._close(held, release=True)

    def _report(self, held: HeldLease, result: Result) -> None:
        self.state = SlotState.REPORTING
        last: dict[str, Any] = {
            "experiment_id": held.experiment_id,
            "status": str(result.status),
            "metric": result.metric,
            "wall_s": round(result.wall_s, 2),
            "error": result.error,
            "delivery": "dropped",
        }
        if held.abandoned:
            self._abandon(held, "the lease was lost or cancelled during the run")
        else:
            report = ResultReport(
                experiment_id=held.experiment_id,
                fencing_token=held.lease.fencing_token,
                result=result,
            )
            entry = self.outbox.put(report, self.worker_id)
            delivery = self.outbox.deliver(entry, self.client)
            self._close(held, release=False)
            last["delivery"] = str(delivery)
            if delivery is Delivery.RECORDED:
                self.recorded += 1
                self._summary_due = True
                self._reported.set()
            if delivery is Delivery.UNAVAILABLE:
                self.flusher.kick()
        self.last_result = last

    def _follow_summary(self) -> None:
        """Ask for runs kept and credit since the slot started after each report and
        SUMMARY_FOLLOW_UPS times more, never more often than every SUMMARY_EVERY_S."""
        left = 0
        while self.state is not SlotState.STOPPED:
            if self._reported.wait(0.0 if left else SUMMARY_EVERY_S):
                self._reported.clear()
                left = SUMMARY_FOLLOW_UPS + 1
            if left:
                left -= 1
                started = time.monotonic()
                self._ask_summary()
                self.controls.stop.wait(max(0.0, SUMMARY_EVERY_S - (time.monotonic() - started)))

    def _ask_summary(self) -> None:
        try:
            got = self.client.worker_summary(self.worker_id, self.started_s)
        except AutoswarmError as exc:
            logger.info("worker %s: no summary from the coordinator: %s", self.worker_id, exc)
            return
        self.kept, self.credit, self._summary_due = got.kept, got.credit, False

    # ---- prefetch --------------------------------------------------------------------------

    def _start_prefetch(self) -> None:
        if not self._wants_more():
            return
        self._prefetch_thread = threading.Thread(
            target=self._prefetch, name=f"prefetch-{self.slot}", daemon=True
        )
        self._prefetch_thread.start()

    def _prefetch(self) -> None:
        try:
            lease = self.client.lease(self.worker_id, self.settings.wait_s)
        except AutoswarmError as exc:
            logger.info("worker %s: no prefetch: %s", self.worker_id, exc)
            return
        if lease is None:
            return
        held = HeldLease(lease, self.worker_id, self.client).start()
        with self._lock:
            keep = self._accepting_prefetch and self._wants_more()
            if keep:
                self._prefetched = held
        if not keep:
            held.drop()
            return
        logger.info("worker %s: experiment %s prefetched", self.worker_id, lease.experiment_id)
        try:
            self.bundles.task_dir(lease.bundle_hash, self.client.fetch_bundle)
        except (AutoswarmError, OSError) as exc:  # the slot fetches again when it gets there
            logger.info("worker %s: bundle prefetch failed: %s", self.worker_id, exc)

    def _take_prefetched(self) -> HeldLease | None:
        thread = self._prefetch_thread
        if thread is None:
            return None
        while thread.is_alive() and self._wants_more():
            self.state = SlotState.LEASING
            thread.join(POLL_S)
        if thread.is_alive():
            return None  # pausing or winding down: the thread hands back what it gets
        self._prefetch_thread = None
        with self._lock:
            held, self._prefetched = self._prefetched, None
        if held is not None and held.abandoned:
            held.close(release=False)
            return held.successor  # preempted while it waited: what was handed over instead
        return held

    def _drop_prefetched(self, *, final: bool = False) -> None:
        with self._lock:
            held, self._prefetched = self._prefetched, None
            if final:
                self._accepting_prefetch = False
        if held is not None:
            held.drop()

    # ---- preemption ------------------------------------------------------------------------

    def _close(self, held: HeldLease, *, release: bool) -> None:
        """Close a lease; what a preempting heartbeat handed over in its place runs next."""
        held.close(release=release)
        if held.successor is not None:
            self._drop_switched()  # never more than one: a successor is not an explore
            self._switched = held.successor

    def _take_switched(self) -> HeldLease | None:
        held, self._switched = self._switched, None
        if held is not None and held.abandoned:
            held.close(release=False)
            return held.successor
        return held

    def _drop_switched(self) -> None:
        held, self._switched = self._switched, None
        if held is not None:
            held.drop()

    # ---- status ----------------------------------------------------------------------------

    def view(self) -> dict[str, Any]:
        """What `autoswarm worker status` shows for this slot."""
        held = self.current
        out: dict[str, Any] = {
            "slot": self.slot,
            "worker_id": self.worker_id,
            "hardware": self.hardware,
            "state": str(self.state),
            "completed": self.completed,
            "recorded": self.recorded,
            "kept": self.kept,
            "credit": self.credit,
            "experiment_id": None,
            "last_result": self.last_result,
        }
        prefetched = self._prefetched
        out["prefetched"] = prefetched.experiment_id if prefetched is not None else None
        if held is not None:
            out |= {
                "experiment_id": held.experiment_id,
                "task_id": held.lease.task_id,
                "kind": str(held.lease.kind),
                "title": held.lease.title or "",
                "budget_s": held.lease.budget_s,
                "elapsed_s": round(self.elapsed_s, 1),
                "time_left_s": round(max(0.0, held.lease.budget_s - self.elapsed_s), 1),
            }
        return out
