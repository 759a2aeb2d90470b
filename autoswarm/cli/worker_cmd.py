"""`autoswarm worker`: join a coordinator, or control a running worker from a second terminal.

The worker's one front door: `python -m autoswarm.worker` (autoswarm/worker/__main__.py) runs
this same command.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.table import Table

from autoswarm.cli.console import console, err_console, plain, print_error
from autoswarm.shared.errors import AutoswarmError
from autoswarm.shared.logs import configure_logging

worker_app = typer.Typer(
    help=(
        "Contribute this machine: `autoswarm worker --join URL --token T`. "
        "From a second terminal: `autoswarm worker pause|resume|finish|status`."
    ),
    invoke_without_command=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StateDir = typer.Option(
    None, "--state-dir", help="The worker's state folder (default ~/.autoswarm/worker)."
)


@worker_app.callback()
def worker(
    ctx: typer.Context,
    join: str | None = typer.Option(None, "--join", help="The coordinator's URL."),
    token: str | None = typer.Option(
        None, "--token", help="A worker token (or AUTOSWARM_TOKEN, or --token-file)."
    ),
    token_file: Path | None = typer.Option(None, "--token-file", help="A file holding the token."),
    name: str | None = typer.Option(
        None,
        "--name",
        help="This machine's name in the logs and experiments (default: the host name); "
        "credit on the contributors page goes to the token's name.",
    ),
    gpus: str | None = typer.Option(
        None, "--gpus", help="'all' (default), 'none' (CPU), or indices like 0,1."
    ),
    trust: str | None = typer.Option(
        None,
        "--trust",
        help="'sandboxed' (default; refuses without bubblewrap) or 'trusted-code'.",
    ),
    max_experiments: int | None = typer.Option(
        None, "--max-experiments", min=1, help="Stop after this many experiments."
    ),
    state_dir: Path | None = StateDir,
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Where bundles and prepared data are kept (default: STATE_DIR/cache).",
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Where runs are unpacked (default: STATE_DIR/work)."
    ),
    wait_s: float | None = typer.Option(
        None, "--wait-s", help="How long one lease request waits for work (long poll)."
    ),
    stop_grace_s: float | None = typer.Option(
        None, "--stop-grace-s", help="How long a run may take to stop once told to."
    ),
    config: Path | None = typer.Option(None, "--config", help="A TOML file of worker settings."),
    verbose: bool = typer.Option(
        False, "--verbose", "-v", help="Log debug detail, one line per HTTP request too."
    ),
) -> None:
    """Run experiments for a coordinator until stopped (Ctrl-C hands the lease back)."""
    if verbose:
        configure_logging("DEBUG")
        logging.getLogger("httpx").setLevel(logging.DEBUG)  # a line per heartbeat: only asked
    if ctx.invoked_subcommand is not None:
        return
    from autoswarm.cli.worker_screen import Screen
    from autoswarm.worker.loop import Worker
    from autoswarm.worker.settings import WorkerSettings

    overrides: dict[str, Any] = {
        "join": join,
        "token": token,
        "token_file": token_file,
        "name": name,
        "gpus": gpus,
        "trust": trust,
        "max_experiments": max_experiments,
        "state_dir": state_dir,
        "cache_dir": cache_dir,
        "work_dir": work_dir,
        "wait_s": wait_s,
        "stop_grace_s": stop_grace_s,
    }
    try:
        settings = WorkerSettings.load(config, **overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        hint = " (give --join URL)" if field == "join" and not first.get("input") else ""
        message = str(first["msg"]).removeprefix("Value error, ")
        print_error(f"worker setting {field}: {message}{hint}")
        raise typer.Exit(2) from None
    worker_process = Worker(settings)
    # At a terminal the volunteer sees a screen (autoswarm.cli.worker_screen); piped, the log.
    screen = Screen(err_console, worker_process.status) if sys.stderr.isatty() else None
    if screen is not None:
        screen.start()
    try:
        code = worker_process.run()
    finally:
        if screen is not None:
            screen.stop()
    raise typer.Exit(code)


def _control(command: str, state_dir: Path | None) -> dict[str, Any]:
    from autoswarm.worker.control import send_command
    from autoswarm.worker.settings import DEFAULT_STATE_DIR

    try:
        return send_command((state_dir or DEFAULT_STATE_DIR).expanduser(), command)
    except AutoswarmError as exc:
        print_error(f"{exc}")
        raise typer.Exit(1) from None


@worker_app.command("pause")
def pause(state_dir: Path | None = StateDir) -> None:
    """Lease nothing new; the current experiment runs to its end."""
    console.print(_control("pause", state_dir).get("detail", "paused"))


@worker_app.command("resume")
def resume(state_dir: Path | None = StateDir) -> None:
    """Lease experiments again after a pause."""
    console.print(_control("resume", state_dir).get("detail", "resumed"))


@worker_app.command("finish")
def finish(state_dir: Path | None = StateDir) -> None:
    """Stop after the current experiment."""
    console.print(_control("finish", state_dir).get("detail", "finishing"))


@worker_app.command("status")
def status(
    state_dir: Path | None = StateDir,
    as_json: bool = typer.Option(False, "--json", help="Print the raw status as JSON."),
) -> None:
    """Per slot (GPU or CPU): state, experiment, time left, last result."""
    answer = _control("status", state_dir)
    if as_json:
        console.print_json(data=answer)
        return
    table = Table(title=f"worker {answer.get('name', '')} ({answer.get('state', '?')})")
    for column in ("slot", "state", "experiment", "time left", "last result"):
        table.add_column(column)
    for slot in answer.get("slots", []):
        left = slot.get("time_left_s")
        table.add_row(
            str(slot.get("slot", "")),
            str(slot.get("state", "")),
            str(slot.get("experiment_id") or "—"),
            "—" if left is None else f"{left:.0f} s",
            plain(_last_result(slot.get("last_result"))),
        )
    console.print(table)


def _last_result(last: dict[str, Any] | None) -> str:
    """One line for a slot's last result, e.g. 'ID ok 0.284756 (0.2 s), recorded'."""
    if not last:
        return "—"
    metric = last.get("metric")
    parts = [str(last.get("experiment_id", "")), str(last.get("status", ""))]
    if metric is not None:
        parts.append(f"{metric:.6g}")
    if last.get("wall_s") is not None:
        parts.append(f"({last['wall_s']:.1f} s)")
    line = " ".join(p for p in parts if p)
    if last.get("error"):
        line += f": {last['error']}"
    return f"{line}, {last['delivery']}" if last.get("delivery") else line


def main() -> None:
    """`python -m autoswarm.worker`: this command, with logging set up as `autoswarm` sets it up."""
    configure_logging("INFO")
    worker_app(prog_name="python -m autoswarm.worker")
