"""Reading results from a coordinator: `autoswarm status`, `leaderboard`, `experiments`,
`show`, `export` and `plot`. Each talks to the coordinator's read API over HTTP
(`CoordinatorClient.get_json`) with a read token, or none for a public-read coordinator;
without `--join`, to the data folder's own (`autoswarm.cli.reach`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.console import Group
from rich.live import Live
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from autoswarm.cli import report
from autoswarm.cli.console import console, err_console, plain, print_error
from autoswarm.cli.numbers import decimals_for, fixed, score_text, signed, task_decimals
from autoswarm.cli.reach import DataDirOpt, reach
from autoswarm.shared.client import CoordinatorClient, CoordinatorUnavailable
from autoswarm.shared.errors import AutoswarmError, InvalidInput

PAGE = 500
FORMATS = ("tsv", "csv", "jsonl", "parquet")

Join = typer.Option(
    None,
    "--join",
    envvar="AUTOSWARM_JOIN",
    help="The coordinator's URL (default: the one of the data folder here).",
)
Token = typer.Option(
    None,
    "--token",
    envvar="AUTOSWARM_TOKEN",
    help="A read token (none needed if the coordinator is public-read).",
)
AsJson = typer.Option(False, "--json", help="Print JSON instead of a table.")
TaskOpt = typer.Option(None, "--task", help="The task, by id or folder (default: every task).")
OneTask = typer.Option(
    None, "--task", help="The task, by id or folder (default: the only one there is)."
)


def _run(
    join: str | None,
    token: str | None,
    data_dir: Path,
    action: Callable[[CoordinatorClient], None],
) -> None:
    """Run `action` with a client of the coordinator `reach` finds; an error becomes one
    line and exit code 1."""
    try:
        with (
            reach(join, token, data_dir) as found,
            CoordinatorClient(found.url, found.token, timeout_s=30) as client,
        ):
            action(client)
    except CoordinatorUnavailable as exc:
        where = "pass --join URL" if join else "run this where `autoswarm up` ran"
        print_error(f"cannot reach {exc}: is it running? ({where})")
        raise typer.Exit(1) from None
    except AutoswarmError as exc:
        print_error(str(exc))
        raise typer.Exit(1) from None


def _num(value: Any, digits: int = 6) -> str:
    return "" if value is None else f"{float(value):.{digits}g}"


def _signed(value: Any) -> str:
    return "" if value is None else f"{float(value):+.4g}"


def _when(value: Any) -> str:
    return time.strftime("%H:%M:%S", time.localtime(float(value))) if value else ""


def all_experiments(client: CoordinatorClient, **params: Any) -> Iterator[dict[str, Any]]:
    """Every matching experiment summary, newest first, following the cursor."""
    cursor = None
    while True:
        page = client.get_json(
            "experiments", {**params, "view": "summary", "limit": PAGE, "cursor": cursor}
        )
        yield from page["experiments"]
        cursor = page["next_cursor"]
        if not cursor:
            return


# -- status ------------------------------------------------------------------------------------


def _status_data(client: CoordinatorClient) -> dict[str, Any]:
    tasks = []
    for task in client.get_json("tasks"):
        board = client.get_json(f"tasks/{task['task_id']}/leaderboard")
        recent = client.get_json(
            "experiments", {"task_id": task["task_id"], "view": "summary", "limit": 8}
        )
        tasks.append({"task": task, "leaderboard": board, "recent": recent["experiments"]})
    return {"tasks": tasks, "workers": len(client.get_json("workers"))}


def _status_view(data: dict[str, Any]) -> Group:
    heads = Table(title=f"autoswarm: {data['workers']} workers registered", expand=True)
    for column in (
        "task",
        "hardware class",
        "head",
        "mean ± noise (n)",
        "kept",
        "queued",
        "running",
    ):
        heads.add_column(column)
    recent = Table(title="latest experiments", expand=True)
    for column in ("experiment", "kind", "verdict", "metric", "title", "owner", "finished"):
        recent.add_column(column)
    for entry in data["tasks"]:
        board, counts = entry["leaderboard"], entry["leaderboard"]["counts"]
        for cls in board["classes"]:
            kept = len([c for c in cls["chain"] if c["experiment_id"]])
            heads.add_row(
                board["task_id"],
                cls["hardware"],
                cls["head_commit"][:7],
                score_text(cls["mean"], cls["std"], cls["runs"]),
                str(kept),
                str(counts.get("state:queued", 0)),
                str(counts.get("state:leased", 0)),
            )
        for exp in entry["recent"]:
            recent.add_row(
                exp["experiment_id"],
                exp["kind"],
                exp["verdict"] or exp["state"],
                _num(exp["metric"]),
                plain(exp["title"][:50]),
                plain(exp["owner"] or ""),
                _when(exp["finished_s"]),
            )
    return Group(heads, recent)


def status(
    join: str | None = Join,
    token: str | None = Token,
    data_dir: Path = DataDirOpt,
    as_json: bool = AsJson,
    once: bool = typer.Option(False, "--once", help="Print the table once and exit."),
    interval_s: float = typer.Option(3.0, "--interval", min=0.5, help="Seconds between refreshes."),
) -> None:
    """The swarm at a glance: heads per task and class, what is queued and running, the
    latest experiments; refreshed until Ctrl-C (or once, or as JSON)."""

    def show_status(client: CoordinatorClient) -> None:
        if as_json:
            typer.echo(json.dumps(_status_data(client), indent=2))
            return
        if once:
            console.print(_status_view(_status_data(client)))
            return
        with Live(console=console, refresh_per_second=1) as live:
            while True:
                live.update(_status_view(_status_data(client)))
                time.sleep(interval_s)

    try:
        _run(join, token, data_dir, show_status)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


# -- leaderboard, experiments, show ------------------------------------------------------------


def leaderboard(
    join: str | None = Join,
    token: str | None = Token,
    data_dir: Path = DataDirOpt,
    task: str | None = TaskOpt,
    hardware: str | None = typer.Option(None, "--hardware", help="One hardware class."),
    as_json: bool = AsJson,
) -> None:
    """Per task and hardware class: the head's score with its spread, and the chain of kept
    changes with their deltas."""

    def show_boards(client: CoordinatorClient) -> None:
        every = [t["task_id"] for t in client.get_json("tasks")]
        task_ids = [task_id_of(task)] if task else every
        params = {"hardware": hardware} if hardware else None
        boards = [client.get_json(f"tasks/{t}/leaderboard", params) for t in task_ids]
        if as_json:
            typer.echo(json.dumps(boards, indent=2))
            return
        for board in boards:
            for table in board_tables(board):
                console.print(table)

    _run(join, token, data_dir, show_boards)


def board_tables(board: dict[str, Any]) -> list[Table]:
    """One table per hardware class: its head's score, then its chain of kept changes."""
    tables = []
    for cls in board["classes"]:
        table = Table(
            title=(
                f"{board['task_id']} on {cls['hardware']}: {board['metric']} "
                f"{score_text(cls['mean'], cls['std'], cls['runs'])}"
            )
        )
        for column in ("#", "commit", "change", board["metric"], "delta", "owner"):
            table.add_column(column)
        decimals = decimals_for(cls["std"])
        for i, change in enumerate(cls["chain"]):
            table.add_row(
                str(i),
                change["commit"][:7],
                plain(change["title"]),
                fixed(change["metric"], decimals),
                signed(change["delta"], decimals),
                plain(change["owner"] or ""),
            )
        tables.append(table)
    return tables


