"""The store's Lua semantics against a real Redis: leases, fencing, reports, the reaper."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest
import redis

from autoswarm.coordinator import keys
from autoswarm.coordinator.relay import Relay
from autoswarm.coordinator.store import NewExperiment, Preemption, Store
from autoswarm.coordinator.tokens import create_token, hash_token
from autoswarm.shared.errors import Forbidden, StaleLease
from autoswarm.shared.models import ExperimentKind, ExperimentState, Result, ResultStatus, Scope
from autoswarm.shared.task import TaskSpec
from tests.conftest import wait_until

HW = "cpu:test-2c"
TASK = "demo"
COMMIT = "c" * 40
NOW = 1_000_000.0
TTL = 10.0
OK = Result(status=ResultStatus.OK, metric=1.0)
CRASH = Result(status=ResultStatus.CRASH, error="boom")


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    store = Store(redis_url)
    yield store
    store.close()


def queue(
    store: Store, experiment_id: str, kind: ExperimentKind, *, bundle: str = "b" * 64, **fields: str
) -> str:
    hardware = None if kind is ExperimentKind.EXPLORE else HW
    base = {"bundle_hash": bundle, "parent_commit": COMMIT, **fields}
    new = NewExperiment(experiment_id, TASK, kind, hardware, base)
    assert store.enqueue_experiment(new, now=NOW)
    return experiment_id


def lease(store: Store, worker_id: str = "w1", owner: str = "alice", now: float = NOW) -> str:
    got = store.lease(worker_id, owner, HW, now=now, lease_ttl_s=TTL)
    assert got is not None
    return got[0]


def measure_head(store: Store) -> None:
    """Give TASK a head on HW and one ok baseline, so explores become leasable."""
    head = {"commit": COMMIT, "bundle_hash": "h" * 64, "code_bytes": 10}
    baseline = NewExperiment("", TASK, ExperimentKind.BASELINE, HW, {"bundle_hash": "h" * 64})
    store.add_class(TASK, HW, head, baseline, ["base0"], now=NOW)
    got = store.lease("w0", "zed", HW, now=NOW, lease_ttl_s=TTL)
    experiment_id, token = (got.experiment_id, got.fencing_token) if got else ("", 0)
    store.report(experiment_id, "w0", token, OK, now=NOW, max_attempts=3)
    store.record_baseline(
        experiment_id, TASK, HW, COMMIT, 1.0, baseline_runs=1, event={"type": "t"}, now=NOW
    )


def test_lease_takes_baseline_and_replicate_before_merge_before_explore(store: Store) -> None:
    """Priority: baseline and replicate (FIFO between them), then merge, then explore."""
    measure_head(store)
    queue(store, "x1", ExperimentKind.EXPLORE)
    queue(store, "m1", ExperimentKind.MERGE)
    queue(store, "r1", ExperimentKind.REPLICATE)
    queue(store, "b1", ExperimentKind.BASELINE)
    order = [lease(store, worker_id=f"w{i}") for i in range(4)]
    assert order == ["r1", "b1", "m1", "x1"]


def test_lease_is_first_in_first_out_within_a_kind(store: Store) -> None:
    """Two merges are leased in the order they were queued."""
    queue(store, "m1", ExperimentKind.MERGE)
    queue(store, "m2", ExperimentKind.MERGE)
    assert [lease(store, "w1"), lease(store, "w2")] == ["m1", "m2"]


def test_explore_waits_until_the_task_has_a_head_on_the_workers_class(store: Store) -> None:
    """No head on this class (a task that cannot run there): the explore stays queued. With
    one, even before its baselines are in, it is leased (judged once they are)."""
    queue(store, "x1", ExperimentKind.EXPLORE)
    assert store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL) is None
    head = {"commit": COMMIT, "bundle_hash": "h" * 64, "code_bytes": 10}
    baseline = NewExperiment("", TASK, ExperimentKind.BASELINE, HW, {"bundle_hash": "h" * 64})
    store.add_class(TASK, HW, head, baseline, ["base0"], now=NOW)
    assert lease(store, "w1") == "base0"
    assert lease(store, "w2") == "x1"


def test_fencing_token_grows_with_every_lease(store: Store) -> None:
    """Leased, released, leased again: the second lease has a higher token."""
    queue(store, "b1", ExperimentKind.BASELINE)
    first = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert first is not None
    store.release("b1", "w1", first[1])
    second = store.lease("w2", "bob", HW, now=NOW, lease_ttl_s=TTL)
    assert second is not None and second[1] > first[1]


def test_release_queues_again_without_counting_an_attempt(store: Store) -> None:
    """A released experiment is queued with its attempts unchanged."""
    queue(store, "b1", ExperimentKind.BASELINE)
    got = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None
    store.release("b1", "w1", got[1])
    exp = store.get_experiment("b1")
    assert exp is not None and exp.state is ExperimentState.QUEUED and exp.attempts == 0


def test_heartbeat_with_a_stale_token_is_refused(store: Store) -> None:
    """After a re-lease, the first holder's heartbeat raises StaleLease."""
    queue(store, "b1", ExperimentKind.BASELINE)
    first = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert first is not None
    store.reap(now=NOW + TTL + 1, max_attempts=3)
    assert store.lease("w2", "bob", HW, now=NOW + TTL + 1, lease_ttl_s=TTL) is not None
    with pytest.raises(StaleLease):
        store.heartbeat("b1", "w1", first[1], now=NOW + TTL + 2, ttl_s=TTL)


