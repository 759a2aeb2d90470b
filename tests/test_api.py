"""The real coordinator app over HTTP: auth, leases, limits, reads (docs/protocol.md)."""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import stat
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import git
import httpx
import pytest
import redis

from autoswarm.coordinator.api.app import _connect
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.shared.client import CoordinatorClient, decode_bundle
from autoswarm.shared.models import Result, ResultReport, ResultStatus, WorkerCreate
from tests.conftest import CoordinatorFactory, RedisServer, RunningCoordinator, upload, wait_until

HW = "cpu:test-2c"


@dataclass
class Worker:
    http: httpx.Client
    worker_id: str

    def lease(self, wait_s: float = 0.0) -> httpx.Response:
        return self.http.post(
            "/api/v1/leases", json={"worker_id": self.worker_id, "wait_s": wait_s}
        )

    def report(self, lease: dict[str, Any], metric: float = 1.0, **extra: Any) -> httpx.Response:
        body = {
            "worker_id": self.worker_id,
            "experiment_id": lease["experiment_id"],
            "fencing_token": lease["fencing_token"],
            "result": {"status": "ok", "metric": metric, **extra},
        }
        return self.http.post("/api/v1/results", json=body)

    def act(self, lease: dict[str, Any], action: str) -> httpx.Response:
        body = {"worker_id": self.worker_id, "fencing_token": lease["fencing_token"]}
        return self.http.post(f"/api/v1/leases/{lease['experiment_id']}/{action}", json=body)


@pytest.fixture
def swarm(
    coordinator: RunningCoordinator, task_dir: Path
) -> Iterator[tuple[RunningCoordinator, Callable[[str], Worker]]]:
    """A coordinator with the tiny task registered, and a maker of registered workers."""
    clients: list[httpx.Client] = []
    with coordinator.client() as admin:
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 201

    def worker(name: str) -> Worker:
        http = coordinator.client(coordinator.create_token("worker", f"owner-{name}"))
        clients.append(http)
        answer = http.post("/api/v1/workers", json={"name": name, "hardware": HW})
        assert answer.status_code == 201
        return Worker(http, answer.json()["worker_id"])

    yield coordinator, worker
    for http in clients:
        http.close()


def experiment(coordinator: RunningCoordinator, experiment_id: str) -> dict[str, Any]:
    with coordinator.client() as admin:
        answer = admin.get(f"/api/v1/experiments/{experiment_id}")
        assert answer.status_code == 200
        return dict(answer.json())


# -- probes, clock, auth --------------------------------------------------------------------


def test_livez_and_readyz_answer_without_a_token(coordinator: RunningCoordinator) -> None:
    """The probes need no token; readyz checks Redis and the lineage folder."""
    with httpx.Client(base_url=coordinator.base_url, trust_env=False) as http:
        assert http.get("/livez").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"ready": True, "redis": True, "lineage": True}


def test_time_answers_the_server_clock(coordinator: RunningCoordinator) -> None:
    """The shared client reads the server's clock."""
    client = CoordinatorClient(coordinator.base_url, coordinator.admin_token)
    with client:
        assert client.server_time() > 1.6e9


def test_a_request_without_a_token_is_401(coordinator: RunningCoordinator) -> None:
    """No Authorization header: 401 with the protocol's error body."""
    with httpx.Client(base_url=coordinator.base_url, trust_env=False) as http:
        answer = http.get("/api/v1/tasks")
    assert answer.status_code == 401
    assert answer.json()["error"] == "unauthorized"


def test_an_unknown_token_is_401(coordinator: RunningCoordinator) -> None:
    """A made-up token is refused."""
    with coordinator.client("as_not_a_real_token") as http:
        assert http.get("/api/v1/tasks").status_code == 401


def test_a_read_token_cannot_register_a_worker(coordinator: RunningCoordinator) -> None:
    """Scope read lacks worker: 403."""
    with coordinator.client(coordinator.create_token("read", "viewer")) as http:
        answer = http.post("/api/v1/workers", json={"name": "w", "hardware": HW})
        assert answer.status_code == 403
        assert http.get("/api/v1/tasks").status_code == 200


