"""Heads and hardware classes: each task's head per class, its baselines, its stats.

`Heads` knows everything about heads: giving a task a new hardware class (a branch and
`baseline_runs` baselines, once), pointing a head at a commit (reconcile), and the stats a
result is judged by (each class's noise fitted once per change of its runs). It is also the
read side's view of heads (`autoswarm.coordinator.read_side.ReadSide`). Experiment ids of follow-ups
are derived from what they follow (`derived_id`), so queueing one twice is a no-op.
"""

from __future__ import annotations

import hashlib
import logging
import uuid

from autoswarm.coordinator import judge
from autoswarm.coordinator.lineage import Lineage, branch_for
from autoswarm.coordinator.models import HeadRecord, TaskRecord
from autoswarm.coordinator.noise import Noise, Run, fit_noise, sane
from autoswarm.coordinator.plumbing import Plumbing
from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.coordinator.store.base import FieldValue
from autoswarm.shared.models import ExperimentKind
from autoswarm.shared.task import Device, TaskSpec

logger = logging.getLogger(__name__)

INIT_BRANCH = "main"
HeadRuns = tuple[HeadRecord | None, list[Run], Noise]


def derived_id(prefix: str, *parts: str) -> str:
    """A deterministic experiment id, so queueing the same follow-up twice is a no-op."""
    return prefix + hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:15]


def new_id(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:15]


def code_bytes(files: dict[str, bytes], spec: TaskSpec) -> int:
    """Size of the editable files: the measure of "shorter code" for ties."""
    return sum(len(files.get(path, b"")) for path in spec.editable)


def fits(spec: TaskSpec, hardware: str) -> bool:
    """Whether a worker of this class can run the task (a CUDA task needs a CUDA class)."""
    return spec.resources.device is not Device.CUDA or hardware.startswith("cuda")


