"""`autoswarm propose` and `autoswarm hypothesis add`: ideas into a coordinator's queue."""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from autoswarm.console import console, err_console
from shared.errors import AutoswarmError
from shared.models import HypothesisCreate

if TYPE_CHECKING:
    from coordinator.proposers.base import Proposer
    from shared.client import CoordinatorClient

hypothesis_app = typer.Typer(help="Submit hypotheses by hand.", no_args_is_help=True)

Join = typer.Option(
    "http://127.0.0.1:8470", "--join", envvar="AUTOSWARM_JOIN", help="The coordinator's URL."
)
Token = typer.Option(None, "--token", envvar="AUTOSWARM_TOKEN", help="A proposer or admin token.")
TokenFile = typer.Option(None, "--token-file", help="A file holding the token.")


def resolve_token(token: str | None, token_file: Path | None) -> str:
    """The token from the flag, the environment or a file; exits 2 when there is none."""
    if token:
        return token
    if token_file is not None:
        try:
            return token_file.expanduser().read_text().strip()
        except OSError as exc:
            err_console.print(f"[red]error:[/red] cannot read --token-file: {exc}")
            raise typer.Exit(2) from None
    err_console.print(
        "[red]error:[/red] no token: give --token, --token-file or AUTOSWARM_TOKEN "
        "(create one with `autoswarm token create --scope proposer --name NAME`)"
    )
    raise typer.Exit(2)


def propose(
    task: str = typer.Option(..., "--task", help="The task id to propose for."),
    proposer: str = typer.Option(
        "mutation", "--proposer", help="'mutation' or 'optuna' (offline, no key), or 'llm'."
    ),
    model: list[str] = typer.Option(
        [], "--model", help="A litellm model string, optionally MODEL=WEIGHT; repeatable."
    ),
    fallback: list[str] = typer.Option(
        [], "--fallback", help="A model tried when the others fail; repeatable."
    ),
    cap_usd: float = typer.Option(5.0, "--cap-usd", min=0, help="Spend cap for this task."),
    secret_file: Path | None = typer.Option(
        None, "--secret-file", help="KEY=VALUE lines (API keys) loaded into the environment."
    ),
    ledger: Path = typer.Option(
        Path("~/.autoswarm/llm-spend.jsonl"), "--ledger", help="The spend ledger and journal."
    ),
    queue_ahead: int = typer.Option(2, "--queue-ahead", min=1, help="Queue depth to keep."),
    seed: int = typer.Option(0, "--seed", help="Seed of the offline proposer."),
    max_hypotheses: int | None = typer.Option(
        None, "--max-hypotheses", min=1, help="Stop after this many."
    ),
    join: str = Join,
    token: str | None = Token,
    token_file: Path | None = TokenFile,
) -> None:
    """Keep a task's queue a few experiments ahead of the workers with new hypotheses."""
    from coordinator.proposers.base import run_proposer_loop
    from shared.client import CoordinatorClient, url_problem

    secret = resolve_token(token, token_file)
    chosen: Proposer = build_proposer(proposer, model, fallback, cap_usd, secret_file, ledger, seed)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    problem = url_problem(join)
    if problem:
        err_console.print(f"[red]error:[/red] --join: {problem}")
        raise typer.Exit(2)
    with CoordinatorClient(join, secret) as client:
        report_spend(chosen, client)
        try:
            sent = run_proposer_loop(
                client,
                task,
                chosen,
                queue_ahead=queue_ahead,
                stop=stop,
                max_hypotheses=max_hypotheses,
            )
        except AutoswarmError as exc:
            err_console.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
    console.print(f"submitted {sent} hypotheses to task {task}")


def report_spend(proposer: Proposer, client: CoordinatorClient) -> None:
    """An LLM proposer also tells the coordinator what its calls cost (its /metrics)."""
    from coordinator.proposers.llm import LLMProposer

    if isinstance(proposer, LLMProposer):
        proposer.report_spend_to(client)


def build_proposer(
    kind: str,
    models: list[str],
    fallbacks: list[str],
    cap_usd: float,
    secret_file: Path | None,
    ledger: Path,
    seed: int,
) -> Proposer:
    """The proposer named on the command line, or a clear exit."""
    if kind == "optuna":
        from coordinator.proposers.study import StudyProposer

        return StudyProposer(seed=seed)
    if kind == "mutation":
        from coordinator.proposers.mutation import MutationProposer

        return MutationProposer(seed=seed)
    if kind != "llm":
        err_console.print(
            f"[red]error:[/red] --proposer must be 'optuna', 'mutation' or 'llm', not {kind!r}"
        )
        raise typer.Exit(2)
    if not models:
        err_console.print(
            "[red]error:[/red] --proposer llm needs --model, e.g. --model openai/gpt-4o-mini "
            "or --model ollama_chat/qwen2.5-coder"
        )
        raise typer.Exit(2)
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from coordinator.proposers.ledger import FileLedger
    from coordinator.proposers.llm import LLMProposer, load_secret_file, parse_model_choice

    if secret_file is not None:
        names = load_secret_file(secret_file)
        console.print(f"loaded {len(names)} secrets from {secret_file}: {', '.join(names)}")
    path = ledger.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    store = FileLedger(path)
    return LLMProposer(
        [parse_model_choice(m) for m in models],
        fallbacks=[parse_model_choice(m) for m in fallbacks],
        spend=store,
        journal=store,
        cap_usd=cap_usd,
    )


@hypothesis_app.command("add")
def add(
    task: str = typer.Option(..., "--task", help="The task id."),
    title: str = typer.Option(..., "--title", help="The idea in a line."),
    rationale: str = typer.Option("", "--rationale", help="Why it should help."),
    file: list[Path] = typer.Option(
        [], "--file", help="A changed editable file (its name in the task is its file name)."
    ),
    author: str = typer.Option(
        os.environ.get("USER", "human"), "--author", help="Who gets the credit."
    ),
    join: str = Join,
    token: str | None = Token,
    token_file: Path | None = TokenFile,
) -> None:
    """Submit a hypothesis: text only (an LLM proposer implements it) or with changed files."""
    from shared.client import CoordinatorClient

    change: dict[str, str] | None = None
    if file:
        change = {}
        for path in file:
            try:
                change[path.name] = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                err_console.print(f"[red]error:[/red] cannot read {path}: {exc}")
                raise typer.Exit(2) from None
    try:
        hypothesis = HypothesisCreate(
            task_id=task,
            title=title,
            rationale=rationale,
            change=change,
            proposer="human",
            author=author,
        )
        with CoordinatorClient(join, resolve_token(token, token_file)) as client:
            answer = client.submit_hypothesis(hypothesis)
    except (AutoswarmError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(1) from None
    if answer.get("duplicate"):
        console.print("[yellow]that code was already tried[/yellow]; nothing queued")
    else:
        console.print_json(data=answer)
