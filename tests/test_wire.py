"""Hostile input over the wire, through the real app: refused with a one-line 4xx (or
contained) and nothing changed (autoswarm/shared/wire.py, docs/protocol.md)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from autoswarm.coordinator import keys
from autoswarm.coordinator.lineage import Lineage, branch_for
from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import InvalidInput
from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.summary import read_metric
from autoswarm.shared.wire import MAX_METRICS, check_hardware_class
from tests.conftest import TINY_TOML, CoordinatorFactory, RunningCoordinator, upload

HW = "cpu:x86_64-2c"


@dataclass
class Worker:
    http: httpx.Client
    worker_id: str

    def lease(self) -> dict[str, Any]:
        answer = self.http.post("/api/v1/leases", json={"worker_id": self.worker_id})
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def post_raw(self, path: str, body: dict[str, Any]) -> httpx.Response:
        """POST `body` as JSON text as Python writes it: NaN and Infinity included."""
        headers = {"Content-Type": "application/json"}
        return self.http.post(path, content=json.dumps(body), headers=headers)

    def report(self, lease: dict[str, Any], result: dict[str, Any]) -> httpx.Response:
        body = {
            "worker_id": self.worker_id,
            "experiment_id": lease["experiment_id"],
            "fencing_token": lease["fencing_token"],
            "result": result,
        }
        return self.post_raw("/api/v1/results", body)


MakeWorker = Callable[..., Worker]


@pytest.fixture
def make_worker(coordinator: RunningCoordinator) -> Iterator[MakeWorker]:
    """Registers workers over HTTP, each under a token of its own unless `token` is given."""
    clients: list[httpx.Client] = []

    def make(name: str = "w", hardware: str = HW, token: str | None = None) -> Worker:
        http = coordinator.client(token or coordinator.create_token("worker", f"owner-{name}"))
        clients.append(http)
        answer = http.post("/api/v1/workers", json={"name": name, "hardware": hardware})
        assert answer.status_code == 201, answer.text
        return Worker(http, answer.json()["worker_id"])

    yield make
    for http in clients:
        http.close()


def register(coordinator: RunningCoordinator, folder: Path) -> httpx.Response:
    with coordinator.client() as admin:
        return admin.post("/api/v1/tasks", json=upload(folder))


def get(coordinator: RunningCoordinator, path: str, **params: Any) -> httpx.Response:
    with coordinator.client() as admin:
        return admin.get(f"/api/v1/{path}", params=params)


def experiment(coordinator: RunningCoordinator, experiment_id: str) -> dict[str, Any]:
    answer = get(coordinator, f"experiments/{experiment_id}")
    assert answer.status_code == 200
    return dict(answer.json())


# -- hardware classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "hardware", ["cpu x86_64 2c", "cpu:x86_64 2c", "..", "cpu:x86_64-2c.", "CPU:x86_64-2c"]
)
def test_a_hardware_name_that_is_not_canonical_is_refused_and_kept_nowhere(
    coordinator: RunningCoordinator, hardware: str
) -> None:
    """A non-canonical class (which could share a branch with a real one) is a 422; no record."""
    with coordinator.client(coordinator.create_token("worker", "stranger")) as http:
        answer = http.post("/api/v1/workers", json={"name": "w", "hardware": hardware})
    assert answer.status_code == 422
    assert "hardware" in answer.json()["detail"] and "\n" not in answer.json()["detail"]
    assert get(coordinator, "workers").json() == []


def test_the_refusal_names_the_canonical_class(coordinator: RunningCoordinator) -> None:
    """`cpu x86_64 2c` is refused with a hint of the class it was meant to be."""
    with coordinator.client(coordinator.create_token("worker", "stranger")) as http:
        answer = http.post("/api/v1/workers", json={"name": "w", "hardware": "cpu x86_64 2c"})
    assert "'cpu:x86_64-2c'" in answer.json()["detail"]


def test_a_stored_worker_on_a_fake_class_cannot_reach_the_real_class_branch(
    coordinator: RunningCoordinator,
    make_worker: MakeWorker,
    task_dir: Path,
    redis_client: redis.Redis,
) -> None:
    """A worker stored before classes were canonical (`cpu x86_64 2c`) is refused at lease
    (422); the task keeps one class on branch hw/cpu-x86_64-2c and its head is unchanged."""
    assert register(coordinator, task_dir).status_code == 201
    real = make_worker("real")
    real.lease()
    head = get(coordinator, "tasks/tiny").json()["heads"]
    fake = make_worker("fake")
    redis_client.hset(keys.worker(fake.worker_id), "hardware", "cpu x86_64 2c")
    coordinator.restart()  # forget the cached worker record
    answer = fake.http.post("/api/v1/leases", json={"worker_id": fake.worker_id})
    assert answer.status_code == 422
    assert "register again" in answer.json()["detail"]
    assert get(coordinator, "tasks/tiny").json()["heads"] == head
    assert redis_client.zrange(keys.task_classes("tiny"), 0, -1) == [HW]


def test_a_class_is_not_added_to_a_task_where_another_class_has_its_branch(
    coordinator: RunningCoordinator,
    make_worker: MakeWorker,
    task_dir: Path,
    redis_client: redis.Redis,
) -> None:
    """A task with a class stored before classes were canonical (`cpu x86_64 2c`): a worker
    of `cpu:x86_64-2c`, whose branch that is, gets no baselines of it (204), and the task
    keeps its one class; a keep on one can never move the other's head."""
    assert register(coordinator, task_dir).status_code == 201
    redis_client.zadd(keys.task_classes("tiny"), {"cpu x86_64 2c": 1.0})
    worker = make_worker()
    answer = worker.http.post("/api/v1/leases", json={"worker_id": worker.worker_id})
    assert answer.status_code == 204
    assert redis_client.zrange(keys.task_classes("tiny"), 0, -1) == ["cpu x86_64 2c"]


