"""`python -m worker --join URL --token T`: run a worker without the `autoswarm` CLI.

Subcommands `pause`, `resume`, `finish`, `status` talk to a running worker instead.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from shared.errors import AutoswarmError
from shared.logs import configure_logging
from worker.control import COMMANDS, send_command
from worker.loop import EXIT_CANNOT_START, run_worker
from worker.settings import DEFAULT_STATE_DIR, WorkerSettings

logger = logging.getLogger("worker")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m worker", description=__doc__)
    parser.add_argument("command", nargs="?", choices=COMMANDS, help="control a running worker")
    parser.add_argument("--join", help="the coordinator's URL")
    parser.add_argument("--token", help="a worker token")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument("--name")
    parser.add_argument("--gpus", help="all (default), none, or indices like 0,1")
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--cache-dir", type=Path)
    parser.add_argument("--work-dir", type=Path)
    parser.add_argument("--wait-s", type=float)
    parser.add_argument("--trust", choices=("sandboxed", "trusted-code"))
    parser.add_argument("--stop-grace-s", type=float)
    parser.add_argument("--max-experiments", type=int)
    parser.add_argument("--config", type=Path, help="a TOML file of settings")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    configure_logging("DEBUG" if args.verbose else "INFO")
    if args.verbose:  # one line per HTTP request (heartbeats every few seconds): only asked
        logging.getLogger("httpx").setLevel(logging.DEBUG)
    if args.command is not None:
        state_dir = args.state_dir or DEFAULT_STATE_DIR
        try:
            answer = send_command(state_dir.expanduser(), args.command)
        except AutoswarmError as exc:
            logger.error("worker: %s", exc)
            return 1
        sys.stdout.write(json.dumps(answer, indent=2) + "\n")
        return 0 if answer.get("ok") else 1
    overrides = {
        key: getattr(args, key)
        for key in (
            "join",
            "token",
            "token_file",
            "name",
            "gpus",
            "state_dir",
            "cache_dir",
            "work_dir",
            "wait_s",
            "trust",
            "stop_grace_s",
            "max_experiments",
        )
    }
    try:
        settings = WorkerSettings.load(args.config, **overrides)
    except ValidationError as exc:
        logger.error("worker: bad settings: %s", exc)
        return EXIT_CANNOT_START
    return run_worker(settings)


if __name__ == "__main__":
    raise SystemExit(main())
