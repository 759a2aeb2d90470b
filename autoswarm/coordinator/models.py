"""Coordinator-only records: what the store keeps and the read API answers.

Wire models both sides agree on live in `autoswarm.shared.models`; these are the coordinator's own.
Redis hashes hold strings; `from_hash` turns one into a record ('' reads as None).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from autoswarm.shared.models import (
    MAX_FILE_BYTES,
    ExperimentKind,
    ExperimentState,
    Result,
    ResultStatus,
    Scope,
    Verdict,
)
from autoswarm.shared.task import TaskSpec


class Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> Any:
        """A record from a Redis hash: empty strings are absent fields."""
        return cls.model_validate({k: v for k, v in raw.items() if v != ""})


def _opt_json(raw: dict[str, str], field: str) -> Any:
    text = raw.get(field, "")
    return json.loads(text) if text else None


def stored_result(data: Any) -> Result | None:
    """A stored result as today's wire reads it: one stored before the wire checked (an `ok`
    whose NaN score was kept as null, a NUL in its hardware) is read with each refused field
    left out, and an `ok` left with no score as `invalid`; never an error on reading."""
    if not isinstance(data, dict):
        return None
    for _ in range(3):
        try:
            return Result.model_validate(data)
        except ValidationError as exc:
            fields = {str(err["loc"][0]) for err in exc.errors() if err["loc"]}
            data = {k: v for k, v in data.items() if k not in fields and k in Result.model_fields}
            if not fields or "status" in fields:
                error = "the stored result had no valid score"
                data |= {"status": ResultStatus.INVALID.value, "metric": None, "error": error}
    return None


class ExperimentRecord(Record):
    """One experiment as stored: what runs, where, under which lease, and what came of it."""

    experiment_id: str
    task_id: str
    kind: ExperimentKind
    state: ExperimentState
    hypothesis_id: str | None = None
    # The class it must run on (baseline, replicate, merge); None: any class (explore).
    hardware: str | None = None
    # The class of the worker that leased it last.
    measured_on: str | None = None
    exclude_worker: str | None = None
    exclude_owner: str | None = None
    bundle_hash: str
    parent_commit: str
    code_commit: str | None = None
    code_bytes: int | None = None
    # replicate and merge: the experiment whose code it checks or carries forward.
    candidate_id: str | None = None
    replicate_id: str | None = None
    # A merge and its replicate queued together: each names the other (run by two workers).
    twin: str | None = None
    # A merge built on another merge still being judged (not on the head): that merge's id.
    stacked_on: str | None = None
    # A merge queued straight from an explore that looked better on a head that had moved
    # on: the explore's worker, whose claim this merge's verdict checks.
    claim_by: str | None = None
    # A run that does not preempt an explore (a winner set aside under a stronger one: it
    # is off the critical path and may be set aside again).
    yields: bool = False
    # Since when it has waited for a worker other than the one it excludes or its twin's
    # (`replicate_wait_s` counts from here; None: from created_s). A winner set aside while
    # its run was still queued keeps that run's wait in the runs that carry it on.
    waits_since: float | None = None
    attempts: int = 0
    fencing_token: int = 0
    worker_id: str | None = None
    owner: str | None = None
    lease_deadline: float | None = None
    created_s: float = 0.0
    finished_s: float | None = None
    result: Result | None = None
    last_error: str | None = None
    verdict: Verdict | None = None
    reason: str = ""
    # The head mean its reason compares with (None: none named).
    head_metric: float | None = None
    judged: bool = False
    cancel: bool = False
    seq: int = 0

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> ExperimentRecord:
        data: dict[str, Any] = {k: v for k, v in raw.items() if v != "" and k != "result"}
        record = cls.model_validate(data)
        result = stored_result(_opt_json(raw, "result"))
        return record if result is None else record.model_copy(update={"result": result})


class ExperimentPublic(ExperimentRecord):
    """One experiment with its diff against the head it was made on."""

    diff: str = ""


class HypothesisRecord(Record):
    """An idea, its change's hash, and the verdict with its reason."""

    hypothesis_id: str
    task_id: str
    title: str
    rationale: str = ""
    proposer: str = "human"
    author: str = ""
    parent_commit: str | None = None
    change_hash: str | None = None
    verdict: Verdict = Verdict.PENDING
    reason: str = ""
    # The experiment that carries it now (explore, then replicate, then maybe merge).
    experiment_id: str | None = None
    duplicate_of: str | None = None
    metric: float | None = None
    delta: float | None = None
    hardware: str | None = None
    # Text only, or sent back after a merge conflict: a proposer should implement it.
    needs_code: bool = False
    created_s: float = 0.0
    seq: int = 0


class TaskRecord(Record):
    """A registered task: its spec, its first commit and the bundle of its first code."""

    task_id: str
    spec: TaskSpec
    bundle_hash: str
    init_commit: str
    registered_s: float = 0.0

    @classmethod
    def from_hash(cls, raw: dict[str, str]) -> TaskRecord:
        data: dict[str, Any] = dict(raw)
        data["spec"] = json.loads(raw["spec"])
        return cls.model_validate(data)


class HeadRecord(Record):
    """The head of one task on one hardware class."""

    task_id: str
    hardware: str
    commit: str
    bundle_hash: str
    code_bytes: int = 0
    # Whether the head's baselines say how it scores: candidates on it are judged only then.
    ready: bool = False
    baselines_done: int = 0
    experiment_id: str | None = None
    updated_s: float = 0.0


class HeadPublic(HeadRecord):
    """A head with the stats the judge uses."""

    mean: float | None = None
    std: float | None = None
    runs: int = 0


class TaskPublic(TaskRecord):
    heads: list[HeadPublic] = Field(default_factory=list)


class TokenRecord(Record):
    """A bearer token's scope and name; the token itself is never stored, only its sha256."""

    scope: Scope
    name: str
    created_s: float = 0.0


class WorkerPublic(Record):
    """A worker slot as readers see it (`GET /api/v1/workers`)."""

    worker_id: str
    name: str
    hardware: str
    slot: str = "cpu"
    owner: str
    registered_s: float = 0.0
    agreed: int = 0
    disagreed: int = 0
    # When its claims' failures made it lose trust (autoswarm/coordinator/trust.py); None: trusted.
    distrusted_s: float | None = None


class WorkerRecord(WorkerPublic):
    """A worker slot, bound to the token that registered it (never shown: `WorkerPublic`)."""

    token_hash: str

    def public(self) -> WorkerPublic:
        return WorkerPublic.model_validate(self.model_dump(exclude={"token_hash"}))


MAX_CHANGE_BYTES = MAX_FILE_BYTES
