"""`autoswarm dashboard`: reopen a data folder's results in the browser after `up` ended."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType

import typer

from autoswarm.cli.console import console, print_error
from autoswarm.cli.reach import DataDirOpt, holds_results, open_folder
from autoswarm.shared.errors import AutoswarmError


def dashboard(
    data_dir: Path = DataDirOpt,
    port: int | None = typer.Option(None, "--port", help="Port to serve on (default: a free one)."),
) -> None:
    """Serve the data folder's results read-only on this machine, print the dashboard's URL,
    and keep serving until Ctrl-C (if a coordinator already serves the folder, print its)."""
    from autoswarm.coordinator.address import read_address

    running = read_address(data_dir)
    if running is not None:
        console.print(f"dashboard: [link]{running}/[/link] (already served; nothing started)")
        return
    if not holds_results(data_dir):
        print_error(
            f"{data_dir} holds no results: run this where `autoswarm up` ran, or give --data-dir"
        )
        raise typer.Exit(1)
    stop = threading.Event()
    previous = {
        signum: signal.signal(signum, _setter(stop)) for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        with open_folder(data_dir, port) as url:
            console.print(
                f"dashboard: [link]{url}/[/link] (read-only: {data_dir}; API under "
                f"{url}/api/v1)\nCtrl-C stops",
                soft_wrap=True,
            )
            stop.wait()
            console.print("stopping")
    except AutoswarmError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _setter(stop: threading.Event) -> Callable[[int, FrameType | None], None]:
    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    return on_signal
