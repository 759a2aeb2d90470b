"""The coordinator's entry points: `run_coordinator(settings)` serves the API with uvicorn
until interrupted; `serve_in_thread(settings)` does the same in a background thread (for
`autoswarm up` and tests) and hands back a handle to stop it. Either way the app's
lifespan starts Redis (embedded unless a URL is set), reconciles with the lineage, runs
the reaper, and stops it all cleanly."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import uvicorn

from coordinator.api import create_app
from coordinator.settings import CoordinatorSettings

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0


def _server(settings: CoordinatorSettings) -> uvicorn.Server:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="on",
        # No websockets: nothing here speaks them, and importing them warns.
        ws="none",
        timeout_graceful_shutdown=10,
    )
    return uvicorn.Server(config)


def run_coordinator(settings: CoordinatorSettings) -> None:
    """Serve until SIGINT/SIGTERM (blocks). Logging is the caller's to configure."""
    logger.info("coordinator: serving on http://%s:%d", settings.host, settings.port)
    _server(settings).run()


@dataclass
class CoordinatorThread:
    """A coordinator serving from a background thread of this process."""

    url: str
    admin_token: str
    server: uvicorn.Server
    thread: threading.Thread

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop serving, then stop Redis (embedded) and the reaper; waits for it."""
        self.server.should_exit = True
        self.thread.join(timeout_s)


def serve_in_thread(settings: CoordinatorSettings) -> CoordinatorThread:
    """Start serving in a daemon thread; returns once the app is ready (or raises).

    `settings.port` 0 is not supported here: pass a free port. The admin token is the
    configured one, else the one kept in data_dir/admin.token.
    """
    server = _server(settings)
    thread = threading.Thread(target=server.run, name="coordinator", daemon=True)
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
    return CoordinatorThread(f"http://{settings.host}:{settings.port}", token, server, thread)
