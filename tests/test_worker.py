"""The worker's parts: client error mapping, outbox, bundle cache, control socket, settings."""

from __future__ import annotations

import json
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.shared.client import BundleMismatch, CoordinatorClient, CoordinatorUnavailable
from autoswarm.shared.errors import (
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StaleLease,
    Unauthorized,
)
from autoswarm.shared.models import (
    ExperimentKind,
    HypothesisCreate,
    Result,
    ResultReport,
    ResultStatus,
    WorkerCreate,
)
from autoswarm.shared.task import hash_files
from autoswarm.worker.backoff import Backoff
from autoswarm.worker.bundles import BundleCache
from autoswarm.worker.control import (
    ControlServer,
    StateLock,
    WorkerAlreadyRunning,
    WorkerNotRunning,
    send_command,
)
from autoswarm.worker.outbox import Delivery, Outbox, OutboxFlusher
from autoswarm.worker.preload import PRELOAD_MAIN
from autoswarm.worker.settings import WorkerSettings
from tests.conftest import CoordinatorFactory, RunningCoordinator, processes_in, wait_until
from tests.worker_helpers import (
    WorkerFactory,
    WorkerProcess,
    list_experiments,
    make_task,
    register_task,
    wait_for_state,
)

HW = "cpu:test-2c"
Api = tuple[CoordinatorClient, str]
FILES = {"train.py": b"print('hello')\n", "prepare.py": b"# data\n", "sub/x.txt": b"x"}


def _report(experiment_id: str = "exp-1", fencing_token: int = 1) -> ResultReport:
    result = Result(status=ResultStatus.OK, metric=1.25, wall_s=1.0, hardware="cpu:x86_64-2c")
    return ResultReport(experiment_id=experiment_id, fencing_token=fencing_token, result=result)


def _closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dead_client() -> Iterator[CoordinatorClient]:
    """A client of a coordinator that is not running."""
    with CoordinatorClient(f"http://127.0.0.1:{_closed_port()}", "t", timeout_s=2) as client:
        yield client


# ---- client --------------------------------------------------------------------------------


def test_unreachable_coordinator_raises_coordinator_unavailable(
    dead_client: CoordinatorClient,
) -> None:
    """A refused connection is CoordinatorUnavailable, the one error worth retrying."""
    with pytest.raises(CoordinatorUnavailable):
        dead_client.lease("w", wait_s=0)


# ---- outbox --------------------------------------------------------------------------------


def test_outbox_keeps_reports_across_restarts(tmp_path: Path) -> None:
    """A report put in the outbox is read back, intact, by a new outbox on the same folder."""
    Outbox(tmp_path / "outbox").put(_report("exp-a", 3), "worker-1")
    [entry] = Outbox(tmp_path / "outbox").pending()
    assert entry.worker_id == "worker-1"
    assert entry.report == _report("exp-a", 3)


def test_outbox_keeps_a_report_the_coordinator_did_not_get(
    tmp_path: Path, dead_client: CoordinatorClient
) -> None:
    """Delivery to an unreachable coordinator leaves the report waiting on disk."""
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.put(_report(), "worker-1")
    assert outbox.deliver(entry, dead_client) is Delivery.UNAVAILABLE
    assert outbox.flush(dead_client) == 1
    assert entry.path.exists()


def test_outbox_moves_an_unreadable_report_aside(tmp_path: Path) -> None:
    """A damaged outbox file is moved to rejected/, not retried forever."""
    outbox = Outbox(tmp_path / "outbox")
    (outbox.folder / "broken.1.json").write_text("{not json")
    assert outbox.pending() == []
    assert (outbox.rejected / "broken.1.json").exists()


# ---- bundle cache --------------------------------------------------------------------------


def test_bundle_cache_rejects_content_that_does_not_match_its_hash(tmp_path: Path) -> None:
    """Files that do not hash to the bundle's hash are refused and never cached."""
    cache = BundleCache(tmp_path / "cache")
    bundle_hash = hash_files(FILES)
    with pytest.raises(BundleMismatch):
        cache.task_dir(bundle_hash, lambda _: {**FILES, "train.py": b"evil"})
    assert not cache.bundle_path(bundle_hash).exists()


