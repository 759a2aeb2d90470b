"""A candidate's evidence: its run and its replicates' (the chain), pooled for the judge.

A candidate (an explore or a merge) is run once, then again by replicates while the judge's
sequential rule asks for more (autoswarm.coordinator.judge.SequentialRule). The replicates' ids are
derived from the candidate's (`chain_ids`): the first is the one queued when it looked
promising (for a merge, the twin queued beside it), the next ones `derived_id("r", cand,
k)`. This module turns the chain's records into what the rule pools (`evidence`), into the
runs the noise model records (`observations`), and says who confirmed the claim.
"""

from __future__ import annotations

from autoswarm.coordinator import judge
from autoswarm.coordinator.heads import derived_id
from autoswarm.coordinator.models import ExperimentRecord
from autoswarm.coordinator.noise import Run, far_out
from autoswarm.coordinator.store.judging import Observation
from autoswarm.shared.models import ExperimentState, ResultStatus


def chain_ids(candidate_id: str) -> list[str]:
    """The ids of a candidate's replicates, in order (at most judge.MAX_RUNS - 1)."""
    first = [derived_id("r", candidate_id)]
    return first + [derived_id("r", candidate_id, str(k)) for k in range(2, judge.MAX_RUNS)]


def finished(chain: list[ExperimentRecord]) -> list[ExperimentRecord]:
    """The replicates of a chain that ran to an end (done or dead), in order."""
    ended = (ExperimentState.DONE, ExperimentState.DEAD)
    return [rep for rep in chain if rep.state in ended]


def score(exp: ExperimentRecord) -> float | None:
    """An experiment's ok score, or None."""
    result = exp.result
    if result is None or result.status is not ResultStatus.OK or result.metric is None:
        return None
    return result.metric


def run_of(exp: ExperimentRecord) -> Run | None:
    """An experiment's ok score as a run of its code by its worker, or None."""
    value = score(exp)
    if value is None:
        return None
    return Run(exp.experiment_id, exp.code_commit or exp.parent_commit, exp.worker_id or "", value)


def evidence(
    cand: ExperimentRecord,
    replicates: list[ExperimentRecord],
    history: list[float],
    std: float,
    *,
    two_owners: bool,
) -> judge.Evidence:
    """The runs that count (ok, not far outside the class's `history`), how many did not
    count, and who confirmed the claim (`two_owners`: only another owner's worker does)."""
    code = cand.code_commit or cand.parent_commit
    counted: list[Run] = []
    others: list[ExperimentRecord] = []
    for exp in [cand, *replicates]:
        value = score(exp)
        if value is None or far_out(value, history, std):
            continue
        counted.append(Run(exp.experiment_id, code, exp.worker_id or "", value))
        if exp is not cand:
            others.append(exp)
    held = 1 + len(replicates) - len(counted)
    return judge.Evidence(counted, held, confirmed_by(cand, others, two_owners=two_owners))


def confirmed_by(
    cand: ExperimentRecord, others: list[ExperimentRecord], *, two_owners: bool
) -> str | None:
    """Who confirmed the candidate's claim among the runs after it, as the keep's reason
    says it; None when nobody may (with `two_owners`: no worker of another owner ran it)."""
    foreign = [r for r in others if r.owner and r.owner != cand.owner]
    if foreign:
        return f"replicated by {foreign[0].worker_id} of another owner"
    if two_owners:
        return None
    peers = [r for r in others if r.worker_id != cand.worker_id]
    if peers:
        return f"replicated by {peers[0].worker_id}, another worker of the same owner"
    if others:
        return "replicated by the same worker (no other worker on this class)"
    return None


def observations(counted: judge.Evidence, code: str) -> list[Observation]:
    """The evidence's counted runs as the noise model records them, measuring `code`."""
    return [(r.experiment_id, code, r.worker, r.value) for r in counted.runs]
