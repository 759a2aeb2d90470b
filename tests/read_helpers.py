"""Helpers for the read-side tests: a coordinator per test module, and a small run driven
through the real worker and proposer endpoints, step by step, so its outcome is known."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import (
    TINY_TOML,
    RedisServer,
    RunningCoordinator,
    start_coordinator,
    tiny_task,
    wait_until,
)
from tests.worker_helpers import register_task

HW = "cpu:test-2c"
TRAIN = "SCORE = {score}  # the metric this run reports\nprint('---')\nprint(f'score: {{SCORE}}')\n"


def serve(root: Path, **settings: Any) -> RunningCoordinator:
    """A coordinator on a Redis of its own under `root`, for one test module; `.stop()`
    stops both."""
    redis = RedisServer(root / "redis").start()
    return start_coordinator(root / "data", redis_url=redis.url, own_redis=redis, **settings)


# The hands report the same score for the same code, as a deterministic task would, but the
# runs they drive are those of a noisy one (a new head is measured by baselines): the task
# says it is noisy, so two equal runs do not make its heads measured enough.
HAND_TOML = TINY_TOML + "noise = 0.001\n"


def hand_task(root: Path, name: str = "tiny") -> Path:
    """The tiny task whose train.py is TRAIN at score 1.0 (the changes hand in TRAIN too)."""
    return tiny_task(root, name, train=TRAIN.format(score=1.0), toml=HAND_TOML)


@dataclass
class HandWorker:
    """A registered worker slot that leases and reports through the HTTP API."""

    http: httpx.Client
    worker_id: str

    def lease(self, kind: str, timeout_s: float = 15.0) -> dict[str, Any]:
        """The next lease, which must be of `kind` (waits for the judge to queue it)."""
        got: dict[str, Any] = {}

        def leased() -> bool:
            answer = self.http.post(
                "/api/v1/leases", json={"worker_id": self.worker_id, "wait_s": 1}
            )
            if answer.status_code == 200:
                got.update(answer.json())
                return True
            return False

        wait_until(leased, timeout_s, f"a {kind} lease")
        assert got["kind"] == kind, got
        return got

    def report(self, lease: dict[str, Any], metric: float | None, status: str = "ok") -> None:
        result: dict[str, Any] = {"status": status, "metric": metric, "hardware": HW}
        result |= {"wall_s": 1.5, "peak_rss_mb": 512.0, "log_tail": f"score: {metric}\n"}
        if status != "ok":
            result |= {"metric": None, "error": "crashed on purpose", "exit_code": 1}
        answer = self.http.post(
            "/api/v1/results",
            json={
                "worker_id": self.worker_id,
                "experiment_id": lease["experiment_id"],
                "fencing_token": lease["fencing_token"],
                "result": result,
            },
        )
        assert answer.status_code == 201, answer.text

    def run(self, kind: str, metric: float | None, status: str = "ok") -> str:
        lease = self.lease(kind)
        self.report(lease, metric, status)
        return str(lease["experiment_id"])


@dataclass
class Run:
    """What a driven run produced, by name."""

    served: RunningCoordinator
    task_id: str
    workers: dict[str, HandWorker] = field(default_factory=dict)
    hypotheses: dict[str, str] = field(default_factory=dict)
    experiments: dict[str, str] = field(default_factory=dict)
    clients: list[httpx.Client] = field(default_factory=list)

    def close(self) -> None:
        for http in self.clients:
            http.close()


def hand_worker(run: Run, owner: str, name: str) -> HandWorker:
    http = run.served.client(run.served.create_token("worker", owner))
    run.clients.append(http)
    answer = http.post("/api/v1/workers", json={"name": name, "hardware": HW})
    assert answer.status_code == 201, answer.text
    worker = HandWorker(http, answer.json()["worker_id"])
    run.workers[name] = worker
    return worker


def submit(run: Run, name: str, score: float, proposer: str, rationale: str = "") -> str:
    with run.served.client() as http:
        answer = http.post(
            "/api/v1/hypotheses",
            json={
                "task_id": run.task_id,
                "title": name,
                "rationale": rationale or f"{name}: try SCORE = {score}",
                "change": {"train.py": TRAIN.format(score=score)},
                "proposer": proposer,
                "author": "tester",
            },
        )
    assert answer.status_code == 201, answer.text
    body = answer.json()
    run.hypotheses[name] = body["hypothesis_id"]
    run.experiments[name] = body["experiment_id"]
    return str(body["experiment_id"])


def wait_verdict(run: Run, name: str, verdict: str) -> None:
    def decided() -> bool:
        hyps = run.served.get(f"tasks/{run.task_id}/hypotheses")
        return any(
            h["hypothesis_id"] == run.hypotheses[name] and h["verdict"] == verdict for h in hyps
        )

    wait_until(decided, 15, f"{name} to be {verdict}")


def drive_run(served: RunningCoordinator, root: Path) -> Run:
    """A small finished run: two baselines; `lower` kept (explore by alice, replicate by
    bob); the new head's baselines; `higher` discarded; `crash` crashed; `queued` waits.

    Owners: `team-a/alice` (worker a) and `bob` (worker b), one hardware class.
    """
    run = Run(served, register_task(served, hand_task(root)))
    a = hand_worker(run, "team-a/alice", "a")
    b = hand_worker(run, "bob", "b")
    run.experiments["baseline-1"] = a.run("baseline", 1.0)
    run.experiments["baseline-2"] = b.run("baseline", 1.0)
    submit(run, "lower", 0.5, "llm:openai/gpt-4o-mini", "a lower SCORE scores lower")
    a.run("explore", 0.5)
    run.experiments["lower-replicate"] = b.run("replicate", 0.5)
    wait_verdict(run, "lower", "kept")
    run.experiments["baseline-3"] = a.run("baseline", 0.5)
    run.experiments["baseline-4"] = b.run("baseline", 0.5)
    submit(run, "higher", 2.0, "mutation")
    a.run("explore", 2.0)
    wait_verdict(run, "higher", "discarded")
    submit(run, "crash", 0.25, "human")
    a.run("explore", None, status="crash")
    wait_verdict(run, "crash", "crashed")
    submit(run, "queued", 0.75, "mutation")
    return run


def every_page(served: RunningCoordinator, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Each page of a paged answer, following `next_cursor`."""
    cursor = None
    while True:
        page = served.get(path, **params, **({"cursor": cursor} if cursor else {}))
        yield page
        cursor = page["next_cursor"]
        if not cursor:
            return