def test_a_worker_token_cannot_create_tokens(coordinator: RunningCoordinator) -> None:
    """Only admin creates tokens."""
    with coordinator.client(coordinator.create_token("worker", "w")) as http:
        answer = http.post("/api/v1/tokens", json={"scope": "admin", "name": "me"})
    assert answer.status_code == 403


def test_a_generated_admin_token_is_kept_readable_only_by_the_user(
    coordinator_factory: CoordinatorFactory,
) -> None:
    """No admin token configured: one is written to data_dir/admin.token, mode 0600."""
    running = coordinator_factory(admin_token=None)
    path = running.data_dir / "admin.token"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    with running.client(path.read_text().strip()) as http:
        assert http.get("/api/v1/tasks").status_code == 200


# -- leases ----------------------------------------------------------------------------------


def test_long_poll_answers_204_when_there_is_nothing_to_do(coordinator: RunningCoordinator) -> None:
    """No task: a lease request waits wait_s and answers 204."""
    with coordinator.client(coordinator.create_token("worker", "w")) as http:
        worker_id = http.post("/api/v1/workers", json={"name": "w", "hardware": HW}).json()
        answer = http.post("/api/v1/leases", json={**worker_id, "wait_s": 0.3})
    assert answer.status_code == 204


def test_long_poll_returns_a_lease_queued_while_it_waits(
    coordinator: RunningCoordinator, task_dir: Path
) -> None:
    """A waiting worker gets the baseline queued when a task is registered meanwhile."""
    with coordinator.client(coordinator.create_token("worker", "w")) as http:
        worker_id = http.post("/api/v1/workers", json={"name": "w", "hardware": HW}).json()
        answers: list[httpx.Response] = []
        waiter = threading.Thread(
            target=lambda: answers.append(
                http.post("/api/v1/leases", json={**worker_id, "wait_s": 20})
            )
        )
        waiter.start()
        with coordinator.client() as admin:
            assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 201
        waiter.join()
    assert answers[0].status_code == 200
    assert answers[0].json()["kind"] == "baseline"


def test_a_lease_carries_the_task_spec_and_a_verifiable_bundle(swarm: Any) -> None:
    """The bundle of a lease decodes to files whose hash is the lease's bundle_hash."""
    _, make = swarm
    worker = make("a")
    lease = worker.lease().json()
    assert lease["spec"]["name"] == "tiny" and lease["budget_s"] == 5
    body = worker.http.get(f"/api/v1/bundles/{lease['bundle_hash']}").json()
    files = decode_bundle(lease["bundle_hash"], body)
    assert b"SCORE" in files["train.py"]


def test_worker_a_cannot_heartbeat_report_or_release_worker_bs_lease(swarm: Any) -> None:
    """With B's id or B's lease, A gets 403 every time; B's lease is untouched."""
    coordinator, make = swarm
    a, b = make("a"), make("b")
    lease = b.lease().json()
    impostor = Worker(a.http, b.worker_id)  # A's token, B's worker id
    for actor in (a, impostor):
        assert actor.act(lease, "heartbeat").status_code == 403
        assert actor.act(lease, "release").status_code == 403
        assert actor.report(lease).status_code == 403
    exp = experiment(coordinator, lease["experiment_id"])
    assert exp["state"] == "leased" and exp["result"] is None
    renewed = {"lease_ttl_s": 5.0, "cancel": False, "switch_to": None}
    assert b.act(lease, "heartbeat").json() == renewed


