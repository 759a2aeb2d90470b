"""Workers that lose trust, and the re-checks of what they measured.

DESIGN: "a worker whose claims do not reproduce loses trust, and its pending results are
re-checked". `count_claim` counts each replication against the claimant and applies
`autoswarm.coordinator.trust`; when a worker loses trust (once), every run of its that a decision on
a current head rests on without another worker's check is measured again, by another
worker:
- a baseline of a current head: its run leaves the head's runs, and a replacement
  baseline that excludes the worker is queued;
- an explore or merge on a current head that it reported as not better: a re-check (the
  same code, kind and class, excluding the worker) is queued and its hypothesis is pending
  again. A claim it made (better) needs no re-check: it is being replicated anyway.
From then on its baselines do not count (each is replaced), its "not better" is re-checked,
and it leases no baseline or replicate (lease.lua). Results on older heads are left alone:
their decisions were overtaken by the kept changes since.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from autoswarm.coordinator import trust
from autoswarm.coordinator.heads import Heads, derived_id
from autoswarm.coordinator.models import ExperimentRecord
from autoswarm.coordinator.plumbing import Plumbing, hardware_of
from autoswarm.coordinator.store import NewExperiment
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.shared.models import ExperimentKind, ExperimentState, ResultStatus, Verdict

logger = logging.getLogger(__name__)

# Experiments read per round trip while sweeping a task for a worker's runs.
SWEEP_BATCH = 500


@dataclass(eq=False)
class Rechecks:
    """Trust counted per claim, and re-checks (see the module doc)."""

    plumbing: Plumbing
    heads: Heads

    def distrusted(self, worker_id: str | None) -> bool:
        return self.plumbing.store.is_distrusted(worker_id or "")

    def count_claim(self, worker_id: str | None, *, agreed: bool) -> None:
        """One replication of this worker's claim; it loses trust here if it must."""
        if not worker_id:
            return
        counts = self.plumbing.store.count_agreement(worker_id, agreed=agreed)
        if agreed or not trust.distrusted(counts):
            return
        if self.plumbing.store.distrust(worker_id, now=self.plumbing.clock()):
            logger.warning(
                "worker %s lost trust: %d of its %d checked claims did not reproduce "
                "(the other workers': %d of %d); re-checking what it measured",
                worker_id,
                counts.disagreed,
                counts.agreed + counts.disagreed,
                counts.all_disagreed - counts.disagreed,
                counts.all_agreed + counts.all_disagreed - counts.agreed - counts.disagreed,
            )
            self.recheck_worker(worker_id)

    def recheck_worker(self, worker_id: str) -> int:
        """Queue re-checks of the worker's unchecked runs on current heads; how many."""
        queued = 0
        for task_id in self.plumbing.store.task_ids():
            with self.plumbing.task_lock(task_id):
                heads = {
                    hw: self.plumbing.store.get_head(task_id, hw)
                    for hw in self.plumbing.store.task_classes(task_id)
                }
                ids = self.plumbing.store.task_experiment_ids(task_id)
                for start in range(0, len(ids), SWEEP_BATCH):
                    for exp in self.plumbing.store.get_experiments(
                        ids[start : start + SWEEP_BATCH]
                    ):
                        head = heads.get(hardware_of(exp))
                        if exp.worker_id != worker_id or exp.state is not ExperimentState.DONE:
                            continue
                        if head is None or exp.parent_commit != head.commit:
                            continue
                        queued += self._recheck_one(exp, worker_id)
        self.heads.forget_heads()
        self.plumbing.notify(queued)
        return queued

    def _recheck_one(self, exp: ExperimentRecord, worker_id: str) -> int:
        metric = exp.result.metric if exp.result and exp.result.status is ResultStatus.OK else None
        if exp.kind is ExperimentKind.BASELINE and metric is not None and exp.judged:
            hardware = hardware_of(exp)
            self.plumbing.store.drop_run(
                exp.task_id, hardware, exp.parent_commit, metric, exp.experiment_id
            )
            return self.replace_baseline(exp, worker_id)
        candidate = exp.kind in (ExperimentKind.EXPLORE, ExperimentKind.MERGE)
        if candidate and exp.verdict is Verdict.DISCARDED and metric is not None:
            return self.recheck_candidate(exp, worker_id, f"{exp.reason}; re-checked")
        return 0

    def replace_baseline(self, exp: ExperimentRecord, worker_id: str, *, held: bool = False) -> int:
        """Queue another worker's baseline in place of this one (not counted: its worker lost
        trust, or, `held`, its score was far outside the class's history)."""
        hardware = hardware_of(exp)
        again = NewExperiment(
            derived_id("b", "again", exp.experiment_id),
            exp.task_id,
            ExperimentKind.BASELINE,
            hardware,
            {
                "bundle_hash": exp.bundle_hash,
                "parent_commit": exp.parent_commit,
                "code_commit": exp.code_commit,
                "code_bytes": exp.code_bytes,
                "exclude_worker": worker_id,
            },
        )
        why = "whose score was far outside the class's history" if held else "who lost trust"
        reason = f"baseline {exp.experiment_id} by {worker_id}, {why}: measured again"
        return int(
            self.plumbing.store.recheck(
                again,
                hypothesis_id=None,
                hypothesis=None,
                event=self._recheck_event(exp, again, reason),
                now=self.plumbing.clock(),
            )
        )

    def recheck_candidate(self, exp: ExperimentRecord, worker_id: str, why: str) -> int:
        """Queue the same code on the same class by another worker; the hypothesis waits."""
        again = self.recheck_of(exp, worker_id)
        reason = f"{why} by another worker ({worker_id} lost trust) as {again.experiment_id}"
        hypothesis: dict[str, FieldValue] = {
            "verdict": Verdict.PENDING.value,
            "reason": reason,
            "experiment_id": again.experiment_id,
        }
        return int(
            self.plumbing.store.recheck(
                again,
                hypothesis_id=exp.hypothesis_id,
                hypothesis=hypothesis,
                event=self._recheck_event(exp, again, reason),
                now=self.plumbing.clock(),
            )
        )

    def recheck_of(self, exp: ExperimentRecord, worker_id: str) -> NewExperiment:
        return NewExperiment(
            derived_id("c", exp.experiment_id),
            exp.task_id,
            exp.kind,
            hardware_of(exp),
            {
                "hypothesis_id": exp.hypothesis_id,
                "bundle_hash": exp.bundle_hash,
                "parent_commit": exp.parent_commit,
                "code_commit": exp.code_commit,
                "code_bytes": exp.code_bytes,
                "candidate_id": exp.candidate_id,
                "exclude_worker": worker_id,
            },
        )

    def _recheck_event(
        self, exp: ExperimentRecord, again: NewExperiment, reason: str
    ) -> dict[str, FieldValue]:
        return {
            "type": "recheck",
            "task_id": exp.task_id,
            "experiment_id": again.experiment_id,
            "recheck_of": exp.experiment_id,
            "hypothesis_id": exp.hypothesis_id,
            "hardware": hardware_of(exp),
            "reason": reason,
            "time_s": self.plumbing.clock(),
        }