class Heads:
    """Each task's head per class, its baselines and its stats (see the module doc)."""

    def __init__(self, plumbing: Plumbing) -> None:
        self.plumbing = plumbing
        self.settings = plumbing.settings
        self.notify = plumbing.notify
        self._clock = plumbing.clock
        # Each class's fitted noise, by (task, class), with the runs it was fitted on.
        self._noise: dict[tuple[str, str], tuple[int, list[Run], Noise]] = {}
        self._priors: dict[str, tuple[float, int] | None] = {}
        self._known: set[tuple[str, str]] = set()
        # During a judging pass (`begin_pass`): each class's head and runs, once read.
        self._heads: dict[tuple[str, str], HeadRuns] | None = None

    @property
    def store(self) -> Store:
        return self.plumbing.store

    def lineage(self, task_id: str) -> Lineage:
        return self.plumbing.lineage(task_id)

    def get_task(self, task_id: str) -> TaskRecord:
        return self.plumbing.get_task(task_id)

    # -- heads and hardware classes ---------------------------------------------------------

    def baseline_ids(self, task_id: str, hardware: str, commit: str, *salt: str) -> list[str]:
        runs = range(self.settings.baseline_runs)
        return [derived_id("b", task_id, hardware, commit, *salt, str(i)) for i in runs]

    def more_baseline_id(self, task_id: str, hardware: str, commit: str, runs: int) -> str:
        """The id of the extra baseline of a head measured `runs` times (one per count)."""
        return derived_id("b", task_id, hardware, commit, "more", str(runs))

    def baseline_of(
        self, task_id: str, hardware: str, head: dict[str, FieldValue]
    ) -> NewExperiment:
        fields: dict[str, FieldValue] = {
            "bundle_hash": head["bundle_hash"],
            "parent_commit": head["commit"],
            "code_commit": head["commit"],
            "code_bytes": head["code_bytes"],
        }
        return NewExperiment("", task_id, ExperimentKind.BASELINE, hardware, fields)

    def _head_fields(self, task: TaskRecord, commit: str) -> dict[str, FieldValue]:
        files = self.lineage(task.task_id).files_at(commit)
        bundle_hash = self.store.put_bundle(files)
        return {
            "commit": commit,
            "bundle_hash": bundle_hash,
            "code_bytes": code_bytes(files, task.spec),
            "experiment_id": "",
        }

    def ensure_class(self, task: TaskRecord, hardware: str) -> bool:
        """Give the task a lineage branch and baselines on this class, once; True if new. A
        class whose branch another class of the task has already is not added (logged)."""
        if (task.task_id, hardware) in self._known:
            return False
        if not fits(task.spec, hardware):
            self._known.add((task.task_id, hardware))
            return False
        with self.plumbing.task_lock(task.task_id):
            classes = self.store.task_classes(task.task_id)
            if hardware in classes:
                self._known.add((task.task_id, hardware))
                return False
            branch = branch_for(hardware)
            taken = [c for c in classes if branch_for(c) == branch]
            if taken:  # two classes on one branch: each keep would move the other's head
                logger.warning(
                    "task %s: hardware class %s not added: it would share the lineage branch "
                    "%s with %r (stored before hardware classes were canonical)",
                    task.task_id,
                    hardware,
                    branch,
                    taken[0],
                )
                self._known.add((task.task_id, hardware))
                return False
            lineage = self.lineage(task.task_id)
            commit = lineage.ensure_branch(branch, task.init_commit)
            head = self._head_fields(task, commit)
            ids = self.baseline_ids(task.task_id, hardware, commit)
            baseline = self.baseline_of(task.task_id, hardware, head)
            added = self.store.add_class(
                task.task_id, hardware, head, baseline, ids, now=self._clock()
            )
            self._known.add((task.task_id, hardware))
        if added:
            logger.info("task %s: new hardware class %s, head %s", task.task_id, hardware, commit)
            self.notify(len(ids))
        return added

    def knows(self, task_id: str, hardware: str) -> bool:
        """Whether the task is known on this class already (added, or found not to fit)."""
        return (task_id, hardware) in self._known

    def begin_pass(self) -> None:
        """A judging pass starts: each class's head and runs are read once until forgotten."""
        self._heads = {}

    def end_pass(self) -> None:
        self._heads = None

    def forget_heads(self) -> None:
        """A head or its runs may change: a judging pass reads them again."""
        if self._heads is not None:
            self._heads = {}

    def reset_head(self, task: TaskRecord, hardware: str, commit: str) -> None:
        """Point the class's head at `commit` (git's word) and measure it anew."""
        self.forget_heads()
        with self.plumbing.task_lock(task.task_id):
            head = self._head_fields(task, commit)
            ids = self.baseline_ids(task.task_id, hardware, commit, "reset", repr(self._clock()))
            baseline = self.baseline_of(task.task_id, hardware, head)
            self.store.add_class(
                task.task_id, hardware, head, baseline, ids, now=self._clock(), force=True
            )
        logger.warning(
            "task %s: %s head reset to %s from the lineage", task.task_id, hardware, commit
        )
        self.notify(len(ids))

    def primary_head(self, task: TaskRecord, hardware: str | None = None) -> HeadRecord | None:
        """The head proposers build on: of `hardware`, else of the first class used."""
        classes = [hardware] if hardware else self.store.task_classes(task.task_id)
        for hw in classes:
            head = self.store.get_head(task.task_id, hw)
            if head is not None:
                return head
        return None

    def class_runs(self, task_id: str, hardware: str) -> HeadRuns:
        """The class's head, every run its noise model learns from, and that noise (fitted
        once per change of the runs; read once per judging pass)."""
        cache = self._heads
        if cache is not None and (task_id, hardware) in cache:
            return cache[(task_id, hardware)]
        head = self.store.get_head(task_id, hardware)
        runs = [Run(*obs) for obs in self.store.get_observations(task_id, hardware)]
        if not runs:  # a class judged before runs were recorded with their workers
            legacy = self.store.get_runs(task_id, hardware)
            runs = [Run("", code, "", v) for code, values in legacy.items() for v in values]
        key = hash(tuple(runs))
        fitted = self._noise.get((task_id, hardware))
        if fitted is None or fitted[0] != key:
            kept = sane(runs)
            fitted = (key, kept, fit_noise(kept, self._prior(task_id)))
            self._noise[(task_id, hardware)] = fitted
        found = (head, fitted[1], fitted[2])
        if cache is not None:
            cache[(task_id, hardware)] = found
        return found

    def _prior(self, task_id: str) -> tuple[float, int] | None:
        """The task's declared noise (`[metric] noise`, weighing `noise_runs` runs)."""
        if task_id not in self._priors:
            task = self.store.get_task(task_id)
            metric = task.spec.metric if task is not None else None
            prior = (metric.noise, metric.noise_runs) if metric and metric.noise else None
            self._priors[task_id] = prior
        return self._priors[task_id]

    def stats(
        self, task_id: str, hardware: str, base: str | None = None
    ) -> tuple[HeadRecord | None, judge.HeadStats]:
        """The class's head and the stats a candidate is judged by: those of the code it was
        built on (`base`) when that was measured on this class, else the head's."""
        head, runs, noise = self.class_runs(task_id, hardware)
        measured = base is not None and any(r.code == base for r in runs)
        reference = base if base and measured else (head.commit if head else "")
        return head, judge.head_stats(runs, reference, noise)
