"""`autoswarm up`: the typer command in front of `autoswarm.cli.up`."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from autoswarm.cli.console import print_error
from autoswarm.cli.propose_cmd import (
    ApiBase,
    ApiKeyEnv,
    Attempts,
    CapTokens,
    CapUsd,
    Concurrency,
    ContextTokens,
    LLMOptions,
    PriceIn,
    PriceOut,
    Retries,
    SecretFile,
    TimeoutS,
    build_proposers,
)
from autoswarm.cli.task_cmd import load_or_exit
from autoswarm.shared.errors import AutoswarmError

TRUST_CHOICES = ("auto", "sandboxed", "trusted-code")

DEFAULT_TASK = Path(__file__).resolve().parents[2] / "tasks" / "tinylm"


def up(
    task: Path = typer.Option(DEFAULT_TASK, "--task", help="The task folder (default: tinylm)."),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        max=64,
        help="Local worker processes (default: one per `resources.cpus` cores of the task).",
    ),
    proposer: str = typer.Option(
        "mutation", "--proposer", help="'mutation' or 'optuna' (offline, no key), or 'llm'."
    ),
    model: list[str] = typer.Option(
        [], "--model", help="For --proposer llm: a litellm model string; repeatable."
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
    trust: str = typer.Option(
        "auto",
        "--trust",
        help="auto | sandboxed | trusted-code (auto: sandbox when bubblewrap works).",
    ),
    data_dir: Path = typer.Option(
        Path(".autoswarm"), "--data-dir", help="Lineage, Redis data, logs, worker state."
    ),
    port: int | None = typer.Option(None, "--port", help="Coordinator port (default: a free one)."),
    out_dir: Path = typer.Option(
        Path("."), "--out", help="Where results.tsv and progress.png are written."
    ),
    max_experiments: int | None = typer.Option(
        None,
        "--max-experiments",
        min=1,
        help="Propose this many hypotheses, then stop once this run has judged as many.",
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the offline proposer."),
) -> None:
    """Run the AutoResearch loop here: coordinator, workers, proposer, live table, dashboard."""
    from autoswarm.cli.up import default_workers, run_up

    if trust not in TRUST_CHOICES:  # checked before anything starts: the workers would die
        raise typer.BadParameter(
            f"{trust!r} is not one of {', '.join(TRUST_CHOICES)}", param_hint="--trust"
        )
    spec = load_or_exit(task)
    options = LLMOptions(
        model, [], api_base, api_key_env, price_in, price_out, cap_usd, cap_tokens, secret_file,
        data_dir / "llm-spend.jsonl", llm_timeout_s, llm_retries, llm_attempts, llm_concurrency,
        context_tokens,
    )  # fmt: skip
    chosen = build_proposers(proposer, options, seed)
    _log_to_file(data_dir / "logs" / "up.log")
    try:
        code = run_up(
            task,
            spec,
            workers=workers or default_workers(spec),
            proposers=chosen,
            proposer_kind=proposer,
            trust=trust,
            data_dir=data_dir,
            port=port,
            out_dir=out_dir,
            max_experiments=max_experiments,
        )
    except AutoswarmError as exc:
        print_error(f"{exc}")
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _log_to_file(path: Path) -> None:
    """The live table owns the terminal; the coordinator and proposer log to a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    from autoswarm.shared.logs import JsonFormatter

    handler = logging.FileHandler(path)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers.clear()
    root.addHandler(handler)