@pytest.mark.parametrize(
    "classes",
    [
        ("cpu:x86_64-2c", "cpu:x86_64_2c", "cpu:x86.64-2c", "cpux:86_64-2c"),
        ("cuda:NVIDIA-H100", "cuda:NVIDIA-H100-", "cuda-NVIDIA:H100", "cuda:NVIDIA--H100"),
    ],
)
def test_canonical_classes_have_branches_of_their_own(classes: tuple[str, ...]) -> None:
    """Every canonical class has its own lineage branch; the rest are refused, not merged."""
    canonical = []
    for hardware in classes:
        try:
            canonical.append(check_hardware_class(hardware))
        except ValueError:
            continue
    branches = {branch_for(hardware) for hardware in canonical}
    assert len(branches) == len(canonical) >= 2
    assert branches == {"hw/" + hardware.replace(":", "-", 1) for hardware in canonical}


# -- numbers ----------------------------------------------------------------------------------


def test_a_task_with_an_infinite_min_effect_is_refused_naming_the_field(
    coordinator: RunningCoordinator, task_dir_factory: Callable[..., Path]
) -> None:
    """`min_effect = inf`: 422 with one line naming task.toml and the field; no task."""
    toml = TINY_TOML.replace("budget_s = 5", "budget_s = 5\nmin_effect = inf")
    answer = register(coordinator, task_dir_factory(toml=toml))
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert detail.startswith("task.toml: min_effect:") and "\n" not in detail
    assert get(coordinator, "tasks").json() == []


def test_a_stored_task_that_no_longer_validates_breaks_no_read_and_no_start(
    coordinator: RunningCoordinator,
    make_worker: MakeWorker,
    task_dir_factory: Callable[..., Path],
    redis_client: redis.Redis,
) -> None:
    """A task stored with `min_effect: null` (as `inf` once was): the coordinator restarts,
    GET /tasks answers without it, and leases hand out the good task's runs, then 204 (the
    bad task's are withdrawn, not handed out)."""
    assert register(coordinator, task_dir_factory("good")).status_code == 201
    assert register(coordinator, task_dir_factory("bad")).status_code == 201
    worker = make_worker()
    assert worker.lease()["task_id"] == "good"  # both tasks have their baselines queued now
    spec = json.loads(str(redis_client.hget(keys.task("bad"), "spec")))
    redis_client.hset(keys.task("bad"), "spec", json.dumps(spec | {"min_effect": None}))
    coordinator.restart()
    answer = get(coordinator, "tasks")
    assert answer.status_code == 200
    assert [task["task_id"] for task in answer.json()] == ["good"]
    assert get(coordinator, "tasks/bad").status_code == 404
    answers = [worker.http.post("/api/v1/leases", json={"worker_id": worker.worker_id})]
    while answers[-1].status_code == 200 and len(answers) < 10:
        answers.append(worker.http.post("/api/v1/leases", json={"worker_id": worker.worker_id}))
    assert [a.status_code for a in answers] == [200, 204]
    assert answers[0].json()["task_id"] == "good"
    withdrawn = get(coordinator, "experiments", task_id="bad").json()["experiments"]
    assert len(withdrawn) == 2 and {e["verdict"] for e in withdrawn} == {"discarded"}