def test_heartbeat_on_another_workers_lease_is_forbidden(store: Store) -> None:
    """The current token, from the wrong worker: Forbidden."""
    queue(store, "b1", ExperimentKind.BASELINE)
    got = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None
    with pytest.raises(Forbidden):
        store.heartbeat("b1", "w2", got[1], now=NOW, ttl_s=TTL)


def test_heartbeat_moves_the_deadline(store: Store, redis_client: redis.Redis) -> None:
    """A renewed lease is not reaped at its first deadline."""
    queue(store, "b1", ExperimentKind.BASELINE)
    got = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None
    store.heartbeat("b1", "w1", got[1], now=NOW + TTL - 1, ttl_s=TTL)
    assert store.reap(now=NOW + TTL + 1, max_attempts=3) == {}
    assert redis_client.zscore(keys.LEASES, "b1") == NOW + 2 * TTL - 1


# ---- preemption: a young explore makes way for a waiting baseline, replicate or merge --------

BUDGET_S = 100.0
# w1 of alice on HW, which can switch: explores younger than a quarter of the budget yield.
SWITCHING = Preemption("alice", HW, 0.25, 60.0)


def _running_explore(store: Store, worker_id: str = "w1", owner: str = "alice") -> int:
    """A task with a budget and a measured head, and an explore x1 leased at NOW: its token."""
    spec = TaskSpec(name=TASK, budget_s=BUDGET_S)
    store.record_task(
        TASK, spec_json=spec.model_dump_json(), bundle_hash="t" * 64, init_commit=COMMIT, now=NOW
    )
    measure_head(store)
    queue(store, "x1", ExperimentKind.EXPLORE)
    queue(store, "x2", ExperimentKind.EXPLORE)
    got = store.lease(worker_id, owner, HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None and got.experiment_id == "x1"
    return got.fencing_token


def test_a_young_explore_is_preempted_by_a_waiting_replicate(store: Store) -> None:
    """A replicate queued while every worker runs an explore: the first heartbeat of a young
    explore hands the replicate to its worker, the explore goes back to the front of the
    explores with no attempt counted, and its old token is stale."""
    token = _running_explore(store)
    queue(store, "r1", ExperimentKind.REPLICATE)
    renewal = store.heartbeat("x1", "w1", token, now=NOW + 20, ttl_s=TTL, preemption=SWITCHING)
    assert renewal.cancel is True and renewal.switched is not None
    assert (renewal.switched.experiment_id, renewal.switched.kind) == ("r1", "replicate")
    replicate = store.get_experiment("r1")
    assert replicate is not None and replicate.state is ExperimentState.LEASED
    assert replicate.worker_id == "w1"
    explore = store.get_experiment("x1")
    assert explore is not None and explore.state is ExperimentState.QUEUED
    assert explore.attempts == 0
    with pytest.raises(StaleLease):
        store.report("x1", "w1", token, OK, now=NOW + 21, max_attempts=3)
    assert lease(store, "w2", owner="bob", now=NOW + 22) == "x1"  # before x2, queued later
    events = [e for e in store.read_events("0", 100) if e.get("type") == "preempted"]
    assert [(e["experiment_id"], e["to"], e["worker_id"]) for e in events] == [("x1", "r1", "w1")]
    # Once preempted, it runs on: it waited for a free worker once already.
    queue(store, "r2", ExperimentKind.REPLICATE)
    relet = store.get_experiment("x1")
    assert relet is not None and relet.worker_id == "w2"
    bob = SWITCHING._replace(owner="bob")
    again = store.heartbeat(
        "x1", "w2", relet.fencing_token, now=NOW + 23, ttl_s=TTL, preemption=bob
    )
    assert again.cancel is False and again.switched is None
    assert lease(store, "w3", owner="carol", now=NOW + 24) == "r2"


def test_an_explore_is_not_preempted_when_old_or_when_its_worker_cannot_switch(
    store: Store,
) -> None:
    """Past a quarter of its budget an explore runs on; so does one whose worker did not say
    it can switch; a heartbeat of a baseline never switches. Each renews its lease."""
    token = _running_explore(store)
    queue(store, "m1", ExperimentKind.MERGE)
    late = store.heartbeat("x1", "w1", token, now=NOW + 25, ttl_s=TTL, preemption=SWITCHING)
    assert late.cancel is False and late.switched is None
    assert store.heartbeat("x1", "w1", token, now=NOW + 1, ttl_s=TTL).switched is None
    never = SWITCHING._replace(within=0.0)
    assert store.heartbeat("x1", "w1", token, now=NOW + 1, ttl_s=TTL, preemption=never) == (
        False,
        None,
    )
    baseline = NewExperiment("b9", TASK, ExperimentKind.BASELINE, HW, {"bundle_hash": "h" * 64})
    store.enqueue_experiment(baseline, now=NOW)
    got = store.lease("w3", "carol", HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None and got.experiment_id == "b9"
    carol = Preemption("carol", HW, 0.25, 60.0)
    renewal = store.heartbeat("b9", "w3", got[1], now=NOW + 1, ttl_s=TTL, preemption=carol)
    assert renewal.switched is None
    explore = store.get_experiment("x1")
    assert explore is not None and explore.state is ExperimentState.LEASED
    assert store.get_experiment("m1") is not None
    assert lease(store, "w2", owner="bob", now=NOW + 2) == "m1"


def test_the_time_an_explore_has_run_is_what_its_worker_says(store: Store) -> None:
    """An explore leased long ago that has not started (prefetched behind the worker's
    current run: 0 s) still gives way; one leased a moment ago whose run has gone past a
    quarter of its budget does not."""
    token = _running_explore(store)
    queue(store, "r1", ExperimentKind.REPLICATE)
    ran_long = store.heartbeat(
        "x1", "w1", token, now=NOW + 1, ttl_s=TTL, preemption=SWITCHING, running_s=30.0
    )
    assert ran_long.switched is None
    waited = store.heartbeat(
        "x1", "w1", token, now=NOW + 50, ttl_s=TTL, preemption=SWITCHING, running_s=0.0
    )
    assert waited.switched is not None and waited.switched.experiment_id == "r1"


def test_an_explore_is_not_preempted_by_what_its_worker_may_not_run(store: Store) -> None:
    """A replicate that checks this worker's own claim (within the replicate wait) does not
    preempt it, nor does a merge that yields (a winner set aside under a stronger one, off
    the critical path), though it is leased before explores; waiting explores never preempt
    anything."""
    token = _running_explore(store)
    queue(store, "m1", ExperimentKind.MERGE, yields="1")
    yielding = store.heartbeat("x1", "w1", token, now=NOW + 3, ttl_s=TTL, preemption=SWITCHING)
    assert yielding.switched is None
    assert lease(store, "w2", owner="bob", now=NOW + 4) == "m1"
    queue(store, "r1", ExperimentKind.REPLICATE, exclude_worker="w1", exclude_owner="alice")
    own = store.heartbeat("x1", "w1", token, now=NOW + 5, ttl_s=TTL, preemption=SWITCHING)
    assert own.switched is None
    assert lease(store, "w2", owner="bob", now=NOW + 6) == "r1"
    queue(store, "x3", ExperimentKind.EXPLORE)
    again = store.heartbeat("x1", "w1", token, now=NOW + 7, ttl_s=TTL, preemption=SWITCHING)
    assert again.switched is None


def test_report_with_a_stale_token_changes_nothing(store: Store) -> None:
    """A late report from an expired lease is refused and the new lease is untouched."""
    queue(store, "b1", ExperimentKind.BASELINE)
    first = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert first is not None
    store.reap(now=NOW + TTL + 1, max_attempts=3)
    second = store.lease("w2", "bob", HW, now=NOW + TTL + 1, lease_ttl_s=TTL)
    assert second is not None
    before = store.get_experiment("b1")
    with pytest.raises(StaleLease):
        store.report("b1", "w1", first[1], OK, now=NOW + TTL + 2, max_attempts=3)
    assert store.get_experiment("b1") == before
    assert store.pending_judgements() == []


def test_report_is_accepted_once_from_ten_threads(store: Store) -> None:
    """Ten identical reports at once: one recorded, nine answered as already recorded."""
    queue(store, "b1", ExperimentKind.BASELINE)
    got = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None
    answers: list[bool] = []
    start = threading.Barrier(10)

    def send() -> None:
        start.wait()
        answers.append(store.report("b1", "w1", got[1], OK, now=NOW, max_attempts=3))

    threads = [threading.Thread(target=send) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(answers) == [False] * 9 + [True]
    assert store.pending_judgements() == ["b1"]
    results = [e for e in store.read_events() if e["type"] == "result"]
    assert len(results) == 1


def test_reaper_queues_an_expired_lease_again_with_one_attempt(store: Store) -> None:
    """Past its deadline, a lease is reaped: queued again, attempts 1."""
    queue(store, "b1", ExperimentKind.BASELINE)
    lease(store)
    assert store.reap(now=NOW + TTL - 1, max_attempts=3) == {}
    assert store.reap(now=NOW + TTL + 1, max_attempts=3) == {"b1": "queued"}
    exp = store.get_experiment("b1")
    assert exp is not None and exp.state is ExperimentState.QUEUED and exp.attempts == 1
    assert lease(store, "w2", now=NOW + TTL + 1) == "b1"


def test_reaper_dead_letters_after_max_attempts(store: Store) -> None:
    """The third expiry sends the experiment to the dead-letter list with its last error."""
    queue(store, "b1", ExperimentKind.BASELINE)
    now = NOW
    outcomes = []
    for attempt in range(3):
        lease(store, f"w{attempt}", now=now)
        now += TTL + 1
        outcomes.append(store.reap(now=now, max_attempts=3)["b1"])
    assert outcomes == ["queued", "queued", "dead"]
    exp = store.get_experiment("b1")
    assert exp is not None and exp.state is ExperimentState.DEAD
    assert exp.last_error is not None and "w2" in exp.last_error
    assert store.dead_letters() == ["b1"]
    assert store.lease("w9", "zed", HW, now=now, lease_ttl_s=TTL) is None


def test_failed_baseline_is_retried_then_dead_lettered(store: Store) -> None:
    """A baseline that crashes counts an attempt each time; others still flow."""
    queue(store, "b1", ExperimentKind.BASELINE)
    for attempt in range(3):
        got = store.lease(f"w{attempt}", "a", HW, now=NOW, lease_ttl_s=TTL)
        experiment_id, token = (got.experiment_id, got.fencing_token) if got else ("", 0)
        assert experiment_id == "b1"
        store.report("b1", f"w{attempt}", token, CRASH, now=NOW, max_attempts=3)
    exp = store.get_experiment("b1")
    assert exp is not None and exp.state is ExperimentState.DEAD and exp.last_error == "boom"
    queue(store, "b2", ExperimentKind.BASELINE)
    assert lease(store, "w9") == "b2"


def test_crashed_explore_is_final_at_once(store: Store) -> None:
    """An explore's crash is a result, not an attempt: done, queued for the judge."""
    measure_head(store)
    queue(store, "x1", ExperimentKind.EXPLORE)
    got = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL)
    assert got is not None
    store.report("x1", "w1", got[1], CRASH, now=NOW, max_attempts=3)
    exp = store.get_experiment("x1")
    assert exp is not None and exp.state is ExperimentState.DONE and exp.attempts == 0
    assert "x1" in store.pending_judgements()


def test_replicate_is_not_leased_to_the_worker_it_checks(store: Store) -> None:
    """A replicate excluding w1 (and owner alice) goes to a worker of another owner."""
    queue(store, "r1", ExperimentKind.REPLICATE, exclude_worker="w1", exclude_owner="alice")
    assert store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=TTL) is None
    assert store.lease("w2", "alice", HW, now=NOW, lease_ttl_s=TTL) is None
    assert lease(store, "w3", owner="bob") == "r1"


def test_a_replicate_nobody_else_takes_goes_to_its_finder_after_the_wait(store: Store) -> None:
    """A swarm of one: after replicate_wait_s in the queue the finder may replicate itself."""
    queue(store, "r1", ExperimentKind.REPLICATE, exclude_worker="w1", exclude_owner="alice")
    early = store.lease("w1", "alice", HW, now=NOW + 5, lease_ttl_s=TTL, replicate_wait_s=60)
    late = store.lease("w1", "alice", HW, now=NOW + 61, lease_ttl_s=TTL, replicate_wait_s=60)
    assert early is None
    assert late is not None and late[0] == "r1"


def test_identical_code_is_not_explored_twice(store: Store) -> None:
    """A second hypothesis with the same code is a duplicate; one explore is queued."""
    explore = NewExperiment(
        "x1", TASK, ExperimentKind.EXPLORE, None, {"bundle_hash": "d" * 64, "parent_commit": COMMIT}
    )
    first = store.submit_hypothesis("h1", TASK, {"title": "a"}, explore, "d" * 64, now=NOW)
    again = NewExperiment(
        "x2", TASK, ExperimentKind.EXPLORE, None, {"bundle_hash": "d" * 64, "parent_commit": COMMIT}
    )
    second = store.submit_hypothesis("h2", TASK, {"title": "b"}, again, "d" * 64, now=NOW)
    assert (first.experiment_id, first.duplicate) == ("x1", False)
    assert (second.experiment_id, second.duplicate, second.duplicate_of) == (None, True, "x1")
    assert store.get_experiment("x2") is None
    hyp = store.get_hypothesis("h2")
    assert hyp is not None and hyp.verdict.value == "discarded"


def test_enqueue_is_idempotent_by_experiment_id(store: Store) -> None:
    """Queueing the same follow-up twice leaves one queued experiment."""
    queue(store, "r1", ExperimentKind.REPLICATE)
    new = NewExperiment("r1", TASK, ExperimentKind.REPLICATE, HW, {"bundle_hash": "b" * 64})
    assert store.enqueue_experiment(new, now=NOW) is False
    assert lease(store) == "r1"
    assert store.lease("w2", "bob", HW, now=NOW, lease_ttl_s=TTL) is None


def test_bundles_are_stored_by_content(store: Store) -> None:
    """A bundle reads back byte for byte; unchanged files are stored once."""
    first = store.put_bundle({"train.py": b"A = 1\n", "data.bin": b"\x00\x01"})
    second = store.put_bundle({"train.py": b"A = 2\n", "data.bin": b"\x00\x01"})
    assert store.get_bundle(first) == {"train.py": b"A = 1\n", "data.bin": b"\x00\x01"}
    assert first != second
    assert len(store._r.keys(keys.blob("*"))) == 3


def test_tokens_are_stored_only_as_hashes(store: Store, redis_client: redis.Redis) -> None:
    """A created token is found by its sha256; its text is nowhere in Redis."""
    token = create_token(store, Scope.WORKER, "alice")
    record = store.get_token(hash_token(token))
    assert record is not None and (record.scope, record.name) == (Scope.WORKER, "alice")
    names = redis_client.keys("*")
    values = [str(redis_client.dump(name)) for name in names]
    assert not any(token in text for text in names + values)


def test_the_relay_wakes_the_other_api_processes_and_not_its_own(store: Store) -> None:
    """Two relays on one Redis, as two API processes have: each one's rings and results
    reach the other's waiters (with their count), never its own."""
    heard: dict[str, list[str]] = {"a": [], "b": []}

    def relay(name: str) -> Relay:
        return Relay(
            store,
            on_ring=lambda count: heard[name].append(f"ring {count}"),
            on_result=lambda: heard[name].append("result"),
        ).start()

    a, b = relay("a"), relay("b")
    try:
        # The relays subscribe in their own threads: publish until both are listening.
        def listening() -> bool:
            a.ring(1)
            b.ring(1)
            return bool(heard["a"]) and bool(heard["b"])

        wait_until(listening, 10, "both relays to listen")
        b.result()
        a.ring(3)
        wait_until(lambda: "result" in heard["a"] and "ring 3" in heard["b"], 10, "the wake-ups")
        time.sleep(0.3)  # anything echoed back would have arrived
        assert set(heard["a"]) == {"ring 1", "result"}
        assert set(heard["b"]) == {"ring 1", "ring 3"}
    finally:
        a.stop()
        b.stop()
