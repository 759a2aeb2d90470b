"""The one small tree of infrastructure faults.

Experiment outcomes (crash, timeout, missing metric) are never exceptions: they are
`Result` values. These exceptions are for things that stop the machinery itself.
The HTTP layer maps each class to one status code, in one place.
"""

from __future__ import annotations


class AutoswarmError(Exception):
    """Base of every error autoswarm raises on purpose."""


class TaskError(AutoswarmError):
    """A task folder is broken; names the file and the field."""

    def __init__(self, path: str, field: str | None, message: str) -> None:
        self.path = path
        self.field = field
        where = f"{path}: {field}" if field else path
        super().__init__(f"{where}: {message}")


class SummaryError(AutoswarmError):
    """The summary block is missing, or its metric is missing or not finite."""


class InvalidInput(AutoswarmError):
    """A request or argument failed validation."""


class PayloadTooLarge(AutoswarmError):
    """A body, file, log or hypothesis exceeds its size limit."""


class NotFound(AutoswarmError):
    """The named task, experiment, hypothesis or worker does not exist."""


class Conflict(AutoswarmError):
    """The operation contradicts current state (e.g. a stale lease)."""


class Unauthorized(AutoswarmError):
    """No token, or an unknown one."""


class TooMany(AutoswarmError):
    """A token is at one of its bounds (workers, hardware classes, hypotheses in flight)."""


class Forbidden(AutoswarmError):
    """The token is known but lacks the scope, or the lease is another worker's."""


class StaleLease(Conflict):
    """A report or heartbeat carries a fencing token that is no longer current."""


class SandboxUnavailable(AutoswarmError):
    """No sandbox can be created here; the message says why and how to fix it."""


class LineageError(AutoswarmError):
    """The git lineage cannot do what was asked (missing ref, corrupt repo)."""


class MergeConflict(LineageError):
    """A three-way merge of a change onto a newer head does not apply cleanly."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(f"merge conflict in {', '.join(paths)}")


class SpendCapReached(AutoswarmError):
    """The task's LLM spend cap is reached; no further calls are made."""