def test_a_workers_summary_counts_its_runs_and_credit_as_the_contributors_page(
    swarm: Any,
) -> None:
    """After a baseline (its lease titled "baseline of the head") is reported, its worker's
    summary counts the run and the credit the contributors page gives its owner; runs since
    a later start are none; another token reading it gets 403, a malformed since_s 422."""
    coordinator, make = swarm
    a, b = make("a"), make("b")
    lease = a.lease().json()
    assert lease["kind"] == "baseline" and lease["title"] == "baseline of the head"
    assert a.report(lease).status_code == 201
    path = f"/api/v1/workers/{a.worker_id}/summary"

    def credited() -> float:
        with coordinator.client() as admin:
            rows = admin.get("/api/v1/contributors").json()["contributors"]
        return next((r["credit"] for r in rows if r["owner"] == "owner-a"), 0.0)

    wait_until(lambda: credited() > 0 and a.http.get(path).json()["credit"] > 0)
    summary = a.http.get(path).json()
    assert (summary["worker_id"], summary["runs"], summary["kept"]) == (a.worker_id, 1, 0)
    assert summary["credit"] == pytest.approx(credited(), rel=1e-6)
    later = a.http.get(path, params={"since_s": time.time() + 60}).json()
    assert (later["runs"], later["kept"], later["credit"]) == (0, 0, 0.0)
    refused = b.http.get(path)
    assert refused.status_code == 403 and "another token" in refused.json()["detail"]
    assert a.http.get(path, params={"since_s": "nan"}).status_code == 422


def test_a_result_is_recorded_once(swarm: Any) -> None:
    """The first report is 201, a repeat 200 `already recorded`."""
    _, make = swarm
    worker = make("a")
    lease = worker.lease().json()
    first, again = worker.report(lease), worker.report(lease)
    assert (first.status_code, first.json()) == (201, {"recorded": True})
    assert again.status_code == 200 and again.json()["recorded"] is False


def test_a_report_under_a_stale_token_is_409(swarm: Any) -> None:
    """Released and leased again: the old token's report is refused, nothing recorded."""
    coordinator, make = swarm
    a, b = make("a"), make("b")
    first = a.lease().json()
    assert a.act(first, "release").status_code == 204
    second = b.lease().json()
    assert second["experiment_id"] == first["experiment_id"]
    assert second["fencing_token"] > first["fencing_token"]
    answer = a.report(first)
    assert answer.status_code == 409 and answer.json()["error"] == "stale_lease"
    assert experiment(coordinator, first["experiment_id"])["result"] is None


def test_the_shared_client_runs_a_whole_cycle(swarm: Any) -> None:
    """Register, lease, heartbeat, report through autoswarm.shared.client: recorded once."""
    coordinator, _ = swarm
    token = coordinator.create_token("worker", "client")
    with CoordinatorClient(coordinator.base_url, token) as client:
        worker_id = client.register_worker(WorkerCreate(name="c", hardware=HW))
        lease = client.lease(worker_id, 1.0)
        assert lease is not None
        renewal = client.heartbeat(lease.experiment_id, worker_id, lease.fencing_token)
        assert renewal.cancel is False and renewal.switch_to is None
        report = ResultReport(
            experiment_id=lease.experiment_id,
            fencing_token=lease.fencing_token,
            result=Result(status=ResultStatus.OK, metric=1.0),
        )
        assert client.report(report, worker_id) is True
        assert client.report(report, worker_id) is False


# -- input limits ----------------------------------------------------------------------------


def test_an_oversized_body_is_413_and_changes_nothing(swarm: Any) -> None:
    """A 2 MB report is refused before parsing; the lease is still open."""
    coordinator, make = swarm
    worker = make("a")
    lease = worker.lease().json()
    answer = worker.report(lease, log_tail="x" * 2_000_000)
    assert answer.status_code == 413 and answer.json()["error"] == "too_large"
    exp = experiment(coordinator, lease["experiment_id"])
    assert exp["state"] == "leased" and exp["result"] is None


