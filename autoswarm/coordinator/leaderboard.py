"""The read model's task views: the leaderboard, the progress chart, the lineage tree, and
the contributors with their credit. No fastapi here: the routes call these in a thread.

The chain of kept changes and the lineage tree come from git (the truth for accepted
code: each commit's `Experiment:`, `Metric:` and `Delta:` trailers); scores, counts and
credit come from the indexes (`autoswarm/coordinator/store/reads.py`).
"""

from __future__ import annotations

from collections import Counter
from functools import lru_cache
from pathlib import Path

from autoswarm.coordinator import credit
from autoswarm.coordinator.lineage import CommitInfo, Lineage, branch_for
from autoswarm.coordinator.read_models import (
    ClassBoard,
    Contributor,
    Contributors,
    KeptChange,
    Leaderboard,
    LineageNode,
    LineageTree,
    Progress,
    ProgressSeries,
    Team,
)
from autoswarm.coordinator.read_side import ReadSide
from autoswarm.shared.errors import LineageError, NotFound

CHAIN_LIMIT = 1000
CONTRIBUTOR_WORKERS_SCAN = 5000


def _number(text: str | None) -> float | None:
    if not text:
        return None
    value = text.rpartition("=")[2].strip()
    try:
        number = float(value)
    except ValueError:
        return None
    return None if number != number else number  # NaN: no number


def _change(info: CommitInfo) -> KeptChange:
    trailers = info.trailers
    return KeptChange(
        commit=info.sha,
        parent=info.parent,
        title=info.title,
        experiment_id=trailers.get("Experiment") or None,
        metric=_number(trailers.get("Metric")),
        delta=_number(trailers.get("Delta")),
        worker_id=trailers.get("Worker") or None,
        replicated_by=trailers.get("Replicated-by") or None,
        timestamp=info.timestamp,
    )


@lru_cache(maxsize=256)
def _history_at(
    lineage_dir: Path, task_id: str, hardware: str, head_commit: str
) -> tuple[CommitInfo, ...]:
    """A branch's history, cached by the head it ends at (a history never changes)."""
    try:
        return tuple(Lineage(lineage_dir, task_id).history(branch_for(hardware), CHAIN_LIMIT))
    except LineageError:
        return ()


def _history(reads: ReadSide, task_id: str, hardware: str) -> list[CommitInfo]:
    """The class's branch, newest first (read from git once per head)."""
    head = reads.store.get_head(task_id, hardware)
    if head is None:
        return []
    lineage_dir = reads.lineage(task_id).path.parent
    return list(_history_at(lineage_dir, task_id, hardware, head.commit))


def _chain(reads: ReadSide, task_id: str, hardware: str) -> list[KeptChange]:
    """The class's branch, oldest first, each kept change with its owner."""
    changes = [_change(info) for info in reversed(_history(reads, task_id, hardware))]
    ids = [c.experiment_id for c in changes if c.experiment_id]
    rows = reads.store.experiment_rows(ids, ["owner"])
    owners = {eid: row.get("owner") for eid, row in zip(ids, rows, strict=True)}
    return [
        c.model_copy(update={"owner": owners.get(c.experiment_id)}) if c.experiment_id else c
        for c in changes
    ]


def leaderboard(reads: ReadSide, task_id: str, hardware: str | None = None) -> Leaderboard:
    """Per hardware class: the head, its score with spread and runs, the chain of kept
    changes with their deltas."""
    task = reads.get_task(task_id)
    classes = reads.store.task_classes(task_id)
    if hardware is not None:
        if hardware not in classes:
            raise NotFound(f"task {task_id} has no hardware class {hardware!r}")
        classes = [hardware]
    boards = []
    for hw in classes:
        head, stats = reads.stats(task_id, hw)
        if head is None:
            continue
        boards.append(
            ClassBoard(
                hardware=hw,
                head_commit=head.commit,
                head_experiment_id=head.experiment_id,
                ready=head.ready,
                mean=stats.mean,
                std=stats.std if stats.df else None,
                runs=stats.runs,
                chain=_chain(reads, task_id, hw),
            )
        )
    counts = {
        label: n
        for label, n in reads.store.task_counts(task_id).items()
        if not label.startswith("parent:")
    }
    return Leaderboard(
        task_id=task_id,
        metric=task.spec.metric.name,
        direction=task.spec.metric.direction,
        classes=boards,
        counts=counts,
    )


def _parse_point(member: str) -> tuple[str, str, str, float] | None:
    experiment_id, _, rest = member.partition("|")
    parts = rest.rsplit("|", 2)
    if len(parts) != 3:
        return None
    hardware, kind, metric = parts
    try:
        return experiment_id, hardware, kind, float(metric)
    except ValueError:
        return None


