"""The coordinator's entry points: `run_coordinator(settings)` serves the API with uvicorn
until interrupted; `serve_in_thread(settings)` does the same in a background thread (for
`autoswarm up` and tests) and hands back a handle to stop it. Either way the app's
lifespan starts Redis (embedded unless a URL is set), reconciles with the lineage, runs
the reaper and the judge loop, and stops it all cleanly.

With `api_processes` > 1, `run_coordinator` starts the embedded Redis (unless a URL is
set), makes the admin token and reconciles with the lineage itself, then serves the port
from that many uvicorn worker processes, each an app connected to that Redis; one of them
leads (autoswarm.coordinator.leader). The parent watches the embedded Redis and starts it again
(same port, same data) if it dies, as a single process's app does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI

from autoswarm.coordinator.address import (
    check_folder,
    check_port,
    local_url,
    remove_address,
    write_address,
)
from autoswarm.coordinator.api import create_app
from autoswarm.coordinator.readonly import ReadOnly
from autoswarm.coordinator.reconcile import Interrupted, reconcile
from autoswarm.coordinator.redis_server import EmbeddedRedis
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.tokens import ensure_admin_token
from autoswarm.shared.logs import configure_logging

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
# How the parent hands its settings to its API processes (JSON; the admin token included).
PROCESS_SETTINGS_ENV = "AUTOSWARM_COORDINATOR_PROCESS_SETTINGS"


# How uvicorn serves the app, in one process or several. No websockets: nothing here speaks
# them, and importing them warns. Headers are bounded (autoswarm/coordinator/http_protocol.py).
_UVICORN: dict[str, Any] = {
    "http": "autoswarm.coordinator.http_protocol:BoundedHttpToolsProtocol",
    "log_config": None,
    "access_log": False,
    "lifespan": "on",
    "ws": "none",
    "timeout_graceful_shutdown": 10,
}


def _app(settings: CoordinatorSettings, stopping: Callable[[], bool] = lambda: False) -> Any:
    app = create_app(settings, stopping)
    return ReadOnly(app) if settings.read_only else app


def _server(settings: CoordinatorSettings) -> uvicorn.Server:
    server: uvicorn.Server | None = None

    def stopping() -> bool:  # SIGINT/SIGTERM (uvicorn's handler) or `CoordinatorThread.stop`
        return server is not None and server.should_exit

    config = uvicorn.Config(
        _app(settings, stopping), host=settings.host, port=settings.port, **_UVICORN
    )
    server = uvicorn.Server(config)
    return server


def run_coordinator(settings: CoordinatorSettings) -> None:
    """Serve until SIGINT/SIGTERM (blocks). Logging is the caller's to configure. A port
    in use is `PortInUse`, a data folder another coordinator serves `FolderInUse`, raised
    before anything starts."""
    check_folder(settings.data_dir)
    check_port(settings.host, settings.port)
    write_address(settings.data_dir, local_url(settings.host, settings.port))
    try:
        if settings.api_processes > 1:
            _run_processes(settings)
        else:
            _server(settings).run()
    finally:
        remove_address(settings.data_dir)


def _watch(embedded: EmbeddedRedis, interval_s: float, stop: threading.Event) -> None:
    """Start the embedded Redis again whenever it dies, until `stop` (its own thread: a
    Redis started here gets its die-with-parent signal when this thread ends)."""
    while not stop.wait(interval_s):
        try:
            embedded.ensure_running()
        except Exception:
            logger.exception("embedded redis: could not start it again; retrying")


def _run_processes(settings: CoordinatorSettings) -> None:
    embedded = None
    url = settings.redis_url
    if url is None:
        embedded = EmbeddedRedis(settings.redis_dir, appendfsync=settings.redis_appendfsync)
        url = embedded.start()
    stop_watching = threading.Event()
    watcher = None
    if embedded is not None:
        watcher = threading.Thread(
            target=_watch,
            args=(embedded, settings.reaper_interval_s, stop_watching),
            name="redis-watch",
            daemon=True,
        )
        watcher.start()
    try:
        store = Store(url)
        try:
            ensure_admin_token(store, settings)
            if not _reconcile_until_signalled(Scheduler(store, settings)):
                return
        finally:
            store.close()
        given: dict[str, Any] = settings.model_dump(mode="json") | {"redis_url": url}
        if settings.admin_token is not None:
            given["admin_token"] = settings.admin_token.get_secret_value()
        os.environ[PROCESS_SETTINGS_ENV] = json.dumps(given)
        logger.info("coordinator: %d API processes on one port", settings.api_processes)
        uvicorn.run(
            "autoswarm.coordinator.service:process_app",
            factory=True,
            workers=settings.api_processes,
            host=settings.host,
            port=settings.port,
            **_UVICORN,
        )
    finally:
        stop_watching.set()
        if watcher is not None:
            watcher.join()
        if embedded is not None:
            embedded.stop()


def _reconcile_until_signalled(scheduler: Scheduler) -> bool:
    """Reconcile before the API processes start; False if SIGINT or SIGTERM came first (the
    reconcile stops at its next class: nothing is served then)."""
    asked = threading.Event()

    def ask(signum: int, frame: FrameType | None) -> None:
        asked.set()

    previous = {sig: signal.signal(sig, ask) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        applied = reconcile(scheduler, asked.is_set)
    except Interrupted as exc:
        logger.warning("%s", exc)
        return False
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if applied:
        logger.warning("reconcile: %d kept changes re-applied", applied)
    return not asked.is_set()


def process_app() -> FastAPI:
    """One API process's app (uvicorn's factory), with the settings its parent handed down."""
    configure_logging(os.environ.get("AUTOSWARM_LOG_LEVEL", "INFO"))
    app: FastAPI = _app(CoordinatorSettings(**json.loads(os.environ[PROCESS_SETTINGS_ENV])))
    return app


@dataclass
class CoordinatorThread:
    """A coordinator serving from a background thread of this process."""

    url: str
    admin_token: str
    server: uvicorn.Server
    thread: threading.Thread
    data_dir: Path

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop serving, then stop Redis (embedded) and the reaper; waits for it."""
        remove_address(self.data_dir)
        self.server.should_exit = True
        self.thread.join(timeout_s)


def serve_in_thread(settings: CoordinatorSettings) -> CoordinatorThread:
    """Start serving in a daemon thread; returns once the app is ready (or raises).

    `settings.port` 0 is not supported here: pass a free port (one in use is `PortInUse`;
    a data folder another process serves, `FolderInUse`).
    The admin token is the configured one, else the one kept in data_dir/admin.token.
    """
    check_folder(settings.data_dir)
    check_port(settings.host, settings.port)
    server = _server(settings)

    def serve() -> None:  # however it is stopped, the folder no longer says it serves
        try:
            server.run()
        finally:
            remove_address(settings.data_dir)

    thread = threading.Thread(target=serve, name="coordinator", daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the coordinator stopped while starting; see its log")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"the coordinator did not start in {START_TIMEOUT_S:.0f} s")
        time.sleep(0.02)
    if settings.admin_token is not None:
        token = settings.admin_token.get_secret_value()
    else:
        token = settings.admin_token_file.read_text().strip()
    url = local_url(settings.host, settings.port)
    write_address(settings.data_dir, url)
    return CoordinatorThread(url, token, server, thread, settings.data_dir)
