"""The one log format choice of every autoswarm process (the CLI, the coordinator and its
API processes, the worker): human lines at a terminal (`time LEVEL logger: message`,
control characters removed), JSON lines otherwise (a pipe, a file, a container), or as
`AUTOSWARM_LOG_FORMAT` (`human` or `json`) says. Configured only by entry points."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import TextIO

LOG_FORMAT_ENV = "AUTOSWARM_LOG_FORMAT"
HUMAN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
HUMAN_TIME = "%H:%M:%S"
# Loggers whose every line is routine (one per HTTP request, per git call): warnings only.
NOISY = ("httpx", "httpcore", "git", "urllib3", "LiteLLM", "LiteLLM Router", "uvicorn.access")
# C0 controls but \t and \n, DEL, C1 controls, bidirectional overrides: a message can quote
# a run's log or a hypothesis, whose escape sequences must not reach the terminal.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg (and exc with a traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class HumanFormatter(logging.Formatter):
    """`time LEVEL logger: message`, with no control character of the message's."""

    def __init__(self) -> None:
        super().__init__(HUMAN_FORMAT, HUMAN_TIME)

    def formatMessage(self, record: logging.LogRecord) -> str:
        return _UNPRINTABLE.sub("", super().formatMessage(record))


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever `sys.stderr` is when a record comes (a live screen that redirects
    it, as rich's does, then keeps the lines above the screen)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, value: TextIO) -> None:
        pass


def json_chosen(json_logs: bool | None = None) -> bool:
    """JSON when asked (argument, then AUTOSWARM_LOG_FORMAT), else unless at a terminal."""
    if json_logs is not None:
        return json_logs
    chosen = os.environ.get(LOG_FORMAT_ENV, "").strip().lower()
    if chosen in ("json", "human"):
        return chosen == "json"
    return not sys.stderr.isatty()


def configure_logging(level: str | int = "INFO", *, json_logs: bool | None = None) -> None:
    """Point the root logger at stderr in the chosen format (see the module docstring)."""
    handler = StderrHandler()
    handler.setFormatter(JsonFormatter() if json_chosen(json_logs) else HumanFormatter())
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(handler)
    root.setLevel(level.upper() if isinstance(level, str) else level)
    # Python warnings become log lines too, so every line of a JSON log stays JSON.
    logging.captureWarnings(True)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.WARNING)
