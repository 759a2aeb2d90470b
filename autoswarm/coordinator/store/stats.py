"""Reads for the metrics collector: experiments past a sequence number, a few fields of many
experiments at once, and counts kept by the store's indexes. Nothing here writes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from autoswarm.coordinator import keys
from autoswarm.coordinator.store.base import StoreBase


class StatsOps(StoreBase):
    def experiments_after(self, seq: int, count: int) -> list[tuple[str, int]]:
        """(experiment_id, seq) with seq above `seq`, oldest first, at most `count`."""
        page = cast(
            "list[tuple[str, float]]",
            self._r.zrangebyscore(
                keys.EXPERIMENTS, f"({seq}", "+inf", start=0, num=count, withscores=True
            ),
        )
        return [(experiment_id, int(score)) for experiment_id, score in page]

    def experiment_fields(
        self, experiment_ids: Sequence[str], fields: Sequence[str]
    ) -> list[list[str | None]]:
        """The named fields of each experiment, in order (None where a field is absent)."""
        pipe = self._r.pipeline(transaction=False)
        for experiment_id in experiment_ids:
            pipe.hmget(keys.experiment(experiment_id), list(fields))
        rows: list[list[str | None]] = pipe.execute()
        return rows

    def count_hypotheses(self, task_id: str) -> int:
        """How many hypotheses were submitted to this task (duplicates included)."""
        return int(self._r.zcard(keys.task_hypotheses(task_id)))
