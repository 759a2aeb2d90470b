"""One worker's account since it started (GET /api/v1/workers/{id}/summary): its runs,
its kept ones, and its credit, counted by the same filing as the contributors page
(`autoswarm.coordinator.store.filing`, `autoswarm.coordinator.credit`). No fastapi here."""

from __future__ import annotations

from autoswarm.coordinator.store import Store
from autoswarm.coordinator.store.filing import CANDIDATE_KINDS, file_experiment
from autoswarm.coordinator.store.query import ExperimentQuery
from autoswarm.shared.models import WorkerSummary

# The newest experiments of one worker looked at, at most (a page of the query each).
SCAN_LIMIT = 5000
PAGE = 500


def _ids(store: Store, worker_id: str) -> list[str]:
    """The worker's experiments, newest first, up to SCAN_LIMIT."""
    query = ExperimentQuery(worker_id=worker_id)
    found: list[str] = []
    cursor: str | None = None
    while len(found) < SCAN_LIMIT:
        ids, cursor = store.find_experiments(query, cursor, PAGE)
        found += ids
        if cursor is None:
            break
    return found[:SCAN_LIMIT]


def _is_kept(exp: dict[str, str], hyp: dict[str, str]) -> bool:
    """An explore or merge whose hypothesis was kept, or a replicate that confirmed a keep."""
    kind = exp.get("kind", "")
    if kind in CANDIDATE_KINDS:
        return exp.get("verdict") == "kept" or hyp.get("verdict") == "kept"
    return kind == "replicate" and exp.get("verdict") == "kept"


def worker_summary(store: Store, worker_id: str, since_s: float) -> WorkerSummary:
    """Runs, kept ones and credit of the worker's experiments leased at or after since_s."""
    budgets: dict[str, float | None] = {}
    runs = kept = 0
    credit = 0.0
    for exp, hyp in store.index_inputs(_ids(store, worker_id)):
        if exp.get("worker_id") != worker_id or float(exp.get("leased_s") or 0) < since_s:
            continue
        task_id = exp["task_id"]
        if task_id not in budgets:
            task = store.get_task(task_id)
            budgets[task_id] = task.spec.budget_s if task else None
        filing = file_experiment(exp, hyp, budgets[task_id])
        runs += 1 if exp.get("result") else 0
        kept += 1 if _is_kept(exp, hyp) else 0
        credit += sum(value for *_, value, _ in filing.credits if isinstance(value, float))
    return WorkerSummary(worker_id=worker_id, since_s=since_s, runs=runs, kept=kept, credit=credit)