def experiments(
    join: str | None = Join,
    token: str | None = Token,
    data_dir: Path = DataDirOpt,
    task: str | None = TaskOpt,
    state: str | None = typer.Option(None, "--status", help="queued, leased, done, dead."),
    kind: str | None = typer.Option(None, "--kind", help="explore, baseline, replicate, merge."),
    verdict: str | None = typer.Option(None, "--verdict", help="kept, discarded, crashed..."),
    result: str | None = typer.Option(None, "--result", help="ok, crash, timeout, invalid."),
    worker: str | None = typer.Option(None, "--worker", help="A worker id."),
    owner: str | None = typer.Option(None, "--owner", help="A worker's owner."),
    hardware: str | None = typer.Option(None, "--hardware", help="A hardware class."),
    proposer: str | None = typer.Option(None, "--proposer", help="mutation, llm, human..."),
    model: str | None = typer.Option(None, "--model", help="An LLM proposer's model."),
    since: float | None = typer.Option(None, "--since", help="Created at or after (unix s)."),
    until: float | None = typer.Option(None, "--until", help="Created at or before (unix s)."),
    sort: str = typer.Option("time", "--sort", help="time (newest first) or score (best)."),
    limit: int = typer.Option(50, "--limit", min=1, max=500, help="How many to list."),
    as_json: bool = AsJson,
) -> None:
    """List experiments, filtered, newest first (or best first with --sort score)."""
    params = {
        "task_id": task_id_of(task) if task else None,
        "status": state,
        "kind": kind,
        "verdict": verdict,
        "result": result,
        "worker_id": worker,
        "owner": owner,
        "hardware": hardware,
        "proposer": proposer,
        "model": model,
        "since": since,
        "until": until,
        "sort": sort,
        "view": "summary",
        "limit": limit,
    }

    def list_them(client: CoordinatorClient) -> None:
        found = client.get_json("experiments", params)["experiments"]
        if as_json:
            typer.echo(json.dumps(found, indent=2))
            return
        table = Table(title=f"{len(found)} experiments")
        for column in ("experiment", "task", "kind", "verdict", "metric", "Δ", "title", "owner"):
            table.add_column(column)
        for exp in found:
            table.add_row(
                exp["experiment_id"],
                exp["task_id"],
                exp["kind"],
                exp["verdict"] or exp["state"],
                _num(exp["metric"]),
                _signed(exp["delta"]) if exp["kind"] != "baseline" else "",
                plain(exp["title"][:60]),
                plain(exp["owner"] or ""),
            )
        console.print(table)

    _run(join, token, data_dir, list_them)


