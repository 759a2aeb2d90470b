"""Head baselines beyond a class's first ones: when a head is measured again.

A head is measured by `baseline_runs` baselines when it becomes the head, unless a winner is
stacked on it (it is likely the head for one run only; `measure_head` queues them once the
stack breaks); more baselines of it while a candidate on it is measured again (its mean is
part of every comparison with it, `measure_again`); and the unfinished baselines of a head
that is no longer the head are withdrawn. Their ids are derived from the head, so queueing
one twice is a no-op.

A deterministic task spends no run on baselines (`measured`): once two runs of the head's
code agree exactly, on a class where every code measured twice agreed exactly and the task
declares no noise of its own, the class has shown sigma 0 and a third run of the same code
can only repeat the score. The head's remaining baselines are withdrawn
(`withdraw_measured`), and a later head whose own two runs agree exactly (a kept change's
run and its replicate) queues none. The rule then compares with no noise
(autoswarm/coordinator/judge.py: se 0, so a replicated gain past min_effect is kept). Replication
for trust stays: a winner's replicate is the only extra run, and one that disagrees makes the
noise non-zero, after which every head is measured as before.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from autoswarm.coordinator import judge
from autoswarm.coordinator.heads import Heads
from autoswarm.coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from autoswarm.coordinator.noise import Run
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.coordinator.stacks import Stacks
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.shared.models import ExperimentState, Verdict

logger = logging.getLogger(__name__)


def measured(runs: Sequence[Run], code: str, declared_noise: float | None = None) -> bool:
    """Whether `code` needs no more baselines: two of its runs agree exactly, every code run
    at least twice agreed exactly (the class's sigma is 0), and no noise is declared."""
    if declared_noise:
        return False
    by_code: dict[str, set[float]] = defaultdict(set)
    counts: dict[str, int] = defaultdict(int)
    for run in runs:
        by_code[run.code].add(run.value)
        counts[run.code] += 1
    if counts[code] < 2 or len(by_code[code]) != 1:
        return False
    return all(len(values) == 1 for values in by_code.values())


@dataclass(eq=False)
class Baselines:
    """Queues and withdraws a head's baselines (see the module doc)."""

    plumbing: Plumbing
    heads: Heads
    stacks: Stacks

    def measure_head(
        self, task: TaskRecord, hardware: str, failed: ExperimentRecord | None = None
    ) -> int:
        """Queue a kept head's baselines if they were held back (a merge was stacked on it),
        once no winner is stacked on it any more or the winner at the bottom of its stack
        (`failed`, run on the head itself) was not kept: the stack starts again from the
        head, which stays the head for another run at least, and its noise is known from
        too few runs meanwhile. How many were queued. Idempotent: their ids are derived from
        the head."""
        head = self.plumbing.store.get_head(task.task_id, hardware)
        if head is None or not head.experiment_id:
            return 0
        broken = failed is not None and failed.parent_commit == head.commit
        if not broken and self.stacks.tip(task, hardware, head):
            return 0
        if self.is_measured(task, hardware, head.commit):
            return 0
        fields: dict[str, FieldValue] = {
            "commit": head.commit,
            "bundle_hash": head.bundle_hash,
            "code_bytes": head.code_bytes,
        }
        baseline = self.heads.baseline_of(task.task_id, hardware, fields)
        queued = 0
        for baseline_id in self.heads.baseline_ids(task.task_id, hardware, head.commit):
            new = dataclasses.replace(baseline, experiment_id=baseline_id)
            queued += self.plumbing.store.enqueue_experiment(new, now=self.plumbing.clock())
        if queued:
            logger.info(
                "task %s: %s head %s measured: %d baselines queued",
                task.task_id,
                hardware,
                head.commit,
                queued,
            )
            self.plumbing.notify(queued)
        return queued

    def measure_again(
        self,
        task: TaskRecord,
        hardware: str,
        head: HeadRecord | None,
        stats: judge.HeadStats,
        exp: ExperimentRecord,
        target: int,
    ) -> None:
        """More baselines of the head while a candidate on it is measured again, up to
        `target` runs (and max_baseline_runs): the head's mean is part of every comparison
        with it, so head baselines grow where candidates are judged against one head. Their
        ids are derived from the head's run count: candidates promising while they wait add
        nothing."""
        if head is None or exp.parent_commit != head.commit or stats.mean is None:
            return
        wanted = min(target, self.plumbing.settings.max_baseline_runs)
        if stats.runs >= wanted:
            return
        head_fields: dict[str, FieldValue] = {
            "bundle_hash": head.bundle_hash,
            "commit": head.commit,
            "code_bytes": head.code_bytes,
        }
        reason = (
            f"{exp.experiment_id} is measured again against a head measured {stats.runs} "
            f"times: the head is measured up to {wanted} times"
        )
        queued = 0
        for runs in range(stats.runs, wanted):
            again = dataclasses.replace(
                self.heads.baseline_of(task.task_id, hardware, head_fields),
                experiment_id=self.heads.more_baseline_id(
                    task.task_id, hardware, head.commit, runs
                ),
            )
            event: dict[str, FieldValue] = {
                "type": "baseline_queued",
                "task_id": task.task_id,
                "experiment_id": again.experiment_id,
                "after": exp.experiment_id,
                "hardware": hardware,
                "commit": head.commit,
                "reason": reason,
                "time_s": self.plumbing.clock(),
            }
            queued += self.plumbing.store.recheck(
                again, hypothesis_id=None, hypothesis=None, event=event, now=self.plumbing.clock()
            )
        if queued:
            logger.info("task %s: %s", task.task_id, reason)
            self.plumbing.notify(queued)

    def measured_meanwhile(
        self,
        task_id: str,
        hardware: str,
        head: HeadRecord | None,
        stats: judge.HeadStats,
        cand: ExperimentRecord,
        replicates: int,
    ) -> bool:
        """Whether baselines of the head queued for this look at a candidate (up to
        judge.HEAD_RUNS_PER_RUN per run of it) have not finished yet."""
        if head is None or cand.parent_commit != head.commit:
            return False
        wanted = min(
            judge.HEAD_RUNS_PER_RUN * (1 + replicates), self.plumbing.settings.max_baseline_runs
        )
        ids = [
            self.heads.more_baseline_id(task_id, hardware, head.commit, runs)
            for runs in range(stats.runs, wanted)
        ]
        running = (ExperimentState.QUEUED, ExperimentState.LEASED)
        return any(e.state in running for e in self.plumbing.store.get_experiments(ids))

    def is_measured(
        self, task: TaskRecord, hardware: str, commit: str, own: Sequence[Run] = ()
    ) -> bool:
        """Whether a head needs no baselines (`measured`); `own`: its runs not recorded yet."""
        runs = [*self.heads.class_runs(task.task_id, hardware)[1], *own]
        return measured(runs, commit, task.spec.metric.noise)

    def withdraw_superseded(
        self, task: TaskRecord, hardware: str, superseded: str, commit: str
    ) -> None:
        """The baselines of a head that is no longer the head, not finished yet, are not
        needed: they would measure old code ahead of the merges and replicates queued behind
        them (a running one is told to stop at its next heartbeat)."""
        reason = f"not needed: the head moved on from {superseded[:12]} to {commit[:12]}"
        self._withdraw(task.task_id, hardware, superseded, reason)

    def withdraw_measured(self, task: TaskRecord, hardware: str, commit: str) -> None:
        """The head's unfinished baselines, once `measured` says it needs none."""
        reason = (
            f"not needed: two runs of {commit[:12]} agree exactly and this class has shown no "
            "noise (a deterministic task)"
        )
        if withdrawn := self._withdraw(task.task_id, hardware, commit, reason):
            logger.info(
                "task %s: %s: %d baselines withdrawn, %s", task.task_id, hardware, withdrawn, reason
            )

    def _withdraw(self, task_id: str, hardware: str, commit: str, reason: str) -> int:
        """Every unfinished baseline of `commit` withdrawn with `reason`; how many were."""
        more = [
            self.heads.more_baseline_id(task_id, hardware, commit, runs)
            for runs in range(self.plumbing.settings.max_baseline_runs)
        ]
        withdrawn = 0
        for baseline_id in self.heads.baseline_ids(task_id, hardware, commit) + more:
            event: dict[str, FieldValue] = {
                "type": "baseline",
                "task_id": task_id,
                "experiment_id": baseline_id,
                "hardware": hardware,
                "commit": commit,
                "metric": None,
                "reason": reason,
                "time_s": self.plumbing.clock(),
            }
            withdrawn += self.plumbing.store.withdraw(
                baseline_id,
                verdict=Verdict.DISCARDED.value,
                reason=reason,
                event=event,
                now=self.plumbing.clock(),
            )
        return withdrawn
