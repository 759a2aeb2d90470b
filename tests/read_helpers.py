"""Helpers for the read-side tests: a coordinator per test module, and a small run driven
through the real worker and proposer endpoints, step by step, so its outcome is known."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from coordinator.service import CoordinatorThread, serve_in_thread
from coordinator.settings import CoordinatorSettings
from tests.conftest import TEST_SETTINGS, TINY_TOML, RedisServer, free_port, wait_until
from tests.worker_helpers import register_task

HW = "cpu:test-2c"
TRAIN = "SCORE = {score}  # the metric this run reports\nprint('---')\nprint(f'score: {{SCORE}}')\n"


@dataclass
class Served:
    """A coordinator in a thread of this process, on its own Redis, for one test module."""

    base_url: str
    admin_token: str
    data_dir: Path
    redis: RedisServer
    handle: CoordinatorThread

    def client(self, token: str | None = None) -> httpx.Client:
        """A client with `token` (default: the admin's; "": none)."""
        token = self.admin_token if token is None else token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, trust_env=False, timeout=30)

    def get(self, path: str, **params: Any) -> Any:
        with self.client() as http:
            answer = http.get(f"/api/v1/{path}", params=params)
            assert answer.status_code == 200, answer.text
            return answer.json()

    def create_token(self, scope: str, name: str) -> str:
        with self.client() as http:
            answer = http.post("/api/v1/tokens", json={"scope": scope, "name": name})
            answer.raise_for_status()
            return str(answer.json()["token"])

    def stop(self) -> None:
        self.handle.stop()
        self.redis.stop()


def serve(root: Path, **settings: Any) -> Served:
    """Start Redis and a coordinator under `root`; stop both with `.stop()`."""
    redis = RedisServer(root / "redis").start()
    token = "as_test_" + secrets.token_urlsafe(16)
    values = {
        **TEST_SETTINGS,
        "data_dir": root / "data",
        "port": free_port(),
        "host": "127.0.0.1",
        "redis_url": redis.url,
        "admin_token": token,
        **settings,
    }
    handle = serve_in_thread(CoordinatorSettings(**values))
    return Served(handle.url, token, root / "data", redis, handle)


def write_task(root: Path, name: str = "tiny") -> Path:
    folder = root / "tasks" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "task.toml").write_text(TINY_TOML.format(name=name))
    (folder / "train.py").write_text(TRAIN.format(score=1.0))
    (folder / "prepare.py").write_text("print('nothing to prepare')\n")
    (folder / "program.md").write_text(f"# {name}\n\nMake `score` lower.\n")
    return folder


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

    served: Served
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


def drive_run(served: Served, root: Path) -> Run:
    """A small finished run: two baselines; `lower` kept (explore by alice, replicate by
    bob); the new head's baselines; `higher` discarded; `crash` crashed; `queued` waits.

    Owners: `team-a/alice` (worker a) and `bob` (worker b), one hardware class.
    """
    run = Run(served, register_task(served, write_task(root)))  # type: ignore[arg-type]
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


def every_page(served: Served, path: str, **params: Any) -> Iterator[dict[str, Any]]:
    """Each page of a paged answer, following `next_cursor`."""
    cursor = None
    while True:
        page = served.get(path, **params, **({"cursor": cursor} if cursor else {}))
        yield page
        cursor = page["next_cursor"]
        if not cursor:
            return