def test_bundle_cache_refetches_a_corrupted_bundle(tmp_path: Path) -> None:
    """A cached bundle whose bytes changed on disk is dropped and fetched again."""
    cache = BundleCache(tmp_path / "cache")
    bundle_hash = hash_files(FILES)
    fetched: list[str] = []

    def fetch(h: str) -> dict[str, bytes]:
        fetched.append(h)
        return dict(FILES)

    cache.task_dir(bundle_hash, fetch)
    path = cache.bundle_path(bundle_hash)
    body = json.loads(path.read_text())
    body["train.py"] = "ZXZpbA=="  # base64 of "evil"
    path.write_text(json.dumps(body))
    task_dir = cache.task_dir(bundle_hash, fetch)
    assert len(fetched) == 2
    assert (task_dir / "train.py").read_bytes() == FILES["train.py"]


def test_bundle_cache_rebuilds_an_edited_task_folder(tmp_path: Path) -> None:
    """A task folder edited after it was written is rebuilt from the verified bundle."""
    cache = BundleCache(tmp_path / "cache")
    bundle_hash = hash_files(FILES)
    task_dir = cache.task_dir(bundle_hash, lambda _: dict(FILES))
    (task_dir / "prepare.py").chmod(0o644)
    (task_dir / "prepare.py").write_bytes(b"import os; os.system('evil')\n")
    again = cache.task_dir(bundle_hash, lambda _: pytest.fail("fetched again"))
    assert (again / "prepare.py").read_bytes() == FILES["prepare.py"]


def test_bundle_cache_refuses_a_path_outside_the_task_folder(tmp_path: Path) -> None:
    """A bundle naming ../ is refused before anything is written."""
    cache = BundleCache(tmp_path / "cache")
    evil = {"../escape.py": b"x"}
    with pytest.raises(BundleMismatch):
        cache.task_dir(hash_files(evil), lambda _: evil)
    assert not (tmp_path / "cache" / "escape.py").exists()


# ---- control -------------------------------------------------------------------------------


def test_send_command_without_a_worker_says_none_is_running(tmp_path: Path) -> None:
    """`autoswarm worker status` with no worker running is a clear error."""
    with pytest.raises(WorkerNotRunning):
        send_command(tmp_path, "status")


def test_control_socket_carries_a_command_and_its_answer(tmp_path: Path) -> None:
    """A command sent to the state folder's socket reaches the handler; its answer comes back."""
    seen: list[str] = []

    def handler(command: str) -> dict[str, object]:
        seen.append(command)
        return {"ok": True, "paused": command == "pause"}

    server = ControlServer(tmp_path, handler)
    assert server.start()
    try:
        assert send_command(tmp_path, "pause") == {"ok": True, "paused": True}
        assert (tmp_path / "worker.sock").stat().st_mode & 0o077 == 0  # only its user
    finally:
        server.stop()
    assert seen == ["pause"]


def test_state_folder_admits_one_worker(tmp_path: Path) -> None:
    """A second worker on the same state folder is refused."""
    first = StateLock(tmp_path)
    first.acquire()
    try:
        with pytest.raises(WorkerAlreadyRunning):
            StateLock(tmp_path).acquire()
    finally:
        first.release()
    StateLock(tmp_path).acquire()


# ---- settings and back-off -----------------------------------------------------------------


def test_settings_read_a_toml_file_under_env_and_flags(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Flags beat AUTOSWARM_* variables, which beat the TOML file."""
    config = tmp_path / "worker.toml"
    config.write_text('join = "http://file:1"\nname = "from-file"\nwait_s = 7\ngpus = "none"\n')
    monkeypatch.setenv("AUTOSWARM_NAME", "from-env")
    monkeypatch.setenv("AUTOSWARM_WAIT_S", "3")
    settings = WorkerSettings.load(config, wait_s=1.5, token=None)
    assert (settings.join, settings.name, settings.wait_s, settings.gpus) == (
        "http://file:1",
        "from-env",
        1.5,
        "none",
    )


def test_settings_read_the_token_from_its_file(tmp_path: Path) -> None:
    """A token file's content (stripped) is the token."""
    token_file = tmp_path / "token"
    token_file.write_text("secret-token\n")
    settings = WorkerSettings(join="http://x:1", token_file=token_file)
    assert settings.resolved_token() == "secret-token"


def test_backoff_grows_to_its_cap_with_jitter() -> None:
    """Delays stay within [min/2, cap] and the cap binds after enough failures."""
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next_delay_s() for _ in range(200)]
    assert all(0.25 <= d <= 4.0 for d in delays)
    assert max(delays[10:]) > 2.0
    assert len({round(d, 6) for d in delays[10:]}) > 100
    backoff.reset()
    assert backoff.next_delay_s() <= 0.5


