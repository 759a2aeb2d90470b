"""The store's read model: the indexes behind the read API, and the reads that use them.

The indexes (`as:ix:*`, built in `autoswarm.coordinator.keys`) are derived data: the indexer
(`autoswarm/coordinator/indexer.py`) follows what the write path records (new experiments by
sequence number, the event stream, the lease set) and files each experiment under its
state, kind, verdict, result, worker, owner, hardware class, proposer and model, its score
and its time. Guarantees: one experiment's index entries change in one script
(`index.lua`), which touches no key the write path reads; a credit item counts once.
Not guaranteed: that the indexes are current before the indexer has caught up (it runs in
the background every second, and before each indexed read).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, cast

from autoswarm.coordinator import keys
from autoswarm.coordinator.store.filing import Credit
from autoswarm.coordinator.store.query import QueryOps

# The experiment fields the indexer reads.
INDEX_FIELDS = (
    "experiment_id",
    "task_id",
    "kind",
    "state",
    "hypothesis_id",
    "hardware",
    "measured_on",
    "worker_id",
    "owner",
    "created_s",
    "leased_s",
    "finished_s",
    "result",
    "verdict",
    "seq",
    "parent_commit",
)


class ReadOps(QueryOps):
    # -- following the write path -----------------------------------------------------------

    def index_cursor(self) -> tuple[int, str | None]:
        """(last indexed seq, last indexed event id); event None: never indexed."""
        seq, event = cast("list[str | None]", self._r.hmget(keys.IX_CURSOR, ["seq", "event"]))
        return int(seq or 0), event

    def set_index_cursor(self, *, seq: int, event: str) -> None:
        self._r.hset(keys.IX_CURSOR, mapping={"seq": seq, "event": event})

    def last_event_id(self) -> str:
        """The newest event's id, "0" when there is none."""
        last = cast("list[tuple[str, Any]]", self._r.xrevrange(keys.EVENTS, count=1))
        return last[0][0] if last else "0"

    def new_experiments(self, seq: int, count: int) -> list[tuple[str, int]]:
        """(experiment_id, seq) of experiments queued after `seq`, oldest first."""
        page = cast(
            "list[tuple[str, float]]",
            self._r.zrangebyscore(
                keys.EXPERIMENTS, f"({seq}", "+inf", start=0, num=count, withscores=True
            ),
        )
        return [(eid, int(score)) for eid, score in page]

    def lease_changes(self) -> tuple[list[str], list[str]]:
        """(leased since the index last looked, no longer leased since)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.zdiff([keys.LEASES, keys.IX_LEASED])
        pipe.zdiff([keys.IX_LEASED, keys.LEASES])
        started, ended = pipe.execute()
        return list(started), list(ended)

    def mark_leases(self, started: Sequence[str], ended: Sequence[str]) -> None:
        pipe = self._r.pipeline(transaction=False)
        if started:
            pipe.zadd(keys.IX_LEASED, dict.fromkeys(started, 0))
        if ended:
            pipe.zrem(keys.IX_LEASED, *ended)
        pipe.execute()

    def wait_events(self, after: str, count: int, block_ms: int) -> list[dict[str, Any]]:
        """Events after `after`, waiting up to `block_ms` for one (0: do not wait)."""
        block = block_ms if block_ms > 0 else None
        answer = cast(
            "list[tuple[str, list[tuple[str, dict[str, str]]]]]",
            self._r.xread({keys.EVENTS: after}, count=count, block=block),
        )
        entries = answer[0][1] if answer else []
        return [{"event_id": event_id, **fields} for event_id, fields in entries]

    def hypothesis_members(self, hypothesis_ids: Sequence[str]) -> list[str]:
        """Every experiment that carried one of these hypotheses."""
        pipe = self._r.pipeline(transaction=False)
        for hypothesis_id in hypothesis_ids:
            pipe.zrange(keys.ix_hypothesis(hypothesis_id), 0, -1)
        return [eid for members in pipe.execute() for eid in members]

    def index_inputs(
        self, experiment_ids: Sequence[str]
    ) -> list[tuple[dict[str, str], dict[str, str]]]:
        """(experiment fields, its hypothesis's verdict and proposer) for each existing one."""
        pipe = self._r.pipeline(transaction=False)
        for eid in experiment_ids:
            pipe.hmget(keys.experiment(eid), list(INDEX_FIELDS))
        rows = [
            {k: v for k, v in zip(INDEX_FIELDS, values, strict=True) if v}
            for values in pipe.execute()
        ]
        rows = [row for row in rows if row.get("experiment_id") and row.get("task_id")]
        pipe = self._r.pipeline(transaction=False)
        for row in rows:
            pipe.hmget(keys.hypothesis(row.get("hypothesis_id", "")), ["verdict", "proposer"])
        hyps = [
            {k: v for k, v in zip(("verdict", "proposer"), values, strict=True) if v}
            for values in pipe.execute()
        ]
        return list(zip(rows, hyps, strict=True))

    def write_index(self, items: Sequence[tuple[str, str, str, list[Credit]]]) -> None:
        """File each (experiment_id, task_id, entries JSON, credits) in one script each."""
        pipe = self._r.pipeline(transaction=False)
        script = self._scripts["index"]
        for experiment_id, task_id, entries, credits in items:
            script(
                keys=[
                    keys.IX_MEMBERS,
                    keys.ix_counts(task_id),
                    keys.IX_CREDITED,
                    keys.IX_OWNERS,
                    keys.IX_TEAMS,
                ],
                args=[experiment_id, entries, json.dumps(credits)],
                client=pipe,
            )
        pipe.execute()

    # -- indexed reads ----------------------------------------------------------------------

    def experiment_rows(
        self, experiment_ids: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        """The named fields of each experiment ('' fields left out), in order."""
        pipe = self._r.pipeline(transaction=False)
        for eid in experiment_ids:
            pipe.hmget(keys.experiment(eid), list(fields))
        return [
            {k: v for k, v in zip(fields, values, strict=True) if v} for values in pipe.execute()
        ]

    def hypothesis_fields(
        self, hypothesis_ids: Sequence[str], fields: Sequence[str]
    ) -> list[dict[str, str]]:
        pipe = self._r.pipeline(transaction=False)
        for hid in hypothesis_ids:
            pipe.hmget(keys.hypothesis(hid), list(fields))
        return [
            {k: v for k, v in zip(fields, values, strict=True) if v} for values in pipe.execute()
        ]

    def task_counts(self, task_id: str) -> dict[str, int]:
        raw = cast("dict[str, str]", self._r.hgetall(keys.ix_counts(task_id)))
        return {label: int(n) for label, n in raw.items() if int(n) > 0}

    def contributors_page(self, start: int, count: int) -> list[tuple[dict[str, str], float]]:
        """(credit hash, credit) of owners by credit, highest first."""
        owners = cast(
            "list[tuple[str, float]]",
            self._r.zrevrange(keys.IX_OWNERS, start, start + count - 1, withscores=True),
        )
        raws = self._hgetall_many([keys.ix_credit(owner) for owner, _ in owners])
        return [
            ({**raw, "owner": owner}, credit)
            for (owner, credit), raw in zip(owners, raws, strict=True)
        ]

    def teams(self, count: int) -> list[tuple[str, float]]:
        return cast(
            "list[tuple[str, float]]",
            self._r.zrevrange(keys.IX_TEAMS, 0, count - 1, withscores=True),
        )

    def contributor_count(self) -> int:
        return int(self._r.zcard(keys.IX_OWNERS))
