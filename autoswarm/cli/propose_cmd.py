"""`autoswarm propose` and `autoswarm hypothesis add`: ideas into a coordinator's queue."""

from __future__ import annotations

import os
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

import typer

from autoswarm.cli.console import console, err_console
from autoswarm.shared.errors import AutoswarmError
from autoswarm.shared.models import HypothesisCreate

if TYPE_CHECKING:
    from autoswarm.coordinator.proposers.base import Proposer
    from autoswarm.shared.client import CoordinatorClient

hypothesis_app = typer.Typer(help="Submit hypotheses by hand.", no_args_is_help=True)

Join = typer.Option(
    "http://127.0.0.1:8470", "--join", envvar="AUTOSWARM_JOIN", help="The coordinator's URL."
)
Token = typer.Option(None, "--token", envvar="AUTOSWARM_TOKEN", help="A proposer or admin token.")
TokenFile = typer.Option(None, "--token-file", help="A file holding the token.")

# The LLM proposer's options, shared by `propose` and `up`. Per-model options are given once
# (every model) or once per model, in the order of --model then --fallback ('-': none).
ApiBase = typer.Option(
    [],
    "--api-base",
    help="The endpoint of an OpenAI-compatible server (vLLM, Ollama, ...); per model.",
)
ApiKeyEnv = typer.Option(
    [], "--api-key-env", help="The environment variable holding the model's key; per model."
)
PriceIn = typer.Option(
    [], "--price-in", help="USD per million prompt tokens (instead of litellm's price); per model."
)
PriceOut = typer.Option(
    [], "--price-out", help="USD per million answer tokens (instead of litellm's); per model."
)
CapUsd = typer.Option(5.0, "--cap-usd", min=0, help="LLM spend cap for the task, in USD.")
CapTokens = typer.Option(
    2_000_000,
    "--cap-tokens",
    min=0,
    help="Cap on the task's tokens at no known price (a model with no price given).",
)
SecretFile = typer.Option(
    None, "--secret-file", help="KEY=VALUE lines (API keys) loaded into the environment."
)
TimeoutS = typer.Option(120.0, "--llm-timeout-s", min=1, help="Timeout of one LLM call.")
Retries = typer.Option(
    1, "--llm-retries", min=0, help="Retries of a failed LLM call (network, rate limit)."
)
Attempts = typer.Option(
    3, "--llm-attempts", min=1, help="Answers asked for per hypothesis before giving up."
)
Concurrency = typer.Option(
    1, "--llm-concurrency", min=1, max=16, help="LLM proposals made at once."
)
ContextTokens = typer.Option(
    24_000, "--context-tokens", min=2_000, help="The prompt's token budget."
)


@dataclass(frozen=True)
class LLMOptions:
    """The LLM proposer's options, as the command line gives them."""

    models: list[str]
    fallbacks: list[str] = field(default_factory=list)
    api_base: list[str] = field(default_factory=list)
    api_key_env: list[str] = field(default_factory=list)
    price_in: list[str] = field(default_factory=list)
    price_out: list[str] = field(default_factory=list)
    cap_usd: float = 5.0
    cap_tokens: int = 2_000_000
    secret_file: Path | None = None
    ledger: Path = Path("~/.autoswarm/llm-spend.jsonl")
    timeout_s: float = 120.0
    retries: int = 1
    attempts: int = 3
    concurrency: int = 1
    context_tokens: int = 24_000


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
    api_base: list[str] = ApiBase,
    api_key_env: list[str] = ApiKeyEnv,
    price_in: list[str] = PriceIn,
    price_out: list[str] = PriceOut,
    cap_usd: float = CapUsd,
    cap_tokens: int = CapTokens,
    secret_file: Path | None = SecretFile,
    llm_timeout_s: float = TimeoutS,
    llm_retries: int = Retries,
    llm_attempts: int = Attempts,
    llm_concurrency: int = Concurrency,
    context_tokens: int = ContextTokens,
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
    from autoswarm.coordinator.proposers.base import run_proposer_loops
    from autoswarm.shared.client import CoordinatorClient, url_problem

    secret = resolve_token(token, token_file)
    options = LLMOptions(
        model, fallback, api_base, api_key_env, price_in, price_out, cap_usd, cap_tokens,
        secret_file, ledger, llm_timeout_s, llm_retries, llm_attempts, llm_concurrency,
        context_tokens,
    )  # fmt: skip
    chosen = build_proposers(proposer, options, seed)
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
        wire_proposers(chosen, client, stop)
        try:
            sent = run_proposer_loops(
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


def wire_proposers(
    proposers: list[Proposer], client: CoordinatorClient, stop: threading.Event
) -> None:
    """An LLM proposer tells the coordinator what its calls cost (its /metrics), and
    abandons the call in flight when `stop` is set."""
    from autoswarm.coordinator.proposers.llm import LLMProposer

    for proposer in proposers:
        if isinstance(proposer, LLMProposer):
            proposer.report_spend_to(client)
            proposer.abandon_on(stop)


def build_proposers(kind: str, options: LLMOptions, seed: int) -> list[Proposer]:
    """The proposers named on the command line (`--llm-concurrency` of them), or a clear exit."""
    if kind == "optuna":
        from autoswarm.coordinator.proposers.study import StudyProposer

        return [StudyProposer(seed=seed)]
    if kind == "mutation":
        from autoswarm.coordinator.proposers.mutation import MutationProposer

        return [MutationProposer(seed=seed)]
    if kind != "llm":
        err_console.print(
            f"[red]error:[/red] --proposer must be 'optuna', 'mutation' or 'llm', not {kind!r}"
        )
        raise typer.Exit(2)
    if not options.models:
        err_console.print(
            "[red]error:[/red] --proposer llm needs --model, e.g. --model openai/gpt-4o-mini "
            "or --model ollama_chat/qwen2.5-coder"
        )
        raise typer.Exit(2)
    try:
        return _llm_proposers(options)
    except (AutoswarmError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _llm_proposers(options: LLMOptions) -> list[Proposer]:
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    from autoswarm.coordinator.proposers.ledger import FileLedger
    from autoswarm.coordinator.proposers.llm import LLMProposer, load_secret_file
    from autoswarm.coordinator.proposers.llm_client import parse_model_choice, spread, with_endpoint

    if options.secret_file is not None:
        names = load_secret_file(options.secret_file)
        console.print(f"loaded {len(names)} secrets from {options.secret_file}: {', '.join(names)}")
    choices = [parse_model_choice(m) for m in [*options.models, *options.fallbacks]]
    n = len(choices)
    per_model = zip(
        spread(options.api_base, n, "--api-base"),
        spread(options.api_key_env, n, "--api-key-env"),
        spread(options.price_in, n, "--price-in"),
        spread(options.price_out, n, "--price-out"),
        strict=True,
    )
    choices = [
        with_endpoint(c, api_base=b, api_key_env=k, price_in=i, price_out=o)
        for c, (b, k, i, o) in zip(choices, per_model, strict=True)
    ]
    path = options.ledger.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    store = FileLedger(path)
    return [
        LLMProposer(
            choices[: len(options.models)],
            fallbacks=choices[len(options.models) :],
            spend=store,
            journal=store,
            cap_usd=options.cap_usd,
            cap_tokens=options.cap_tokens,
            timeout_s=options.timeout_s,
            num_retries=options.retries,
            max_attempts=options.attempts,
            token_budget=options.context_tokens,
        )
        for _ in range(options.concurrency)
    ]


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
    from autoswarm.shared.client import CoordinatorClient

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