def show(
    experiment_id: str = typer.Argument(..., help="The experiment's id."),
    join: str | None = Join,
    token: str | None = Token,
    data_dir: Path = DataDirOpt,
    as_json: bool = AsJson,
) -> None:
    """One experiment: its hypothesis, result, decision, log tail and diff (in colour)."""

    def show_one(client: CoordinatorClient) -> None:
        exp = client.get_json(f"experiments/{experiment_id}")
        if as_json:
            typer.echo(json.dumps(exp, indent=2))
            return
        hyp = exp.get("hypothesis") or {}
        result = exp.get("result") or {}
        facts = Table.grid(padding=(0, 2))
        for key, value in (
            ("task", exp["task_id"]),
            ("kind", exp["kind"]),
            ("state", exp["state"]),
            ("verdict", exp.get("effective_verdict") or ""),
            ("hardware", exp.get("measured_on") or exp.get("hardware") or ""),
            ("worker", f"{exp.get('worker_id') or ''} ({exp.get('owner') or ''})"),
            ("result", f"{result.get('status', '')} {_num(result.get('metric'))}"),
            ("proposer", f"{hyp.get('proposer', '')} {hyp.get('author', '')}".strip()),
        ):
            facts.add_row(f"[bold]{key}[/bold]", plain(str(value)))
        title = hyp.get("title") or exp["kind"]
        console.print(Panel(facts, title=plain(f"{exp['experiment_id']}: {title}")))
        if hyp.get("rationale"):
            console.print(Panel(plain(hyp["rationale"]), title="rationale"))
        why = exp.get("reason") or exp.get("last_error") or "not decided yet"
        console.print(Panel(plain(why), title="why"))
        if exp.get("diff"):
            diff = plain(exp["diff"]).plain
            console.print(Syntax(diff, "diff", theme="ansi_dark", background_color="default"))
        if result.get("log_tail"):
            console.print(Panel(plain(result["log_tail"].rstrip()), title="log tail"))

    _run(join, token, data_dir, show_one)


