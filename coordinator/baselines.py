"""Whether a head needs more baselines: a deterministic task spends no run on them.

A head's baselines say how it scores and how noisy its class is. Once two runs of the head's
code agree exactly, on a class where every code measured twice agreed exactly and the task
declares no noise of its own, the class has shown sigma 0: a third run of the same code can
only repeat the score, so the head needs none (`measured`). Its remaining queued baselines
are withdrawn (`withdraw`) and later heads whose own runs agree exactly (a kept change's run
and its replicate) queue none. The judge then compares with no noise (coordinator/judge.py:
se 0, so a replicated gain past min_effect is kept). Replication for trust stays: a winner's
replicate is the only extra run, and one that disagrees makes the noise non-zero, after which
every head is measured as before.

Pure but for `withdraw` (the store's own script, one per id).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence

from coordinator.noise import Run
from coordinator.store import Store
from coordinator.store.base import FieldValue
from shared.models import Verdict

logger = logging.getLogger(__name__)


def measured(runs: Sequence[Run], code: str, declared_noise: float | None = None) -> bool:
    """Whether `code` needs no more baselines: two of its runs agree exactly, every code run
    at least twice agreed exactly (the class's sigma is 0), and no noise is declared."""
    if declared_noise:
        return False
    by_code: dict[str, set[float]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        by_code[run.code].add(run.value)
        counts[run.code] += 1
    if counts[code] < 2 or len(by_code[code]) != 1:
        return False
    return all(len(values) == 1 for values in by_code.values())


def withdraw(
    store: Store, task_id: str, hardware: str, commit: str, ids: Iterable[str], now: float
) -> int:
    """Withdraw the unfinished baselines of `commit` among `ids`, measured enough (a leased one
    is told to stop at its next heartbeat); how many were."""
    reason = (
        f"not needed: two runs of {commit[:12]} agree exactly and this class has shown no "
        "noise (a deterministic task)"
    )
    withdrawn = 0
    for baseline_id in ids:
        event: dict[str, FieldValue] = {
            "type": "baseline",
            "task_id": task_id,
            "experiment_id": baseline_id,
            "hardware": hardware,
            "commit": commit,
            "metric": None,
            "reason": reason,
            "time_s": now,
        }
        withdrawn += store.withdraw(
            baseline_id, verdict=Verdict.DISCARDED.value, reason=reason, event=event, now=now
        )
    if withdrawn:
        logger.info("task %s: %s: %d baselines withdrawn, %s", task_id, hardware, withdrawn, reason)
    return withdrawn