@pytest.mark.parametrize(
    "result",
    [
        {"status": "ok", "metric": float("nan")},
        {"status": "ok", "metric": float("inf")},
        {"status": "ok", "metric": float("-inf")},
        {"status": "ok", "metric": 1.0, "metrics": {"loss": float("nan")}},
        {"status": "ok", "metric": 1.0, "wall_s": float("inf")},
        {"status": "ok", "metric": 1.0, "peak_vram_mb": float("nan")},
        {"status": "crash", "training_s": float("inf")},
        {"status": "ok"},
        {"status": "ok", "metric": 1.0, "exit_code": 10**30},
    ],
)
def test_a_result_with_a_number_that_is_not_finite_is_refused_and_changes_nothing(
    coordinator: RunningCoordinator,
    make_worker: MakeWorker,
    task_dir: Path,
    result: dict[str, Any],
) -> None:
    """NaN, infinities, an ok without a metric or an absurd int: 422; the lease stands."""
    assert register(coordinator, task_dir).status_code == 201
    worker = make_worker()
    lease = worker.lease()
    answer = worker.report(lease, result)
    assert answer.status_code == 422
    stored = experiment(coordinator, lease["experiment_id"])
    assert stored["state"] == "leased" and stored["result"] is None
    assert worker.report(lease, {"status": "ok", "metric": 1.0}).status_code == 201


def test_a_score_outside_the_tasks_metric_range_is_recorded_invalid(
    coordinator: RunningCoordinator,
    make_worker: MakeWorker,
    task_dir_factory: Callable[..., Path],
) -> None:
    """`[metric] range = [0, 10]`: a reported 1e300 is recorded as invalid with no metric."""
    toml = TINY_TOML.replace('direction = "minimize"', 'direction = "minimize"\nrange = [0, 10]')
    assert register(coordinator, task_dir_factory(toml=toml)).status_code == 201
    worker = make_worker()
    lease = worker.lease()
    assert worker.report(lease, {"status": "ok", "metric": 1e300}).status_code == 201
    stored = experiment(coordinator, lease["experiment_id"])["result"]
    assert stored["status"] == "invalid" and stored["metric"] is None
    assert "outside the task's range [0.0, 10.0]" in stored["error"]


@pytest.mark.parametrize("bad", ["range = [10, 0]", "range = [0, inf]", "range = [nan, 1]"])
def test_a_metric_range_must_be_finite_and_ordered(
    coordinator: RunningCoordinator, task_dir_factory: Callable[..., Path], bad: str
) -> None:
    """A range upside down or not finite refuses the task, naming [metric]."""
    toml = TINY_TOML.replace('direction = "minimize"', f'direction = "minimize"\n{bad}')
    answer = register(coordinator, task_dir_factory(toml=toml))
    assert answer.status_code == 422
    assert answer.json()["detail"].startswith("task.toml: metric")


def test_a_summary_with_too_many_or_too_long_metrics_still_makes_a_valid_result() -> None:
    """A payload printing 1,000 keys or a 1,000-character one: the result keeps what the wire
    carries (the worker never builds a result the coordinator would refuse)."""
    lines = [f"m{i}: {i}" for i in range(1000)] + ["x" * 1000 + ": 1", "score: 2"]
    metric, metrics = read_metric("---\n" + "\n".join(lines), "score")
    result = Result(status=ResultStatus.OK, metric=metric, metrics=metrics)
    assert result.metric == 2 and len(result.metrics) == MAX_METRICS


@pytest.mark.parametrize("query", [{"since": "nan"}, {"until": "inf"}, {"since": "-inf"}])
def test_a_time_filter_that_is_not_finite_is_a_422(
    coordinator: RunningCoordinator, query: dict[str, str]
) -> None:
    """GET /experiments?since=nan answers 422, not 500."""
    answer = get(coordinator, "experiments", **query)
    assert answer.status_code == 422


@pytest.mark.parametrize(
    ("path", "params"),
    [
        ("experiments", {"hardware": ".."}),
        ("experiments", {"worker_id": "w\x00"}),
        ("tasks/tiny/leaderboard", {"hardware": "../../x"}),
        ("tasks/tiny/context", {"hardware": "cpu x"}),
        ("experiments/e..%2Fx", {}),
    ],
)
def test_read_parameters_are_checked_like_bodies(
    coordinator: RunningCoordinator, task_dir: Path, path: str, params: dict[str, str]
) -> None:
    """Ids and hardware classes in paths and queries: a 4xx, never a 500."""
    assert register(coordinator, task_dir).status_code == 201
    answer = get(coordinator, path, **params)
    assert 400 <= answer.status_code < 500


