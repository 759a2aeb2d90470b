"""Logging for entry points: rich on a terminal, JSON lines otherwise."""

from __future__ import annotations

import json
import logging
import sys
import time


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log collectors (Kubernetes, Loki, ...)."""

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


class PlainFilter(logging.Filter):
    """Log records as plain text for a terminal: a message can quote a run's log or a
    hypothesis, whose control characters must not reach it (`autoswarm.console.plain`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        from autoswarm.console import plain

        record.msg, record.args = plain(record.getMessage()).plain, None
        return True


def configure_logging(*, verbose: bool = False, json_logs: bool | None = None) -> None:
    """Configure the root logger once; JSON when stderr is not a terminal."""
    level = logging.DEBUG if verbose else logging.INFO
    root = logging.getLogger()
    root.handlers.clear()
    use_json = (not sys.stderr.isatty()) if json_logs is None else json_logs
    handler: logging.Handler
    if use_json:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
    else:
        from rich.logging import RichHandler

        from autoswarm.console import err_console

        handler = RichHandler(console=err_console, show_path=False, rich_tracebacks=False)
        handler.addFilter(PlainFilter())
    root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore", "git", "urllib3", "LiteLLM", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.getLogger("LiteLLM Router").setLevel(logging.WARNING)  # the proposer logs each call