def test_backoff_never_drops_below_half_its_window() -> None:
    """Each wait is at least half the doubling window: 0.25+, 0.5+, 1+, then 2+ at the cap."""
    backoff = Backoff(0.5, 4.0)
    delays = [backoff.next_delay_s() for _ in range(200)]
    floors = [0.25, 0.5, 1.0] + [2.0] * 197
    assert all(floor <= d <= 2 * floor for d, floor in zip(delays, floors, strict=True))


# ---- against the real coordinator ----------------------------------------------------------


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerFactory]:
    factory = WorkerFactory(tmp_path)
    yield factory
    factory.stop_all()


@pytest.fixture
def api(coordinator: RunningCoordinator, tmp_path: Path) -> Iterator[tuple[CoordinatorClient, str]]:
    """A worker-token client of a coordinator with a task registered, and a worker id."""
    register_task(coordinator, make_task(tmp_path))
    with CoordinatorClient(coordinator.base_url, coordinator.create_token("worker", "w")) as c:
        yield c, c.register_worker(WorkerCreate(name="w", hardware=HW))


def test_client_maps_an_unknown_token_to_unauthorized(coordinator: RunningCoordinator) -> None:
    """401 becomes Unauthorized."""
    client = CoordinatorClient(coordinator.base_url, "as_unknown")
    with client, pytest.raises(Unauthorized):
        client.register_worker(WorkerCreate(name="w", hardware=HW))


def test_client_maps_a_missing_scope_to_forbidden(coordinator: RunningCoordinator) -> None:
    """403 becomes Forbidden: a read token cannot register a worker."""
    client = CoordinatorClient(coordinator.base_url, coordinator.create_token("read", "r"))
    with client, pytest.raises(Forbidden):
        client.register_worker(WorkerCreate(name="w", hardware=HW))


def test_client_maps_an_unknown_bundle_to_not_found(api: Api) -> None:
    """404 becomes NotFound."""
    client, _ = api
    with pytest.raises(NotFound):
        client.fetch_bundle("0" * 64)


def test_client_maps_a_stale_heartbeat_to_stale_lease(api: Api) -> None:
    """409 on a lease endpoint becomes StaleLease."""
    client, worker_id = api
    first = client.lease(worker_id, 1.0)
    assert first is not None
    client.release(first.experiment_id, worker_id, first.fencing_token)
    second = client.lease(worker_id, 1.0)
    assert second is not None and second.experiment_id == first.experiment_id
    with pytest.raises(StaleLease):
        client.heartbeat(first.experiment_id, worker_id, first.fencing_token)


def test_client_maps_an_oversized_body_to_payload_too_large(
    coordinator: RunningCoordinator, api: Api
) -> None:
    """413 becomes PayloadTooLarge."""
    hypothesis = HypothesisCreate(task_id="sleepy", title="huge", change={"train.py": "#" * 2**21})
    admin = CoordinatorClient(coordinator.base_url, coordinator.admin_token)
    with admin, pytest.raises(PayloadTooLarge):
        admin.submit_hypothesis(hypothesis)


def test_client_maps_invalid_input_to_invalid_input(api: Api) -> None:
    """422 becomes InvalidInput: a long poll of more than 60 s is refused."""
    client, worker_id = api
    with pytest.raises(InvalidInput):
        client.lease(worker_id, 61.0)


