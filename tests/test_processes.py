"""A coordinator serving its API from several processes on one port (`api_processes`).

Real processes: `python -m autoswarm.coordinator` with two uvicorn worker processes on the test
session's Redis. Every process answers workers; one leads and alone judges; when the
leader is killed -9, another takes over and the results recorded meanwhile are judged.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from tests.conftest import CoordinatorFactory, RunningCoordinator, wait_until
from tests.read_helpers import HW, TRAIN, HandWorker, hand_task
from tests.worker_helpers import register_task

pytestmark = pytest.mark.slow


def api_processes(parent: int) -> set[int]:
    """The API processes: the children of `parent` that multiprocessing spawned."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in cmdline:
            found.add(int(stat.parent.name))
    return found


def leader_pid(client: redis.Redis) -> int | None:
    holder = client.get("as:leader")
    return int(holder.decode().split("-", 1)[0]) if holder else None


def worker(running: RunningCoordinator, owner: str, clients: list[httpx.Client]) -> HandWorker:
    http = running.client(running.create_token("worker", owner))
    clients.append(http)
    answer = http.post("/api/v1/workers", json={"name": owner, "hardware": HW})
    assert answer.status_code == 201, answer.text
    return HandWorker(http, answer.json()["worker_id"])


def submit(running: RunningCoordinator, task_id: str, title: str, score: float) -> str:
    with running.client() as http:
        answer = http.post(
            "/api/v1/hypotheses",
            json={
                "task_id": task_id,
                "title": title,
                "change": {"train.py": TRAIN.format(score=score)},
            },
        )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["hypothesis_id"])


def verdict(running: RunningCoordinator, task_id: str, hypothesis_id: str) -> Any:
    with running.client() as http:
        answer = http.get(f"/api/v1/tasks/{task_id}/hypotheses")
    assert answer.status_code == 200, answer.text
    return next(h["verdict"] for h in answer.json() if h["hypothesis_id"] == hypothesis_id)


def test_api_processes_serve_one_port_and_the_leadership_moves_when_the_leader_dies(
    coordinator_factory: CoordinatorFactory, tmp_path: Path, redis_url: str
) -> None:
    running = coordinator_factory(mode="subprocess", api_processes=2)
    assert running.process is not None
    parent = running.process.pid
    client = redis.Redis.from_url(redis_url)
    wait_until(lambda: len(api_processes(parent)) == 2, 30, "two API processes")
    wait_until(lambda: leader_pid(client) in api_processes(parent), 15, "a leading process")
    first = leader_pid(client)
    assert first is not None

    task_id = register_task(running, hand_task(tmp_path))
    clients: list[httpx.Client] = []
    try:
        a, b = worker(running, "alice", clients), worker(running, "bob", clients)
        a.run("baseline", 1.0)
        b.run("baseline", 1.0)
        worse = submit(running, task_id, "worse", 2.0)
        a.run("explore", 2.0)
        wait_until(lambda: verdict(running, task_id, worse) == "discarded", 15, "judged")

        os.kill(first, signal.SIGKILL)
        # A result recorded while nobody leads waits in Redis for the next leader.
        better = submit(running, task_id, "better", 0.5)
        b.run("explore", 0.5)
        wait_until(lambda: leader_pid(client) not in (None, first), 20, "another process leading")
        a.run("replicate", 0.5)
        wait_until(lambda: verdict(running, task_id, better) == "kept", 20, "kept")
        assert running.process.poll() is None, "the coordinator itself keeps serving"
    finally:
        for http in clients:
            http.close()
        client.close()


def test_one_process_leads_until_it_lets_go_or_its_claim_lapses(redis_url: str) -> None:
    """Two claimants on one Redis: one leads; the other leads once the first lets go, and
    the first leads again only after the other's claim lapses."""
    from autoswarm.coordinator.leader import Leadership
    from autoswarm.coordinator.store import Store

    store = Store(redis_url)
    try:
        first = Leadership(store, shared=True, hold_s=2.0)
        second = Leadership(store, shared=True, hold_s=2.0)
        assert first.renew() and first.leads()
        assert not second.renew() and not second.leads()
        assert first.renew(), "the leader keeps its claim"
        first.let_go()
        assert not first.leads()
        assert second.renew() and second.leads()
        assert not first.renew()
        wait_until(lambda: not second.leads(), 5, "the unrenewed claim to end in its holder")
        wait_until(first.renew, 5, "the lapsed claim to be taken over")
        alone = Leadership(store, shared=False)
        assert alone.renew() and alone.leads(), "a lone process always leads"
    finally:
        store.close()
