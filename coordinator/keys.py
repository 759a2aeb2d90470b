"""Every Redis key the coordinator uses, built here and nowhere else.

Lua scripts that must reach a key they cannot be handed in KEYS (an experiment named by a
queue entry, a head named by a task and hardware class) get the prefix from here in ARGV
and append the same suffix this module does: `EXPERIMENT_PREFIX + experiment_id`,
`HEAD_PREFIX + task_id + ":" + hardware`. A single Redis instance is assumed (no cluster
slots); sharding is by task across instances, later.
"""

from __future__ import annotations

ROOT = "as:"
EXPERIMENT_PREFIX = ROOT + "exp:"
HEAD_PREFIX = ROOT + "head:"

SEQ = ROOT + "seq"
TASKS = ROOT + "tasks"
EXPERIMENTS = ROOT + "experiments"
QUEUE_ANY = ROOT + "queue:any"
LEASES = ROOT + "leases"
DEAD = ROOT + "dead"
JUDGE = ROOT + "judge"
EVENTS = ROOT + "events"
TOKENS = ROOT + "tokens"
WORKERS = ROOT + "workers"


def task(task_id: str) -> str:
    """Hash: the task's spec, initial commit and bundle."""
    return f"{ROOT}task:{task_id}"


def task_classes(task_id: str) -> str:
    """Zset: the hardware classes that have a lineage branch for this task (by first use)."""
    return f"{ROOT}task:{task_id}:classes"


def task_experiments(task_id: str) -> str:
    """Zset: the task's experiments by sequence number."""
    return f"{ROOT}task:{task_id}:experiments"


def task_hypotheses(task_id: str) -> str:
    """Zset: the task's hypotheses by sequence number."""
    return f"{ROOT}task:{task_id}:hypotheses"


def head(task_id: str, hardware: str) -> str:
    """Hash: the head of one task on one hardware class (commit, bundle, readiness)."""
    return f"{HEAD_PREFIX}{task_id}:{hardware}"


def runs(task_id: str, hardware: str) -> str:
    """Hash: commit -> JSON list of ok metrics measured for that code on this class."""
    return f"{ROOT}runs:{task_id}:{hardware}"


def explored(task_id: str, bundle_hash: str) -> str:
    """String: the experiment that first ran this code (identical code is not explored twice)."""
    return f"{ROOT}explored:{task_id}:{bundle_hash}"


def experiment(experiment_id: str) -> str:
    return EXPERIMENT_PREFIX + experiment_id


def queue(hardware: str | None) -> str:
    """Zset by priority then FIFO: experiments bound to one class, or open to any class."""
    return QUEUE_ANY if not hardware else f"{ROOT}queue:hw:{hardware}"


def hypothesis(hypothesis_id: str) -> str:
    return f"{ROOT}hyp:{hypothesis_id}"


def blob(sha256: str) -> str:
    """String: one file's content, by its sha256 (bundles share unchanged files)."""
    return f"{ROOT}blob:{sha256}"


def bundle(bundle_hash: str) -> str:
    """Hash: path -> blob sha256, for the task files at one code version."""
    return f"{ROOT}bundle:{bundle_hash}"


def token(token_hash: str) -> str:
    return f"{ROOT}token:{token_hash}"


def worker(worker_id: str) -> str:
    return f"{ROOT}worker:{worker_id}"


def class_owners(hardware: str) -> str:
    """Zset: owner name -> last time one of their workers asked for a lease on this class."""
    return f"{ROOT}owners:{hardware}"
