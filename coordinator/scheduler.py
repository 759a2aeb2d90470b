"""The scheduler: applies the judge's decisions through the store and the lineage.

What it guarantees:
- every step is idempotent: follow-up experiments have ids derived from what they follow,
  each decision is one store script guarded by the experiment's `judged` flag, and a kept
  change is committed to git first (`commit_change` is idempotent by its `Experiment:`
  trailer) and only then made the head in Redis; a crash anywhere is repaired by running
  the pending judgements again (`process_pending`) and by `reconcile`;
- within this process, decisions on one task are serialised by a per-task lock;
- scores are compared only within the hardware class they were measured on; a change
  kept on one class is offered to the others (merged onto each one's head, judged there).

What it does not do: judge from two processes against one Redis at once (the per-task
lock is local; under several API processes only the leader judges).
"""

from __future__ import annotations

import dataclasses
import logging

from coordinator import baselines, evidence, judge
from coordinator.heads import INIT_BRANCH, code_bytes, derived_id, new_id
from coordinator.keeping import KeepOps
from coordinator.models import ExperimentRecord, HeadRecord, TaskRecord
from coordinator.noise import Run, far_out
from coordinator.store import NewExperiment
from coordinator.store.base import FieldValue
from coordinator.store.judging import Observation
from shared.models import ExperimentKind, ExperimentState, ResultStatus, Verdict

logger = logging.getLogger(__name__)

# How long a judgement that waits on others (a candidate on a head still being measured, a
# merge's replicate that finished before the merge) waits before it is looked at again; a
# baseline's or the merge's judgement brings it forward, so this is the fallback.
DEFER_S = 5.0
# A winner that gains more than this many times what a winner stacked on its head claimed goes
# under it (`Scheduler._outclassed`).
OUTCLASS = 2.0

__all__ = ["INIT_BRANCH", "Scheduler", "code_bytes", "derived_id", "new_id"]


def _not_needed(merge_id: str) -> str:
    """Why a merge's replicate, queued alongside it, is discarded without counting."""
    return f"not needed: the merge {merge_id} it replicates was not better"