# -- strings ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"title": "nul\x00title"},
        {"title": "escape \x1b[2J"},
        {"title": "lone \ud800 surrogate"},
        {"title": "ok", "rationale": "bell\x07"},
        {"title": "ok", "author": "a\x00b"},
        {"title": "ok", "proposer": "p\nq"},
    ],
)
def test_control_characters_in_a_hypothesis_are_refused_and_store_nothing(
    coordinator: RunningCoordinator, task_dir: Path, fields: dict[str, str]
) -> None:
    """NUL, escapes, lone surrogates, a newline in a one-line field: 422; no hypothesis."""
    assert register(coordinator, task_dir).status_code == 201
    body = {"task_id": "tiny", "change": {"train.py": "SCORE = 2.0\n"}, **fields}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        answer = http.post(
            "/api/v1/hypotheses",
            content=json.dumps(body),
            headers={"Content-Type": "application/json"},
        )
    assert answer.status_code == 422
    assert get(coordinator, "tasks/tiny/hypotheses").json() == []


def test_a_rationale_keeps_newlines_and_tabs_and_reads_crlf_as_newlines(
    coordinator: RunningCoordinator, task_dir: Path
) -> None:
    """Prose may have lines and tabs: stored with plain newlines."""
    assert register(coordinator, task_dir).status_code == 201
    body = {"task_id": "tiny", "title": "t", "rationale": "a\r\n\tb\rc"}
    with coordinator.client(coordinator.create_token("proposer", "p")) as http:
        assert http.post("/api/v1/hypotheses", json=body).status_code == 201
    assert get(coordinator, "tasks/tiny/hypotheses").json()[0]["rationale"] == "a\n\tb\nc"


def test_a_log_tail_with_control_characters_is_cleaned_not_refused(
    coordinator: RunningCoordinator, make_worker: MakeWorker, task_dir: Path
) -> None:
    """A payload's output is not the worker's to choose: NUL and escapes become U+FFFD."""
    assert register(coordinator, task_dir).status_code == 201
    worker = make_worker()
    lease = worker.lease()
    result = {"status": "crash", "log_tail": "a\x00b\x1b[31mc\r\n", "error": "e\x00"}
    assert worker.report(lease, result).status_code == 201
    stored = experiment(coordinator, lease["experiment_id"])["result"]
    assert stored["log_tail"] == "a\ufffdb\ufffd[31mc\n" and stored["error"] == "e\ufffd"


def test_the_lineage_reads_a_stored_commit_whose_message_has_a_nul(tmp_path: Path) -> None:
    """A kept commit written with a NUL in its title (before titles were checked) still reads
    with its `Experiment:` trailer, so it is found and never committed twice."""
    lineage = Lineage(tmp_path, "tiny")
    first = lineage.init({"train.py": b"A = 1\n"}, branch="hw/cpu-a", message="init")
    kept = lineage.commit_change(
        "hw/cpu-a",
        {"train.py": b"A = 2\n"},
        parent=first,
        title="nul\x00title",
        rationale="why\x00not",
        trailers={"Experiment": "e1"},
    )
    newest = lineage.history("hw/cpu-a")[0]
    assert newest.sha == kept and newest.trailers == {"Experiment": "e1"}
    assert newest.title == "nul\ufffdtitle" and newest.parent == first
    assert lineage.find_by_experiment("hw/cpu-a", "e1") == kept


# -- leases -----------------------------------------------------------------------------------


def test_a_report_after_the_lease_was_released_is_stale_and_changes_nothing(
    coordinator: RunningCoordinator, make_worker: MakeWorker, task_dir: Path
) -> None:
    """Released, then reported with the same token: 409; queued, no result recorded."""
    assert register(coordinator, task_dir).status_code == 201
    worker = make_worker()
    lease = worker.lease()
    body = {"worker_id": worker.worker_id, "fencing_token": lease["fencing_token"]}
    released = worker.http.post(f"/api/v1/leases/{lease['experiment_id']}/release", json=body)
    assert released.status_code == 204
    assert worker.report(lease, {"status": "ok", "metric": 1.0}).status_code == 409
    stored = experiment(coordinator, lease["experiment_id"])
    assert stored["state"] == "queued" and stored["result"] is None
    again = worker.lease()
    assert again["experiment_id"] == lease["experiment_id"]
    assert worker.report(again, {"status": "ok", "metric": 1.0}).status_code == 201


