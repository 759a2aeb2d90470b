"""Reading and writing the store's records: tasks, bundles, tokens, workers, experiments,
hypotheses, heads and events. Single-command writes only; atomic steps are in Lua."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
from typing import Any, NamedTuple, cast

from pydantic import ValidationError

from autoswarm.coordinator import keys
from autoswarm.coordinator.models import (
    ExperimentRecord,
    HeadRecord,
    HypothesisRecord,
    TaskRecord,
    TokenRecord,
    WorkerRecord,
)
from autoswarm.coordinator.store.base import StoreBase, encode_fields
from autoswarm.shared.errors import TooMany
from autoswarm.shared.models import Scope, Verdict
from autoswarm.shared.task import hash_files

logger = logging.getLogger(__name__)

# How many queued explores `queue_depth` looks at, at most.
QUEUE_DEPTH_SCAN = 1000


class Agreement(NamedTuple):
    """Replications that agreed with a worker's claims or not: its own, and everyone's."""

    agreed: int
    disagreed: int
    all_agreed: int
    all_disagreed: int


class RecordOps(StoreBase):
    # -- tasks ------------------------------------------------------------------------------

    def record_task(
        self, task_id: str, *, spec_json: str, bundle_hash: str, init_commit: str, now: float
    ) -> int:
        """1 recorded now, 0 recorded before with the same files, -1 recorded with others."""
        fields = encode_fields(
            {"spec": spec_json, "bundle_hash": bundle_hash, "init_commit": init_commit}
        )
        return int(
            self._run(
                "register_task",
                [keys.task(task_id), keys.TASKS, keys.explored(task_id, bundle_hash)],
                [task_id, fields, repr(now), bundle_hash],
            )
        )

    def _readable_task(self, task_id: str, raw: dict[str, str]) -> TaskRecord | None:
        """The task of a stored hash; None when absent or unreadable (`min_effect = inf` was
        once accepted and stored as null: such a task is left out, warned about once, rather
        than a 500 on every read)."""
        if not raw.get("bundle_hash"):
            return None
        try:
            task: TaskRecord = TaskRecord.from_hash(raw)
        except (ValidationError, ValueError, KeyError) as exc:
            if task_id not in self._unreadable:
                self._unreadable.add(task_id)
                why = str(exc).splitlines() or [type(exc).__name__]
                if isinstance(exc, ValidationError):
                    first = exc.errors()[0]
                    why = [".".join(str(p) for p in first["loc"]) + ": " + first["msg"]]
                logger.warning("task %s: stored record unreadable, left out: %s", task_id, why[0])
            return None
        return task

    def task_ids(self) -> list[str]:
        """Every registered task, first registered first."""
        return cast("list[str]", self._r.zrange(keys.TASKS, 0, -1))

    def get_task(self, task_id: str) -> TaskRecord | None:
        """A task's record; kept in memory once read (a registered task never changes)."""
        task = self._tasks.get(task_id)
        if task is None:
            task = self._readable_task(task_id, self._hgetall(keys.task(task_id)))
            if task is None:
                return None
            task = self._tasks.setdefault(task_id, task)
        return task

    def list_tasks(self) -> list[TaskRecord]:
        """Every readable task (one stored by an older version that no longer validates is
        left out, with a warning, rather than failing every read)."""
        task_ids = cast("list[str]", self._r.zrange(keys.TASKS, 0, -1))
        raws = self._hgetall_many([keys.task(t) for t in task_ids])
        tasks = (self._readable_task(t, raw) for t, raw in zip(task_ids, raws, strict=True))
        return [task for task in tasks if task is not None]

    def heldout_secret(self, task_id: str) -> str:
        """The task's held-out secret, made at random on first use and kept thereafter."""
        key = keys.task_heldout_secret(task_id)
        self._r.set(key, secrets.token_hex(32), nx=True)
        return cast("str", self._r.get(key))

    def task_classes(self, task_id: str) -> list[str]:
        """The task's hardware classes, first used first."""
        classes = cast("list[str]", self._r.zrange(keys.task_classes(task_id), 0, -1))
        return classes

    # -- bundles ----------------------------------------------------------------------------

    def put_bundle(self, files: dict[str, bytes]) -> str:
        """Store files content-addressed (each file once); returns the bundle hash."""
        bundle_hash = hash_files(files)
        pipe = self._raw.pipeline(transaction=True)
        mapping: dict[str, str] = {}
        for path, content in files.items():
            sha = hashlib.sha256(content).hexdigest()
            pipe.set(keys.blob(sha), content, nx=True)
            mapping[path] = sha
        if mapping:
            pipe.hset(keys.bundle(bundle_hash), mapping=mapping)  # type: ignore[arg-type]
        pipe.execute()
        return bundle_hash

    def get_bundle(self, bundle_hash: str) -> dict[str, bytes] | None:
        mapping = cast("dict[str, str]", self._r.hgetall(keys.bundle(bundle_hash)))
        if not mapping:
            return None
        paths = sorted(mapping)
        contents = cast(
            "list[bytes | None]", self._raw.mget([keys.blob(mapping[p]) for p in paths])
        )
        if any(c is None for c in contents):
            return None
        return {p: c for p, c in zip(paths, contents, strict=True) if c is not None}

    def has_bundle(self, bundle_hash: str) -> bool:
        return bool(self._r.exists(keys.bundle(bundle_hash)))

    # -- tokens -----------------------------------------------------------------------------

    def put_token(self, token_hash: str, scope: Scope, name: str, *, now: float) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(
            keys.token(token_hash),
            mapping={"scope": scope.value, "name": name, "created_s": repr(now)},
        )
        pipe.sadd(keys.TOKENS, token_hash)
        pipe.execute()

    def get_token(self, token_hash: str) -> TokenRecord | None:
        raw = self._hgetall(keys.token(token_hash))
        return TokenRecord.from_hash(raw) if raw else None

    def list_tokens(self) -> list[tuple[str, TokenRecord]]:
        """Every token's hash and record, oldest first."""
        hashes = sorted(cast("set[str]", self._r.smembers(keys.TOKENS)))
        raws = self._hgetall_many([keys.token(h) for h in hashes])
        found = [
            (h, TokenRecord.from_hash(raw)) for h, raw in zip(hashes, raws, strict=True) if raw
        ]
        return sorted(found, key=lambda pair: pair[1].created_s)

    def token_worker_ids(self, token_hash: str) -> list[str]:
        """The workers this token registered."""
        return sorted(cast("set[str]", self._r.smembers(keys.token_workers(token_hash))))

    def leased_experiment_ids(self) -> list[str]:
        """Every experiment under a lease now."""
        return cast("list[str]", self._r.zrange(keys.LEASES, 0, -1))

    def revoke_token(self, token_hash: str) -> bool:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(keys.token(token_hash))
        pipe.srem(keys.TOKENS, token_hash)
        deleted, _ = pipe.execute()
        return bool(deleted)

    # -- workers ----------------------------------------------------------------------------

    def put_worker(
        self, worker: WorkerRecord, *, max_workers: int = 2**31, max_classes: int = 2**31
    ) -> None:
        """Register a worker; `TooMany` when it would be its token's worker or hardware class
        past `max_workers` or `max_classes` (nothing is written then)."""
        fields = worker.model_dump(mode="json", exclude={"agreed", "disagreed", "distrusted_s"})
        code = self._run(
            "register_worker",
            [
                keys.worker(worker.worker_id),
                keys.WORKERS,
                keys.class_owners(worker.hardware),
                keys.token_workers(worker.token_hash),
                keys.token_classes(worker.token_hash),
            ],
            [
                worker.worker_id,
                encode_fields(fields),
                repr(worker.registered_s),
                worker.hardware,
                worker.owner,
                max_workers,
                max_classes,
            ],
        )
        if int(code) == -1:
            raise TooMany(
                f"token {worker.owner!r} has {max_workers} workers registered already "
                "(max_workers_per_token): reuse their names and slots"
            )
        if int(code) == -2:
            raise TooMany(
                f"token {worker.owner!r} has workers on {max_classes} hardware classes already "
                f"(max_classes_per_token): {worker.hardware} would be one more"
            )

    def hypotheses_in_flight(self, token_hash: str) -> int:
        """How many of the token's hypotheses are not judged yet (judged ones are let go)."""
        key = keys.token_hypotheses(token_hash)
        members = cast("list[str]", sorted(self._r.smembers(key)))
        if not members:
            return 0
        pipe = self._r.pipeline(transaction=False)
        for hypothesis_id in members:
            pipe.hget(keys.hypothesis(hypothesis_id), "verdict")
        verdicts: list[str | None] = pipe.execute()
        done = [h for h, v in zip(members, verdicts, strict=True) if v != Verdict.PENDING.value]
        if done:
            self._r.srem(key, *done)
        return len(members) - len(done)

    def hold_in_flight(self, token_hash: str, hypothesis_id: str) -> None:
        """Count a hypothesis against its token's bound until it is judged."""
        self._r.sadd(keys.token_hypotheses(token_hash), hypothesis_id)

    def get_worker(self, worker_id: str) -> WorkerRecord | None:
        raw = self._hgetall(keys.worker(worker_id))
        return WorkerRecord.from_hash(raw) if raw.get("worker_id") else None

    def list_workers(self, limit: int = 1000) -> list[WorkerRecord]:
        worker_ids = cast("list[str]", self._r.zrevrange(keys.WORKERS, 0, limit - 1))
        raws = self._hgetall_many([keys.worker(w) for w in worker_ids])
        return [WorkerRecord.from_hash(raw) for raw in raws if raw.get("worker_id")]

    def count_agreement(self, worker_id: str, *, agreed: bool) -> Agreement:
        """One more replication that did (or did not) agree with this worker's claim; the
        worker's counts and every worker's together, after it."""
        field = "agreed" if agreed else "disagreed"
        pipe = self._r.pipeline(transaction=True)
        pipe.hincrby(keys.worker(worker_id), field, 1)
        pipe.hincrby(keys.AGREEMENT, field, 1)
        pipe.hmget(keys.worker(worker_id), ["agreed", "disagreed"])
        pipe.hmget(keys.AGREEMENT, ["agreed", "disagreed"])
        mine, everyone = pipe.execute()[2:]
        return Agreement(*(int(v or 0) for v in (*mine, *everyone)))

    def distrust(self, worker_id: str, *, now: float) -> bool:
        """Mark a worker as no longer trusted; True if it was trusted until now."""
        pipe = self._r.pipeline(transaction=True)
        pipe.sadd(keys.DISTRUSTED, worker_id)
        pipe.hsetnx(keys.worker(worker_id), "distrusted_s", repr(now))
        return bool(pipe.execute()[0])

    def is_distrusted(self, worker_id: str) -> bool:
        return bool(worker_id) and bool(self._r.sismember(keys.DISTRUSTED, worker_id))

    def task_experiment_ids(self, task_id: str) -> list[str]:
        """Every experiment of a task, oldest first."""
        ids = cast("list[str]", self._r.zrange(keys.task_experiments(task_id), 0, -1))
        return ids

    def active_owners(self, hardware: str, since: float) -> list[str]:
        """Owners with a worker of this class that registered or got a lease since `since`."""
        owners = cast(
            "list[str]", self._r.zrangebyscore(keys.class_owners(hardware), since, "+inf")
        )
        return owners

    # -- experiments and hypotheses ---------------------------------------------------------

    def get_experiment(self, experiment_id: str) -> ExperimentRecord | None:
        raw = self._hgetall(keys.experiment(experiment_id))
        return ExperimentRecord.from_hash(raw) if raw.get("experiment_id") else None

    def experiment_ids_starting(self, prefix: str, limit: int) -> list[str]:
        """Up to `limit` experiment ids that start with `prefix` (an id: no glob characters),
        sorted; one pass over the experiments' index (ZSCAN, in pages)."""
        found = {
            str(member)
            for member, _ in self._r.zscan_iter(keys.EXPERIMENTS, match=f"{prefix}*", count=1000)
        }
        return sorted(found)[:limit]

    def add_spend(
        self, task_id: str, model: str, usd: float, tokens: int, calls: int, max_models: int
    ) -> bool:
        """Add to a task's spend on `model`; False (nothing added) when the task already has
        `max_models` other models on record (a bound on /metrics' label values, checked before
        the write: reports of new models at the same moment may pass it by a few)."""
        key = keys.spend(task_id)
        known = {field.rsplit(":", 1)[0] for field in cast("list[str]", self._r.hkeys(key))}
        if model not in known and len(known) >= max_models:
            return False
        pipe = self._r.pipeline(transaction=True)
        pipe.hincrbyfloat(key, f"{model}:usd", usd)
        pipe.hincrby(key, f"{model}:calls", calls)
        pipe.hincrby(key, f"{model}:tokens", tokens)
        pipe.execute()
        return True

    def spend(self, task_id: str) -> dict[str, dict[str, float]]:
        """model -> {"usd", "calls", "tokens"}: what the task's proposers reported."""
        raw = cast("dict[str, str]", self._r.hgetall(keys.spend(task_id)))
        out: dict[str, dict[str, float]] = {}
        for field, value in raw.items():
            model, _, part = field.rpartition(":")
            out.setdefault(model, {})[part] = float(value)
        return out

    def claim_leader(self, token: str, hold_s: float, *, let_go: bool = False) -> bool:
        """Claim, keep (or with `let_go`, give up) the leadership for `hold_s`; True while
        this token holds it."""
        answer = self._run(
            "leader", [keys.LEADER], [token, int(hold_s * 1000), "1" if let_go else "0"]
        )
        return bool(int(answer))

    def experiment_task(self, experiment_id: str) -> str | None:
        """The task an experiment belongs to (one field, not the record)."""
        return cast("str | None", self._r.hget(keys.experiment(experiment_id), "task_id"))

    def get_experiments(self, experiment_ids: list[str]) -> list[ExperimentRecord]:
        raws = self._hgetall_many([keys.experiment(e) for e in experiment_ids])
        return [ExperimentRecord.from_hash(raw) for raw in raws if raw.get("experiment_id")]

    def experiment_page(
        self, task_id: str | None, *, before_seq: int | None, count: int
    ) -> list[tuple[str, int]]:
        """(experiment_id, seq), newest first, with seq below `before_seq`."""
        key = keys.task_experiments(task_id) if task_id else keys.EXPERIMENTS
        top: str = "+inf" if before_seq is None else f"({before_seq}"
        page = cast(
            "list[tuple[str, float]]",
            self._r.zrevrangebyscore(key, top, "-inf", start=0, num=count, withscores=True),
        )
        return [(eid, int(score)) for eid, score in page]

    def get_hypothesis(self, hypothesis_id: str) -> HypothesisRecord | None:
        raw = self._hgetall(keys.hypothesis(hypothesis_id))
        return HypothesisRecord.from_hash(raw) if raw.get("hypothesis_id") else None

    def list_hypotheses(self, task_id: str, limit: int = 200) -> list[HypothesisRecord]:
        """The task's hypotheses, newest first."""
        ids = cast("list[str]", self._r.zrevrange(keys.task_hypotheses(task_id), 0, limit - 1))
        raws = self._hgetall_many([keys.hypothesis(h) for h in ids])
        return [HypothesisRecord.from_hash(raw) for raw in raws if raw.get("hypothesis_id")]

    def queue_depth(self, task_id: str) -> int:
        """How many explore experiments of this task are queued (not yet leased)."""
        queued = cast("list[str]", self._r.zrange(keys.QUEUE_ANY, 0, QUEUE_DEPTH_SCAN - 1))
        pipe = self._r.pipeline(transaction=False)
        for experiment_id in queued:
            pipe.hget(keys.experiment(experiment_id), "task_id")
        owners: list[str | None] = pipe.execute()
        return sum(1 for owner in owners if owner == task_id)

    def explored_by(self, task_id: str, bundle_hash: str) -> str | None:
        """The experiment that first ran this code, if any ('head' for a task's first code)."""
        value = cast("str | None", self._r.get(keys.explored(task_id, bundle_hash)))
        return value

    # -- heads, runs, judge queue, events ---------------------------------------------------

    def get_head(self, task_id: str, hardware: str) -> HeadRecord | None:
        raw = self._hgetall(keys.head(task_id, hardware))
        if not raw.get("commit"):
            return None
        head: HeadRecord = HeadRecord.from_hash(raw | {"task_id": task_id, "hardware": hardware})
        return head

    def get_tip(self, task_id: str, hardware: str) -> dict[str, str]:
        """The last winner stacked onto the class's head (see `keys.tip`); {} if none."""
        return self._hgetall(keys.tip(task_id, hardware))

    def set_tip(
        self, task_id: str, hardware: str, *, on: str, experiment_id: str, commit: str
    ) -> None:
        """Remember the winner that the next ones found on the head `on` stack on (one
        command: atomic)."""
        self._r.hset(
            keys.tip(task_id, hardware),
            mapping={"on": on, "experiment_id": experiment_id, "commit": commit},
        )

    def get_runs(self, task_id: str, hardware: str) -> dict[str, list[float]]:
        """commit -> the ok metrics measured for that code on this class."""
        raw = cast("dict[str, str]", self._r.hgetall(keys.runs(task_id, hardware)))
        out: dict[str, list[float]] = {}
        for commit, text in raw.items():
            values = json.loads(text)
            out[commit] = [float(v) for v in values] if isinstance(values, list) else []
        return out

    def pending_judgements(self, limit: int = 100, now: float | None = None) -> list[str]:
        """Experiments whose result the scheduler has not applied yet, oldest first (only
        those due by `now`: a deferred judgement waits until its time)."""
        top = "+inf" if now is None else repr(now)
        items = cast(
            "list[str]", self._r.zrangebyscore(keys.JUDGE, "-inf", top, start=0, num=limit)
        )
        return items

    def defer_judgement(self, experiment_id: str, until: float) -> None:
        """Look at this result again at `until` (it waits on another result)."""
        self._r.zadd(keys.JUDGE, {experiment_id: until}, xx=True)

    def undefer_judgements(self, now: float) -> int:
        """Every deferred judgement due now; how many there were."""
        return int(self._run("undefer", [keys.JUDGE], [repr(now)]))

    def read_events(self, after: str = "0", count: int = 100) -> list[dict[str, Any]]:
        """Events after the given stream id, oldest first, each with its `event_id`."""
        start = f"({after}" if after != "0" else "-"
        entries = cast(
            "list[tuple[str, dict[str, str]]]", self._r.xrange(keys.EVENTS, min=start, count=count)
        )
        return [{"event_id": event_id, **fields} for event_id, fields in entries]
