"""Loads the Lua scripts of `autoswarm/coordinator/scripts/` (each prefixed with lib.lua, the
leasing ones with leasing.lua too) once."""

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
    "register_worker",
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
# The helpers each script is built on, in order.
_LIBS = {"lease": ("lib", "leasing"), "heartbeat": ("lib", "leasing")}


def _source(name: str) -> str:
    folder = resources.files("autoswarm.coordinator.scripts")
    parts = [*_LIBS.get(name, ("lib",)), name]
    return "\n".join(folder.joinpath(f"{part}.lua").read_text(encoding="utf-8") for part in parts)


class Scripts:
    """Every store script, registered on one client (EVALSHA, reloaded if Redis forgot it)."""

    def __init__(self, client: redis.Redis) -> None:
        self._scripts = {name: client.register_script(_source(name)) for name in SCRIPT_NAMES}

    def __getitem__(self, name: str) -> redis.commands.core.Script:
        return self._scripts[name]
