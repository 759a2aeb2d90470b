"""The coordinator's settings: arguments > `AUTOSWARM_*` environment > a TOML file > defaults.

Passed in to everything that needs it; never a module-level global. Every setting here
changes behaviour somewhere (see the field comments).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    SettingsConfigDict,
)

from autoswarm.shared.settings import LayeredSettings


class CoordinatorSettings(LayeredSettings):
    """Where the coordinator keeps its state, how it judges, and its limits."""

    model_config = SettingsConfigDict(env_prefix="AUTOSWARM_", extra="forbid", frozen=True)

    # None: start an embedded redis-server under data_dir/redis (see redis_server.py).
    redis_url: str | None = None
    # Lineage repos, bundles' git objects, the embedded Redis and admin.token live here.
    data_dir: Path = Path(".autoswarm")
    host: str = "127.0.0.1"
    port: int = Field(default=8470, ge=0, le=65535)
    # None: generate one on first start and keep it in data_dir/admin.token (mode 0600).
    admin_token: SecretStr | None = None
    # True: the dashboard and every read endpoint answer without a token (`autoswarm up`
    # on loopback); False: a `read` token is needed (results hold code, logs, hypotheses).
    public_read: bool = False
    # True: every request but a read is refused (405), whatever its token (`autoswarm
    # dashboard` and read commands opening a data folder; autoswarm.coordinator.readonly).
    read_only: bool = False

    @field_validator("data_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        # redis-server runs with its own working folder; a relative path would point elsewhere.
        return value.expanduser().resolve()

    # Leases: a worker heartbeats about every lease_ttl_s / 3.
    lease_ttl_s: float = Field(default=60.0, gt=0, le=24 * 3600)
    # An explore leased less than this share of its task's budget ago is preempted, at its
    # worker's next heartbeat, by a baseline, replicate or merge waiting for a worker (the
    # explore goes back to its place in the queue). 0: never preempt.
    preempt_within: float = Field(default=0.25, ge=0, le=1)
    # A lease that expires, or a failed baseline/replicate/merge run, counts one attempt.
    max_attempts: int = Field(default=3, ge=1, le=100)
    reaper_interval_s: float = Field(default=1.0, gt=0, le=60)
    # Long poll: an idle lease request re-checks the queue this often even without a wake-up.
    lease_poll_s: float = Field(default=1.0, gt=0, le=60)
    max_wait_s: float = Field(default=60.0, ge=0, le=300)
    # API processes serving one port (uvicorn's workers). With more than one, the first
    # process to claim it leads: it alone reaps, judges and indexes (autoswarm.coordinator.leader).
    api_processes: int = Field(default=1, ge=1, le=64)
    # Tokens and workers are remembered this long by each API process (a revoked token
    # still works for at most this long there).
    caller_cache_s: float = Field(default=10.0, ge=0, le=3600)

    # Judge: baselines per head and hardware class, and the noise multiplier z.
    # A replicate waits this long for another worker before its finder may run it too.
    replicate_wait_s: float = Field(default=120.0, ge=0, le=24 * 3600)
    baseline_runs: int = Field(default=3, ge=1, le=50)
    # A head is measured again, a run at a time up to this many, while candidates on it are
    # measured again (its mean is in every comparison: docs/judging.md); baseline_runs: never.
    max_baseline_runs: int = Field(default=24, ge=1, le=50)
    # How far a replicate may fall short of the claim it checks and still agree (z + 1
    # sigma): the claimant's trust only, not the keep (autoswarm.coordinator.judge.tolerance).
    z: float = Field(default=2.0, gt=0, le=10)
    # True: a claim is confirmed only by a worker of another owner, never by the finder or
    # its owner's other workers (a candidate waits until one comes); False: by another
    # owner whenever one is present, else by another worker, else by the finder itself
    # after replicate_wait_s (its keep says so).
    require_two_owners: bool = False

    # Bounds per token (an admin token has none): what one stranger's token can make the
    # coordinator keep. Each hardware class is a lineage branch and baseline_runs baselines
    # per task, for good; a worker is a record; a hypothesis in flight is a queued run.
    max_classes_per_token: int = Field(default=16, ge=1, le=10_000)
    max_workers_per_token: int = Field(default=256, ge=1, le=1_000_000)
    max_hypotheses_in_flight: int = Field(default=200, ge=1, le=1_000_000)

    # Size limits, checked before parsing (bytes of the request body).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_task_body_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    # Sum of a task's files (bytes, before base64).
    max_task_bytes: int = Field(default=32 * 1024 * 1024, ge=1024)

    # Embedded Redis: "always" fsyncs the append-only file before a write is acknowledged,
    # so an acknowledged result survives even a power cut; "everysec" risks up to 1 s.
    redis_appendfsync: Literal["always", "everysec"] = "always"

    @property
    def lineage_dir(self) -> Path:
        return self.data_dir / "lineage"

    @property
    def redis_dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def admin_token_file(self) -> Path:
        return self.data_dir / "admin.token"