def progress(reads: ReadSide, task_id: str, limit: int) -> Progress:
    """The newest `limit` scored experiments as chart points, one series per class; kept
    candidates are flagged and titled."""
    task = reads.get_task(task_id)
    store = reads.store
    total, members = store.chart_points(task_id, limit)
    kept: set[str] = set()
    for hw in store.task_classes(task_id):
        kept.update(store.kept_ids(task_id, hw))
    series: dict[str, list[tuple[int, float, int, str, str, float]]] = {}
    first_x = total - len(members)
    parsed_points = [_parse_point(member) for member in members]
    # When each finished, for the chart's time axis (one pipelined read for the points).
    shown = [p[0] for p in parsed_points if p is not None]
    finished = dict(zip(shown, store.experiment_rows(shown, ["finished_s"]), strict=True))
    for offset, parsed in enumerate(parsed_points):
        if parsed is None:
            continue
        eid, hw, kind, metric = parsed
        when = float(finished.get(eid, {}).get("finished_s") or 0.0)
        point = (first_x + offset, metric, 1 if eid in kept else 0, kind, eid, when)
        series.setdefault(hw, []).append(point)
    shown_kept = [p[4] for points in series.values() for p in points if p[2]]
    hyp_ids = [
        row.get("hypothesis_id", "") for row in store.experiment_rows(shown_kept, ["hypothesis_id"])
    ]
    titles = store.hypothesis_fields(hyp_ids, ["title"])
    kept_titles = {eid: t.get("title", "") for eid, t in zip(shown_kept, titles, strict=True)}
    return Progress(
        task_id=task_id,
        metric=task.spec.metric.name,
        lower_is_better=task.spec.lower_is_better,
        total=total,
        shown=len(members),
        series=[
            ProgressSeries(
                hardware=hw,
                points=points,
                kept_titles={p[4]: kept_titles.get(p[4], "") for p in points if p[2]},
            )
            for hw, points in series.items()
        ],
    )


def lineage_tree(reads: ReadSide, task_id: str) -> LineageTree:
    """Every commit of every class's branch once, parents before children."""
    task = reads.get_task(task_id)
    counts = reads.store.task_counts(task_id)
    nodes: dict[str, LineageNode] = {}
    for hw in reads.store.task_classes(task_id):
        head = reads.store.get_head(task_id, hw)
        for info in _history(reads, task_id, hw):
            change = _change(info)
            node = nodes.get(info.sha) or LineageNode(
                commit=info.sha,
                parent=info.parent,
                title=info.title,
                experiment_id=change.experiment_id,
                metric=change.metric,
                delta=change.delta,
                tried=counts.get(f"parent:{info.sha}", 0),
                timestamp=info.timestamp,
            )
            heads = (
                [*node.heads, hw] if head is not None and head.commit == info.sha else node.heads
            )
            nodes[info.sha] = node.model_copy(
                update={"hardware": [*node.hardware, hw], "heads": heads}
            )
    if task.init_commit not in nodes:
        nodes[task.init_commit] = LineageNode(
            commit=task.init_commit,
            title="the task's first code",
            tried=counts.get(f"parent:{task.init_commit}", 0),
        )
    children: dict[str | None, list[str]] = {}
    for node in nodes.values():
        children.setdefault(node.parent if node.parent in nodes else None, []).append(node.commit)
    ordered: list[LineageNode] = []
    todo = sorted(children.get(None, []), key=lambda sha: nodes[sha].timestamp)
    while todo:
        sha = todo.pop(0)
        ordered.append(nodes[sha])
        todo += sorted(children.get(sha, []), key=lambda c: nodes[c].timestamp)
    return LineageTree(task_id=task_id, root=task.init_commit, nodes=ordered)


def contributors(reads: ReadSide, start: int, limit: int) -> Contributors:
    """Owners by credit, highest first, with the parts of their credit; and teams."""
    store = reads.store
    page = store.contributors_page(start, limit)
    workers = Counter(w.owner for w in store.list_workers(CONTRIBUTOR_WORKERS_SCAN))
    rows = []
    for raw, total in page:
        owner = raw["owner"]
        rows.append(
            Contributor(
                owner=owner,
                team=credit.team_of(owner),
                credit=total,
                work_s=float(raw.get("work_s", 0)),
                bonus_s=float(raw.get("bonus_s", 0)),
                raw_s=float(raw.get("raw_s", 0)),
                experiments=int(float(raw.get("experiments", 0))),
                ok=int(float(raw.get("ok", 0))),
                kept=int(float(raw.get("kept", 0))),
                workers=workers.get(owner, 0),
            )
        )
    count = store.contributor_count()
    return Contributors(
        formula=credit.FORMULA,
        factors=credit.factor_table(),
        contributors=rows,
        teams=[Team(team=team, credit=value) for team, value in store.teams(100)],
        total=count,
        next_cursor=str(start + limit) if start + limit < count else None,
    )
