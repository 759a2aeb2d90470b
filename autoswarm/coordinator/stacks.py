"""The stack of winners on each head: which one is the tip, what lies under it, and whether
a winner still carries its hypothesis.

While a winner on a head is being judged (a merge, or an explore being replicated there),
winners found next are stacked on its code rather than run one after another (see
`autoswarm.coordinator.stacking`); this module reads that stack and marks its tip. It decides
nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from autoswarm.coordinator import evidence
from autoswarm.coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.shared.errors import MergeConflict
from autoswarm.shared.models import ExperimentState, Verdict

# How far down a stack of merges `tip_on` looks for the change being kept.
MAX_STACK = 100


@dataclass(eq=False)
class Stacks:
    """Reads and marks the stack of winners on each head (see the module doc)."""

    plumbing: Plumbing

    def would_stack(
        self, task: TaskRecord, hardware: str, cand: ExperimentRecord, head: HeadRecord
    ) -> bool:
        """Whether a winner found on the head would be stacked on the tip: another winner on
        that head is still being judged, and this change merges cleanly onto its code and
        adds to it. (Otherwise it is replicated on the head, and may become the tip.)"""
        if head.commit != cand.parent_commit:
            return False
        return self.onto_tip(task, cand, self.tip(task, hardware, head)) is not None

    def mark_tip(self, task: TaskRecord, hardware: str, cand: ExperimentRecord) -> None:
        """A winner found on the head, now being replicated there, is the tip (the code the
        next winners on that head are stacked on) unless another winner is."""
        head = self.plumbing.store.get_head(task.task_id, hardware)
        if head is None or head.commit != cand.parent_commit or not cand.code_commit:
            return
        if self.tip(task, hardware, head) is None:
            self.plumbing.store.set_tip(
                task.task_id,
                hardware,
                on=head.commit,
                experiment_id=cand.experiment_id,
                commit=cand.code_commit,
            )

    def onto_tip(
        self, task: TaskRecord, cand: ExperimentRecord, tip: tuple[str, str] | None
    ) -> dict[str, bytes] | None:
        """`cand`'s change merged onto the tip's code; None if there is no tip, the tip is
        `cand` itself (restacked), the change conflicts with the tip (not with the head) or
        the tip has it already."""
        if tip is None or tip[0] == cand.experiment_id:
            return None
        lineage = self.plumbing.lineage(task.task_id)
        try:
            stacked = lineage.merge(
                cand.parent_commit, cand.code_commit or cand.parent_commit, tip[1]
            )
        except MergeConflict:
            return None
        return None if stacked == lineage.files_at(tip[1]) else stacked

    def tip(self, task: TaskRecord, hardware: str, head: HeadRecord) -> tuple[str, str] | None:
        """The last winner stacked onto this head (a merge, or the first explore replicated
        there), (experiment id, code commit), while it and every winner under it are still
        being judged; None if there is none (a stack whose bottom was not kept is built on
        code that will never be the head)."""
        tip = self.plumbing.store.get_tip(task.task_id, hardware)
        if tip.get("on") != head.commit or not tip.get("experiment_id"):
            return None
        for under in self.stack_under(tip["experiment_id"]):
            if under.experiment_id == head.experiment_id:  # the change the head was made of
                break
            if not self.carries(under.experiment_id):
                return None
        return tip["experiment_id"], tip["commit"]

    def tip_on(
        self, task: TaskRecord, hardware: str, old: HeadRecord, kept: ExperimentRecord
    ) -> tuple[str, str] | None:
        """The tip on the old head if it was built on the change being kept (stacked on it,
        or on a merge stacked on it ...): its code has the new head's, so it is the tip on
        the new head too. None otherwise."""
        tip = self.tip(task, hardware, old)
        if tip is None or tip[0] == kept.experiment_id:
            return None
        under, seen = self.plumbing.store.get_experiment(tip[0]), 0
        while under is not None and under.stacked_on and seen < MAX_STACK:
            if under.stacked_on == kept.experiment_id:
                return tip
            if not self.carries(under.stacked_on):  # a merge in between was not kept
                return None
            under, seen = self.plumbing.store.get_experiment(under.stacked_on), seen + 1
        return None

    def stack_under(self, experiment_id: str) -> list[ExperimentRecord]:
        """A stacked winner and the winners under it, top first, down to the one built on a
        head (at most MAX_STACK)."""
        chain: list[ExperimentRecord] = []
        exp = self.plumbing.store.get_experiment(experiment_id)
        while exp is not None and len(chain) < MAX_STACK:
            chain.append(exp)
            exp = self.plumbing.store.get_experiment(exp.stacked_on) if exp.stacked_on else None
        return chain

    def carries(self, experiment_id: str) -> bool:
        """Whether this winner (a merge or its twin, or an explore or its replicate) still
        carries its hypothesis, undecided."""
        exp = self.plumbing.store.get_experiment(experiment_id)
        if exp is None or exp.state is ExperimentState.DEAD:
            return False
        hyp = self.plumbing.store.get_hypothesis(exp.hypothesis_id or "")
        if hyp is None or hyp.verdict is not Verdict.PENDING or not hyp.experiment_id:
            return False
        carriers = {exp.experiment_id, exp.twin, exp.replicate_id}
        return hyp.experiment_id in carriers.union(evidence.chain_ids(exp.experiment_id))