def test_client_fetches_a_bundle_that_hashes_to_its_hash(
    api: Api,
) -> None:
    """fetch_bundle returns the leased task's files, verified by hash_files."""
    client, worker_id = api
    lease = client.lease(worker_id, 1.0)
    assert lease is not None
    files = client.fetch_bundle(lease.bundle_hash)
    assert hash_files(files) == lease.bundle_hash and b"SLEEP_S" in files["train.py"]


def test_outbox_delivers_once_the_coordinator_is_back(
    coordinator: RunningCoordinator,
    api: Api,
    tmp_path: Path,
    dead_client: CoordinatorClient,
) -> None:
    """A report kept while the coordinator was away is recorded by the flusher, then removed."""
    client, worker_id = api
    lease = client.lease(worker_id, 1.0)
    assert lease is not None
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.put(_report(lease.experiment_id, lease.fencing_token), worker_id)
    assert outbox.deliver(entry, dead_client) is Delivery.UNAVAILABLE
    flusher = OutboxFlusher(outbox, client, Backoff(0.05, 0.2))
    flusher.start()
    flusher.kick()
    try:
        wait_until(lambda: not outbox.pending(), 10, "the outbox to empty")
    finally:
        flusher.stop()
    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as admin:
        record = admin.get_json(f"experiments/{lease.experiment_id}")
    assert record["result"]["metric"] == 1.25


def test_outbox_drops_a_report_whose_lease_is_stale(api: Api, tmp_path: Path) -> None:
    """A 409 for a waiting report removes it: the experiment was leased again since."""
    client, worker_id = api
    first = client.lease(worker_id, 1.0)
    assert first is not None
    client.release(first.experiment_id, worker_id, first.fencing_token)
    assert client.lease(worker_id, 1.0) is not None
    outbox = Outbox(tmp_path / "outbox")
    entry = outbox.put(_report(first.experiment_id, first.fencing_token), worker_id)
    assert outbox.deliver(entry, client) is Delivery.STALE
    assert outbox.pending() == []


# ---- a real worker process -----------------------------------------------------------------


def _slot(worker: WorkerProcess) -> dict[str, Any]:
    """The worker's one slot, as `autoswarm worker status` shows it."""
    slots: list[dict[str, Any]] = send_command(worker.state_dir, "status")["slots"]
    return slots[0] if slots else {}


def _wait_for_slot(worker: WorkerProcess, state: str, timeout_s: float = 20.0) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def check() -> bool:
        assert worker.alive(), worker.log()
        try:
            seen.update(_slot(worker))
        except WorkerNotRunning:
            return False
        return seen.get("state") == state

    wait_until(check, timeout_s, f"slot state {state}")
    return seen


def test_a_paused_worker_leases_nothing(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path
) -> None:
    """Paused: queued experiments stay queued; resumed: they run."""
    token = coordinator.create_token("worker", "w")
    worker = workers.start(coordinator, token, "w")
    hardware = _wait_for_slot(worker, "leasing")["hardware"]
    assert send_command(worker.state_dir, "pause")["state"] == "paused"
    _wait_for_slot(worker, "paused")
    task_id = register_task(coordinator, make_task(tmp_path))
    with CoordinatorClient(coordinator.base_url, token) as client:  # queues the baselines
        client.register_worker(WorkerCreate(name="other", hardware=hardware))
    assert list_experiments(coordinator, task_id=task_id)
    time.sleep(1.5)  # several lease polls (0.2 s) and long polls (1 s) would have leased
    assert {e["state"] for e in list_experiments(coordinator, task_id=task_id)} == {"queued"}
    send_command(worker.state_dir, "resume")
    wait_until(
        lambda: {e["state"] for e in list_experiments(coordinator, task_id=task_id)} == {"done"},
        20,
        "the baselines to run after resume",
    )


def _interpreters_ahead(worker: WorkerProcess) -> list[int]:
    """Live interpreters started ahead (`[run] preload`) in this worker's work folder."""
    return processes_in(worker.state_dir, PRELOAD_MAIN.encode(), "cmdline")