def test_a_streamed_body_without_a_length_is_counted_too(swarm: Any) -> None:
    """Chunked upload with no Content-Length: 413 once the count passes the limit."""
    _, make = swarm
    worker = make("a")

    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b" " * 65536

    answer = worker.http.post(
        "/api/v1/results", content=chunks(), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 413


def test_malformed_json_is_422_and_changes_nothing(swarm: Any) -> None:
    """Broken JSON, then a wrong field: 422 both times, the lease is still open."""
    coordinator, make = swarm
    worker = make("a")
    lease = worker.lease().json()
    broken = worker.http.post(
        "/api/v1/results", content=b'{"worker_id": ', headers={"content-type": "application/json"}
    )
    assert broken.status_code == 422 and broken.json()["error"] == "invalid"
    bad = worker.report(lease, status_code_typo=1)
    assert bad.status_code == 422
    exp = experiment(coordinator, lease["experiment_id"])
    assert exp["state"] == "leased" and exp["result"] is None


def test_work_queued_in_one_api_process_wakes_long_polls_in_the_other(
    coordinator_factory: CoordinatorFactory, task_dir: Path
) -> None:
    """Two API processes on one port: hypotheses submitted through one of them wake the long
    polls waiting in both (relayed through Redis), not after their own poll timer (60 s
    here, past the clients' 30 s timeout)."""
    running = coordinator_factory(mode="subprocess", api_processes=2, lease_poll_s=60)
    with running.client() as admin:
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 201
    token = running.create_token("worker", "w")
    workers: list[Worker] = []
    for i in range(6):  # six connections: both processes serve some
        http = running.client(token)
        answer = http.post("/api/v1/workers", json={"name": f"w{i}", "hardware": HW})
        workers.append(Worker(http, answer.json()["worker_id"]))
    for worker in workers[:2]:  # the head's two baselines, measured
        assert worker.report(_lease_within(worker, 10)).status_code == 201
    answers: list[httpx.Response] = []
    threads = [
        threading.Thread(target=lambda w=worker: answers.append(w.lease(wait_s=50)))
        for worker in workers
    ]
    for thread in threads:
        thread.start()
    time.sleep(0.5)  # the six are waiting
    with running.client(running.create_token("proposer", "p")) as proposer:
        for i in range(6):
            change = {"train.py": f"SCORE = 0.{i + 1}\nprint('---')\nprint(f'score: {{SCORE}}')\n"}
            assert proposer.post("/api/v1/hypotheses", json=_hypothesis(change)).status_code == 201
    for thread in threads:
        thread.join()
    for worker in workers:
        worker.http.close()
    assert sorted(answer.status_code for answer in answers) == [200] * 6
    assert {answer.json()["kind"] for answer in answers} == {"explore"}


def _lease_within(worker: Worker, timeout_s: float) -> dict[str, Any]:
    """A lease, asked for again (without waiting) until one comes."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        answer = worker.lease()
        if answer.status_code == 200:
            return dict(answer.json())
        time.sleep(0.1)
    raise AssertionError(f"no lease for {worker.worker_id} within {timeout_s} s")


# -- tasks, hypotheses, reads ----------------------------------------------------------------


def test_registering_the_same_task_twice_is_idempotent(
    coordinator: RunningCoordinator, task_dir: Path
) -> None:
    """The same files twice: the same task; other files under that name: 409."""
    with coordinator.client() as admin:
        first = admin.post("/api/v1/tasks", json=upload(task_dir)).json()
        again = admin.post("/api/v1/tasks", json=upload(task_dir)).json()
        assert first["init_commit"] == again["init_commit"]
        (task_dir / "train.py").write_text("SCORE = 2.0\nprint('---')\nprint(f'score: {SCORE}')\n")
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 409


def test_a_task_path_outside_the_folder_is_refused(
    coordinator: RunningCoordinator, task_dir: Path
) -> None:
    """`../evil.py` in an upload: 422, no task registered."""
    body = upload(task_dir)
    body["files"]["../evil.py"] = base64.b64encode(b"x").decode()
    with coordinator.client() as admin:
        assert admin.post("/api/v1/tasks", json=body).status_code == 422
        assert admin.get("/api/v1/tasks").json() == []


def _hypothesis(change: dict[str, str] | None) -> dict[str, Any]:
    return {"task_id": "tiny", "title": "lower the score", "change": change}


def test_the_same_code_twice_is_a_duplicate(swarm: Any) -> None:
    """Two hypotheses with identical code: one explore experiment, the second a duplicate."""
    coordinator, _ = swarm
    change = {"train.py": "SCORE = 0.5\nprint('---')\nprint(f'score: {SCORE}')\n"}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        first = http.post("/api/v1/hypotheses", json=_hypothesis(change)).json()
        second = http.post("/api/v1/hypotheses", json=_hypothesis(change)).json()
    assert first["duplicate"] is False and first["experiment_id"]
    assert second["duplicate"] is True and second["experiment_id"] is None


def test_the_same_code_at_once_from_many_is_one_experiment(swarm: Any) -> None:
    """Eight identical hypotheses in parallel: one explore, seven duplicates, and the lineage
    keeps the code of that one experiment only."""
    coordinator, _ = swarm
    token = coordinator.create_token("proposer", "p")
    change = {"train.py": "SCORE = 0.5\nprint('---')\nprint(f'score: {SCORE}')\n"}

    def submit(_: int) -> dict[str, Any]:
        with coordinator.client(token) as http:
            answer: dict[str, Any] = http.post(
                "/api/v1/hypotheses", json=_hypothesis(change)
            ).json()
            return answer

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(8)))
    queued = {a["experiment_id"] for a in answers if not a["duplicate"]}
    assert len(queued) == 1 and sum(a["duplicate"] for a in answers) == 7, answers
    assert explore_ids(coordinator) == queued == experiment_refs(coordinator)


def test_a_change_to_a_protected_file_is_refused(swarm: Any) -> None:
    """prepare.py is protected: 422, nothing queued."""
    coordinator, _ = swarm
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        answer = http.post("/api/v1/hypotheses", json=_hypothesis({"prepare.py": "x = 1\n"}))
        assert answer.status_code == 422
        assert http.get("/api/v1/tasks/tiny/context").json()["queue_depth"] == 0


def test_a_title_of_two_lines_or_blank_is_422_and_queues_nothing(swarm: Any) -> None:
    """A kept change's title is its commit subject: one non-blank line, checked at the door."""
    coordinator, _ = swarm
    change = {"train.py": "SCORE = 0.5\nprint('---')\nprint(f'score: {SCORE}')\n"}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        for title in ("lower\nthe score", "lower the score\r", "   "):
            answer = http.post("/api/v1/hypotheses", json=_hypothesis(change) | {"title": title})
            assert answer.status_code == 422, title
            assert "title" in answer.text
        context = http.get("/api/v1/tasks/tiny/context").json()
    assert context["queue_depth"] == 0 and context["in_flight"] == [] and context["history"] == []


def test_the_context_shows_program_head_and_in_flight(swarm: Any) -> None:
    """A proposer reads program.md, the editable files at the head, and what is queued."""
    coordinator, make = swarm
    make("a")
    change = {"train.py": "SCORE = 0.5\nprint('---')\nprint(f'score: {SCORE}')\n"}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        http.post("/api/v1/hypotheses", json=_hypothesis(change))
        context = http.get("/api/v1/tasks/tiny/context").json()
    assert context["program"].startswith("# tiny")
    assert set(context["head_files"]) == {"train.py"}
    assert [h["title"] for h in context["in_flight"]] == ["lower the score"]
    assert context["pending"] == []


def test_a_text_only_hypothesis_waits_for_code_and_keeps_its_author(swarm: Any) -> None:
    """A human's words are pending until a change implements them; the author stays."""
    coordinator, _ = swarm
    words = {**_hypothesis(None), "title": "try a deeper model", "author": "ada"}
    change = {"train.py": "SCORE = 0.5\nprint('---')\nprint(f'score: {SCORE}')\n"}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        human = http.post("/api/v1/hypotheses", json=words).json()
        pending = http.get("/api/v1/tasks/tiny/context").json()["pending"]
        code = {**_hypothesis(change), "implements": human["hypothesis_id"]}
        implemented = http.post("/api/v1/hypotheses", json=code).json()
        again = http.post("/api/v1/hypotheses", json=code)
        context = http.get("/api/v1/tasks/tiny/context").json()
    assert [(h["title"], h["author"]) for h in pending] == [("try a deeper model", "ada")]
    assert implemented["experiment_id"] and again.status_code == 422
    assert context["pending"] == []
    assert [h["author"] for h in context["in_flight"]] == ["ada"]


def test_one_hypothesis_implemented_at_once_by_many_gets_one_implementation(swarm: Any) -> None:
    """Proposers racing to implement the same words: one wins, the rest get 409 or 422."""
    coordinator, _ = swarm
    token = coordinator.create_token("proposer", "p")
    with coordinator.client(token) as http:
        words = {**_hypothesis(None), "title": "try a deeper model", "author": "ada"}
        human = http.post("/api/v1/hypotheses", json=words).json()["hypothesis_id"]

    def implement(n: int) -> int:
        change = {"train.py": f"SCORE = 0.{n + 1}\nprint('---')\nprint(f'score: {{SCORE}}')\n"}
        with coordinator.client(token) as http:
            body = {**_hypothesis(change), "implements": human}
            return int(http.post("/api/v1/hypotheses", json=body).status_code)

    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(implement, range(8)))
    with coordinator.client(token) as http:
        context = http.get("/api/v1/tasks/tiny/context").json()
    assert codes.count(201) == 1 and set(codes) <= {201, 409, 422}, codes
    assert [h["author"] for h in context["in_flight"]] == ["ada"]
    assert context["pending"] == []
    # The losers' code is not left behind in the lineage: one experiment ref, the winner's.
    explores = explore_ids(coordinator)
    assert len(explores) == 1 and experiment_refs(coordinator) == explores


