"""Leadership: which of the coordinator's API processes runs its background work.

With one API process (the default) that process always leads and nothing is kept in Redis.
With several (`api_processes` > 1, all serving one Redis), each claims `as:leader` for
`hold_s` and renews the claim about every second; the holder reaps expired leases, runs
the judge loop and files the read model's indexes, and every process serves every request.
If the leader dies, another one takes over once its claim lapses (within `hold_s`).

Guarantees: at most one process believes it leads at any moment, provided the renewal is
not delayed past the claim's end (a process stops believing it leads `MARGIN_S` before its
claim lapses). The work done under leadership is idempotent in any case (the judge's
scripts are guarded by each experiment's `judged` flag, the indexer files whole records),
so an overlap would repeat work, never double it.
"""

from __future__ import annotations

import logging
import os
import time
import uuid

from autoswarm.coordinator.store import Store

logger = logging.getLogger(__name__)

MARGIN_S = 1.0


class Leadership:
    """This process's claim to lead (see the module doc)."""

    def __init__(self, store: Store, *, shared: bool, hold_s: float = 5.0) -> None:
        self.store = store
        self.shared = shared
        self.hold_s = max(hold_s, 2 * MARGIN_S)
        self.token = f"{os.getpid()}-{uuid.uuid4().hex}"  # readable: which process leads
        self._until = 0.0

    def leads(self) -> bool:
        """Whether this process runs the background work now (no I/O)."""
        return not self.shared or time.monotonic() < self._until - MARGIN_S

    def renew(self) -> bool:
        """Claim or keep the leadership; whether this process leads now."""
        if not self.shared:
            return True
        was = self.leads()
        started = time.monotonic()
        if self.store.claim_leader(self.token, self.hold_s):
            self._until = started + self.hold_s
        else:
            self._until = 0.0
        now = self.leads()
        if now != was:
            logger.info("coordinator: this process %s", "leads" if now else "no longer leads")
        return now

    def let_go(self) -> None:
        """Give the leadership up at once (a clean stop), so another process takes it."""
        if self.shared and self._until:
            self._until = 0.0
            self.store.claim_leader(self.token, self.hold_s, let_go=True)
