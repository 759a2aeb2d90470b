"""The LLM proposer: hypotheses from any litellm model, validated before they are submitted.

litellm itself is behind `autoswarm.coordinator.proposers.llm_client` (imported only when a proposer
is built). Each model may have its own endpoint (`--api-base`) and key variable
(`--api-key-env`); a model with neither a key nor an endpoint is refused when the proposer is
built, before any call.

What `propose` guarantees: a hypothesis it returns changes only editable files, parses, fits
the size limit, and is neither the head, nor code in the history or in flight, nor code this
proposer returned before. Each answer that fails a check, and each answer that is not a
usable chat completion at all (no choices, no message, no content, HTML, truncated JSON), is
rejected and asked again, at most `max_attempts` calls per hypothesis; then it gives up with
`None` and a logged reason. A call abandoned by `abandon_on`'s event raises `CallAbandoned`.

Spend: every call is recorded in the spend ledger with its tokens (the endpoint's count, else
ours) and its dollars (the researcher's price, else litellm's price list, else $0) and the
title it produced. Before each call, the task's dollars plus the call's dearest estimate (its
prompt and `max_output_tokens`) must stay within `cap_usd`, and, when any model has no known
price, the tokens spent at no price plus the call's must stay within `cap_tokens`; otherwise
it raises `SpendCapReached` and makes no call.

What it does not do: submit (the proposer loop does), run code, or count a call abandoned in
flight (the endpoint may still bill it).
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from autoswarm.coordinator.proposers.context import (
    REPAIR_PREFIX,
    RepairJob,
    build_prompt,
    choose_repair,
    clip_diff,
    extra_text,
    render,
)
from autoswarm.coordinator.proposers.edits import (
    Rejection,
    apply_edits,
    change_hashes,
    parse_answer,
    repeat_reason,
)
from autoswarm.coordinator.proposers.ledger import (
    JournalStore,
    MemoryLedger,
    ReportingLedger,
    SpendClient,
    SpendLedger,
)
from autoswarm.coordinator.proposers.llm_client import (
    PRIMARY_GROUP,
    CallAbandoned,
    LLMClient,
    LLMRefused,
    LLMUnavailable,
    Malformed,
    ModelChoice,
    Reply,
    check_endpoint,
    parse_model_choice,
)
from autoswarm.shared.errors import InvalidInput, SpendCapReached
from autoswarm.shared.models import (
    MAX_FILE_BYTES,
    MAX_RATIONALE_CHARS,
    MAX_TITLE_CHARS,
    HypothesisCreate,
    ProposerContext,
)

__all__ = [
    "PRIMARY_GROUP",
    "CallAbandoned",
    "LLMProposer",
    "LLMRefused",
    "LLMUnavailable",
    "ModelChoice",
    "load_secret_file",
    "parse_model_choice",
]

logger = logging.getLogger(__name__)

# A rejected answer is echoed back to the model; past this it is cut (it is the model's own).
MAX_ECHO_CHARS = 16_000
# The default of --cap-tokens: tokens at no known price (about $2 at $1 per million).
DEFAULT_CAP_TOKENS = 2_000_000
# A repair prompt quotes at most this much of the diff that crashed.
MAX_REPAIR_DIFF_LINES = 60

MockResponse = str | Exception


class TextHypothesis(Protocol):
    """A hypothesis with words and no code yet (a human's `HypothesisCreate` with no change)."""

    @property
    def title(self) -> str: ...

    @property
    def rationale(self) -> str: ...

    @property
    def author(self) -> str: ...


@dataclass(frozen=True)
class _Pending:
    title: str
    rationale: str
    author: str


@dataclass(frozen=True)
class _Job:
    """What to ask the model for, and what the hypothesis keeps whatever the model says."""

    instruction: str
    title: str | None = None  # None: the model's title
    rationale_prefix: str = ""
    author: str = ""


def load_secret_file(path: str | Path) -> list[str]:
    """Put a file's KEY=VALUE lines into the environment; returns the names, never values.

    Blank lines and `#` comments are skipped; values in the file replace the environment's.
    """
    names = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.removeprefix("export ").partition("=")
        if not sep or not key.strip().isidentifier():
            raise InvalidInput(f"{path}: line {number} is not KEY=VALUE")
        os.environ[key.strip()] = value.strip().strip("'\"")
        names.append(key.strip())
    return names


class LLMProposer:
    """Proposes hypotheses with a language model: new ideas, repairs, humans' ideas (see module)."""

    def __init__(
        self,
        models: Sequence[ModelChoice],
        *,
        spend: SpendLedger,
        cap_usd: float,
        cap_tokens: int = DEFAULT_CAP_TOKENS,
        fallbacks: Sequence[ModelChoice] = (),
        journal: JournalStore | None = None,
        max_attempts: int = 3,
        token_budget: int = 24_000,
        max_output_tokens: int = 4_096,
        max_repairs: int = 2,
        num_retries: int = 1,
        timeout_s: float = 120.0,
        temperature: float | None = None,
        max_file_bytes: int = MAX_FILE_BYTES,
        mock_response: MockResponse | Sequence[MockResponse] | None = None,
    ) -> None:
        if not models:
            raise InvalidInput("the LLM proposer needs at least one model")
        if max_attempts < 1 or cap_usd < 0 or cap_tokens < 0:
            raise InvalidInput("max_attempts must be at least 1 and the caps not negative")
        if mock_response is None:
            for choice in (*models, *fallbacks):
                check_endpoint(choice)
        self.client = LLMClient(models, fallbacks, num_retries=num_retries, timeout_s=timeout_s)
        self.models = self.client.models
        self.fallbacks = self.client.fallbacks
        self.name = f"llm:{self.models[0].model}"
        self.spend: SpendLedger = spend
        self.journal = journal if journal is not None else MemoryLedger()
        self.cap_usd = cap_usd
        self.cap_tokens = cap_tokens
        self.max_attempts = max_attempts
        self.token_budget = token_budget
        self.max_output_tokens = max_output_tokens
        self.max_repairs = max_repairs
        self.temperature = temperature
        self.max_file_bytes = max_file_bytes
        self.calls = 0  # completion calls made, failed ones included
        self.conversation: list[dict[str, str]] = []  # the messages of the latest call
        self.stop = threading.Event()
        self._mocks = _mock_iterator(mock_response)
        self._proposed: set[str] = set()
        self._repaired: set[str] = set()
        self._implemented: set[str] = set()
        self._prices = {c.model: self.client.prices(c) for c in self.client.choices}

    # -- public -----------------------------------------------------------------------------

    def abandon_on(self, stop: threading.Event) -> None:
        """From now on, a call in flight is abandoned at once when `stop` is set."""
        self.stop = stop

    def report_spend_to(self, client: SpendClient) -> None:
        """From now on, also tell the coordinator what each call cost (for its /metrics)."""
        self.spend = ReportingLedger(self.spend, client)

    def propose(self, context: ProposerContext) -> HypothesisCreate | None:
        """A human's pending idea implemented, else a repair of an obvious crash, else an idea."""
        for pending in getattr(context, "pending", ()):
            pending_id = str(getattr(pending, "hypothesis_id", pending.title))
            if pending_id not in self._implemented:
                idea = _Pending(
                    pending.title, extra_text(pending, "rationale"), extra_text(pending, "author")
                )
                hypothesis = self.implement(context, idea)
                self._implemented.add(pending_id)  # tried once, even if in vain
                if hypothesis is not None and hasattr(pending, "hypothesis_id"):
                    # The coordinator attaches the code to the human's hypothesis.
                    hypothesis = hypothesis.model_copy(update={"implements": pending_id})
                return hypothesis
        job = choose_repair(context, max_repairs=self.max_repairs, skip=frozenset(self._repaired))
        if job is not None:
            hypothesis = self.repair(context, job)
            self._repaired.add(job.crashed.hypothesis_id)
            return hypothesis
        return self._run(context, _Job(render("ideate.md")))

    def implement(
        self, context: ProposerContext, pending: TextHypothesis
    ) -> HypothesisCreate | None:
        """The code for a text-only hypothesis; its title, rationale and author are kept."""
        instruction = render(
            "implement.md",
            author=pending.author or "a human",
            title=pending.title,
            rationale=pending.rationale or "(none given)",
        )
        return self._run(
            context,
            _Job(
                instruction,
                title=pending.title,
                rationale_prefix=pending.rationale,
                author=pending.author,
            ),
        )

    def repair(self, context: ProposerContext, job: RepairJob) -> HypothesisCreate | None:
        """A repair of a crashed hypothesis: same idea, fault fixed, the crash quoted."""
        number = next(
            (i + 1 for i, h in enumerate(context.history) if h is job.crashed), len(context.history)
        )
        diff = extra_text(job.crashed, "diff").strip()
        diff_note = ""
        if diff:
            diff_note = f"\nThe change that crashed:\n{clip_diff(diff, MAX_REPAIR_DIFF_LINES)}\n"
        instruction = render(
            "repair.md",
            number=number,
            title=job.crashed.title,
            kind=job.fault.kind,
            attempt=job.attempt,
            error_line=job.fault.line,
            diff_note=diff_note,
        )
        title = (REPAIR_PREFIX + job.original_title)[:MAX_TITLE_CHARS]
        prefix = (
            f"Repairs {job.crashed.title!r} (hypothesis {job.crashed.hypothesis_id}), "
            f"which crashed with a {job.fault.kind}:\n    {job.fault.line}"
        )
        logger.info("llm: task %s: repairing %r (%s)", context.task_id, job.original_title, prefix)
        return self._run(context, _Job(instruction, title=title, rationale_prefix=prefix))

    # -- one hypothesis, up to max_attempts calls ---------------------------------------------

    def _run(self, context: ProposerContext, job: _Job) -> HypothesisCreate | None:
        task_id = context.task_id
        prompt = build_prompt(
            context,
            instruction=job.instruction,
            journal=self.journal.journal(task_id),
            budget_tokens=self.token_budget,
            count=self.client.count,
        )
        if prompt.notes:
            logger.info("llm: task %s: prompt fitted: %s", task_id, "; ".join(prompt.notes))
        first = [
            {"role": "system", "content": prompt.system},
            {"role": "user", "content": prompt.user},
        ]
        messages = first
        reasons: list[str] = []
        for attempt in range(1, self.max_attempts + 1):
            self._check_cap(task_id, messages)
            try:
                reply = self._complete(messages)
            except Malformed as bad:  # the endpoint's fault, not the model's: asked again as is
                self._record(
                    task_id, messages, bad.model, bad.prompt_tokens, 0, f"(rejected) {bad}"
                )
                logger.warning("llm: task %s: answer %d rejected: %s", task_id, attempt, bad)
                reasons.append(bad.reason)
                continue
            outcome = self._judge(context, job, reply)
            title = f"(rejected) {outcome}" if isinstance(outcome, str) else outcome.title
            cost = self._record(
                task_id, messages, reply.model, reply.prompt_tokens, reply.completion_tokens, title
            )
            if isinstance(outcome, HypothesisCreate):
                logger.info(
                    "llm: task %s: %r from %s after %d calls ($%.4f)",
                    task_id,
                    outcome.title,
                    reply.model,
                    attempt,
                    cost,
                )
                return outcome
            logger.info("llm: task %s: answer %d rejected: %s", task_id, attempt, outcome)
            reasons.append(outcome)
            messages = self._retry_messages(first, reply, reasons)
        logger.warning(
            "llm: task %s: giving up after %d rejected answers; last: %s",
            task_id,
            self.max_attempts,
            reasons[-1],
        )
        return None

    @staticmethod
    def _retry_messages(
        first: list[dict[str, str]], reply: Reply, reasons: list[str]
    ) -> list[dict[str, str]]:
        earlier = ""
        if len(reasons) > 1:
            earlier = "Earlier answers were rejected too:\n" + "\n".join(
                f"- {reason}" for reason in reasons[:-1]
            )
            earlier += "\n"
        retry = render("retry.md", reason=reasons[-1], earlier=earlier)
        return [
            *first,
            {"role": "assistant", "content": reply.text[:MAX_ECHO_CHARS]},
            {"role": "user", "content": retry},
        ]

    def _judge(self, context: ProposerContext, job: _Job, reply: Reply) -> HypothesisCreate | str:
        """The hypothesis an answer makes, or the reason it is rejected."""
        try:
            answer = parse_answer(reply.text)
            if answer.journal:
                self.journal.save_journal(context.task_id, answer.journal)
            change = apply_edits(
                answer.edits, context.head_files, context.spec, max_file_bytes=self.max_file_bytes
            )
            hashes = change_hashes(change, context.head_files)
            reason = repeat_reason(hashes, context.history, context.in_flight)
            if reason is None and hashes & self._proposed:
                reason = "you proposed this exact code already; propose another idea"
            if reason is not None:
                raise Rejection(reason)
        except Rejection as rejection:
            return rejection.reason
        self._proposed |= hashes
        rationale = answer.rationale
        if job.rationale_prefix:
            rationale = f"{job.rationale_prefix}\n\n{rationale}".strip()
        return HypothesisCreate(
            task_id=context.task_id,
            title=job.title or answer.title,
            rationale=rationale[:MAX_RATIONALE_CHARS],
            change=change,
            proposer=f"llm:{reply.model}"[:100],
            author=job.author,
            parent_commit=context.head_commit,
        )

    # -- calls, spend and caps ----------------------------------------------------------------

    def _complete(self, messages: list[dict[str, str]]) -> Reply:
        kwargs: dict[str, Any] = {"max_tokens": self.max_output_tokens}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        mock = next(self._mocks)
        if mock is not None:
            kwargs["mock_response"] = mock
        self.calls += 1
        self.conversation = list(messages)
        return self.client.complete(messages, stop=self.stop, **kwargs)

    def _prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        return sum(self.client.count(m["content"]) + 4 for m in messages)

    def _record(
        self,
        task_id: str,
        messages: list[dict[str, str]],
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        title: str,
    ) -> float:
        """Record one call's tokens and dollars in the ledger; the dollars."""
        model = model or self.models[0].model
        prompt_tokens = prompt_tokens or self._prompt_tokens(messages)
        prices = self._prices.get(model)
        if prices is None and model not in self._prices:
            prices = self._prices[self.client.choice_of(model).model]
        cost = prompt_tokens * prices[0] + completion_tokens * prices[1] if prices else 0.0
        self.spend.record(task_id, model, cost, prompt_tokens + completion_tokens, title[:200])
        return cost

    def _check_cap(self, task_id: str, messages: list[dict[str, str]]) -> None:
        """Raise `SpendCapReached` when the next call could pass a cap (see the module doc)."""
        entries = self.spend.entries(task_id)
        total = sum(e.cost_usd for e in entries)
        if total >= self.cap_usd:
            raise SpendCapReached(
                f"task {task_id}: LLM spend ${total:.4f} has reached the cap of "
                f"${self.cap_usd:.4f} (--cap-usd); no further calls"
            )
        prompt_tokens = self._prompt_tokens(messages)
        prices = list(self._prices.values())
        estimate = max(
            prompt_tokens * p[0] + self.max_output_tokens * p[1] if p else 0.0 for p in prices
        )
        if total + estimate > self.cap_usd + 1e-12:
            raise SpendCapReached(
                f"task {task_id}: LLM spend ${total:.4f} plus the next call's estimate "
                f"${estimate:.4f} would pass the cap of ${self.cap_usd:.4f} (--cap-usd); "
                "no further calls"
            )
        if all(prices):
            return
        unpriced = sum(e.tokens for e in entries if e.cost_usd == 0)
        next_tokens = prompt_tokens + self.max_output_tokens
        if unpriced + next_tokens > self.cap_tokens:
            raise SpendCapReached(
                f"task {task_id}: {unpriced} tokens spent at no known price plus the next "
                f"call's {next_tokens} would pass the cap of {self.cap_tokens} tokens "
                "(--cap-tokens; --price-in/--price-out give a price); no further calls"
            )


def _mock_iterator(
    mock: MockResponse | Sequence[MockResponse] | None,
) -> Iterator[MockResponse | None]:
    """One mock answer per call: a sequence is used in order, its last item repeated."""
    if mock is None or isinstance(mock, str | Exception):
        return itertools.repeat(mock)
    items = list(mock)
    return itertools.chain(items, itertools.repeat(items[-1] if items else None))
