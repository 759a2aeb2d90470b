"""`/metrics` after a short run matches what happened; the probes with Redis down.

The run goes through the real API as a worker and a proposer would: two baselines (one
crashes once and is run again), four hypotheses, one explore crashes, one is worse than the
head, one is still leased, one is still queued.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.shared.models import ExperimentKind
from tests.conftest import CoordinatorFactory, RedisServer, RunningCoordinator, wait_until

HW = "cpu:test-2c"
TASK = "tiny"
LEASE_ROUTE = "/api/v1/leases"
HEARTBEAT_ROUTE = "/api/v1/leases/{experiment_id}/heartbeat"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(base_url: str) -> Samples:
    """Every sample of /metrics, parsed by prometheus_client's own parser (no token)."""
    answer = httpx.get(f"{base_url}/metrics", trust_env=False, timeout=30)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def train_py(score: float) -> str:
    return f"SCORE = {score}\nprint('---')\nprint(f'score: {{SCORE}}')\n"


@dataclass
class Run:
    """What the short run did, for the tests to compare /metrics with."""

    coordinator: RunningCoordinator
    worker: httpx.Client
    worker_id: str
    held: dict[str, Any] = field(default_factory=dict)
    lease_calls: int = 0
    ids: list[str] = field(default_factory=list)

    def lease(self) -> dict[str, Any]:
        # A long poll: the judge applies each verdict (and so readies the head) just after
        # the report's answer.
        answer = self.worker.post(LEASE_ROUTE, json={"worker_id": self.worker_id, "wait_s": 10})
        self.lease_calls += 1
        assert answer.status_code == 200
        lease: dict[str, Any] = answer.json()
        self.ids.append(lease["experiment_id"])
        return lease

    def report(self, lease: dict[str, Any], status: str, metric: float | None = None) -> None:
        body = {
            "worker_id": self.worker_id,
            "experiment_id": lease["experiment_id"],
            "fencing_token": lease["fencing_token"],
            "result": {"status": status, "metric": metric},
        }
        assert self.worker.post("/api/v1/results", json=body).status_code == 201


@pytest.fixture
def short_run(
    coordinator: RunningCoordinator, task_dir_factory: Callable[..., Path], redis_url: str
) -> Iterator[Run]:
    """The run of the module docstring, on a fresh coordinator and Redis."""
    folder = task_dir_factory(TASK)
    files = {p.name: base64.b64encode(p.read_bytes()).decode() for p in folder.iterdir()}
    with coordinator.client() as admin:
        assert admin.post("/api/v1/tasks", json={"files": files}).status_code == 201
    worker = coordinator.client(coordinator.create_token("worker", "owner-a"))
    answer = worker.post("/api/v1/workers", json={"name": "a", "hardware": HW})
    run = Run(coordinator, worker, answer.json()["worker_id"])
    with coordinator.client(coordinator.create_token("proposer", "p")) as proposer:
        for score in (2.0, 3.0, 4.0, 5.0):
            change = {"train.py": train_py(score)}
            hypothesis = {"task_id": TASK, "title": f"score {score}", "change": change}
            assert proposer.post("/api/v1/hypotheses", json=hypothesis).status_code == 201
    # Baselines first: one ok, one crashes (queued again), then ok; the head is measured.
    for status in ("ok", "crash", "ok"):
        lease = run.lease()
        assert lease["kind"] == "baseline"
        run.report(lease, status, 1.0 if status == "ok" else None)
    # Explores in order: a crash, one worse than the head, one held, one left queued.
    crashed = run.lease()
    run.report(crashed, "crash")
    worse = run.lease()
    run.report(worse, "ok", 2.0)
    run.held = run.lease()
    assert {crashed["kind"], worse["kind"], run.held["kind"]} == {"explore"}
    # The judge loop applies verdicts just after each report's answer: let it finish.
    store = redis.Redis.from_url(redis_url)
    wait_until(lambda: store.zcard("as:judge") == 0, 15, "the judge to catch up")
    store.close()
    yield run
    worker.close()


def test_experiments_are_counted_by_state_and_kind(short_run: Run) -> None:
    """Two baselines done; explores: two done, one leased, one queued; nothing else."""
    samples = scrape(short_run.coordinator.base_url)
    assert value(samples, "autoswarm_store_up") == 1
    expected = {("baseline", "done"): 2, ("explore", "done"): 2}
    expected |= {("explore", "leased"): 1, ("explore", "queued"): 1}
    for kind in ("explore", "baseline", "replicate", "merge"):
        for state in ("queued", "leased", "done", "dead"):
            got = value(samples, "autoswarm_experiments", task_id=TASK, kind=kind, state=state)
            assert got == expected.get((kind, state), 0), (kind, state)


