"""The outbox: reports on disk until the coordinator has them.

Every report is written here before it is first sent (one JSON file each, written to a
temporary name, fsynced, then renamed), so a report survives the coordinator being away, a
crash of the worker, and a restart. It leaves the outbox only when the coordinator recorded
it (or already had it), or answered that its lease is stale or that it is invalid; an invalid
report is kept under `rejected/` for a human to read. Sending one twice is safe: the
coordinator accepts each result once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from pydantic import ValidationError

from autoswarm.shared.client import CoordinatorClient, CoordinatorUnavailable
from autoswarm.shared.errors import (
    AutoswarmError,
    Forbidden,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    StaleLease,
    Unauthorized,
)
from autoswarm.shared.models import ResultReport
from autoswarm.worker.backoff import Backoff

logger = logging.getLogger(__name__)

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class Delivery(StrEnum):
    RECORDED = "recorded"
    ALREADY = "already"
    STALE = "stale"
    REJECTED = "rejected"
    UNAVAILABLE = "unavailable"

    @property
    def done(self) -> bool:
        """True when the report should leave the outbox."""
        return self is not Delivery.UNAVAILABLE


@dataclass(frozen=True, slots=True)
class OutboxEntry:
    path: Path
    worker_id: str
    report: ResultReport


def write_atomic(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that a reader sees the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class Outbox:
    """Reports waiting to be delivered, one file each under `folder` (see module doc)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.rejected = folder / "rejected"
        self.rejected.mkdir(parents=True, exist_ok=True)

    def path_for(self, report: ResultReport) -> Path:
        name = _UNSAFE.sub("_", report.experiment_id)
        return self.folder / f"{name}.{report.fencing_token}.json"

    def put(self, report: ResultReport, worker_id: str) -> OutboxEntry:
        """Persist a report before it is sent."""
        path = self.path_for(report)
        body = {"worker_id": worker_id, "report": report.model_dump(mode="json")}
        write_atomic(path, json.dumps(body).encode())
        return OutboxEntry(path, worker_id, report)

    def pending(self) -> list[OutboxEntry]:
        """Every report waiting, oldest first; unreadable files are moved to `rejected/`."""
        entries: list[tuple[float, OutboxEntry]] = []
        for path in self.folder.glob("*.json"):
            try:
                mtime = path.stat().st_mtime
                body = json.loads(path.read_bytes())
                entry = OutboxEntry(
                    path, str(body["worker_id"]), ResultReport.model_validate(body["report"])
                )
            except FileNotFoundError:
                continue  # delivered meanwhile
            except (ValueError, KeyError, TypeError, ValidationError) as exc:
                logger.error("outbox %s: unreadable report %s: %s", self.folder, path.name, exc)
                self._move_to_rejected(path)
                continue
            entries.append((mtime, entry))
        return [entry for _, entry in sorted(entries, key=lambda pair: pair[0])]

    def remove(self, entry: OutboxEntry) -> None:
        with contextlib.suppress(FileNotFoundError):
            entry.path.unlink()

    def _move_to_rejected(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.replace(path, self.rejected / path.name)

    def deliver(self, entry: OutboxEntry, client: CoordinatorClient) -> Delivery:
        """Send one report; remove it unless the coordinator could not be reached."""
        delivery = send_report(client, entry.report, entry.worker_id)
        if delivery is Delivery.REJECTED:
            self._move_to_rejected(entry.path)
        elif delivery.done:
            self.remove(entry)
        return delivery

    def flush(self, client: CoordinatorClient) -> int:
        """Try every pending report once, stopping at the first unreachable coordinator.

        Returns how many are still waiting.
        """
        for entry in self.pending():
            if self.deliver(entry, client) is Delivery.UNAVAILABLE:
                break
        return len(self.pending())


def send_report(client: CoordinatorClient, report: ResultReport, worker_id: str) -> Delivery:
    """Send one report and say what became of it (logged); never raises for the coordinator."""
    experiment_id = report.experiment_id
    try:
        recorded = client.report(report, worker_id)
    except CoordinatorUnavailable as exc:
        logger.warning("worker %s: report of %s waits: %s", worker_id, experiment_id, exc)
        return Delivery.UNAVAILABLE
    except StaleLease as exc:
        logger.warning(
            "worker %s: report of %s dropped, lease %d is stale: %s",
            worker_id,
            experiment_id,
            report.fencing_token,
            exc,
        )
        return Delivery.STALE
    except Unauthorized as exc:
        # The token may be restored by the operator; keep the report.
        logger.error("worker %s: report of %s refused: %s", worker_id, experiment_id, exc)
        return Delivery.UNAVAILABLE
    except (Forbidden, NotFound, InvalidInput, PayloadTooLarge) as exc:
        logger.error("worker %s: report of %s rejected: %s", worker_id, experiment_id, exc)
        return Delivery.REJECTED
    except AutoswarmError as exc:
        logger.error("worker %s: report of %s failed: %s", worker_id, experiment_id, exc)
        return Delivery.REJECTED
    if recorded:
        logger.info("worker %s: experiment %s reported", worker_id, experiment_id)
        return Delivery.RECORDED
    logger.info("worker %s: experiment %s was already reported", worker_id, experiment_id)
    return Delivery.ALREADY


class OutboxFlusher:
    """A thread that retries waiting reports with back-off until they are delivered."""

    def __init__(
        self, outbox: Outbox, client: CoordinatorClient, backoff: Backoff, idle_s: float = 5.0
    ) -> None:
        self.outbox = outbox
        self.client = client
        self.backoff = backoff
        self.idle_s = idle_s
        self._kick = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def kick(self) -> None:
        """A report could not be sent: start retrying now."""
        self._kick.set()

    def stop(self) -> None:
        self._stop.set()
        self._kick.set()
        self._thread.join(timeout=self.client.timeout_s + 1)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._kick.wait(self.idle_s)
            self._kick.clear()
            while not self._stop.is_set() and self.outbox.pending():
                if self.outbox.flush(self.client) == 0:
                    self.backoff.reset()
                    break
                delay_s = self.backoff.next_delay_s()
                logger.info("outbox %s: retrying in %.1f s", self.outbox.folder, delay_s)
                self._stop.wait(delay_s)
