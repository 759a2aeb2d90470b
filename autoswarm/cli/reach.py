"""Which coordinator a command talks to: the one `--join` names; else the one serving the
data folder here (`.autoswarm`, as `up` and `coordinator` leave it); else, when that folder
holds results but nothing serves it (`up` has ended), a read-only coordinator this command
starts on it for as long as it runs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import typer

from autoswarm.shared.errors import AutoswarmError

DEFAULT_DATA_DIR = Path(".autoswarm")
# What a coordinator opened for one command says while it starts and stops: warnings only.
QUIET_LOGGERS = ("autoswarm.coordinator", "uvicorn", "uvicorn.error")

DataDirOpt = typer.Option(
    DEFAULT_DATA_DIR,
    "--data-dir",
    help="Without --join: the data folder whose coordinator to read (default .autoswarm).",
)


@dataclass(frozen=True)
class Reached:
    """A coordinator's URL and the token to send it ("" for none)."""

    url: str
    token: str
    opened_here: bool = False


def holds_results(data_dir: Path) -> bool:
    """Whether `data_dir` is a coordinator's data folder (its Redis data, its lineage)."""
    return (data_dir / "redis").is_dir() or (data_dir / "lineage").is_dir()


def folder_token(data_dir: Path) -> str:
    """The admin token kept in the data folder, or "" if it cannot be read here."""
    try:
        return (data_dir / "admin.token").read_text().strip()
    except OSError:
        return ""


@contextmanager
def reach(join: str | None, token: str | None, data_dir: Path) -> Iterator[Reached]:
    """The coordinator to talk to (see the module's docstring); AutoswarmError if none."""
    from autoswarm.coordinator.address import read_address

    if join:
        yield Reached(join, token or "")
        return
    url = read_address(data_dir)
    if url is not None:
        yield Reached(url, token or folder_token(data_dir))
        return
    if not holds_results(data_dir):
        raise AutoswarmError(
            f"no coordinator to read: nothing serves {data_dir} and it holds no results; "
            "run this where `autoswarm up` ran, or pass --join URL"
        )
    with open_folder(data_dir) as url:
        yield Reached(url, "", opened_here=True)


@contextmanager
def open_folder(data_dir: Path, port: int | None = None) -> Iterator[str]:
    """Serve `data_dir` read-only on loopback (public read: the dashboard needs no token)
    until the block ends; its URL."""
    from autoswarm.coordinator.address import check_port, free_port
    from autoswarm.coordinator.service import serve_in_thread
    from autoswarm.coordinator.settings import CoordinatorSettings

    if port is not None:
        check_port("127.0.0.1", port)
    settings = CoordinatorSettings.load(
        None,
        data_dir=data_dir,
        host="127.0.0.1",
        port=port or free_port(),
        public_read=True,
        read_only=True,
    )
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        try:
            served = serve_in_thread(settings)
        except RuntimeError as exc:
            raise AutoswarmError(f"{data_dir} could not be opened: {exc}") from None
        try:
            yield served.url
        finally:
            served.stop()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
