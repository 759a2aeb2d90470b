"""Where the read model files one experiment: its index entries, count labels and credit
items, a pure function of the experiment's fields and its hypothesis's (no I/O)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from autoswarm.coordinator import credit, keys

Credit = list[object]  # [mark, credit hash key, owner, team, credit, {field: increment}]

CANDIDATE_KINDS = ("explore", "merge")
FINAL = ("kept", "discarded", "not-reproduced", "crashed", "conflict")


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None


def effective_verdict(exp: dict[str, str], hyp_verdict: str | None) -> str | None:
    """The experiment's own verdict, else (not a baseline) its hypothesis's, else pending."""
    if exp.get("verdict"):
        return exp["verdict"]
    if exp.get("kind") == "baseline":
        return None
    return hyp_verdict if hyp_verdict in FINAL else "pending"


@dataclass
class Filing:
    """Where one experiment is filed: index entries, count labels, credit items."""

    entries: list[tuple[str, str, str]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    credits: list[Credit] = field(default_factory=list)

    def add(self, zset: str, score: float | int | str, member: str) -> None:
        self.entries.append((zset, str(score), member))

    def encoded(self) -> str:
        return json.dumps({"e": self.entries, "l": self.labels})


def file_experiment(exp: dict[str, str], hyp: dict[str, str], budget_s: float | None) -> Filing:
    """Where an experiment belongs now (a pure function of its fields)."""
    eid, task_id, kind = exp["experiment_id"], exp["task_id"], exp.get("kind", "")
    seq, state = exp.get("seq", "0"), exp.get("state", "")
    hardware = exp.get("measured_on") or exp.get("hardware") or ""
    result = json.loads(exp["result"]) if exp.get("result") else None
    status = str(result.get("status", "")) if isinstance(result, dict) else ""
    metric = _float(str(result.get("metric"))) if isinstance(result, dict) else None
    verdict = effective_verdict(exp, hyp.get("verdict"))
    out = Filing()
    named = {
        "state": state,
        "kind": kind,
        "verdict": verdict,
        "result": status,
        "worker": exp.get("worker_id"),
        "owner": exp.get("owner"),
        "hw": hardware,
    }
    proposer = hyp.get("proposer", "")
    family, _, model = proposer.partition(":")
    named["proposer"] = family
    named["model"] = model
    for name, value in named.items():
        if value:
            out.add(keys.ix_field(name, value), seq, eid)
    for label in ("state", "kind", "verdict", "result", "hw"):
        if named[label]:
            out.labels.append(f"{label}:{named[label]}")
    if kind in CANDIDATE_KINDS and exp.get("parent_commit"):
        out.labels.append(f"parent:{exp['parent_commit']}")
    out.add(keys.IX_TIME, exp.get("created_s") or 0, eid)
    if exp.get("hypothesis_id"):
        out.add(keys.ix_hypothesis(exp["hypothesis_id"]), seq, eid)
    scored = state == "done" and status == "ok" and metric is not None and hardware
    if scored:
        out.add(keys.ix_metric(task_id, hardware), repr(metric), eid)
        # In the order results came in, as the experiments of one machine would.
        finished = exp.get("finished_s") or seq
        out.add(keys.ix_chart(task_id), finished, f"{eid}|{hardware}|{kind}|{metric!r}")
    kept = exp.get("verdict") == "kept" and kind in CANDIDATE_KINDS and hardware
    if kept:
        out.add(keys.ix_kept(task_id, hardware), seq, eid)
    out.credits = _credits(exp, result, hardware, budget_s, bool(kept))
    return out


def _credits(
    exp: dict[str, str], result: object, hardware: str, budget_s: float | None, kept: bool
) -> list[Credit]:
    owner = exp.get("owner", "")
    if not owner or budget_s is None or not hardware:
        return []
    team = credit.team_of(owner)
    eid = exp["experiment_id"]
    items: list[Credit] = []
    if exp.get("state") in ("done", "dead") and isinstance(result, dict):
        leased, finished = _float(exp.get("leased_s")), _float(exp.get("finished_s"))
        if leased is not None and finished is not None:
            lease_s = finished - leased
        else:
            lease_s = float(result.get("wall_s") or 0.0)
        value, counted = credit.run_credit(lease_s, budget_s, hardware)
        ok = 1 if result.get("status") == "ok" else 0
        fields = {"work_s": value, "raw_s": counted, "experiments": 1, "ok": ok}
        items.append([f"w:{eid}", keys.ix_credit(owner), owner, team, value, fields])
    if kept:
        bonus = credit.kept_bonus(budget_s, hardware)
        fields = {"bonus_s": bonus, "kept": 1}
        items.append([f"k:{eid}", keys.ix_credit(owner), owner, team, bonus, fields])
    return items
