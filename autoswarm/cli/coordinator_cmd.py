"""`autoswarm coordinator`, and where the admin token is found."""

from __future__ import annotations

from pathlib import Path

import typer
from pydantic import ValidationError

from autoswarm.cli.console import print_error
from autoswarm.shared.errors import AutoswarmError

DataDir = typer.Option(
    None,
    "--data-dir",
    help="Lineage, embedded Redis and admin token (default .autoswarm).",
)


def coordinator(
    host: str | None = typer.Option(None, "--host", help="Address to listen on."),
    port: int | None = typer.Option(None, "--port", help="Port to listen on (default 8470)."),
    data_dir: Path | None = DataDir,
    redis_url: str | None = typer.Option(
        None, "--redis-url", help="Use this Redis (default: start an embedded one)."
    ),
    api_processes: int | None = typer.Option(
        None,
        "--api-processes",
        min=1,
        help="Serve the API from this many processes (default 1); one of them judges.",
    ),
    config: Path | None = typer.Option(None, "--config", help="A TOML file of settings."),
) -> None:
    """Serve the coordinator: HTTP API, dashboard, judge, lineage (Ctrl-C stops it)."""
    from autoswarm.coordinator.service import run_coordinator
    from autoswarm.coordinator.settings import CoordinatorSettings

    try:
        settings = CoordinatorSettings.load(
            config,
            host=host,
            port=port,
            data_dir=data_dir,
            redis_url=redis_url,
            api_processes=api_processes,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(x) for x in first["loc"])
        print_error(f"coordinator setting {field}: {first['msg']}")
        raise typer.Exit(2) from None
    try:
        run_coordinator(settings)
    except AutoswarmError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None


def admin_token(token: str | None, data_dir: Path) -> str:
    """The admin token from the flag, else the one the coordinator keeps in its data folder."""
    if token:
        return token
    path = data_dir / "admin.token"
    try:
        return path.read_text().strip()
    except OSError:
        print_error(
            f"no admin token: give --token, or run this where the coordinator's data folder "
            f"is ({path} is missing)"
        )
        raise typer.Exit(2) from None
