"""`autoswarm task check|run`: inspect a task folder, or run it once on this machine."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from autoswarm.cli.console import console, err_console, plain, print_error
from autoswarm.shared.errors import AutoswarmError, TaskError
from autoswarm.shared.models import Result, ResultStatus
from autoswarm.shared.task import TaskSpec, load_task

task_app = typer.Typer(help="Check or run a task folder.", no_args_is_help=True)

TaskPath = typer.Argument(..., help="A task folder (task.toml, or the autoresearch layout).")


def load_or_exit(path: Path) -> TaskSpec:
    """Load a task, or print the one clear error and exit 2."""
    try:
        return load_task(path)
    except TaskError as exc:
        print_error(f"bad task folder {path}: {exc}")
        raise typer.Exit(2) from None


@task_app.command("check")
def check(
    path: Path = TaskPath,
    as_json: bool = typer.Option(False, "--json", help="Print the resolved spec as JSON."),
) -> None:
    """Print a task's resolved specification, what it resolved and why, and what this machine
    cannot provide for it; or the error that stops it loading."""
    from autoswarm.cli.task_explain import explain_task
    from autoswarm.worker.hardware import detect_hardware

    spec = load_or_exit(path)
    if as_json:
        console.print_json(spec.model_dump_json())
        return
    table = Table(title=f"task {spec.name}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    for key, value in spec.model_dump(mode="json").items():
        shown = json.dumps(value) if isinstance(value, dict | list) else str(value)
        table.add_row(key, shown)
    console.print(table)
    try:
        explained = explain_task(path, spec, has_cuda=lambda: bool(detect_hardware().gpus))
    except TaskError as exc:
        print_error(f"bad task folder {path}: {exc}")
        raise typer.Exit(2) from None
    for name, value, why in explained.rows:
        console.print(f"{name}: {plain(value)}  [dim]({plain(why)})[/dim]")
    for warning in explained.warnings:
        err_console.print(f"[yellow]warning:[/yellow] {plain(warning)}")


@task_app.command("run")
def run(
    path: Path = TaskPath,
    budget: float | None = typer.Option(
        None, "--budget", min=1, help="Training budget in seconds (default: the task's)."
    ),
    trust: str = typer.Option(
        "auto",
        "--trust",
        help=(
            "sandboxed: refuse unless bubblewrap works; trusted-code: run without a sandbox; "
            "auto: sandbox when bubblewrap works, else run as trusted with a warning."
        ),
    ),
    work_dir: Path = typer.Option(
        Path.home() / ".autoswarm" / "local",
        "--work-dir",
        help="Where work folders and the prepare cache live.",
    ),
    keep: bool = typer.Option(False, "--keep", help="Keep the work folder for inspection."),
) -> None:
    """Run a task once on this machine and print its result and summary block."""
    from autoswarm.cli.local import local_heldout_secret, make_local_runner

    spec = load_or_exit(path)
    try:
        runner = make_local_runner(work_dir, trust=trust, keep_work=keep)
        secret = local_heldout_secret(work_dir, spec.name)
        with console.status(f"preparing {spec.name} (once per task version)"):
            runner.preparer.prepare(path, spec, heldout_secret=secret)
        budget_s = budget or spec.budget_s
        with console.status(f"running {spec.name} for {budget_s:.0f} s") as status:

            def tick(elapsed_s: float) -> None:
                status.update(f"running {spec.name}: {elapsed_s:.0f} s of {budget_s:.0f} s")

            result = runner.run(path, spec, budget_s=budget, on_tick=tick, heldout_secret=secret)
    except AutoswarmError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None
    print_result(spec, result)
    if result.status is not ResultStatus.OK:
        raise typer.Exit(1)


def print_result(spec: TaskSpec, result: Result) -> None:
    """A result as a table, then its summary block as the run printed it."""
    colour = "green" if result.status is ResultStatus.OK else "red"
    table = Table(title=f"{spec.name}: [{colour}]{result.status}[/{colour}]", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    metric = "—" if result.metric is None else f"{result.metric:.6f}"
    table.add_row(spec.metric.name, metric)
    table.add_row("wall_s", f"{result.wall_s:.1f}")
    if result.training_s is not None:
        table.add_row("training_s", f"{result.training_s:.1f}")
    if result.peak_rss_mb is not None:
        table.add_row("peak_rss_mb", f"{result.peak_rss_mb:.0f}")
    if result.peak_vram_mb is not None:
        table.add_row("peak_vram_mb", f"{result.peak_vram_mb:.0f}")
    if result.exit_code is not None:
        table.add_row("exit_code", str(result.exit_code))
    if result.error:
        table.add_row("error", plain(result.error))
    if result.hardware:
        table.add_row("hardware", plain(result.hardware))
    console.print(table)
    block = summary_block(result.log_tail)
    if block:
        console.print(plain(block))
    elif result.status is not ResultStatus.OK:
        console.print(plain(result.log_tail[-2000:]))


def summary_block(log: str) -> str:
    """The last `---` block of a log, as printed."""
    lines = log.splitlines()
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].strip() == "---":
            return "\n".join(lines[i:])
    return ""


@task_app.command("register")
def register(
    path: Path = TaskPath,
    join: str = typer.Option(
        "http://127.0.0.1:8470", "--join", envvar="AUTOSWARM_JOIN", help="The coordinator's URL."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="AUTOSWARM_ADMIN_TOKEN", help="An admin token."
    ),
    data_dir: Path = typer.Option(
        Path(".autoswarm"), "--data-dir", help="Where to find admin.token when --token is absent."
    ),
) -> None:
    """Register a task folder with a coordinator (idempotent for the same files)."""
    from autoswarm.cli.coordinator_cmd import admin_token
    from autoswarm.shared.client import CoordinatorClient
    from autoswarm.shared.task import read_task_files

    spec = load_or_exit(path)
    try:
        with CoordinatorClient(join, admin_token(token, data_dir)) as client:
            answer = client.register_task(read_task_files(path, spec))
    except AutoswarmError as exc:
        print_error(f"{exc}")
        raise typer.Exit(1) from None
    console.print(f"task {answer['task_id']} registered")