def test_a_worker_keeps_the_next_run_started_ahead_only_while_it_wants_work(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path
) -> None:
    """A task with `[run] preload`: while a run runs, the next one's interpreter waits beside
    it; a pause drops it once the run has ended, and a worker that finishes leaves none."""
    folder = make_task(tmp_path, sleep_s=4.0)
    with (folder / "task.toml").open("a") as toml:
        toml.write('preload = ["colorsys"]\n')
    task_id = register_task(coordinator, folder)
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w")
    _wait_for_slot(worker, "running")
    wait_until(lambda: len(_interpreters_ahead(worker)) == 1, 10, "an interpreter ahead")
    send_command(worker.state_dir, "pause")
    _wait_for_slot(worker, "paused")
    wait_until(lambda: not _interpreters_ahead(worker), 10, "the paused worker to drop it")
    send_command(worker.state_dir, "finish")
    assert worker.wait() == 0
    assert _interpreters_ahead(worker) == []
    done = [e for e in list_experiments(coordinator, task_id=task_id) if e["state"] == "done"]
    assert done and all(e["result"]["status"] == "ok" for e in done)


def test_finish_stops_after_the_current_experiment(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path
) -> None:
    """finish: the running experiment is reported, the prefetched one handed back, exit 0."""
    task_id = register_task(coordinator, make_task(tmp_path, sleep_s=2.0))
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w")
    running = _wait_for_slot(worker, "running")
    assert send_command(worker.state_dir, "finish")["state"] == "finishing"
    assert worker.wait() == 0
    by_id = {e["experiment_id"]: e for e in list_experiments(coordinator, task_id=task_id)}
    assert by_id.pop(running["experiment_id"])["state"] == "done"
    assert [(e["state"], e["attempts"]) for e in by_id.values()] == [("queued", 0)]


def test_sigterm_hands_back_a_run_that_outlasts_the_grace(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path
) -> None:
    """SIGTERM: a long run is stopped after the grace, its lease released, no attempt counted."""
    task_id = register_task(coordinator, make_task(tmp_path, sleep_s=60, budget_s=90))
    token = coordinator.create_token("worker", "w")
    worker = workers.start(coordinator, token, "w", "--stop-grace-s", "0.5")
    running = _wait_for_slot(worker, "running")
    worker.signal(signal.SIGTERM)
    assert worker.wait() == 0
    record = wait_for_state(coordinator, running["experiment_id"], ("queued",), 5)
    assert record["attempts"] == 0 and record["result"] is None
    assert "handed back" in worker.log()
    assert {e["state"] for e in list_experiments(coordinator, task_id=task_id)} == {"queued"}


def test_a_second_sigint_stops_the_run_at_once(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path
) -> None:
    """Ctrl-C finishes: the run goes on; a second Ctrl-C stops it and hands the lease back."""
    register_task(coordinator, make_task(tmp_path, sleep_s=60, budget_s=90))
    token = coordinator.create_token("worker", "w")
    worker = workers.start(coordinator, token, "w")
    running = _wait_for_slot(worker, "running")
    worker.signal(signal.SIGINT)
    wait_until(lambda: send_command(worker.state_dir, "status")["state"] == "finishing")
    assert _slot(worker)["state"] == "running"
    worker.signal(signal.SIGINT)
    assert worker.wait() == 0
    record = wait_for_state(coordinator, running["experiment_id"], ("queued",), 5)
    assert record["attempts"] == 0


def test_a_withdrawn_experiment_stops_its_run_at_the_next_heartbeat(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path, redis_url: str
) -> None:
    """The coordinator withdraws a running experiment (as it does a merge's replicate once
    the merge is not better): the worker is told so at its next heartbeat, stops the run,
    reports nothing and goes on to the next experiment."""
    register_task(coordinator, make_task(tmp_path, sleep_s=60, budget_s=90))
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w")
    running = _wait_for_slot(worker, "running")
    withdrawn = running["experiment_id"]
    reason = "not needed: withdrawn by the test"
    event: dict[str, FieldValue] = {"type": "verdict", "experiment_id": withdrawn}
    assert Store(redis_url).withdraw(
        withdrawn, verdict="discarded", reason=reason, event=event, now=time.time()
    )
    # Heartbeats come every lease_ttl_s / 3 (5 s here): the run stops long before its 60 s.
    wait_until(
        lambda: _slot(worker).get("experiment_id") not in (None, withdrawn),
        15,
        "the worker to go on to the next experiment",
    )
    assert worker.alive()
    record = wait_for_state(coordinator, withdrawn, ("done",), 5)
    assert record["verdict"] == "discarded" and record["reason"] == reason
    assert record["result"] is None and record["attempts"] == 0
    assert f"coordinator cancelled {withdrawn}" in worker.log()


