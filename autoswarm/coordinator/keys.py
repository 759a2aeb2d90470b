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
LEADER = ROOT + "leader"  # which coordinator process runs the background work
DEAD = ROOT + "dead"
JUDGE = ROOT + "judge"
EVENTS = ROOT + "events"
TOKENS = ROOT + "tokens"
WORKERS = ROOT + "workers"
AGREEMENT = ROOT + "agreement"  # hash: every worker's claims that reproduced, and that did not
DISTRUSTED = ROOT + "distrusted"  # set: workers whose claims no longer count
# pub/sub channel: wake-ups between API processes (autoswarm.coordinator.relay)
WAKEUPS = ROOT + "wakeups"


def task(task_id: str) -> str:
    """Hash: the task's spec, initial commit and bundle."""
    return f"{ROOT}task:{task_id}"


def task_heldout_secret(task_id: str) -> str:
    """String: the secret the task's held-out data is made from; handed to workers with
    their leases only, never in a bundle, a read or an export."""
    return f"{ROOT}task:{task_id}:heldout-secret"


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


def tip(task_id: str, hardware: str) -> str:
    """Hash: the last winner stacked onto this class's head (a merge, or the first explore
    replicated there), which the next winner is stacked on while it is judged (`on`: that
    head's commit, `experiment_id`, `commit`: its code)."""
    return f"{ROOT}tip:{task_id}:{hardware}"


def runs(task_id: str, hardware: str) -> str:
    """Hash: commit -> JSON list of ok metrics measured for that code on this class."""
    return f"{ROOT}runs:{task_id}:{hardware}"


def observations(task_id: str, hardware: str) -> str:
    """Hash: experiment_id -> JSON {c: code commit, w: worker, v: score}, every ok run the
    judge's noise model learns from on this class (autoswarm.coordinator.judge.fit_noise)."""
    return f"{ROOT}obs:{task_id}:{hardware}"


def explored(task_id: str, bundle_hash: str) -> str:
    """String: the experiment that first ran this code (identical code is not explored twice)."""
    return f"{ROOT}explored:{task_id}:{bundle_hash}"


def offered(task_id: str, bundle_hash: str, hardware: str) -> str:
    """String: the experiment that offered this code to this class (a change kept elsewhere)."""
    return f"{ROOT}offered:{task_id}:{hardware}:{bundle_hash}"


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


def token_workers(token_hash: str) -> str:
    """Set: every worker id a token has registered (bounded per token)."""
    return f"{ROOT}token:{token_hash}:workers"


def token_classes(token_hash: str) -> str:
    """Set: every hardware class a token's workers have registered on (bounded per token)."""
    return f"{ROOT}token:{token_hash}:classes"


def token_hypotheses(token_hash: str) -> str:
    """Set: the hypotheses a token submitted that are not judged yet (bounded per token)."""
    return f"{ROOT}token:{token_hash}:hypotheses"


def class_owners(hardware: str) -> str:
    """Zset: owner name -> last time one of their workers asked for a lease on this class."""
    return f"{ROOT}owners:{hardware}"


# -- the read model (autoswarm/coordinator/store/reads.py, autoswarm/coordinator/indexer.py) --
# Indexes derived from the experiments by the indexer, never written by the write path's
# scripts; deleting every `as:ix:*` key and restarting rebuilds them.

IX = ROOT + "ix:"
IX_CURSOR = IX + "cursor"
IX_MEMBERS = IX + "members"
IX_LEASED = IX + "leased"
IX_TIME = IX + "time"
IX_CREDITED = IX + "credited"
IX_OWNERS = IX + "owners"
IX_TEAMS = IX + "teams"


def ix_field(field: str, value: str) -> str:
    """Zset by seq: experiments whose `field` (state, kind, verdict, result, worker, owner,
    hw, proposer, model) has this value."""
    return f"{IX}{field}:{value}"


def ix_metric(task_id: str, hardware: str) -> str:
    """Zset by metric: the task's scored experiments on one hardware class."""
    return f"{IX}metric:{task_id}:{hardware}"


def ix_chart(task_id: str) -> str:
    """Zset by finish time of `experiment_id|hardware|kind|metric`: the progress chart."""
    return f"{IX}chart:{task_id}"


def ix_kept(task_id: str, hardware: str) -> str:
    """Zset by seq: the task's kept candidates (explore, merge) on one hardware class."""
    return f"{IX}kept:{task_id}:{hardware}"


def ix_counts(task_id: str) -> str:
    """Hash: label (`state:done`, `verdict:kept`, `parent:<commit>`...) -> experiments."""
    return f"{IX}counts:{task_id}"


def ix_hypothesis(hypothesis_id: str) -> str:
    """Zset by seq: the experiments that carried one hypothesis."""
    return f"{IX}hyp:{hypothesis_id}"


def spend(task_id: str) -> str:
    """Hash: `{model}:usd`, `{model}:calls`, `{model}:tokens` -> what a task's proposers'
    model calls cost, as they told it."""
    return f"{ROOT}spend:{task_id}"


def ix_credit(owner: str) -> str:
    """Hash: one owner's credit and its parts (work_s, bonus_s, experiments, kept...)."""
    return f"{IX}credit:{owner}"
