"""The store's side of the scheduler: queueing experiments and recording decisions.

Every method is one Lua script and idempotent (experiment ids of follow-ups are derived
from what they follow, and each decision is guarded by the experiment's `judged` flag), so
the scheduler can apply a decision again after a crash without doing anything twice.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from autoswarm.coordinator import keys
from autoswarm.coordinator.store.base import FieldValue, StoreBase, encode_fields
from autoswarm.shared.errors import Conflict
from autoswarm.shared.models import ExperimentKind

PRIORITY = {
    ExperimentKind.BASELINE: 0,
    ExperimentKind.REPLICATE: 0,
    ExperimentKind.MERGE: 1,
    ExperimentKind.EXPLORE: 2,
}

Fields = Mapping[str, FieldValue]


@dataclass(frozen=True)
class NewExperiment:
    """An experiment to queue: its id, kind, task, class constraint and fields."""

    experiment_id: str
    task_id: str
    kind: ExperimentKind
    hardware: str | None
    fields: Fields

    def encoded(self) -> str:
        base: dict[str, FieldValue] = {
            "task_id": self.task_id,
            "kind": self.kind.value,
            "hardware": self.hardware,
        }
        return encode_fields({**base, **self.fields})


@dataclass(frozen=True)
class Submitted:
    """What became of a submitted hypothesis."""

    experiment_id: str | None
    duplicate: bool
    duplicate_of: str | None


Observation = tuple[str, str, str, float]  # (experiment_id, code commit, worker_id, score)


def observations_json(observations: list[Observation]) -> str:
    """{experiment_id: JSON {c, w, v}} as the scripts record it ('' for none)."""
    if not observations:
        return ""
    return json.dumps(
        {
            experiment_id: json.dumps({"c": code, "w": worker, "v": repr(float(value))})
            for experiment_id, code, worker, value in observations
        }
    )


def runs_json(runs: list[float]) -> str:
    """Metrics as a JSON list of exact decimal strings (Lua's cjson keeps 14 digits)."""
    return json.dumps([repr(float(value)) for value in runs])


class JudgeOps(StoreBase):
    def get_observations(self, task_id: str, hardware: str) -> list[Observation]:
        """Every run the class's noise model learns from, oldest first (by experiment id
        order is not time; the model does not depend on order)."""
        raw = cast("dict[str, str]", self._r.hgetall(keys.observations(task_id, hardware)))
        out: list[Observation] = []
        for experiment_id, text in sorted(raw.items()):
            try:
                item = json.loads(text)
                out.append((experiment_id, str(item["c"]), str(item["w"]), float(item["v"])))
            except (ValueError, KeyError, TypeError):
                continue  # not ours: skipped, never fatal
        return out

    def _queue_keys(self, new: NewExperiment) -> list[str]:
        return [
            keys.experiment(new.experiment_id),
            keys.queue(new.hardware),
            keys.EXPERIMENTS,
            keys.task_experiments(new.task_id),
            keys.SEQ,
        ]

    def enqueue_experiment(self, new: NewExperiment, *, now: float) -> bool:
        """Queue an experiment; False if one with that id exists already."""
        return bool(
            self._run(
                "enqueue",
                self._queue_keys(new),
                [new.experiment_id, new.encoded(), PRIORITY[new.kind], repr(now)],
            )
        )

    def submit_hypothesis(
        self,
        hypothesis_id: str,
        task_id: str,
        fields: Fields,
        explore: NewExperiment | None,
        bundle_hash: str | None,
        *,
        now: float,
        offered_to: str | None = None,
        implements: tuple[str, str] | None = None,
    ) -> Submitted:
        """Record a hypothesis and queue its experiment unless that code was explored before.

        `offered_to`: a change kept on another class, offered to this one (its experiment is
        bound to the class): a duplicate only if the same code was offered to it before.
        `implements`: (hypothesis_id, reason), the text-only hypothesis this one implements,
        marked done with that reason in the same step; Conflict if it no longer needs code
        (then nothing is recorded)."""
        bundle = bundle_hash or "none"
        explored = (
            keys.offered(task_id, bundle, offered_to)
            if offered_to
            else keys.explored(task_id, bundle)
        )
        # The script is handed the keys of the parts it uses only (submit.lua).
        explore_keys = (
            [
                keys.experiment(explore.experiment_id),
                keys.queue(explore.hardware),
                keys.EXPERIMENTS,
                keys.task_experiments(task_id),
                explored,
            ]
            if explore and explore.experiment_id
            else []
        )
        answer = self._run(
            "submit",
            [
                keys.hypothesis(hypothesis_id),
                keys.task_hypotheses(task_id),
                keys.SEQ,
                *explore_keys,
                *([keys.hypothesis(implements[0])] if implements else []),
            ],
            [
                hypothesis_id,
                encode_fields({**fields, "task_id": task_id}),
                explore.experiment_id if explore else "",
                explore.encoded() if explore else "",
                repr(now),
                PRIORITY[explore.kind if explore else ExperimentKind.EXPLORE],
                implements[0] if implements else "",
                implements[1] if implements else "",
            ],
        )
        if len(answer) > 3:
            assert implements is not None
            raise Conflict(
                f"hypothesis {implements[0]} was implemented meanwhile: read the task's context"
                " again for what still needs code"
            )
        experiment_id, duplicate, prior = str(answer[0]), int(answer[1]), str(answer[2])
        return Submitted(experiment_id or None, bool(duplicate), prior or None)

    def add_class(
        self,
        task_id: str,
        hardware: str,
        head_fields: Fields,
        baseline: NewExperiment,
        baseline_ids: list[str],
        *,
        now: float,
        force: bool = False,
    ) -> bool:
        """Give the task this hardware class with its head and baselines; False if known.

        `force` points a known class's head at `head_fields["commit"]` and measures it anew.
        """
        return bool(
            self._run(
                "add_class",
                [
                    keys.task_classes(task_id),
                    keys.head(task_id, hardware),
                    keys.queue(hardware),
                    keys.EXPERIMENTS,
                    keys.task_experiments(task_id),
                    keys.SEQ,
                ],
                [
                    hardware,
                    encode_fields(head_fields),
                    baseline.encoded(),
                    repr(now),
                    keys.EXPERIMENT_PREFIX,
                    "1" if force else "0",
                    *baseline_ids,
                ],
            )
        )

    def record_baseline(
        self,
        experiment_id: str,
        task_id: str,
        hardware: str,
        commit: str,
        metric: float | None,
        *,
        baseline_runs: int,
        event: Fields,
        now: float,
        observation: Observation | None = None,
    ) -> bool:
        """Count a finished baseline toward its head (and its run in the class's noise
        model); False if it was counted before."""
        return bool(
            self._run(
                "record_baseline",
                [
                    keys.experiment(experiment_id),
                    keys.head(task_id, hardware),
                    keys.runs(task_id, hardware),
                    keys.JUDGE,
                    keys.EVENTS,
                    keys.observations(task_id, hardware),
                ],
                [
                    experiment_id,
                    commit,
                    "" if metric is None else repr(metric),
                    baseline_runs,
                    repr(now),
                    encode_fields(event),
                    observations_json([observation] if observation else []),
                ],
            )
        )

    def conclude(
        self,
        experiment_id: str,
        *,
        task_id: str,
        experiment: Fields,
        hypothesis_id: str | None,
        hypothesis: Fields | None,
        event: Fields,
        follow_up: NewExperiment | None = None,
        pair: tuple[str, str, list[float]] | None = None,
        observed: tuple[str, list[Observation]] | None = None,
        now: float,
    ) -> bool:
        """Record a decision (and queue its follow-up) once; False if decided before.

        `pair` is (hardware, code commit, runs): two agreeing runs of one code, kept in the
        class's runs. `observed` is (hardware, runs): a candidate's runs, recorded for the
        class's noise model (autoswarm.coordinator.judge.fit_noise).
        """
        hypothesis_json = encode_fields(hypothesis) if hypothesis and hypothesis_id else ""
        observed_json = observations_json(observed[1]) if observed else ""
        # The script is handed the keys of the parts it uses only, in its order (conclude.lua).
        optional_keys = [
            *([keys.hypothesis(hypothesis_id)] if hypothesis_id and hypothesis_json else []),
            *(self._queue_keys(follow_up) if follow_up and follow_up.experiment_id else []),
            *([keys.runs(task_id, pair[0])] if pair and pair[1] else []),
            *([keys.observations(task_id, observed[0])] if observed and observed_json else []),
        ]
        return bool(
            self._run(
                "conclude",
                [keys.experiment(experiment_id), keys.JUDGE, keys.EVENTS, *optional_keys],
                [
                    experiment_id,
                    encode_fields(experiment),
                    hypothesis_json,
                    encode_fields(event),
                    follow_up.experiment_id if follow_up else "",
                    follow_up.encoded() if follow_up else "",
                    PRIORITY[follow_up.kind] if follow_up else 0,
                    repr(now),
                    pair[1] if pair else "",
                    runs_json(pair[2]) if pair else "",
                    observed_json,
                ],
            )
        )

    def apply_keep(
        self,
        *,
        task_id: str,
        hardware: str,
        commit: str,
        head_fields: Fields,
        runs: list[float],
        candidate_id: str,
        replicate_id: str,
        hypothesis_id: str | None,
        hypothesis: Fields,
        experiment: Fields,
        bundle_hash: str,
        event: Fields,
        baseline: NewExperiment,
        baseline_ids: list[str],
        now: float,
        observations: list[Observation] | None = None,
    ) -> bool:
        """Make a committed change the head in Redis (the candidate's runs, `observations`,
        become runs of the new head in the noise model); False if it was the head already."""
        return bool(
            self._run(
                "apply_keep",
                [
                    keys.head(task_id, hardware),
                    keys.runs(task_id, hardware),
                    keys.experiment(candidate_id),
                    keys.experiment(replicate_id),
                    keys.JUDGE,
                    keys.EVENTS,
                    keys.explored(task_id, bundle_hash),
                    keys.queue(hardware),
                    keys.EXPERIMENTS,
                    keys.task_experiments(task_id),
                    keys.SEQ,
                    keys.observations(task_id, hardware),
                    *([keys.hypothesis(hypothesis_id)] if hypothesis_id else []),
                ],
                [
                    commit,
                    encode_fields(head_fields),
                    runs_json(runs),
                    encode_fields(hypothesis) if hypothesis_id else "",
                    encode_fields(experiment),
                    replicate_id,
                    candidate_id,
                    encode_fields(event),
                    repr(now),
                    baseline.encoded(),
                    keys.EXPERIMENT_PREFIX,
                    observations_json(observations or []) or "{}",
                    *baseline_ids,
                ],
            )
        )

    def recheck(
        self,
        again: NewExperiment,
        *,
        hypothesis_id: str | None,
        hypothesis: Fields | None,
        event: Fields,
        now: float,
    ) -> bool:
        """Queue one experiment once, with its event: a result's re-check (reopening its hypothesis)
        or, with no hypothesis, one more baseline of a head; False if queued before."""
        return bool(
            self._run(
                "recheck",
                [
                    *self._queue_keys(again),
                    keys.EVENTS,
                    *([keys.hypothesis(hypothesis_id)] if hypothesis and hypothesis_id else []),
                ],
                [
                    again.experiment_id,
                    again.encoded(),
                    PRIORITY[again.kind],
                    repr(now),
                    encode_fields(hypothesis) if hypothesis and hypothesis_id else "",
                    encode_fields(event),
                ],
            )
        )

    def drop_run(
        self, task_id: str, hardware: str, commit: str, metric: float, experiment_id: str
    ) -> bool:
        """Take one baseline's run out of its code's runs on the class; False if not there."""
        return bool(
            self._run(
                "drop_run",
                [
                    keys.runs(task_id, hardware),
                    keys.experiment(experiment_id),
                    keys.observations(task_id, hardware),
                ],
                [commit, repr(metric), experiment_id],
            )
        )

    def withdraw(
        self, experiment_id: str, *, verdict: str, reason: str, event: Fields, now: float
    ) -> bool:
        """Take an unfinished experiment out of the queue or its lease, decided; False if it
        had finished already."""
        return bool(
            self._run(
                "withdraw",
                [keys.experiment(experiment_id), keys.LEASES, keys.JUDGE, keys.EVENTS],
                [experiment_id, verdict, reason, repr(now), encode_fields(event)],
            )
        )
