"""`autoswarm doctor`: is this machine ready to contribute, and if not, what to fix."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from autoswarm.cli.console import console


def doctor(
    join: str | None = typer.Option(
        None, "--join", help="Also check this coordinator: reachable, and its clock skew."
    ),
    token: str | None = typer.Option(
        None, "--token", envvar="AUTOSWARM_TOKEN", help="With --join: also check this token."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the checks as JSON."),
    trust: str = typer.Option(
        "sandboxed", "--trust", help="The trust mode the worker would run with."
    ),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="The folder whose free disk space is checked (default HOME)."
    ),
) -> None:
    """Check Python, torch, CUDA and each GPU, the sandbox (for real), disk and coordinator."""
    from autoswarm.worker.doctor import Check, Status, exit_code, run_checks
    from autoswarm.worker.token_check import token_refused

    with console.status("checking this machine (the sandbox self-test starts a sandbox)"):
        checks = run_checks(join, work_dir=work_dir, trust=trust)
        if join and token:
            refused = token_refused(join, token)
            checks.append(
                Check("token", Status.OK, "the coordinator knows this token")
                if refused is None
                else Check("token", Status.FAIL, f"refused ({refused}): check --token")
            )
    if as_json:
        typer.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        colours = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}
        table = Table(title="autoswarm doctor")
        table.add_column("check")
        table.add_column("status")
        table.add_column("detail", overflow="fold")
        for check in checks:
            colour = colours[check.status]
            table.add_row(check.name, f"[{colour}]{check.status}[/{colour}]", check.detail)
        console.print(table)
    raise typer.Exit(exit_code(checks))
