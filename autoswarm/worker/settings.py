"""The worker's settings: flags > `AUTOSWARM_*` environment > a TOML file > defaults."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    SettingsConfigDict,
)

from autoswarm.shared.client import url_problem
from autoswarm.shared.settings import LayeredSettings

DEFAULT_STATE_DIR = Path("~/.autoswarm/worker")


class WorkerSettings(LayeredSettings):
    """How a worker joins a coordinator, where it keeps its state, how it paces itself."""

    model_config = SettingsConfigDict(env_prefix="AUTOSWARM_", extra="forbid")

    join: str = Field(min_length=1, description="the coordinator's URL, e.g. http://host:8000")
    token: SecretStr | None = None
    token_file: Path | None = None
    name: str = Field(default_factory=socket.gethostname, min_length=1, max_length=100)
    # None or "all": every CUDA GPU (one slot each), else the CPU; "none": the CPU; "0,2".
    gpus: str | None = None
    state_dir: Path = DEFAULT_STATE_DIR
    cache_dir: Path | None = None
    work_dir: Path | None = None
    # Long poll: an idle worker asks once per wait_s, not in a busy loop.
    wait_s: float = Field(default=20.0, ge=0, le=60)
    request_timeout_s: float = Field(default=10.0, gt=0, le=300)
    trust: Literal["sandboxed", "trusted-code"] = "sandboxed"
    # On SIGTERM a run still going after this long is stopped and its lease handed back.
    stop_grace_s: float = Field(default=10.0, ge=0, le=3600)
    # The next experiment is leased and fetched this long before the current budget ends.
    prefetch_lead_s: float = Field(default=15.0, ge=0, le=3600)
    prefetch: bool = True
    backoff_min_s: float = Field(default=0.5, gt=0, le=60)
    backoff_max_s: float = Field(default=30.0, gt=0, le=3600)
    # Stop after this many experiments (None: run until stopped).
    max_experiments: int | None = Field(default=None, ge=1)

    @field_validator("join")
    @classmethod
    def _a_url(cls, join: str) -> str:
        problem = url_problem(join)
        if problem:
            raise ValueError(problem)
        return join

    @field_validator("state_dir", "cache_dir", "work_dir", "token_file")
    @classmethod
    def _expand(cls, value: Path | None) -> Path | None:
        return value.expanduser().resolve() if value is not None else None

    @property
    def resolved_cache_dir(self) -> Path:
        return self.cache_dir or self.state_dir / "cache"

    @property
    def resolved_work_dir(self) -> Path:
        return self.work_dir or self.state_dir / "work"

    def resolved_token(self) -> str:
        """The token from `token`, else from `token_file`; ValueError if neither gives one."""
        if self.token is not None and self.token.get_secret_value():
            return self.token.get_secret_value()
        if self.token_file is not None:
            token = self.token_file.read_text(encoding="utf-8").strip()
            if token:
                return token
            raise ValueError(f"token file {self.token_file} is empty")
        raise ValueError("no token: pass --token, set AUTOSWARM_TOKEN, or give a token_file")
