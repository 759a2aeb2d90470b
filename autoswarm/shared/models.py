"""Records and wire models shared by the coordinator and the worker.

Naming follows STYLE.md: `XCreate` is what a client sends, `X` what is stored.
Every record is frozen and forbids unknown fields.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from autoswarm.shared.task import TaskSpec
from autoswarm.shared.wire import (
    MAX_METRICS,
    FencingToken,
    Finite,
    HardwareClass,
    Id,
    Line,
    LogText,
    Megabytes,
    MetricName,
    Name,
    Prose,
    Seconds,
)

MAX_LOG_TAIL_CHARS = 16_000
MAX_TITLE_CHARS = 200
MAX_RATIONALE_CHARS = 8_000
MAX_FILE_BYTES = 512 * 1024
# Files one change may carry (a task's editable files are far fewer).
MAX_CHANGE_FILES = 100


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class ResultStatus(StrEnum):
    OK = "ok"
    CRASH = "crash"
    TIMEOUT = "timeout"
    INVALID = "invalid"


class ExperimentKind(StrEnum):
    EXPLORE = "explore"
    BASELINE = "baseline"
    REPLICATE = "replicate"
    MERGE = "merge"


class ExperimentState(StrEnum):
    QUEUED = "queued"
    LEASED = "leased"
    DONE = "done"
    DEAD = "dead"


class Verdict(StrEnum):
    KEPT = "kept"
    DISCARDED = "discarded"
    NOT_REPRODUCED = "not-reproduced"
    CRASHED = "crashed"
    CONFLICT = "conflict"
    PENDING = "pending"


class Scope(StrEnum):
    ADMIN = "admin"
    WORKER = "worker"
    PROPOSER = "proposer"
    READ = "read"


class Result(Frozen):
    """What one experiment produced. Failures of the experiment are statuses, not errors."""

    status: ResultStatus
    metric: Finite | None = None
    metrics: dict[MetricName, Finite] = Field(default_factory=dict, max_length=MAX_METRICS)
    exit_code: int | None = Field(default=None, ge=-(2**31), lt=2**31)
    wall_s: Seconds = 0.0
    training_s: Seconds | None = None
    peak_rss_mb: Megabytes | None = None
    peak_vram_mb: Megabytes | None = None
    log_tail: LogText = Field(default="", max_length=MAX_LOG_TAIL_CHARS)
    error: LogText | None = Field(default=None, max_length=4000)
    hardware: Line = Field(default="", max_length=200)

    @model_validator(mode="after")
    def _ok_has_metric(self) -> Self:
        if self.status is ResultStatus.OK and self.metric is None:
            raise ValueError("an ok result needs its metric (a finite number)")
        return self


class SpendReport(Frozen):
    """What a proposer's model calls cost, told to the coordinator (for /metrics)."""

    model: str = Field(min_length=1, max_length=100, pattern=r"^[\x21-\x7e]+$")
    usd: float = Field(ge=0, le=1000, allow_inf_nan=False)
    tokens: int = Field(default=0, ge=0, le=100_000_000)
    calls: int = Field(default=1, ge=1, le=10_000)


class HypothesisCreate(Frozen):
    """A hypothesis as a proposer or a human submits it."""

    task_id: Id
    # A title is a kept change's commit subject: one line (the rest goes in the rationale).
    title: Line = Field(min_length=1, max_length=MAX_TITLE_CHARS)
    rationale: Prose = Field(default="", max_length=MAX_RATIONALE_CHARS)
    # The new full content of editable files; None for a text-only hypothesis.
    change: dict[str, str] | None = Field(default=None, max_length=MAX_CHANGE_FILES)
    proposer: Name = "human"
    author: Line = Field(default="", max_length=100)
    # The head commit the change was made on (None: the current head).
    parent_commit: Id | None = None
    # The text-only hypothesis (by id) that this change implements, keeping its author.
    implements: Id | None = None

    @field_validator("title")
    @classmethod
    def _one_line(cls, title: str) -> str:
        """A title is a kept change's commit subject: one line with something on it."""
        if not title.strip():
            raise ValueError("a title must not be blank")
        return title


class TaskCreate(Frozen):
    """A task's files, base64; the spec is read from them (task.toml)."""

    files: dict[str, str] = Field(min_length=1, max_length=1000)


class TokenCreate(Frozen):
    scope: Scope
    name: Name


class Lease(Frozen):
    """A worker's time-limited claim on one experiment."""

    experiment_id: str
    task_id: str
    kind: ExperimentKind
    fencing_token: int
    lease_ttl_s: float
    bundle_hash: str
    spec: TaskSpec
    budget_s: float
    # An explore may give way to a waiting baseline, replicate or merge during the first
    # this many seconds of its run (0: never); its worker heartbeats more often meanwhile.
    preemptible_s: float = 0.0
    # What the task's prepare step makes its held-out data from (AUTOSWARM_HELDOUT_SECRET):
    # for the worker's trusted prepare step only, never a run's; never shown or logged.
    heldout_secret: str | None = Field(default=None, repr=False, max_length=256)
    # What it tests, for the volunteer's screen: its hypothesis's title ("baseline of the
    # head" for a baseline); None from a coordinator that does not say.
    title: str | None = Field(default=None, max_length=MAX_TITLE_CHARS)


class WorkerSummary(Frozen):
    """One worker's experiments leased since `since_s` (GET /workers/{id}/summary): runs
    with a result, how many are kept (its explores and merges whose hypothesis was kept, its
    replicates that confirmed a keep), and its credit as the contributors page counts it."""

    worker_id: str
    since_s: float
    runs: int
    kept: int
    credit: float


class HeartbeatAnswer(Frozen):
    """A renewed lease: stop the run when `cancel`; run `switch_to` instead when given (its
    explore was preempted by a waiting baseline, replicate or merge and queued again)."""

    lease_ttl_s: float
    cancel: bool
    switch_to: Lease | None = None


class ResultReport(Frozen):
    """A worker's report of one experiment, under its lease's fencing token."""

    experiment_id: Id
    fencing_token: FencingToken
    result: Result


class ResultSubmit(ResultReport):
    """`ResultReport` plus the reporting worker's id: the body of POST /results."""

    worker_id: Id


class WorkerCreate(Frozen):
    """A worker slot registering itself (one per GPU, or one for the CPU)."""

    name: Name
    hardware: HardwareClass
    slot: str = Field(default="cpu", min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")


class HypothesisSummary(Frozen):
    """One line of a task's history, as a proposer reads it."""

    hypothesis_id: str
    title: str
    proposer: str
    verdict: Verdict
    # metric - head metric at the time it was judged (sign as the metric; None: not judged)
    delta: float | None = None
    metric: float | None = None
    change_hash: str | None = None
    reason: str = ""
    log_tail: str = ""
    rationale: str = ""
    author: str = ""
    # Unified diff against its parent (filled for recent and crashed rows).
    diff: str = ""


class ProposerContext(Frozen):
    """What a proposer needs to propose well: the head, what was tried, what is in flight."""

    task_id: str
    spec: TaskSpec
    program: str = ""
    head_commit: str
    head_files: dict[str, str]
    head_metric: float | None = None
    head_std: float | None = None
    history: list[HypothesisSummary] = Field(default_factory=list)
    in_flight: list[HypothesisSummary] = Field(default_factory=list)
    # Hypotheses waiting for code on this head, oldest first: text-only ones, and conflicts.
    pending: list[HypothesisSummary] = Field(default_factory=list)
    queue_depth: int = 0
    # The protected files program.md names (path: text at the head), to read, never to edit.
    read_only_files: dict[str, str] = Field(default_factory=dict)
