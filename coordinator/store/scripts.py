"""Loads the Lua scripts of `coordinator/scripts/` (each prefixed with lib.lua) once."""

from __future__ import annotations

from importlib import resources

import redis

SCRIPT_NAMES = (
    "enqueue",
    "submit",
    "lease",
    "heartbeat",
    "release",
    "report",
    "reap",
    "register_task",
    "add_class",
    "record_baseline",
    "conclude",
    "apply_keep",
    "recheck",
    "drop_run",
    "withdraw",
    "undefer",
    "index",
    "leader",
)


def _source(name: str) -> str:
    folder = resources.files("coordinator.scripts")
    lib = folder.joinpath("lib.lua").read_text(encoding="utf-8")
    body = folder.joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return lib + "\n" + body


class Scripts:
    """Every store script, registered on one client (EVALSHA, reloaded if Redis forgot it)."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts = {name: client.register_script(_source(name)) for name in SCRIPT_NAMES}

    def __getitem__(self, name: str) -> redis.commands.core.Script:
        return self._scripts[name]