def explore_ids(coordinator: Any) -> set[str]:
    with coordinator.client() as admin:
        page = admin.get("/api/v1/experiments", params={"kind": "explore", "limit": 50}).json()
    return {e["experiment_id"] for e in page["experiments"]}


def experiment_refs(coordinator: Any) -> set[str]:
    """The experiments whose code task tiny's lineage keeps (`refs/experiments/<id>`)."""
    with git.Repo(coordinator.data_dir / "lineage" / "tiny.git") as repo:
        prefix = "refs/experiments/"
        return {r.path.removeprefix(prefix) for r in repo.refs if r.path.startswith(prefix)}


def test_experiments_are_paged_with_a_cursor(swarm: Any) -> None:
    """Two baselines read one per page, newest first, then no cursor."""
    coordinator, make = swarm
    make("a")  # registering a worker queues the task's baselines on its class
    with coordinator.client() as admin:
        first = admin.get("/api/v1/experiments", params={"limit": 1, "kind": "baseline"}).json()
        cursor = first["next_cursor"]
        second = admin.get("/api/v1/experiments", params={"limit": 1, "cursor": cursor}).json()
        third = admin.get(
            "/api/v1/experiments", params={"limit": 1, "cursor": second["next_cursor"]}
        ).json()
    ids = [page["experiments"][0]["experiment_id"] for page in (first, second)]
    assert len(set(ids)) == 2
    assert third == {"experiments": [], "next_cursor": None}