def test_queue_depth_is_what_is_left_to_lease(short_run: Run) -> None:
    """One explore is left in the queue; no baseline is."""
    samples = scrape(short_run.coordinator.base_url)
    assert value(samples, "autoswarm_queue_depth", task_id=TASK, kind="explore") == 1
    assert value(samples, "autoswarm_queue_depth", task_id=TASK, kind="baseline") == 0


def test_results_are_counted_by_kind_and_status(short_run: Run) -> None:
    """Every accepted report counts once, the crashed baseline's too."""
    samples = scrape(short_run.coordinator.base_url)
    name = "autoswarm_results_total"
    assert value(samples, name, task_id=TASK, kind="baseline", status="ok") == 2
    assert value(samples, name, task_id=TASK, kind="baseline", status="crash") == 1
    assert value(samples, name, task_id=TASK, kind="explore", status="ok") == 1
    assert value(samples, name, task_id=TASK, kind="explore", status="crash") == 1


def test_judge_decisions_are_counted_by_verdict(short_run: Run) -> None:
    """The crashed explore is `crashed`, the worse one `discarded`, and nothing was kept."""
    samples = scrape(short_run.coordinator.base_url)
    decisions = {
        dict(labels)["verdict"]: count
        for (name, labels), count in samples.items()
        if name == "autoswarm_judge_decisions_total"
    }
    assert decisions == {"crashed": 1, "discarded": 1}


def test_proposer_spend_is_the_sum_of_what_proposers_reported(short_run: Run) -> None:
    """Spend posted by a proposer adds up per task and model; bad reports change nothing."""
    run = short_run
    path = f"/api/v1/tasks/{TASK}/spend"
    with run.coordinator.client(run.coordinator.create_token("proposer", "llm")) as proposer:
        for model, usd, tokens in (("gpt-x", 0.25, 1000), ("gpt-x", 0.5, 3000), ("local", 0, 9)):
            body = {"model": model, "usd": usd, "tokens": tokens}
            assert proposer.post(path, json=body).status_code == 204
        bad = [{"model": "gpt-x", "usd": -1}, {"model": "a b", "usd": 1}, {"usd": 1}]
        for body in bad:
            assert proposer.post(path, json=body).status_code == 422, body
        answer = proposer.post("/api/v1/tasks/nope/spend", json={"model": "gpt-x", "usd": 1})
        assert answer.status_code == 404
    assert run.worker.post(path, json={"model": "gpt-x", "usd": 9}).status_code == 403
    samples = scrape(run.coordinator.base_url)
    usd = "autoswarm_proposer_spend_usd_total"
    assert value(samples, usd, task_id=TASK, model="gpt-x") == pytest.approx(0.75)
    assert value(samples, usd, task_id=TASK, model="local") == 0
    calls = "autoswarm_proposer_calls_total"
    assert value(samples, calls, task_id=TASK, model="gpt-x") == 2
    assert value(samples, "autoswarm_proposer_tokens_total", task_id=TASK, model="gpt-x") == 4000


def test_the_live_lease_has_an_age(short_run: Run) -> None:
    """One lease is live: the summary counts it and the oldest age is its age."""
    samples = scrape(short_run.coordinator.base_url)
    oldest = value(samples, "autoswarm_lease_oldest_age_seconds")
    assert value(samples, "autoswarm_lease_age_seconds_count") == 1
    assert value(samples, "autoswarm_lease_age_seconds_sum") == pytest.approx(oldest)
    assert 0 < oldest < 30


def test_request_latency_is_recorded_by_route_template(short_run: Run) -> None:
    """Every lease call is one sample of the lease route; a heartbeat is under its template."""
    run = short_run
    body = {"worker_id": run.worker_id, "fencing_token": run.held["fencing_token"]}
    path = f"/api/v1/leases/{run.held['experiment_id']}/heartbeat"
    assert run.worker.post(path, json=body).status_code == 200
    samples = scrape(run.coordinator.base_url)
    name = "autoswarm_http_request_duration_seconds_count"
    assert value(samples, name, method="POST", route=LEASE_ROUTE, status="2xx") == run.lease_calls
    assert value(samples, name, method="POST", route=HEARTBEAT_ROUTE, status="2xx") == 1


