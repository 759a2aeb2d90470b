"""What the read API answers beyond the stored records: summaries, the leaderboard, the
progress chart, the lineage tree, contributors. Frozen; the OpenAPI document shows them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from autoswarm.coordinator.models import ExperimentPublic, ExperimentRecord, HypothesisRecord


class ReadModel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ExperimentSummary(ReadModel):
    """One experiment as a table row: no log tail, its hypothesis's title joined in."""

    experiment_id: str
    task_id: str
    kind: str
    state: str
    seq: int = 0
    hypothesis_id: str | None = None
    title: str = ""
    proposer: str = ""
    author: str = ""
    # Its own verdict, else (not a baseline) its hypothesis's; None for a baseline.
    verdict: str | None = None
    reason: str = ""
    hardware: str = ""
    worker_id: str | None = None
    owner: str | None = None
    status: str | None = None
    metric: float | None = None
    delta: float | None = None
    # The head mean its reason compares with (None: not compared).
    head_metric: float | None = None
    memory_mb: float | None = None
    wall_s: float | None = None
    code_commit: str | None = None
    parent_commit: str = ""
    candidate_id: str | None = None
    created_s: float = 0.0
    finished_s: float | None = None


class ExperimentPage(ReadModel):
    """A page of experiments; pass `next_cursor` back as `cursor` (null: no more)."""

    experiments: list[ExperimentSummary] | list[ExperimentRecord]
    next_cursor: str | None = None


class ExperimentDetail(ExperimentPublic):
    """One experiment with its diff, its hypothesis, and its effective verdict."""

    hypothesis: HypothesisRecord | None = None
    effective_verdict: str | None = None


class KeptChange(ReadModel):
    """One commit of a lineage branch: a kept change with its delta (or the first code)."""

    commit: str
    parent: str | None = None
    title: str
    experiment_id: str | None = None
    metric: float | None = None
    delta: float | None = None
    worker_id: str | None = None
    owner: str | None = None
    replicated_by: str | None = None
    timestamp: int = 0


class ClassBoard(ReadModel):
    """One hardware class of a task: its head's score and the chain that led there."""

    hardware: str
    head_commit: str
    head_experiment_id: str | None = None
    ready: bool = False
    mean: float | None = None
    std: float | None = None
    runs: int = 0
    chain: list[KeptChange] = Field(default_factory=list)


class Leaderboard(ReadModel):
    task_id: str
    metric: str
    direction: str
    classes: list[ClassBoard]
    counts: dict[str, int] = Field(default_factory=dict)


class ProgressSeries(ReadModel):
    """One hardware class's points: [x, metric, kept (0/1), kind, experiment_id, finished
    (unix s)]."""

    hardware: str
    points: list[tuple[int, float, int, str, str, float]]
    kept_titles: dict[str, str] = Field(default_factory=dict)


class Progress(ReadModel):
    task_id: str
    metric: str
    lower_is_better: bool
    total: int
    shown: int
    series: list[ProgressSeries]


class LineageNode(ReadModel):
    commit: str
    parent: str | None = None
    title: str
    experiment_id: str | None = None
    metric: float | None = None
    delta: float | None = None
    hardware: list[str] = Field(default_factory=list)
    heads: list[str] = Field(default_factory=list)
    tried: int = 0
    timestamp: int = 0


class LineageTree(ReadModel):
    """The lineage as a tree: every commit of every class's branch, children by parent."""

    task_id: str
    root: str
    nodes: list[LineageNode]


class Contributor(ReadModel):
    owner: str
    team: str = ""
    credit: float
    work_s: float = 0.0
    bonus_s: float = 0.0
    raw_s: float = 0.0
    experiments: int = 0
    ok: int = 0
    kept: int = 0
    workers: int = 0


class Team(ReadModel):
    team: str
    credit: float


class Contributors(ReadModel):
    formula: str
    factors: list[tuple[str, float]]
    contributors: list[Contributor]
    teams: list[Team]
    total: int
    next_cursor: str | None = None
