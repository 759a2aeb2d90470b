"""Finding experiments through the read model's indexes: filters, sorts and cursors.

A query walks its most selective index (the smallest zset among its filters) in order,
and checks each member against the other filters with ZMSCORE, a batch at a time; a page
never reads an experiment it does not return. Guarantees: pages in time order never skip
or repeat an experiment (the cursor is a sequence number); a page looks at most
`MAX_SCAN` index entries, then hands back a cursor even if it found fewer than asked.
Sorting by score needs one task and one hardware class (scores are compared only within a
class); its cursor is the last experiment shown, so a page is stable while new ones arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from autoswarm.coordinator import keys
from autoswarm.coordinator.store.base import StoreBase
from autoswarm.shared.errors import InvalidInput

MAX_SCAN = 20_000
SCAN_BATCH = 250
SCORE_CURSOR = "s:"


@dataclass(frozen=True)
class ExperimentQuery:
    """Filters (None: any), a time range (unix seconds, inclusive) and a sort."""

    task_id: str | None = None
    state: str | None = None
    kind: str | None = None
    verdict: str | None = None
    result: str | None = None
    worker_id: str | None = None
    owner: str | None = None
    hardware: str | None = None
    proposer: str | None = None
    model: str | None = None
    since: float | None = None
    until: float | None = None
    # "time": newest first; "score": best first (needs task_id and hardware).
    sort: str = "time"
    lower_is_better: bool = True

    def filter_keys(self) -> list[str]:
        """The index of each filter; an experiment must be in all of them."""
        found = [keys.task_experiments(self.task_id)] if self.task_id else []
        named = (
            ("state", self.state),
            ("kind", self.kind),
            ("verdict", self.verdict),
            ("result", self.result),
            ("worker", self.worker_id),
            ("owner", self.owner),
            ("hw", self.hardware),
            ("proposer", self.proposer),
            ("model", self.model),
        )
        found += [keys.ix_field(name, value) for name, value in named if value]
        return found

    @property
    def timed(self) -> bool:
        return self.since is not None or self.until is not None

    def in_time(self, created_s: float | None) -> bool:
        if created_s is None:
            return False
        return (self.since is None or created_s >= self.since) and (
            self.until is None or created_s <= self.until
        )


class QueryOps(StoreBase):
    def find_experiments(
        self, query: ExperimentQuery, cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        """A page of experiment ids and the cursor of the next page (None: the last)."""
        if query.sort == "score":
            return self._by_score(query, cursor, limit)
        if cursor is not None and not (cursor.isascii() and cursor.isdigit()):
            raise InvalidInput("cursor must be a next_cursor from an earlier page")
        return self._by_time(query, int(cursor) if cursor else None, limit)

    def _plan(self, filters: list[str]) -> tuple[str, list[str]] | None:
        """(the smallest index, the others); None when one of them is empty."""
        if not filters:
            return keys.EXPERIMENTS, []
        sizes = self.cardinalities(filters)
        if min(sizes) == 0:
            return None
        smallest = sizes.index(min(sizes))
        return filters[smallest], filters[:smallest] + filters[smallest + 1 :]

    def _matching(
        self, query: ExperimentQuery, checks: list[str], members: list[str]
    ) -> list[bool]:
        zsets = checks + ([keys.IX_TIME] if query.timed else [])
        scores = self.scores_in(zsets, members)
        times = scores[-1] if query.timed else []
        out = []
        for i in range(len(members)):
            ok = all(column[i] is not None for column in scores[: len(checks)])
            out.append(ok and (not query.timed or query.in_time(times[i])))
        return out

    def _by_time(
        self, query: ExperimentQuery, cursor: int | None, limit: int
    ) -> tuple[list[str], str | None]:
        plan = self._plan(query.filter_keys())
        if plan is None:
            return [], None
        primary, checks = plan
        low, high = self.seq_range_in_time(since=query.since, until=query.until)
        if cursor is not None:
            high = min(high, cursor - 1)
        found: list[str] = []
        scanned = 0
        while high >= low:
            batch = self.page_by_score(
                primary, high=str(high), low=str(low), count=SCAN_BATCH, reverse=True
            )
            if not batch:
                return found, None
            members = [member for member, _ in batch]
            for (member, score), ok in zip(
                batch, self._matching(query, checks, members), strict=True
            ):
                scanned += 1
                high = int(score) - 1
                if ok:
                    found.append(member)
                    if len(found) == limit:
                        return found, str(int(score))
            if scanned >= MAX_SCAN:
                return found, str(high + 1)
        return found, None

    def _by_score(
        self, query: ExperimentQuery, cursor: str | None, limit: int
    ) -> tuple[list[str], str | None]:
        if not query.task_id or not query.hardware:
            raise InvalidInput("sort=score needs task_id and hardware: scores compare per class")
        primary = keys.ix_metric(query.task_id, query.hardware)
        checks = [k for k in query.filter_keys() if k != keys.task_experiments(query.task_id)]
        reverse = not query.lower_is_better
        start = 0
        if cursor is not None:
            if not cursor.startswith(SCORE_CURSOR):
                raise InvalidInput("cursor must be a next_cursor from an earlier page")
            rank = self.rank_of(primary, cursor[len(SCORE_CURSOR) :], reverse=reverse)
            if rank is None:
                raise InvalidInput("cursor names no scored experiment of this task and class")
            start = rank + 1
        found: list[str] = []
        scanned = 0
        while True:
            batch = self.page_by_rank(primary, start, SCAN_BATCH, reverse=reverse)
            if not batch:
                return found, None
            members = [member for member, _ in batch]
            for member, ok in zip(members, self._matching(query, checks, members), strict=True):
                scanned += 1
                start += 1
                if ok:
                    found.append(member)
                    if len(found) == limit:
                        return found, SCORE_CURSOR + member
            if scanned >= MAX_SCAN:
                return found, SCORE_CURSOR + members[-1]

    # -- primitives -------------------------------------------------------------------------

    def cardinalities(self, zsets: Sequence[str]) -> list[int]:
        pipe = self._r.pipeline(transaction=False)
        for key in zsets:
            pipe.zcard(key)
        return [int(n) for n in pipe.execute()]

    def page_by_score(
        self, zset: str, *, high: str, low: str, count: int, reverse: bool = True
    ) -> list[tuple[str, float]]:
        """Members with scores in [low, high] (Redis range syntax), highest first."""
        if reverse:
            found = self._r.zrevrangebyscore(zset, high, low, start=0, num=count, withscores=True)
        else:
            found = self._r.zrangebyscore(zset, low, high, start=0, num=count, withscores=True)
        return cast("list[tuple[str, float]]", found)

    def page_by_rank(
        self, zset: str, start: int, count: int, *, reverse: bool
    ) -> list[tuple[str, float]]:
        stop = start + count - 1
        if reverse:
            return cast(
                "list[tuple[str, float]]", self._r.zrevrange(zset, start, stop, withscores=True)
            )
        return cast("list[tuple[str, float]]", self._r.zrange(zset, start, stop, withscores=True))

    def rank_of(self, zset: str, member: str, *, reverse: bool) -> int | None:
        rank = self._r.zrevrank(zset, member) if reverse else self._r.zrank(zset, member)
        return None if rank is None else int(cast("int", rank))

    def scores_in(self, zsets: Sequence[str], members: Sequence[str]) -> list[list[float | None]]:
        """For each zset, the score of each member in it (None: not a member)."""
        if not members:
            return [[] for _ in zsets]
        pipe = self._r.pipeline(transaction=False)
        for key in zsets:
            pipe.zmscore(key, list(members))
        return cast("list[list[float | None]]", pipe.execute())

    def seq_range_in_time(self, *, since: float | None, until: float | None) -> tuple[int, int]:
        """The seq range of experiments created in [since, until] (seq and time agree)."""
        low, high = 0, 2**62
        if since is not None:
            first = self._r.zrangebyscore(keys.IX_TIME, since, "+inf", start=0, num=1)
            low = self._seq_of(cast("list[str]", first), default=high)
        if until is not None:
            last = self._r.zrevrangebyscore(keys.IX_TIME, until, "-inf", start=0, num=1)
            high = self._seq_of(cast("list[str]", last), default=-1)
        return low, high

    def _seq_of(self, members: list[str], default: int) -> int:
        if not members:
            return default
        score = self._r.zscore(keys.EXPERIMENTS, members[0])
        return default if score is None else int(score)

    def chart_points(self, task_id: str, count: int) -> tuple[int, list[str]]:
        """(how many points the task has, the newest `count` of them, oldest first)."""
        key = keys.ix_chart(task_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.zcard(key)
        pipe.zrevrange(key, 0, count - 1)
        total, newest = pipe.execute()
        return int(total), list(reversed(newest))

    def kept_ids(self, task_id: str, hardware: str) -> list[str]:
        """The task's kept candidates on one class, oldest first."""
        return cast("list[str]", self._r.zrange(keys.ix_kept(task_id, hardware), 0, -1))