# -- export and plot ---------------------------------------------------------------------------


def task_id_of(given: str) -> str:
    """A task's id from `--task`: the id itself, or a task folder (as `up --task` takes)."""
    folder = Path(given)
    if "/" in given or (folder / "task.toml").is_file():
        from autoswarm.shared.task import load_task

        try:
            return load_task(folder).name
        except AutoswarmError as exc:
            raise InvalidInput(f"--task {given}: {exc}") from None
    return given


def one_task(client: CoordinatorClient, given: str | None) -> str:
    """The task `--task` names, else the coordinator's only task."""
    if given:
        return task_id_of(given)
    every = [t["task_id"] for t in client.get_json("tasks")]
    if len(every) != 1:
        named = ", ".join(every) or "none yet"
        raise InvalidInput(f"give --task: this coordinator has {len(every)} tasks ({named})")
    return str(every[0])


def _rows(
    client: CoordinatorClient, task: str, hardware: str | None
) -> tuple[dict[str, Any], list[report.ExperimentRow], int]:
    """The task's spec, its rows, and the decimals its noise justifies."""
    found_task = client.get_json(f"tasks/{task}")
    found = list(all_experiments(client, task_id=task, hardware=hardware))
    decimals = task_decimals(found_task.get("heads", []))
    return found_task["spec"], report.rows_from_summaries(found), decimals


def export(
    task: str | None = OneTask,
    fmt: str = typer.Option("tsv", "--format", help="tsv (results.tsv), csv, jsonl, parquet."),
    output: Path | None = typer.Option(None, "-o", "--output", help="File (default: stdout)."),
    hardware: str | None = typer.Option(None, "--hardware", help="Only one hardware class."),
    join: str | None = Join,
    token: str | None = Token,
    data_dir: Path = DataDirOpt,
) -> None:
    """The task's experiments as karpathy/autoresearch's results.tsv (first five columns
    exactly theirs, the metric named after the task's), then ours; or csv, jsonl, parquet."""
    if fmt not in FORMATS:
        print_error(f"--format must be one of {', '.join(FORMATS)}")
        raise typer.Exit(2)
    if fmt == "parquet" and output is None:
        print_error("--format parquet needs -o FILE")
        raise typer.Exit(2)

    def write(client: CoordinatorClient) -> None:
        spec, rows, decimals = _rows(client, one_task(client, task), hardware)
        metric = spec["metric"]["name"]
        if fmt == "parquet":
            assert output is not None
            report.write_parquet(rows, metric, output)
        else:
            text = {"tsv": report.to_tsv, "csv": report.to_csv, "jsonl": report.to_jsonl}[fmt](
                rows, metric, decimals
            )
            if output is None:
                typer.echo(text, nl=False)
            else:
                output.write_text(text)
        if output is not None:
            err_console.print(f"{len(rows)} experiments written to {output}")

    _run(join, token, data_dir, write)


def plot(
    task: str | None = OneTask,
    output: Path = typer.Option(Path("progress.png"), "-o", "--output", help="The PNG file."),
    hardware: str | None = typer.Option(None, "--hardware", help="One hardware class."),
    join: str | None = Join,
    token: str | None = Token,
    data_dir: Path = DataDirOpt,
) -> None:
    """progress.png as karpathy/autoresearch draws it: every experiment a dot, kept changes
    highlighted and labelled, the running best as a step line."""

    def draw(client: CoordinatorClient) -> None:
        task_id = one_task(client, task)
        classes = [h["hardware"] for h in client.get_json(f"tasks/{task_id}")["heads"]]
        # Scores compare only within a class: one class per picture.
        spec, rows, _ = _rows(client, task_id, hardware or (classes[0] if classes else None))
        lower = spec["metric"]["direction"] == "minimize"
        report.plot_progress(
            rows, metric_name=spec["metric"]["name"], lower_is_better=lower, path=output
        )
        err_console.print(f"{len(rows)} experiments plotted to {output}")

    _run(join, token, data_dir, draw)