def test_a_preemption_is_counted(short_run: Run, redis_url: str) -> None:
    """A baseline queued while the worker runs its young explore: the next heartbeat of a
    worker that can switch hands it the baseline, and /metrics counts one preemption."""
    run = short_run
    assert value(scrape(run.coordinator.base_url), "autoswarm_preemptions_total", task_id=TASK) == 0
    store = Store(redis_url)
    head = store.get_head(TASK, HW)
    assert head is not None
    fields = {"bundle_hash": head.bundle_hash, "parent_commit": head.commit}
    extra = NewExperiment("baseline-extra", TASK, ExperimentKind.BASELINE, HW, fields)
    assert store.enqueue_experiment(extra, now=time.time())
    store.close()
    body = {"worker_id": run.worker_id, "fencing_token": run.held["fencing_token"]}
    path = f"/api/v1/leases/{run.held['experiment_id']}/heartbeat"
    answer = run.worker.post(path, json=body | {"can_switch": True}).json()
    assert answer["cancel"] is True and answer["switch_to"]["experiment_id"] == "baseline-extra"
    samples = scrape(run.coordinator.base_url)
    assert value(samples, "autoswarm_preemptions_total", task_id=TASK) == 1
    assert (
        value(samples, "autoswarm_experiments", task_id=TASK, kind="explore", state="queued") == 2
    )


def test_no_label_names_an_experiment_worker_or_commit(short_run: Run) -> None:
    """Label values are bounded: no experiment id, worker id or hash appears anywhere."""
    run = short_run
    text = httpx.get(f"{run.coordinator.base_url}/metrics", trust_env=False).text
    for experiment_id in run.ids:
        assert experiment_id not in text
    assert run.worker_id not in text
    assert not re.search(r"[0-9a-f]{40}", text)


def test_a_result_between_scrapes_moves_its_experiment_from_leased_to_done(
    short_run: Run,
) -> None:
    """The second scrape sees the held explore done: the cache follows what changed."""
    run = short_run

    def explores(state: str) -> float:
        samples = scrape(run.coordinator.base_url)
        return value(samples, "autoswarm_experiments", task_id=TASK, kind="explore", state=state)

    assert (explores("leased"), explores("done")) == (1, 2)
    run.report(run.held, "ok", 3.0)
    assert (explores("leased"), explores("done")) == (0, 3)


def test_the_counts_are_the_same_after_a_restart(short_run: Run) -> None:
    """The numbers come from Redis: a restarted coordinator scrapes the same counts."""
    families = ("autoswarm_experiments", "autoswarm_results_total", "autoswarm_judge_decisions")

    def store_counts() -> Samples:
        samples = scrape(short_run.coordinator.base_url)
        return {k: v for k, v in samples.items() if k[0].startswith(families)}

    before = store_counts()
    short_run.coordinator.restart()
    assert store_counts() == before
    assert len(before) > 16


# -- probes and scrapes with Redis down -------------------------------------------------------


@pytest.fixture
def redis_down(
    coordinator_factory: CoordinatorFactory, redis_server_factory: Callable[[], RedisServer]
) -> RunningCoordinator:
    """A coordinator whose Redis was killed -9 after it started."""
    server = redis_server_factory()
    coordinator = coordinator_factory(redis_url_override=server.url)
    server.kill()
    return coordinator


def test_readyz_is_503_when_redis_is_down(redis_down: RunningCoordinator) -> None:
    """Readiness fails with Redis gone, and says which check failed."""
    answer = httpx.get(f"{redis_down.base_url}/readyz", trust_env=False, timeout=30)
    assert answer.status_code == 503
    assert answer.json() == {"ready": False, "redis": False, "lineage": True}


def test_livez_is_200_when_redis_is_down(redis_down: RunningCoordinator) -> None:
    """Liveness checks only the process: Redis gone does not restart the coordinator."""
    answer = httpx.get(f"{redis_down.base_url}/livez", trust_env=False, timeout=30)
    assert answer.status_code == 200


def test_metrics_answer_with_redis_down(redis_down: RunningCoordinator) -> None:
    """A scrape still succeeds: the store is reported down, request latency is still there."""
    samples = scrape(redis_down.base_url)
    assert value(samples, "autoswarm_store_up") == 0
    assert not any(name == "autoswarm_experiments" for name, _ in samples)
    assert any(name.startswith("autoswarm_http_request_duration") for name, _ in samples)