def test_an_experiment_shows_its_diff(swarm: Any) -> None:
    """An explore's read answer carries the unified diff of its change."""
    coordinator, _ = swarm
    change = {"train.py": "SCORE = 0.25\nprint('---')\nprint(f'score: {SCORE}')\n"}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        submitted = http.post("/api/v1/hypotheses", json=_hypothesis(change)).json()
    diff = experiment(coordinator, submitted["experiment_id"])["diff"]
    assert "+SCORE = 0.25" in diff and "-SCORE = 1.0" in diff


def test_an_error_body_follows_the_protocol(coordinator: RunningCoordinator) -> None:
    """Unknown experiment: 404 with error and detail."""
    with coordinator.client() as admin:
        answer = admin.get("/api/v1/experiments/nope")
    assert answer.status_code == 404
    assert set(json.loads(answer.text)) == {"error", "detail"}


# -- the process -----------------------------------------------------------------------------


def test_a_killed_coordinator_with_embedded_redis_restarts_with_its_state(
    coordinator_factory: CoordinatorFactory, task_dir: Path
) -> None:
    """`python -m autoswarm.coordinator`, embedded Redis, kill -9, restart: the task is there."""
    running = coordinator_factory(mode="subprocess", embedded=True)
    with running.client() as admin:
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 201
    running.kill()
    running.restart()
    with running.client() as admin:
        assert [t["task_id"] for t in admin.get("/api/v1/tasks").json()] == ["tiny"]
    assert (running.data_dir / "redis" / "appendonly.aof").exists()


