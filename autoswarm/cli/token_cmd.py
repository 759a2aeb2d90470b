"""`autoswarm token create | list | revoke`: an operator's tokens, against the coordinator
`--join` names, else the one serving the data folder here (admin token from the folder)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import typer
from rich.table import Table

from autoswarm.cli.console import console, plain, print_error
from autoswarm.cli.coordinator_cmd import admin_token
from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import AutoswarmError
from autoswarm.shared.models import Scope

token_app = typer.Typer(
    help="Create, list and revoke tokens for workers, proposers and readers.",
    no_args_is_help=True,
)

DEFAULT_JOIN = "http://127.0.0.1:8470"

Join = typer.Option(
    None,
    "--join",
    envvar="AUTOSWARM_JOIN",
    help="The coordinator's URL (default: the one serving the data folder here, else :8470).",
)
AdminToken = typer.Option(None, "--token", envvar="AUTOSWARM_ADMIN_TOKEN", help="An admin token.")
DataDir = typer.Option(
    Path(".autoswarm"), "--data-dir", help="Where to find admin.token when --token is absent."
)


def _with_admin(
    join: str | None, token: str | None, data_dir: Path, action: Callable[[CoordinatorClient], None]
) -> None:
    from autoswarm.coordinator.address import read_address

    url = join or read_address(data_dir) or DEFAULT_JOIN
    try:
        with CoordinatorClient(url, admin_token(token, data_dir)) as client:
            action(client)
    except AutoswarmError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None


@token_app.command("create")
def create(
    scope: Scope = typer.Option(..., "--scope", help="admin, worker, proposer or read."),
    name: str = typer.Option(..., "--name", help="Who the token is for (credit goes here)."),
    join: str | None = Join,
    token: str | None = AdminToken,
    data_dir: Path = DataDir,
) -> None:
    """Create a token; it is printed once and stored only as a hash."""

    def make(client: CoordinatorClient) -> None:
        console.print(client.create_token(scope.value, name), markup=False, highlight=False)

    _with_admin(join, token, data_dir, make)


@token_app.command("list")
def list_tokens(
    join: str | None = Join,
    token: str | None = AdminToken,
    data_dir: Path = DataDir,
) -> None:
    """Every token: its id (for `revoke`), scope, name, when it was made, its workers."""

    def show(client: CoordinatorClient) -> None:
        found = client.get_json("tokens")
        table = Table(title=f"{len(found)} tokens")
        for column in ("id", "scope", "name", "created", "workers"):
            table.add_column(column)
        for entry in found:
            made = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(float(entry["created_s"])))
            table.add_row(
                entry["token_id"], entry["scope"], plain(entry["name"]), made, str(entry["workers"])
            )
        console.print(table)

    _with_admin(join, token, data_dir, show)


@token_app.command("revoke")
def revoke(
    token_id: str = typer.Argument(..., help="The token's id as `token list` shows it."),
    join: str | None = Join,
    token: str | None = AdminToken,
    data_dir: Path = DataDir,
) -> None:
    """Revoke a token: refused from now on; its workers' leases go back to the queue."""

    def drop(client: CoordinatorClient) -> None:
        answer = client.revoke_token(token_id)
        back = len(answer["handed_back"])
        console.print(
            f"token {answer['token_id']} revoked; leases handed back to the queue: {back}"
        )

    _with_admin(join, token, data_dir, drop)
