"""The coordinator's Prometheus metrics: what the store holds, read at scrape time, and the
latency of every request.

`StoreCollector` reads Redis on each scrape, so its numbers are the store's, whichever
coordinator process answers and however often it restarted. It keeps a cache it can always
rebuild: experiments reach `done` or `dead` once and never leave, so after one pass over the
experiment index (the first scrape of a process, at most `SCAN_PER_SCRAPE` per scrape) a
scrape reads only new experiments and the ones still queued or leased. Counters of what
happened (results, judge decisions, expired leases, preemptions) are folded from the event
stream the same way; the stream keeps about 100,000 events, so a coordinator restarted
after more than that counts from where the stream begins (a counter reset, which
Prometheus handles).

Proposer spend is what proposers told the coordinator (`POST /tasks/{id}/spend`, sent by
the LLM proposer after each call): each proposer's own ledger stays the authority for its
cap, and a report that never arrived is missing here.

Label values are bounded: task ids (registered tasks), kinds, states, statuses, verdicts,
HTTP methods, route templates and status classes. Never an experiment, worker or commit.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
    SummaryMetricFamily,
)
from prometheus_client.gc_collector import GCCollector
from prometheus_client.process_collector import ProcessCollector

from autoswarm.coordinator.store import Store
from autoswarm.shared.models import ExperimentKind, ExperimentState, ResultStatus, Verdict

logger = logging.getLogger(__name__)

# Experiments read per Redis round trip, and at most per scrape (the first scrape after a
# restart of a big deployment spreads its pass over the index across several scrapes).
BATCH = 2_000
SCAN_PER_SCRAPE = 200_000
# Events folded per scrape, at most (the stream keeps ~100,000).
EVENTS_PER_SCRAPE = 200_000
# Long polls for a lease wait up to 60 s: the buckets reach past that.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})

KINDS = tuple(k.value for k in ExperimentKind)
STATES = tuple(s.value for s in ExperimentState)
STATUSES = frozenset(s.value for s in ResultStatus)
VERDICTS = frozenset(v.value for v in Verdict)
SETTLED = frozenset({ExperimentState.DONE.value, ExperimentState.DEAD.value})
LIVE = frozenset({ExperimentState.QUEUED.value, ExperimentState.LEASED.value})


@dataclass
class _Snapshot:
    """What one scrape read: live experiments and the ages of live leases."""

    task_ids: list[str]
    live: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    lease_ages_s: list[float] = field(default_factory=list)
    hypotheses: dict[str, int] = field(default_factory=dict)
    spend: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)


class StoreCollector:
    """Experiments by state and kind, queue depth, lease ages, results, judge decisions.

    Safe to scrape from several threads (one scrape reads at a time). When Redis does not
    answer, a scrape still succeeds with `autoswarm_store_up 0` and without these numbers.
    """

    def __init__(self, store: Store, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        # Experiments: every seq up to _seq was seen; settled ones counted, live ones tracked.
        self._seq = 0
        self._settled: Counter[tuple[str, str, str]] = Counter()  # (task_id, kind, state)
        self._live: dict[str, tuple[str, str]] = {}  # experiment_id -> (task_id, kind)
        # Events folded so far, up to stream id _event_id.
        self._event_id = "0"
        self._results: Counter[tuple[str, str, str]] = Counter()  # (task_id, kind, status)
        self._decisions: Counter[tuple[str, str]] = Counter()  # (task_id, verdict)
        self._expiries: Counter[str] = Counter()  # task_id
        self._preemptions: Counter[str] = Counter()  # task_id

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            snapshot = self._read()
            families = [] if snapshot is None else list(self._families(snapshot))
        up = GaugeMetricFamily("autoswarm_store_up", "1 when Redis answered this scrape.")
        up.add_metric([], 0.0 if snapshot is None else 1.0)
        yield up
        yield from families

    # -- reading ----------------------------------------------------------------------------

    def _read(self) -> _Snapshot | None:
        if not self._store.ping():
            return None
        try:
            snapshot = _Snapshot(task_ids=self._store.task_ids())
            self._scan_new_experiments()
            self._read_live(snapshot)
            self._fold_events()
            for task_id in snapshot.task_ids:
                snapshot.hypotheses[task_id] = self._store.count_hypotheses(task_id)
                snapshot.spend[task_id] = self._store.spend(task_id)
        except Exception:  # a scrape answers even when the store fails it half way
            logger.warning("metrics: cannot read the store; store metrics left out", exc_info=True)
            return None
        return snapshot

    def _scan_new_experiments(self) -> None:
        """Experiments added since the last scrape: settled ones counted, live ones tracked."""
        scanned = 0
        while scanned < SCAN_PER_SCRAPE:
            page = self._store.experiments_after(self._seq, BATCH)
            if not page:
                return
            ids = [experiment_id for experiment_id, _ in page]
            rows = self._store.experiment_fields(ids, ("state", "kind", "task_id"))
            for experiment_id, (state, kind, task_id) in zip(ids, rows, strict=True):
                if state in SETTLED and kind in KINDS and task_id:
                    self._settled[(task_id, kind, state)] += 1
                elif state in LIVE and kind in KINDS and task_id:
                    self._live[experiment_id] = (task_id, kind)
            self._seq = page[-1][1]  # only now: a failed read leaves the page for next time
            scanned += len(page)

    def _read_live(self, snapshot: _Snapshot) -> None:
        """Re-read every tracked live experiment: still live, or settled since."""
        now = self._clock()
        tracked = list(self._live.items())
        for start in range(0, len(tracked), BATCH):
            chunk = tracked[start : start + BATCH]
            rows = self._store.experiment_fields([e for e, _ in chunk], ("state", "leased_s"))
            for (experiment_id, (task_id, kind)), (state, leased_s) in zip(
                chunk, rows, strict=True
            ):
                if state in LIVE:
                    snapshot.live[(task_id, kind, str(state))] += 1
                    if state == ExperimentState.LEASED.value and leased_s:
                        snapshot.lease_ages_s.append(max(0.0, now - float(leased_s)))
                    continue
                del self._live[experiment_id]
                if state in SETTLED:
                    self._settled[(task_id, kind, str(state))] += 1

    def _fold_events(self) -> None:
        """Results, judge decisions and expired leases recorded since the last scrape."""
        folded = 0
        while folded < EVENTS_PER_SCRAPE:
            events = self._store.read_events(self._event_id, BATCH)
            if not events:
                return
            for event in events:
                self._fold(event)
            self._event_id = str(events[-1]["event_id"])
            folded += len(events)

    def _fold(self, event: dict[str, object]) -> None:
        task_id = str(event.get("task_id") or "")
        kind, status = event.get("kind"), event.get("status")
        verdict = event.get("verdict")
        match event.get("type"):
            case "result" if kind in KINDS and status in STATUSES:
                self._results[(task_id, str(kind), str(status))] += 1
            case "verdict" if verdict in VERDICTS:
                self._decisions[(task_id, str(verdict))] += 1
            case "expired":
                self._expiries[task_id] += 1
            case "preempted":
                self._preemptions[task_id] += 1
            case _:
                pass

    # -- exposing ---------------------------------------------------------------------------

    def _families(self, snapshot: _Snapshot) -> Iterator[Metric]:
        tasks = snapshot.task_ids
        experiments = GaugeMetricFamily(
            "autoswarm_experiments",
            "Experiments by task, kind and state (queued, leased, done, dead).",
            labels=["task_id", "kind", "state"],
        )
        queue = GaugeMetricFamily(
            "autoswarm_queue_depth",
            "Experiments queued and not yet leased, by task and kind.",
            labels=["task_id", "kind"],
        )
        for task_id in tasks:
            for kind in KINDS:
                for state in STATES:
                    key = (task_id, kind, state)
                    count = snapshot.live[key] if state in LIVE else self._settled[key]
                    experiments.add_metric([task_id, kind, state], float(count))
                queued = snapshot.live[(task_id, kind, ExperimentState.QUEUED.value)]
                queue.add_metric([task_id, kind], float(queued))
        yield experiments
        yield queue
        yield from _lease_families(snapshot.lease_ages_s)
        yield from self._event_families(tasks)
        hypotheses = CounterMetricFamily(
            "autoswarm_hypotheses",
            "Hypotheses submitted by proposers and humans, by task (duplicates included).",
            labels=["task_id"],
        )
        for task_id in tasks:
            hypotheses.add_metric([task_id], float(snapshot.hypotheses.get(task_id, 0)))
        yield hypotheses
        yield from _spend_families(snapshot.spend)

    def _event_families(self, tasks: list[str]) -> Iterator[Metric]:
        known = set(tasks)
        results = CounterMetricFamily(
            "autoswarm_results",
            "Results accepted from workers, by task, experiment kind and result status.",
            labels=["task_id", "kind", "status"],
        )
        for (task_id, kind, status), count in sorted(self._results.items()):
            if task_id in known:
                results.add_metric([task_id, kind, status], float(count))
        decisions = CounterMetricFamily(
            "autoswarm_judge_decisions",
            "Judge decisions by task and verdict (pending: sent to replication).",
            labels=["task_id", "verdict"],
        )
        for (task_id, verdict), count in sorted(self._decisions.items()):
            if task_id in known:
                decisions.add_metric([task_id, verdict], float(count))
        expiries = CounterMetricFamily(
            "autoswarm_lease_expiries",
            "Leases that expired without a report (the worker stopped renewing), by task.",
            labels=["task_id"],
        )
        preemptions = CounterMetricFamily(
            "autoswarm_preemptions",
            "Explores preempted by a waiting baseline, replicate or merge (queued again), by task.",
            labels=["task_id"],
        )
        for task_id in tasks:
            expiries.add_metric([task_id], float(self._expiries[task_id]))
            preemptions.add_metric([task_id], float(self._preemptions[task_id]))
        yield results
        yield decisions
        yield expiries
        yield preemptions


def _spend_families(spend: dict[str, dict[str, dict[str, float]]]) -> Iterator[Metric]:
    usd = CounterMetricFamily(
        "autoswarm_proposer_spend_usd",
        "What proposers' model calls cost, in US dollars, by task and model (as reported).",
        labels=["task_id", "model"],
    )
    calls = CounterMetricFamily(
        "autoswarm_proposer_calls",
        "Proposers' model calls, by task and model (as reported).",
        labels=["task_id", "model"],
    )
    tokens = CounterMetricFamily(
        "autoswarm_proposer_tokens",
        "Tokens of proposers' model calls, prompt and answer, by task and model.",
        labels=["task_id", "model"],
    )
    for task_id, models in spend.items():
        for model, parts in models.items():
            usd.add_metric([task_id, model], parts.get("usd", 0.0))
            calls.add_metric([task_id, model], parts.get("calls", 0.0))
            tokens.add_metric([task_id, model], parts.get("tokens", 0.0))
    yield usd
    yield calls
    yield tokens


def _lease_families(ages_s: list[float]) -> Iterator[Metric]:
    oldest = GaugeMetricFamily(
        "autoswarm_lease_oldest_age_seconds", "Age of the oldest live lease (0 when none)."
    )
    oldest.add_metric([], max(ages_s, default=0.0))
    yield oldest
    yield SummaryMetricFamily(
        "autoswarm_lease_age_seconds",
        "Ages of the live leases at scrape time, since each was leased (count and sum).",
        count_value=len(ages_s),
        sum_value=math.fsum(ages_s),
    )


class Metrics:
    """One app's metrics registry: process metrics, request latency, and the store's."""

    def __init__(self) -> None:
        # A registry per app, not the global one: tests run several apps in one process.
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.latency = Histogram(
            "autoswarm_http_request_duration_seconds",
            "Request latency by method, route template and status class (2xx, 4xx, ...).",
            ["method", "route", "status"],
            buckets=LATENCY_BUCKETS_S,
            registry=self.registry,
        )

    def watch_store(self, store: Store) -> None:
        """Expose the store's numbers (call once, when the store is connected)."""
        self.registry.register(StoreCollector(store))

    def render(self) -> bytes:
        """Every metric in the Prometheus text format (reads Redis: call off the event loop)."""
        return generate_latest(self.registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        label = method if method in HTTP_METHODS else "other"
        self.latency.labels(label, route, f"{status // 100}xx").observe(seconds)