@pytest.mark.parametrize("api_processes", [1, 2])
def test_an_acknowledged_result_survives_a_killed_embedded_redis(
    coordinator_factory: CoordinatorFactory, task_dir: Path, api_processes: int
) -> None:
    """kill -9 the embedded Redis after a 201: it is restarted and the result is there
    (one API process: its app restarts it; several: the parent that started it does)."""
    if api_processes == 1:
        running = coordinator_factory(embedded=True)
    else:
        running = coordinator_factory(embedded=True, mode="subprocess", api_processes=2)
    with running.client() as admin:
        assert admin.post("/api/v1/tasks", json=upload(task_dir)).status_code == 201
    http = running.client(running.create_token("worker", "w"))
    worker = Worker(
        http, http.post("/api/v1/workers", json={"name": "w", "hardware": HW}).json()["worker_id"]
    )
    lease = worker.lease().json()
    assert worker.report(lease, metric=0.75).status_code == 201
    pid = int((running.data_dir / "redis" / "redis.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), what="redis to die")
    pidfile = running.data_dir / "redis" / "redis.pid"
    wait_until(lambda: _new_pid(pidfile, pid), 20, "the embedded redis to be restarted")
    wait_until(lambda: _ready(running.base_url), 20, "the coordinator to be ready again")
    exp = experiment(running, lease["experiment_id"])
    assert exp["result"]["metric"] == 0.75
    http.close()


def test_an_api_process_starting_while_redis_is_away_waits_for_it(tmp_path: Path) -> None:
    """Redis comes up a second after the process starts connecting: it connects (failing at
    once made uvicorn stop the coordinator's other API processes with it)."""
    server = RedisServer(tmp_path / "redis")  # its port chosen, nothing listening yet
    later = threading.Timer(1.0, server.start)
    later.start()
    try:
        settings = CoordinatorSettings(data_dir=tmp_path / "data", redis_url=server.url)
        store, embedded = _connect(settings)
        assert embedded is None and store.ping()
    finally:
        later.join()
        server.stop()


def _new_pid(pidfile: Path, old: int) -> bool:
    try:
        return int(pidfile.read_text()) != old
    except (OSError, ValueError):
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except OSError:
        return True


def _ready(base_url: str) -> bool:
    try:
        return httpx.get(f"{base_url}/readyz", timeout=1, trust_env=False).status_code == 200
    except httpx.HTTPError:
        return False


def test_a_configured_redis_without_appendonly_is_warned_about(
    coordinator_factory: CoordinatorFactory,
    redis_server_factory: Callable[[], RedisServer],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """AUTOSWARM_REDIS_URL pointing at a server with appendonly off: a loud warning."""
    server = redis_server_factory()
    client = redis.Redis.from_url(server.url)
    client.config_set("appendonly", "no")
    client.close()
    with caplog.at_level(logging.WARNING, logger="autoswarm.coordinator.api.app"):
        coordinator_factory(redis_url_override=server.url)
    assert any("appendonly is OFF" in r.getMessage() for r in caplog.records)


def test_settings_read_a_toml_file_under_the_environment_and_arguments(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Arguments beat AUTOSWARM_* variables, which beat the TOML file."""
    config = tmp_path / "coordinator.toml"
    config.write_text("z = 3.0\nbaseline_runs = 5\nmax_attempts = 4\n")
    monkeypatch.setenv("AUTOSWARM_BASELINE_RUNS", "6")
    settings = CoordinatorSettings.load(config, max_attempts=7, port=None)
    assert (settings.z, settings.baseline_runs, settings.max_attempts) == (3.0, 6, 7)
