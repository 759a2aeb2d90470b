"""Stacking winners: where a new winner goes, and what is set aside when a stack breaks.

Concurrent winners on one head run merged, not one after another: a winner found while
another on its head is being judged is stacked on that one's code (`place_winner`), the
strongest claims at the bottom (a winner that gains more than OUTCLASS times what one on the
stack claimed goes under it, `outclassed`). A stack breaks at a winner that is not kept: the
winners above it are built on code that will never be the head, and each is merged onto the
head again (`restack_above`). A merge stacked on a winner that was kept is judged against
the new head with no run of its own again (`unstack`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from autoswarm.coordinator import judge
from autoswarm.coordinator.heads import Heads
from autoswarm.coordinator.merging import Merges
from autoswarm.coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.coordinator.stacks import Stacks
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.coordinator.verdicts import Verdicts
from autoswarm.shared.models import ExperimentKind, ExperimentState, Verdict

# A winner that gains more than this many times what a winner stacked on its head claimed goes
# under it (`Stacking.outclassed`).
OUTCLASS = 2.0


def not_needed(merge_id: str) -> str:
    """Why a merge's replicate, queued alongside it, is discarded without counting."""
    return f"not needed: the merge {merge_id} it replicates was not better"


@dataclass(eq=False)
class Stacking:
    """Places winners on a head's stack and sets aside those a stack no longer carries.

    `judge_now`: judges one finished experiment (a twin that finished before its merge's
    verdict is judged as soon as that verdict is in)."""

    plumbing: Plumbing
    heads: Heads
    stacks: Stacks
    verdicts: Verdicts
    merges: Merges
    judge_now: Callable[[str], None]

    def place_winner(
        self,
        task: TaskRecord,
        hardware: str,
        exp: ExperimentRecord,
        decision: judge.Decision,
        experiment: dict[str, FieldValue] | None,
    ) -> None:
        """An explore that looks better: merged at once (`_merged_at_once`), or replicated on
        its head, where it is the tip unless another winner is; the winners on the head's
        stack that it outclasses (`outclassed`) are set aside and go on top of it."""
        outclassed = self.outclassed(task, hardware, exp, decision)
        if not self._merged_at_once(task, hardware, exp, decision):
            decided = self.merges.conclude_replicated(
                task, exp, exp, decision, experiment=experiment or {}
            )
            if decided:  # winners found next on this head stack on it
                self.stacks.mark_tip(task, hardware, exp)
        # Off the critical path now, and likely to be set aside again: no preempting for them.
        why = self._why_outclassed(exp, decision, outclassed)
        self._restack(task, hardware, outclassed, why, yields=True)

    def _merged_at_once(
        self, task: TaskRecord, hardware: str, exp: ExperimentRecord, decision: judge.Decision
    ) -> bool:
        """An explore that looks better, merged instead of replicated where it ran: when the
        head moved while it ran (what must be kept is its merge onto the head), or when
        another winner on its head is being judged (it is stacked on that one). Its merge
        runs next, with its replicate beside it, and its verdict checks the explorer's
        claim. False if neither holds: it is replicated on its head."""
        head = self.plumbing.store.get_head(task.task_id, hardware)
        if head is None:
            return False
        if head.commit != exp.parent_commit:
            why = f"better than {exp.parent_commit[:12]}, where it ran ({decision.reason})"
        elif self.stacks.would_stack(task, hardware, exp, head):
            why = f"better than the head ({decision.reason})"
        else:
            return False
        self.merges.merge_forward(
            task, hardware, exp, head, decision, concluded=exp, why=why, claim_by=exp.worker_id
        )
        return True

    def unstack(
        self, task: TaskRecord, hardware: str, merge: ExperimentRecord
    ) -> ExperimentRecord | None:
        """A merge stacked on another winner (see `Merges.merge_forward`), to be judged.

        If the head's code is now the code it was built on (the winner under it was kept),
        it is a merge onto that head: returned so, with the head as its parent. If the winner
        under it is still being judged, it waits. Otherwise (that one was not kept, or the
        head moved past it) its own change is merged onto the head as a new merge, its run and
        its replicate's are set aside, and None is returned."""
        self.heads.forget_heads()  # the head may have moved in this pass (the merge under it kept)
        head = self.plumbing.store.get_head(task.task_id, hardware)
        if head is None:
            return merge
        lineage = self.plumbing.lineage(task.task_id)
        if lineage.files_at(merge.parent_commit) == lineage.files_at(head.commit):
            return merge.model_copy(update={"parent_commit": head.commit})
        if self.stacks.carries(merge.stacked_on or ""):
            self.verdicts.defer(merge.experiment_id)
            return None
        why = f"built on experiment {merge.stacked_on}, which is not the head {head.commit[:12]}"
        # Not comparable with any head: this merge's own score is set aside, and with it
        # those stacked on the same base.
        self.restack_above(task, hardware, merge.stacked_on or "", also=(merge, why))
        return None

    def restack_above(
        self,
        task: TaskRecord,
        hardware: str,
        failed_id: str,
        *,
        also: tuple[ExperimentRecord, str] | None = None,
    ) -> None:
        """The winners stacked on one that was not kept (`failed_id`: a merge not better, a
        winner not reproduced, a base the head moved past) are built on code that will
        never be the head. Each one not judged yet (and `also`, with its own reason) is
        merged onto the head again now (running or not, or finished: its score cannot
        count), the one that claimed the most first, each next one stacked on the one
        before; its run and its replicate's are withdrawn if unfinished."""
        tip = self.plumbing.store.get_tip(task.task_id, hardware).get("experiment_id", "")
        chain = self.stacks.stack_under(tip) if tip else []  # read before any restack moves the tip
        above = next((chain[:i] for i, e in enumerate(chain) if e.experiment_id == failed_id), [])
        why = {
            e.experiment_id: f"built on experiment {failed_id}, which was not kept" for e in above
        }
        undecided = [
            (live, live)
            for merge in reversed(above)
            if (live := self.plumbing.store.get_experiment(merge.experiment_id)) is not None
            and not live.judged
        ]
        if also is not None:
            undecided = [e for e in undecided if e[0].experiment_id != also[0].experiment_id]
            undecided.append((also[0], also[0]))
            why[also[0].experiment_id] = also[1]
        self._restack(task, hardware, undecided, why)

    def _restack(
        self,
        task: TaskRecord,
        hardware: str,
        winners: list[tuple[ExperimentRecord, ExperimentRecord]],
        why: dict[str, str],
        *,
        yields: bool = False,
    ) -> None:
        """Set aside these stacked winners, (winner, the unjudged run that carries it), each
        with its reason (`why`, by winner id): merged onto the head again, the one that
        claimed the most first, each next one stacked on the tip (the one before); their
        runs preempt no explore if they `yield`."""
        # The strongest claim at the bottom: it is the likeliest to be kept, and a stack
        # breaks at its weakest winner below the rest (a lucky run on a noisy head).
        for winner, carrier in sorted(winners, key=lambda w: -self._claimed_gain(task, w[0])):
            head = self.plumbing.store.get_head(task.task_id, hardware)
            if head is None:
                return
            reason = why[winner.experiment_id]
            self._set_aside(task, hardware, winner, head, reason, carrier, yields=yields)

    def _set_aside(
        self,
        task: TaskRecord,
        hardware: str,
        winner: ExperimentRecord,
        head: HeadRecord,
        why: str,
        carrier: ExperimentRecord,
        *,
        yields: bool = False,
    ) -> None:
        """A stacked winner (a merge, or the explore at the bottom of a stack) set aside: its
        own change is merged onto the head again (`Merges.merge_forward`); the run that carried it
        (the merge, or the explore's replicate) is concluded so and withdrawn if unfinished,
        and so is a merge's replicate; a score of theirs, if any, does not count."""
        decision = judge.Decision(judge.Action.DISCARD, Verdict.PENDING, why)
        claim_by = winner.claim_by if winner.kind is ExperimentKind.MERGE else winner.worker_id
        self.merges.merge_forward(
            task,
            hardware,
            winner,
            head,
            decision,
            concluded=carrier,
            why=why,
            experiment={"verdict": Verdict.DISCARDED.value},
            claim_by=claim_by,
            yields=yields,
        )
        reason = f"not needed: {why}"
        if carrier.state in (ExperimentState.QUEUED, ExperimentState.LEASED):
            self.verdicts.withdraw(task, carrier.experiment_id, reason)
        self.settle_twin(task, winner, replicating=False, reason=reason)

    def outclassed(
        self, task: TaskRecord, hardware: str, exp: ExperimentRecord, decision: judge.Decision
    ) -> list[tuple[ExperimentRecord, ExperimentRecord]]:
        """The winners on the head's stack that a new winner outclasses: from the lowest one
        that claimed less than 1/OUTCLASS of what `exp` gained and whose deciding run has not
        finished, up to the tip, each with that run ((winner, carrier), the unfinished ones).
        The tip is moved down under them (or cleared, when that was the bottom): `exp` takes
        their place and they go on top of it (`_restack`). A stack breaks at its weakest
        winner, most often a lucky run on a head whose noise was underestimated; a real but
        small gain waits one run more. Empty when none is outclassed."""
        if decision.delta is None:
            return []
        gain = -decision.delta if task.spec.lower_is_better else decision.delta
        head = self.plumbing.store.get_head(task.task_id, hardware)
        tip = self.stacks.tip(task, hardware, head) if head is not None else None
        if head is None or tip is None:
            return []
        chain = self.stacks.stack_under(tip[0])
        members = next(
            (chain[:i] for i, e in enumerate(chain) if e.experiment_id == head.experiment_id),
            chain,
        )[::-1]  # bottom first, the head's own change left out
        for i, member in enumerate(members):
            carrier = self._carrier(member)
            if carrier is None or self._claimed_gain(task, member) * OUTCLASS >= gain:
                continue
            below = members[i - 1] if i else None  # none: the new winner is the bottom
            self.plumbing.store.set_tip(
                task.task_id,
                hardware,
                on=head.commit,
                experiment_id=below.experiment_id if below else "",
                commit=(below.code_commit or below.parent_commit) if below else "",
            )
            above = ((m, self._carrier(m)) for m in members[i + 1 :])
            return [(member, carrier)] + [(m, c) for m, c in above if c is not None]
        return []

    def _carrier(self, winner: ExperimentRecord) -> ExperimentRecord | None:
        """The unfinished run a stacked winner's verdict waits on (a merge's own, the
        replicate of the explore at the bottom); None once it has finished."""
        run = winner if winner.kind is ExperimentKind.MERGE else None
        if winner.kind is ExperimentKind.EXPLORE and winner.replicate_id:
            run = self.plumbing.store.get_experiment(winner.replicate_id)
        unfinished = (ExperimentState.QUEUED, ExperimentState.LEASED)
        return run if run is not None and not run.judged and run.state in unfinished else None

    @staticmethod
    def _why_outclassed(
        exp: ExperimentRecord,
        decision: judge.Decision,
        outclassed: list[tuple[ExperimentRecord, ExperimentRecord]],
    ) -> dict[str, str]:
        gain = abs(decision.delta or 0.0)
        why = (
            f"set aside under experiment {exp.experiment_id}, a winner that gained {gain:.4g}, "
            f"more than {OUTCLASS:g} times what this one claimed: the stronger claim goes first"
        )
        return {winner.experiment_id: why for winner, _ in outclassed}

    def _claimed_gain(self, task: TaskRecord, merge: ExperimentRecord) -> float:
        """How much the change a merge carries gained where it was last judged (0: unknown)."""
        hyp = self.plumbing.store.get_hypothesis(merge.hypothesis_id or "")
        if hyp is None or hyp.delta is None:
            return 0.0
        return -hyp.delta if task.spec.lower_is_better else hyp.delta

    def settle_twin(
        self,
        task: TaskRecord,
        merge: ExperimentRecord,
        *,
        replicating: bool,
        reason: str | None = None,
    ) -> None:
        """The merge's replicate, queued alongside it: judged now if it has finished and the
        merge is being replicated; withdrawn if the merge is not (its run is not needed)."""
        twin = self.plumbing.store.get_experiment(merge.twin or "")
        if twin is None or twin.judged:
            return
        unneeded = reason or not_needed(merge.experiment_id)
        if not replicating and self.verdicts.withdraw(task, twin.experiment_id, unneeded):
            return
        if twin.state in (ExperimentState.DONE, ExperimentState.DEAD):
            self.judge_now(twin.experiment_id)
