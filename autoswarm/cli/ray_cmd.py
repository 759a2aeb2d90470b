"""`autoswarm ray-workers`: one worker actor per slot on an existing Ray cluster."""

from __future__ import annotations

import typer

from autoswarm.cli.console import print_error
from autoswarm.shared.errors import AutoswarmError


def ray_workers(
    join: str = typer.Option(..., "--join", envvar="AUTOSWARM_JOIN", help="The coordinator's URL."),
    token: str = typer.Option(..., "--token", envvar="AUTOSWARM_TOKEN", help="A worker token."),
    address: str | None = typer.Option(
        None, "--address", help="The Ray cluster ('auto', ray://host:10001); none: a local one."
    ),
    num_workers: str = typer.Option(
        "1", "--num-workers", help="Worker actors, or 'auto' to follow the queue depth."
    ),
    gpus_per_worker: float = typer.Option(0.0, "--gpus-per-worker", min=0, help="GPUs per actor."),
    cpus_per_worker: float = typer.Option(1.0, "--cpus-per-worker", min=0, help="CPUs per actor."),
    min_workers: int = typer.Option(0, "--min-workers", min=0, help="Floor for 'auto'."),
    max_workers: int = typer.Option(16, "--max-workers", min=1, help="Ceiling for 'auto'."),
    read_token: str | None = typer.Option(
        None, "--read-token", envvar="AUTOSWARM_READ_TOKEN", help="For 'auto': reads the queue."
    ),
    trust: str | None = typer.Option(
        None, "--trust", help="'sandboxed' (default) or 'trusted-code' (your own cluster's code)."
    ),
    name: str = typer.Option("ray", "--name", help="Prefix of the actors' worker names."),
) -> None:
    """Run the worker loop in Ray actors (Ray schedules; the sandbox stays the trust boundary)."""
    from autoswarm.worker.ray_launcher import launch_ray_workers

    count: int | str = num_workers
    if num_workers != "auto":
        try:
            count = int(num_workers)
        except ValueError:
            print_error("--num-workers takes a number or 'auto'")
            raise typer.Exit(2) from None
    if trust not in (None, "sandboxed", "trusted-code"):
        print_error("--trust is 'sandboxed' or 'trusted-code'")
        raise typer.Exit(2)
    try:
        code = launch_ray_workers(
            address=address,
            join=join,
            token=token,
            num_workers=count,  # type: ignore[arg-type]
            gpus_per_worker=gpus_per_worker,
            cpus_per_worker=cpus_per_worker,
            trust=trust,  # type: ignore[arg-type]
            min_workers=min_workers,
            max_workers=max_workers,
            read_token=read_token,
            name=name,
        )
    except AutoswarmError as exc:
        print_error(f"{exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)
