"""Logging for the coordinator's entry point: JSON lines when stderr is not a terminal (a
container, a service manager, a pipe), the plain format on one. The CLI has its own
(`autoswarm/logs.py`, rich on a terminal) and writes the same JSON fields."""

from __future__ import annotations

import json
import logging
import sys
import time

PLAIN_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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


def configure_logging(level: str = "INFO", *, json_logs: bool | None = None) -> None:
    """Configure the root logger once: JSON unless stderr is a terminal (or as told)."""
    use_json = (not sys.stderr.isatty()) if json_logs is None else json_logs
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if use_json else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Python warnings become log lines too, so every line of a JSON log stays JSON.
    logging.captureWarnings(True)
