"""What a request must pass before the coordinator reads it: a known token before its body
(memory stays flat under a flood of large unauthenticated bodies), bounded headers, and
Redis being away answered 503 with Retry-After, in one log line and no traceback."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import CoordinatorFactory, RedisServer, RunningCoordinator

FLOOD_REQUESTS = 8  # parallel, each with a body of FLOOD_BODY_MB
FLOOD_BODY_MB = 32
HW = "cpu:test-2c"


def _send(port: int, head: str, body: bytes = b"", timeout_s: float = 10.0) -> str:
    """Send a raw request (as much of `body` as the server takes); its status line, or ""
    when the server closed the connection without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        try:
            sock.sendall(head.encode("latin-1"))
            view = memoryview(body)
            for start in range(0, len(body), 1 << 20):
                sock.sendall(view[start : start + (1 << 20)])
        except OSError:
            pass  # answered and closed before the body was all sent
        try:
            answer = sock.recv(65536)
        except OSError:
            return ""
    return answer.split(b"\r\n", 1)[0].decode("latin-1")


def _post_head(path: str, length: int, token: str | None = None) -> str:
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {length}\r\n\r\n"
    )


def test_an_unauthenticated_body_is_refused_from_its_headers_alone(
    coordinator: RunningCoordinator,
) -> None:
    """A POST declaring 10 MB with no token (or an unknown one) is answered 401 before a
    byte of its body is sent."""
    for token in (None, "not-a-token"):
        status = _send(coordinator.port, _post_head("/api/v1/tasks", 10 << 20, token))
        assert status.startswith("HTTP/1.1 401"), status


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_memory_stays_flat_under_a_flood_of_large_unauthenticated_bodies(
    coordinator_factory: CoordinatorFactory,
) -> None:
    """8 parallel unauthenticated 32 MB task uploads: the coordinator's peak RSS stays
    within 1.5x of its RSS before, and every one is answered 401 or cut off."""
    running = coordinator_factory(mode="subprocess")
    assert running.process is not None
    pid = running.process.pid
    with running.client() as admin:  # warm: the first requests load what they need
        assert admin.get("/api/v1/tasks").status_code == 200
    before = _rss_mb(pid)
    payload = b"A" * (FLOOD_BODY_MB << 20)
    body = b'{"files": {"train.py": "' + payload + b'"}}'
    head = _post_head("/api/v1/tasks", len(body))
    peak = before
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _rss_mb(pid))
            time.sleep(0.02)

    statuses: list[str] = []
    watcher = threading.Thread(target=watch)
    watcher.start()
    senders = [
        threading.Thread(target=lambda: statuses.append(_send(running.port, head, body, 60)))
        for _ in range(FLOOD_REQUESTS)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    done.set()
    watcher.join()
    peak = max(peak, _rss_mb(pid))
    assert all(s == "" or s.startswith("HTTP/1.1 401") for s in statuses), statuses
    assert peak / before < 1.5, f"RSS {before:.0f} MB before, {peak:.0f} MB at peak"
    with running.client() as admin:
        assert admin.get("/api/v1/tasks").status_code == 200


def test_headers_over_their_bound_are_431_and_the_next_request_is_served(
    coordinator: RunningCoordinator,
) -> None:
    """A 1 MB header is answered 431 without reaching the app; the coordinator serves on."""
    pad = "x" * (1 << 20)
    head = f"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {pad}\r\n\r\n"
    assert _send(coordinator.port, head).startswith("HTTP/1.1 431")
    long_url = f"GET /livez?{pad} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    assert _send(coordinator.port, long_url).startswith("HTTP/1.1 431")
    with coordinator.client() as http:
        assert http.get("/livez").status_code == 200


@pytest.fixture
def own_redis(redis_server_factory: Callable[[], RedisServer]) -> RedisServer:
    return redis_server_factory()


def test_every_route_answers_503_with_retry_after_while_redis_is_away(
    coordinator_factory: CoordinatorFactory,
    own_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With Redis stopped, reads, worker and admin writes answer 503 and Retry-After; the
    log has one line for it and no traceback; once Redis is back, they answer again."""
    running = coordinator_factory(redis_url_override=own_redis.url)
    worker_token = running.create_token("worker", "w")
    with running.client(worker_token) as worker:
        answer = worker.post("/api/v1/workers", json={"name": "w1", "hardware": HW})
        assert answer.status_code == 201, answer.text
        worker_id = answer.json()["worker_id"]
    caplog.clear()
    own_redis.stop()
    with caplog.at_level(logging.INFO), running.client() as admin:
        with running.client(worker_token) as worker:
            answers = [
                admin.get("/api/v1/tasks"),
                admin.get("/api/v1/experiments"),
                admin.post("/api/v1/tokens", json={"scope": "read", "name": "r"}),
                worker.post("/api/v1/leases", json={"worker_id": worker_id, "wait_s": 0}),
            ]
            answers.append(running.client("never-seen").post("/api/v1/tokens", json={}))
        time.sleep(0.5)  # the reaper runs every 0.2 s: it meets Redis away too
    for answer in answers:
        assert answer.status_code == 503, (answer.request.url, answer.text)
        assert answer.headers["retry-after"] == "1"
        assert json.loads(answer.text)["error"] == "unavailable"
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"
    away = [r for r in caplog.records if "redis: away" in r.getMessage()]
    assert len(away) == 1, [r.getMessage() for r in caplog.records]
    own_redis.start()
    with running.client() as admin:
        assert admin.get("/api/v1/tasks").status_code == 200