# -- bounds per token -------------------------------------------------------------------------


def test_a_worker_token_is_bounded_in_hardware_classes(
    coordinator_factory: CoordinatorFactory,
) -> None:
    """Past max_classes_per_token a new class is a 429 naming the setting; known ones pass."""
    coordinator = coordinator_factory(max_classes_per_token=2)
    with coordinator.client(coordinator.create_token("worker", "many")) as http:
        for i in range(2):
            body = {"name": f"w{i}", "hardware": f"cpu:x86_64-{i + 1}c"}
            assert http.post("/api/v1/workers", json=body).status_code == 201
        body = {"name": "w2", "hardware": "cpu:x86_64-3c"}
        answer = http.post("/api/v1/workers", json=body)
        assert answer.status_code == 429
        assert "max_classes_per_token" in answer.json()["detail"]
        body = {"name": "w3", "hardware": "cpu:x86_64-1c"}
        assert http.post("/api/v1/workers", json=body).status_code == 201
    hardware = {worker["hardware"] for worker in get(coordinator, "workers").json()}
    assert hardware == {"cpu:x86_64-1c", "cpu:x86_64-2c"}


def test_a_worker_token_is_bounded_in_workers(coordinator_factory: CoordinatorFactory) -> None:
    """Past max_workers_per_token a new worker is a 429; one registering again still passes."""
    coordinator = coordinator_factory(max_workers_per_token=2)
    with coordinator.client(coordinator.create_token("worker", "many")) as http:
        for name in ("a", "b"):
            assert http.post("/api/v1/workers", json={"name": name, "hardware": HW}).is_success
        answer = http.post("/api/v1/workers", json={"name": "c", "hardware": HW})
        assert answer.status_code == 429
        assert "max_workers_per_token" in answer.json()["detail"]
        assert http.post("/api/v1/workers", json={"name": "a", "hardware": HW}).is_success
    assert len(get(coordinator, "workers").json()) == 2


def test_a_proposer_token_is_bounded_in_hypotheses_in_flight(
    coordinator_factory: CoordinatorFactory, task_dir: Path
) -> None:
    """Past max_hypotheses_in_flight not yet judged, a submission is a 429; none is stored."""
    coordinator = coordinator_factory(max_hypotheses_in_flight=2)
    assert register(coordinator, task_dir).status_code == 201
    with coordinator.client(coordinator.create_token("proposer", "eager")) as http:
        for i in range(2):
            body = {"task_id": "tiny", "title": f"t{i}", "change": {"train.py": f"S = {i}\n"}}
            assert http.post("/api/v1/hypotheses", json=body).status_code == 201
        body = {"task_id": "tiny", "title": "t9", "change": {"train.py": "S = 9\n"}}
        answer = http.post("/api/v1/hypotheses", json=body)
    assert answer.status_code == 429
    assert "max_hypotheses_in_flight" in answer.json()["detail"]
    assert len(get(coordinator, "tasks/tiny/hypotheses").json()) == 2


# -- the client -------------------------------------------------------------------------------


def test_the_client_refuses_to_send_what_the_coordinator_would_refuse(
    coordinator: RunningCoordinator,
) -> None:
    """Bodies are built by the shared wire models: a bad id never leaves the client."""
    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as client:
        with pytest.raises(InvalidInput, match="LeaseRequest"):
            client.lease("../w", 0)
        with pytest.raises(InvalidInput, match="LeaseAction"):
            client.release("e1", "w1", -1)


def test_a_stored_result_that_the_wire_would_now_refuse_still_reads(
    coordinator: RunningCoordinator,
    make_worker: MakeWorker,
    task_dir: Path,
    redis_client: redis.Redis,
) -> None:
    """An `ok` stored with a null metric and a NUL in its hardware (as a NaN score once was)
    reads back as invalid: GET /experiments/{id} answers 200, not 500."""
    assert register(coordinator, task_dir).status_code == 201
    worker = make_worker()
    lease = worker.lease()
    assert worker.report(lease, {"status": "crash"}).status_code == 201
    old = {"status": "ok", "metric": None, "hardware": "x\x00", "wall_s": -1}
    redis_client.hset(keys.experiment(lease["experiment_id"]), "result", json.dumps(old))
    stored = experiment(coordinator, lease["experiment_id"])["result"]
    assert stored["status"] == "invalid" and stored["metric"] is None
    assert stored["hardware"] == "" and stored["wall_s"] == 0