class Scheduler(KeepOps):
    """Turns results into decisions, and decisions into queued experiments and commits."""

    def process_pending(self, limit: int = 100) -> int:
        """Apply up to `limit` results not applied yet, oldest first (after a crash, too);
        how many were handled. One pass reads their records in one round trip, and each
        class's head and runs once until a decision changes them."""
        pending = self.store.pending_judgements(limit, now=self._clock())
        records = {exp.experiment_id: exp for exp in self.store.get_experiments(pending)}
        handled = 0
        self._heads = {}
        try:
            for experiment_id in pending:
                try:
                    # A merge's judgement may have judged its replicate: read that one again.
                    known = records.get(experiment_id)
                    self.judge_experiment(experiment_id, None if known and known.twin else known)
                    handled += 1
                except Exception:
                    logger.exception("experiment %s: judging failed; will retry", experiment_id)
        finally:
            self._heads = None
        return handled

    def judge_experiment(self, experiment_id: str, known: ExperimentRecord | None = None) -> None:
        """Apply the judge's decision on one finished (done or dead) experiment, once.

        `known`: its record, read since it was finished (a finished experiment changes only
        by being judged, and the decision's script applies once, guarded by its flag)."""
        task_id = known.task_id if known else self.store.experiment_task(experiment_id)
        if not task_id:
            logger.error("experiment %s: pending judgement of an unknown experiment", experiment_id)
            return
        task = self.get_task(task_id)
        with self.task_lock(task.task_id):
            exp = known or self.store.get_experiment(experiment_id)
            if exp is None or exp.state not in (ExperimentState.DONE, ExperimentState.DEAD):
                return
            if exp.kind is ExperimentKind.BASELINE:
                self.forget_heads()
                self._judge_baseline(task, exp)
            elif exp.kind is ExperimentKind.REPLICATE:
                self.forget_heads()
                self._judge_replicate(task, exp)
            else:  # a candidate's verdict changes no head and no runs
                self._judge_candidate(task, exp)

    def _judge_baseline(self, task: TaskRecord, exp: ExperimentRecord) -> None:
        hardware = self._hardware_of(exp)
        ok = exp.result is not None and exp.result.status is ResultStatus.OK
        metric = exp.result.metric if ok and exp.result else None
        reason = (
            f"baseline {metric!r}" if metric is not None else f"baseline failed: {exp.last_error}"
        )
        untrusted = metric is not None and self.distrusted(exp.worker_id)
        _, runs, noise = self.class_runs(task.task_id, hardware)
        far = metric is not None and far_out(metric, [r.value for r in runs], noise.std)
        if untrusted:
            metric = None
            reason = f"{reason} by {exp.worker_id}, who lost trust: not counted, measured again"
        elif far:
            metric = None
            reason = f"{reason} is far outside this class's history: held, not counted"
            if not exp.exclude_worker:  # a replacement that agrees with it counts
                reason += "; measured again by another worker"
        event: dict[str, FieldValue] = {
            "type": "baseline",
            "task_id": task.task_id,
            "experiment_id": exp.experiment_id,
            "hardware": hardware,
            "commit": exp.parent_commit,
            "metric": metric,
            "reason": reason,
            "time_s": self._clock(),
        }
        mine = [Run(exp.experiment_id, exp.parent_commit, "", metric)] if metric is not None else []
        enough = bool(mine) and baselines.measured(
            [*runs, *mine], exp.parent_commit, task.spec.metric.noise
        )
        self.store.record_baseline(
            exp.experiment_id,
            task.task_id,
            hardware,
            exp.parent_commit,
            metric,
            baseline_runs=1 if enough else self.settings.baseline_runs,
            event=event,
            now=self._clock(),
            observation=(
                (exp.experiment_id, exp.parent_commit, exp.worker_id or "", metric)
                if metric is not None
                else None
            ),
        )
        if untrusted or (far and not exp.exclude_worker):
            self.replace_baseline(exp, exp.worker_id or "", held=far and not untrusted)
        if enough:  # a deterministic task: the head's other baselines would only repeat
            more = range(self.settings.max_baseline_runs)
            ids = self.baseline_ids(task.task_id, hardware, exp.parent_commit) + [
                self.more_baseline_id(task.task_id, hardware, exp.parent_commit, n) for n in more
            ]
            baselines.withdraw(
                self.store, task.task_id, hardware, exp.parent_commit, ids, self._clock()
            )
        self.undefer()  # candidates waiting on this head

    def _judge_candidate(self, task: TaskRecord, exp: ExperimentRecord) -> None:
        hardware = self._hardware_of(exp)
        experiment: dict[str, FieldValue] | None = None
        if exp.stacked_on:
            unstacked = self._unstack(task, hardware, exp)
            if unstacked is None:
                return
            exp, experiment = unstacked, {"parent_commit": unstacked.parent_commit}
        head, stats = self.stats(task.task_id, hardware, exp.parent_commit)
        measuring = head is not None and not head.ready and exp.parent_commit == head.commit
        if measuring and head and head.baselines_done < self.settings.baseline_runs:
            # Run while the head's baselines ran: judged once they are in.
            self.store.defer_judgement(exp.experiment_id, self._clock() + DEFER_S)
            return
        shorter = head is not None and (exp.code_bytes or 0) < head.code_bytes
        runs = self.class_runs(task.task_id, hardware)[1]
        decision = self.rule.screen(
            exp.result,
            stats,
            task.spec,
            shorter=shorter,
            last_error=exp.last_error,
            history=[r.value for r in runs],
            worker=exp.worker_id or "",
        )
        replicating = decision.action is judge.Action.REPLICATE
        if replicating and exp.kind is ExperimentKind.EXPLORE:
            self._place_winner(task, hardware, exp, decision, experiment)
            # Queued after its replicate: the head's runs join the comparison as they come.
            self._measure_head_again(task, hardware, head, stats, exp, decision.head_runs)
            return
        follow_up, decision = self._follow_up(exp, hardware, decision)
        hypothesis: dict[str, FieldValue] | None = None
        if follow_up is not None:
            hypothesis = {"experiment_id": follow_up.experiment_id}
            if follow_up.kind is ExperimentKind.REPLICATE:
                experiment = (experiment or {}) | {"replicate_id": follow_up.experiment_id}
        decided = self._conclude(
            task, exp, decision, follow_up=follow_up, hypothesis=hypothesis, experiment=experiment
        )
        ok = exp.result is not None and exp.result.status is ResultStatus.OK
        if decided and ok and exp.claim_by and not self.distrusted(exp.worker_id):
            # Better on the head too, or not: the explore's claim checked.
            self.count_claim(exp.claim_by, agreed=decision.action is judge.Action.REPLICATE)
        if decided and decision.head_runs:
            self._measure_head_again(task, hardware, head, stats, exp, decision.head_runs)
        if exp.twin:
            self._settle_twin(task, exp, replicating=decision.action is judge.Action.REPLICATE)
        if decided and not replicating and exp.kind is ExperimentKind.MERGE:
            self._restack_above(task, hardware, exp.experiment_id)

    def _measure_head_again(
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
        wanted = min(target, self.settings.max_baseline_runs)
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
                self.baseline_of(task.task_id, hardware, head_fields),
                experiment_id=self.more_baseline_id(task.task_id, hardware, head.commit, runs),
            )
            event: dict[str, FieldValue] = {
                "type": "baseline_queued",
                "task_id": task.task_id,
                "experiment_id": again.experiment_id,
                "after": exp.experiment_id,
                "hardware": hardware,
                "commit": head.commit,
                "reason": reason,
                "time_s": self._clock(),
            }
            queued += self.store.recheck(
                again, hypothesis_id=None, hypothesis=None, event=event, now=self._clock()
            )
        if queued:
            logger.info("task %s: %s", task.task_id, reason)
            self.notify(queued)

    def _place_winner(
        self,
        task: TaskRecord,
        hardware: str,
        exp: ExperimentRecord,
        decision: judge.Decision,
        experiment: dict[str, FieldValue] | None,
    ) -> None:
        """An explore that looks better: merged at once (`_merged_at_once`), or replicated on
        its head, where it is the tip unless another winner is; the winners on the head's
        stack that it outclasses (`_outclassed`) are set aside and go on top of it."""
        outclassed = self._outclassed(task, hardware, exp, decision)
        if not self._merged_at_once(task, hardware, exp, decision):
            replicate = self._replicate_of(exp, hardware)
            decided = self._conclude(
                task,
                exp,
                decision,
                follow_up=replicate,
                hypothesis={"experiment_id": replicate.experiment_id},
                experiment=(experiment or {}) | {"replicate_id": replicate.experiment_id},
            )
            if decided:
                self.mark_tip(task, hardware, exp)  # winners found next on this head stack on it
        # Off the critical path now, and likely to be set aside again: no preempting for them.
        why = self._why_outclassed(exp, decision, outclassed)
        self._restack(task, hardware, outclassed, why, yields=True)

    def _follow_up(
        self, exp: ExperimentRecord, hardware: str, decision: judge.Decision
    ) -> tuple[NewExperiment | None, judge.Decision]:
        """What runs after a candidate: its replicate when it looks better; a re-check by
        another worker when its worker lost trust and it looks no better (the decision then
        stays pending)."""
        if decision.action is judge.Action.REPLICATE:
            return self._replicate_of(exp, hardware), decision
        if decision.action is judge.Action.DISCARD and self.distrusted(exp.worker_id):
            recheck = self.recheck_of(exp, exp.worker_id or "")
            reason = (
                f"{decision.reason}; measured by {exp.worker_id}, who lost trust: re-checked "
                f"by another worker as {recheck.experiment_id}"
            )
            pending = judge.Decision(
                decision.action,
                Verdict.PENDING,
                reason,
                decision.delta,
                decision.metric,
                head_mean=decision.head_mean,
            )
            return recheck, pending
        return None, decision

    def _merged_at_once(
        self, task: TaskRecord, hardware: str, exp: ExperimentRecord, decision: judge.Decision
    ) -> bool:
        """An explore that looks better, merged instead of replicated where it ran: when the
        head moved while it ran (what must be kept is its merge onto the head), or when
        another winner on its head is being judged (it is stacked on that one). Its merge
        runs next, with its replicate beside it, and its verdict checks the explorer's
        claim. False if neither holds: it is replicated on its head."""
        head = self.store.get_head(task.task_id, hardware)
        if head is None:
            return False
        if head.commit != exp.parent_commit:
            why = f"better than {exp.parent_commit[:12]}, where it ran ({decision.reason})"
        elif self.stacks(task, hardware, exp, head):
            why = f"better than the head ({decision.reason})"
        else:
            return False
        self._merge_forward(
            task, hardware, exp, head, decision, concluded=exp, why=why, claim_by=exp.worker_id
        )
        return True

    def _unstack(
        self, task: TaskRecord, hardware: str, merge: ExperimentRecord
    ) -> ExperimentRecord | None:
        """A merge stacked on another winner (see `KeepOps._merge_forward`), to be judged.

        If the head's code is now the code it was built on (the winner under it was kept),
        it is a merge onto that head: returned so, with the head as its parent. If the winner
        under it is still being judged, it waits. Otherwise (that one was not kept, or the
        head moved past it) its own change is merged onto the head as a new merge, its run and
        its replicate's are set aside, and None is returned."""
        self.forget_heads()  # the head may have moved in this pass (the merge under it kept)
        head = self.store.get_head(task.task_id, hardware)
        if head is None:
            return merge
        lineage = self.lineage(task.task_id)
        if lineage.files_at(merge.parent_commit) == lineage.files_at(head.commit):
            return merge.model_copy(update={"parent_commit": head.commit})
        if self.carries(merge.stacked_on or ""):
            self.store.defer_judgement(merge.experiment_id, self._clock() + DEFER_S)
            return None
        why = f"built on experiment {merge.stacked_on}, which is not the head {head.commit[:12]}"
        # Not comparable with any head: this merge's own score is set aside, and with it
        # those stacked on the same base.
        self._restack_above(task, hardware, merge.stacked_on or "", also=(merge, why))
        return None

    def _restack_above(
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
        tip = self.store.get_tip(task.task_id, hardware).get("experiment_id", "")
        chain = self.stack_under(tip) if tip else []  # read before any restack moves the tip
        above = next((chain[:i] for i, e in enumerate(chain) if e.experiment_id == failed_id), [])
        why = {
            e.experiment_id: f"built on experiment {failed_id}, which was not kept" for e in above
        }
        undecided = [
            (live, live)
            for merge in reversed(above)
            if (live := self.store.get_experiment(merge.experiment_id)) is not None
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
            head = self.store.get_head(task.task_id, hardware)
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
        own change is merged onto the head again (`_merge_forward`); the run that carried it
        (the merge, or the explore's replicate) is concluded so and withdrawn if unfinished,
        and so is a merge's replicate; a score of theirs, if any, does not count."""
        decision = judge.Decision(judge.Action.DISCARD, Verdict.PENDING, why)
        claim_by = winner.claim_by if winner.kind is ExperimentKind.MERGE else winner.worker_id
        self._merge_forward(
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
            self._withdraw(task, carrier.experiment_id, reason)
        self._settle_twin(task, winner, replicating=False, reason=reason)

    def _outclassed(
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
        head = self.store.get_head(task.task_id, hardware)
        tip = self._tip(task, hardware, head) if head is not None else None
        if head is None or tip is None:
            return []
        chain = self.stack_under(tip[0])
        members = next(
            (chain[:i] for i, e in enumerate(chain) if e.experiment_id == head.experiment_id),
            chain,
        )[::-1]  # bottom first, the head's own change left out
        for i, member in enumerate(members):
            carrier = self._carrier(member)
            if carrier is None or self._claimed_gain(task, member) * OUTCLASS >= gain:
                continue
            below = members[i - 1] if i else None  # none: the new winner is the bottom
            self.store.set_tip(
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
            run = self.store.get_experiment(winner.replicate_id)
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

    def _withdraw(self, task: TaskRecord, experiment_id: str, reason: str) -> bool:
        """Withdraw an unfinished experiment that is not needed (discarded, with its reason;
        a running one is told to stop at its next heartbeat); False if it had finished."""
        event: dict[str, FieldValue] = {
            "type": "verdict",
            "task_id": task.task_id,
            "experiment_id": experiment_id,
            "verdict": Verdict.DISCARDED.value,
            "reason": reason,
            "time_s": self._clock(),
        }
        return self.store.withdraw(
            experiment_id,
            verdict=Verdict.DISCARDED.value,
            reason=reason,
            event=event,
            now=self._clock(),
        )

    def _claimed_gain(self, task: TaskRecord, merge: ExperimentRecord) -> float:
        """How much the change a merge carries gained where it was last judged (0: unknown)."""
        hyp = self.store.get_hypothesis(merge.hypothesis_id or "")
        if hyp is None or hyp.delta is None:
            return 0.0
        return -hyp.delta if task.spec.lower_is_better else hyp.delta

    def _settle_twin(
        self,
        task: TaskRecord,
        merge: ExperimentRecord,
        *,
        replicating: bool,
        reason: str | None = None,
    ) -> None:
        """The merge's replicate, queued alongside it: judged now if it has finished and the
        merge is being replicated; withdrawn if the merge is not (its run is not needed)."""
        twin = self.store.get_experiment(merge.twin or "")
        if twin is None or twin.judged:
            return
        unneeded = reason or _not_needed(merge.experiment_id)
        if not replicating and self._withdraw(task, twin.experiment_id, unneeded):
            return
        if twin.state in (ExperimentState.DONE, ExperimentState.DEAD):
            self.judge_experiment(twin.experiment_id)

    def _carried_by(self, rep: ExperimentRecord) -> str | None:
        """The experiment that carries this replicate's hypothesis now, if not this replicate
        (nor the merge it was queued alongside): its winner was set aside and merged again."""
        hyp = self.store.get_hypothesis(rep.hypothesis_id or "")
        if hyp is None or not hyp.experiment_id:
            return None
        return None if hyp.experiment_id in (rep.experiment_id, rep.twin) else hyp.experiment_id

    def _replicate_of(self, cand: ExperimentRecord, hardware: str, index: int = 0) -> NewExperiment:
        """The same code on the same class, the `index`-th replicate of its chain: by a
        worker of another owner while one is active on the class (leasing.lua; with
        `require_two_owners`, only so), else by another worker; by its own worker only
        after `replicate_wait_s` with no other worker."""
        since = self._clock() - max(300.0, 5 * self.settings.lease_ttl_s)
        owners = set(self.store.active_owners(hardware, since))
        strict = self.settings.require_two_owners
        fields: dict[str, FieldValue] = {
            "hypothesis_id": cand.hypothesis_id,
            "bundle_hash": cand.bundle_hash,
            "parent_commit": cand.parent_commit,
            "code_commit": cand.code_commit,
            "code_bytes": cand.code_bytes,
            "candidate_id": cand.experiment_id,
            "exclude_worker": cand.worker_id,
            "exclude_owner": cand.owner if strict or owners - {cand.owner} else None,
            "finder_owner": cand.owner,
            "two_owners": True if strict else None,
        }
        replicate_id = evidence.chain_ids(cand.experiment_id)[index]
        return NewExperiment(replicate_id, cand.task_id, ExperimentKind.REPLICATE, hardware, fields)

    def _judge_replicate(self, task: TaskRecord, rep: ExperimentRecord) -> None:
        hardware = self._hardware_of(rep)
        carrier = self._carried_by(rep)
        if carrier is not None:
            # Finished just as its winner was set aside (see `_set_aside`): not needed.
            reason = f"not needed: its hypothesis is carried by experiment {carrier} now"
            unneeded = judge.Decision(judge.Action.DISCARD, Verdict.DISCARDED, reason)
            self._conclude(task, rep.model_copy(update={"hypothesis_id": None}), unneeded)
            return
        cand = self.store.get_experiment(rep.candidate_id or "")
        if cand is not None and rep.twin and not cand.judged:
            # Queued alongside its merge, finished first: judged once the merge is.
            self.store.defer_judgement(rep.experiment_id, self._clock() + DEFER_S)
            return
        if cand is not None and rep.twin and cand.verdict is not None:
            reason = _not_needed(cand.experiment_id)
            unneeded = judge.Decision(judge.Action.DISCARD, Verdict.DISCARDED, reason)
            # Its own verdict only: the hypothesis has the merge's.
            self._conclude(task, rep.model_copy(update={"hypothesis_id": None}), unneeded)
            return
        if cand is None or cand.result is None or cand.result.metric is None:
            reason = f"the candidate {rep.candidate_id} has no score to replicate"
            decision = judge.Decision(judge.Action.NOT_REPRODUCED, Verdict.NOT_REPRODUCED, reason)
            self._conclude(task, rep, decision)
            return
        head, stats = self.stats(task.task_id, hardware, cand.parent_commit)
        shorter = head is not None and (cand.code_bytes or 0) < head.code_bytes
        chain = self.chain_of(cand, rep)
        if self._head_measured_meanwhile(task.task_id, hardware, head, stats, cand, len(chain)):
            # The head's baselines queued for this look run still: judged once they are in.
            self.store.defer_judgement(rep.experiment_id, self._clock() + DEFER_S)
            return
        counted = self.evidence_of(task.task_id, hardware, cand, chain)
        first = chain[0].experiment_id == rep.experiment_id if chain else False
        decision = self.rule.decide(
            counted,
            stats,
            task.spec,
            shorter=shorter,
            claim=evidence.run_of(cand) if first else None,
            replicate=evidence.run_of(rep) if first else None,
        )
        code = cand.code_commit or cand.parent_commit
        # Runs that disagree do not teach the noise (one of them is likely not honest).
        learns = len(counted.runs) > 1 and decision.agreed is not False
        observed = (hardware, evidence.observations(counted, code)) if learns else None
        if decision.action is judge.Action.KEEP and head is not None:
            if cand.parent_commit == head.commit:
                commit = self.commit_kept(task, hardware, cand, rep, head, decision)
                self.apply_kept(task, hardware, cand, rep, commit, decision)
            else:
                why = f"reproduced ({decision.reason}) on {cand.parent_commit[:12]}"
                self._merge_forward(task, hardware, cand, head, decision, concluded=rep, why=why)
            return
        if decision.action is judge.Action.REPLICATE:
            self._measure_again(task, hardware, cand, rep, decision, len(chain), observed)
            return
        pair = None
        if decision.agreed and rep.result and rep.result.metric is not None and cand.code_commit:
            pair = (hardware, cand.code_commit, [cand.result.metric, rep.result.metric])
        decided = self._conclude(task, rep, decision, pair=pair, observed=observed)
        if decided and decision.agreed is not None:
            self.count_claim(cand.worker_id, agreed=decision.agreed)
        if decided:
            self._restack_above(task, hardware, cand.experiment_id)

    def _head_measured_meanwhile(
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
        wanted = min(judge.HEAD_RUNS_PER_RUN * (1 + replicates), self.settings.max_baseline_runs)
        ids = [
            self.more_baseline_id(task_id, hardware, head.commit, runs)
            for runs in range(stats.runs, wanted)
        ]
        running = (ExperimentState.QUEUED, ExperimentState.LEASED)
        return any(e.state in running for e in self.store.get_experiments(ids))

    def _measure_again(
        self,
        task: TaskRecord,
        hardware: str,
        cand: ExperimentRecord,
        rep: ExperimentRecord,
        decision: judge.Decision,
        runs: int,
        observed: tuple[str, list[Observation]] | None,
    ) -> None:
        """The rule asks for one more run of the candidate: the next replicate of its chain,
        by another worker where one exists; the head is measured once more too."""
        follow_up = self._replicate_of(cand, hardware, runs)
        decided = self._conclude(
            task,
            rep,
            decision,
            follow_up=follow_up,
            hypothesis={"experiment_id": follow_up.experiment_id},
            observed=observed,
        )
        if decided and decision.agreed is not None:
            self.count_claim(cand.worker_id, agreed=decision.agreed)
        if decided and decision.head_runs:
            head, stats = self.stats(task.task_id, hardware, cand.parent_commit)
            self._measure_head_again(task, hardware, head, stats, rep, decision.head_runs)