def test_a_young_explore_is_preempted_by_a_baseline_and_the_worker_runs_that_instead(
    coordinator_factory: CoordinatorFactory,
    workers: WorkerFactory,
    tmp_path: Path,
    redis_url: str,
) -> None:
    """Every worker busy with an explore when a baseline is queued: the worker running a
    young explore is handed the baseline at its next heartbeat, stops the explore and runs
    the baseline; the explore is queued again with no attempt counted. Heartbeats come
    every 20 s here (lease_ttl_s / 3), but while an explore may be preempted (its first 9 s:
    0.1 of its budget) they come every quarter of that: the switch comes within seconds."""
    coordinator = coordinator_factory(lease_ttl_s=60.0, preempt_within=0.1)
    folder = make_task(tmp_path, sleep_s=60, budget_s=90)
    task_id = register_task(coordinator, folder)
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w")
    first = _wait_for_slot(worker, "running")  # one of the head's baselines
    store = Store(redis_url)
    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as admin:
        change = {"train.py": (folder / "train.py").read_text() + "# a change\n"}
        hypothesis = HypothesisCreate(task_id=task_id, title="a change", change=change)
        explore_id = admin.submit_hypothesis(hypothesis)["experiment_id"]
        # The head's baselines would run first: withdraw them (the running one stops at its
        # next heartbeat, within 20 s here), so that the worker takes the explore.
        queued = list_experiments(coordinator, task_id=task_id, kind="baseline")
        event: dict[str, FieldValue] = {"type": "verdict"}
        for baseline in queued:
            store.withdraw(
                baseline["experiment_id"],
                verdict="discarded",
                reason="not needed: withdrawn by the test",
                event=event,
                now=time.time(),
            )
        wait_until(lambda: _slot(worker).get("experiment_id") == explore_id, 40, "the explore")
        head = admin.get_json(f"tasks/{task_id}")["heads"][0]
    extra = NewExperiment(
        "baseline-extra",
        task_id,
        ExperimentKind.BASELINE,
        first["hardware"],
        {"bundle_hash": head["bundle_hash"], "parent_commit": head["commit"]},
    )
    assert store.enqueue_experiment(extra, now=time.time())
    wait_until(lambda: _slot(worker).get("experiment_id") == "baseline-extra", 8, "the switch")
    assert _slot(worker)["kind"] == "baseline" and worker.alive()
    record = wait_for_state(coordinator, explore_id, ("queued",), 5)
    assert record["attempts"] == 0 and record["result"] is None
    assert f"{explore_id} preempted by baseline baseline-extra" in worker.log()
    store.close()


def test_status_shows_the_running_experiment_and_its_time_left(
    coordinator: RunningCoordinator, workers: WorkerFactory, tmp_path: Path
) -> None:
    """status: per slot, the experiment, what it tests, its budget and time left, then the
    last result, and the credit the coordinator counts for its runs since it started."""
    register_task(coordinator, make_task(tmp_path, sleep_s=1.0, budget_s=30))
    worker = workers.start(coordinator, coordinator.create_token("worker", "w"), "w")
    running = _wait_for_slot(worker, "running")
    assert running["budget_s"] == 30 and 0 < running["time_left_s"] <= 30
    assert running["title"] == "baseline of the head"
    wait_until(lambda: _slot(worker).get("last_result") is not None, 20, "a last result")
    last = _slot(worker)["last_result"]
    assert last["status"] == "ok" and last["metric"] == 1.0 and last["delivery"] == "recorded"
    wait_until(lambda: _slot(worker)["credit"] > 0, 20, "the worker's credit")
    assert _slot(worker)["kept"] == 0
