"""The `autoswarm` command: one typer app; each group lives in its own module."""

from __future__ import annotations

import typer

from autoswarm import __version__
from autoswarm.cli.console import console
from autoswarm.cli.coordinator_cmd import coordinator
from autoswarm.cli.dashboard_cmd import dashboard
from autoswarm.cli.doctor_cmd import doctor
from autoswarm.cli.propose_cmd import hypothesis_app, propose
from autoswarm.cli.ray_cmd import ray_workers
from autoswarm.cli.results_cmd import experiments, export, leaderboard, plot, show, status
from autoswarm.cli.task_cmd import task_app
from autoswarm.cli.token_cmd import token_app
from autoswarm.cli.up_cmd import up
from autoswarm.cli.worker_cmd import worker_app

app = typer.Typer(
    name="autoswarm",
    help=(
        "AutoResearch as a research community: workers run budgeted experiments, "
        "a coordinator keeps what beats the noise, one git lineage records it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.command("up")(up)
app.command("coordinator")(coordinator)
app.command("ray-workers")(ray_workers)
app.add_typer(task_app, name="task")
app.add_typer(token_app, name="token")
app.add_typer(worker_app, name="worker")
app.add_typer(hypothesis_app, name="hypothesis")
app.command("propose")(propose)
app.command("doctor")(doctor)
app.command("status")(status)
app.command("leaderboard")(leaderboard)
app.command("experiments")(experiments)
app.command("show")(show)
app.command("export")(export)
app.command("plot")(plot)
app.command("dashboard")(dashboard)


def _version(value: bool) -> None:
    if value:
        console.print(f"autoswarm {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", help="Print the version and exit.", callback=_version, is_eager=True
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Log debug detail."),
) -> None:
    """autoswarm: many machines, one research program, one lineage."""
    from autoswarm.shared.logs import configure_logging

    configure_logging("DEBUG" if verbose else "INFO")
