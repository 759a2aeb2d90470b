"""The scheduler: the decision layer's parts, composed; what the API and the judge loop call.

Each part has one job and is handed what it needs (the store, the settings, the lineage, the
rule, the parts it calls) rather than inheriting it:

| part | job |
| --- | --- |
| `heads.Heads` | heads per class, their first baselines, their stats and noise |
| `stacks.Stacks` | the stack of winners on a head: its tip, what lies under it |
| `baselines.Baselines` | a head measured again, or its baselines withdrawn |
| `verdicts.Verdicts` | a decision recorded at once; withdrawals; deferred judgements |
| `rechecks.Rechecks` | trust counted per claim; a distrusted worker's runs re-checked |
| `offers.Offers` | a kept change offered to the task's other classes |
| `merging.Merges` | a winner's replicate, or its merge onto the head with its twin |
| `stacking.Stacking` | winners placed on a stack, or set aside when it breaks |
| `keeping.Keeper` | a reproduced change committed on the lineage and made the head |
| `judgements.Judgements` | one finished experiment judged by the rule |

What it guarantees:
- every step is idempotent: follow-up experiments have ids derived from what they follow,
  each decision is one store script guarded by the experiment's `judged` flag, and a kept
  change is committed to git first (`commit_change` is idempotent by its `Experiment:`
  trailer) and only then made the head in Redis; a crash anywhere is repaired by running
  the pending judgements again (`process_pending`) and by `reconcile`;
- within this process, decisions on one task are serialised by a per-task lock;
- scores are compared only within the hardware class they were measured on; a change
  kept on one class is offered to the others (merged onto each one's head, judged there);
- the rule is the one handed in (`rule`, default `judge.SequentialRule(settings.z)`): no
  other part decides.

What it does not do: judge from two processes against one Redis at once (the per-task
lock is local; under several API processes only the leader judges).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from autoswarm.coordinator import judge
from autoswarm.coordinator.baselines import Baselines
from autoswarm.coordinator.heads import INIT_BRANCH, Heads, code_bytes, derived_id, new_id
from autoswarm.coordinator.judgements import Judgements, Rule
from autoswarm.coordinator.keeping import Keeper
from autoswarm.coordinator.merging import Merges
from autoswarm.coordinator.models import ExperimentRecord, TaskRecord
from autoswarm.coordinator.offers import Offers
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.coordinator.read_side import Proposals
from autoswarm.coordinator.rechecks import Rechecks
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.stacking import Stacking
from autoswarm.coordinator.stacks import Stacks
from autoswarm.coordinator.store import Store
from autoswarm.coordinator.verdicts import Verdicts
from autoswarm.shared.models import ExperimentKind, ExperimentState

logger = logging.getLogger(__name__)

# How often a lease looks for tasks registered by another coordinator process (seconds).
TASKS_RECHECK_S = 1.0

__all__ = ["INIT_BRANCH", "JudgingPass", "Scheduler", "code_bytes", "derived_id", "new_id"]


@dataclass(frozen=True)
class JudgingPass:
    """What one `process_pending` did: how many judgements it applied, and whether a
    decision made judgements that waited on it due (then look again at once)."""

    handled: int
    woken: bool


class Scheduler:
    """Turns results into decisions, and decisions into queued experiments and commits."""

    def __init__(
        self,
        store: Store,
        settings: CoordinatorSettings,
        *,
        rule: Rule | None = None,
        on_enqueue: Callable[[int], None] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        plumbing = Plumbing(store, settings, on_enqueue=on_enqueue, clock=clock)
        self.plumbing = plumbing
        self.store = store
        # The decision rule: one object, replaceable here only (autoswarm.coordinator.judge).
        self.rule: Rule = rule if rule is not None else judge.SequentialRule(settings.z)
        self.stacks = Stacks(plumbing)
        self.heads = Heads(plumbing)
        self.baselines = Baselines(plumbing, self.heads, self.stacks)
        self.verdicts = Verdicts(plumbing, self.baselines)
        self.rechecks = Rechecks(plumbing, self.heads)
        self.offers = Offers(plumbing)
        self.merges = Merges(plumbing, self.stacks, self.verdicts)
        self.stacking = Stacking(
            plumbing, self.heads, self.stacks, self.verdicts, self.merges, self.judge_experiment
        )
        self.keeper = Keeper(
            plumbing,
            self.heads,
            self.stacks,
            self.baselines,
            self.verdicts,
            self.offers,
            self.rechecks,
        )
        self.judgements = Judgements(
            plumbing,
            self.rule,
            heads=self.heads,
            baselines=self.baselines,
            verdicts=self.verdicts,
            rechecks=self.rechecks,
            merges=self.merges,
            stacking=self.stacking,
            keeper=self.keeper,
        )
        self._task_ids: tuple[float, list[str]] = (-TASKS_RECHECK_S, [])

    @property
    def reads(self) -> Proposals:
        """What the read side and a hypothesis's submission use
        (`autoswarm.coordinator.read_side`)."""
        return self.heads

    def process_pending(self, limit: int = 100) -> JudgingPass:
        """Apply up to `limit` results not applied yet, oldest first (after a crash, too).
        One pass reads their records in one round trip, and each class's head and runs once
        until a decision changes them."""
        pending = self.store.pending_judgements(limit, now=self.plumbing.clock())
        records = {exp.experiment_id: exp for exp in self.store.get_experiments(pending)}
        handled = 0
        self.verdicts.take_woken()  # only what this pass wakes counts
        self.heads.begin_pass()
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
            self.heads.end_pass()
        return JudgingPass(handled, self.verdicts.take_woken())

    def judge_experiment(self, experiment_id: str, known: ExperimentRecord | None = None) -> None:
        """Apply the judge's decision on one finished (done or dead) experiment, once.

        `known`: its record, read since it was finished (a finished experiment changes only
        by being judged, and the decision's script applies once, guarded by its flag)."""
        task_id = known.task_id if known else self.store.experiment_task(experiment_id)
        if not task_id:
            logger.error("experiment %s: pending judgement of an unknown experiment", experiment_id)
            return
        task = self.plumbing.get_task(task_id)
        with self.plumbing.task_lock(task.task_id):
            exp = known or self.store.get_experiment(experiment_id)
            if exp is None or exp.state not in (ExperimentState.DONE, ExperimentState.DEAD):
                return
            if exp.kind is ExperimentKind.BASELINE:
                self.heads.forget_heads()
                self.judgements.baseline(task, exp)
            elif exp.kind is ExperimentKind.REPLICATE:
                self.heads.forget_heads()
                self.judgements.replicate(task, exp)
            else:  # a candidate's verdict changes no head and no runs
                self.judgements.candidate(task, exp)

    def ensure_class(self, task: TaskRecord, hardware: str) -> bool:
        """Give the task a lineage branch and baselines on this class, once, and offer it what
        the other classes kept before; True if new."""
        added = self.heads.ensure_class(task, hardware)
        if added:
            self.offers.offer_history(task, hardware)
        return added

    def tasks_changed(self) -> None:
        """A task was registered here: look at the list of tasks again at the next lease."""
        self._task_ids = (-TASKS_RECHECK_S, [])

    def ensure_classes(self, hardware: str) -> None:
        """Make every task known on this class. The list of tasks is read again at most every
        TASKS_RECHECK_S (a task registered by another coordinator process waits that long)."""
        read_s, task_ids = self._task_ids
        if time.monotonic() - read_s >= TASKS_RECHECK_S:
            task_ids = self.store.task_ids()
            self._task_ids = (time.monotonic(), task_ids)
        for task_id in task_ids:
            if not self.heads.knows(task_id, hardware):
                task = self.store.get_task(task_id)
                if task is not None:
                    self.ensure_class(task, hardware)
