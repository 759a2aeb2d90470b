"""The LLM proposer: hypotheses from any litellm model, validated before they are submitted.

The one module that imports litellm, and only when a proposer is built, so importing the
coordinator never needs it (litellm is the optional `llm` extra). Models are litellm model
strings (`openai/...`, `anthropic/...`, `ollama_chat/...`, `hosted_vllm/...`); several with
weights share one Router group, fallbacks are further groups tried in order, and retries are
the Router's (`num_retries`), never a loop of ours. Keys come only from the environment
(`load_secret_file` fills it from a KEY=VALUE file) and are never logged.

What `propose` guarantees: a hypothesis it returns changes only editable files, parses, fits
the size limit, and is neither the head, nor code in the history or in flight, nor code this
proposer returned before. Each answer that fails a check is re-asked with the reason, at most
`max_attempts` calls per hypothesis; then it gives up with `None` and a logged reason. Every
call's cost (litellm's own figure) is recorded in the spend ledger with the title it produced;
before each call the task's spend plus a conservative estimate of the call (its prompt and
`max_output_tokens` at the dearest configured model's price) must stay within `cap_usd`,
otherwise it raises `SpendCapReached` and makes no call.

What it does not do: submit (the proposer loop does), run code, or know prices litellm does
not know (such a model counts as free unless `params` sets `input_cost_per_token` and
`output_cost_per_token`).
"""

from __future__ import annotations

import itertools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from coordinator.proposers.context import (
    REPAIR_PREFIX,
    RepairJob,
    build_prompt,
    choose_repair,
    estimate_tokens,
    extra_text,
    render,
)
from coordinator.proposers.edits import (
    Rejection,
    apply_edits,
    change_hashes,
    parse_answer,
    repeat_reason,
)
from coordinator.proposers.ledger import (
    JournalStore,
    MemoryLedger,
    ReportingLedger,
    SpendClient,
    SpendLedger,
)
from shared.errors import AutoswarmError, InvalidInput, SpendCapReached
from shared.models import (
    MAX_FILE_BYTES,
    MAX_RATIONALE_CHARS,
    MAX_TITLE_CHARS,
    HypothesisCreate,
    ProposerContext,
)

logger = logging.getLogger(__name__)

PRIMARY_GROUP = "primary"
# A rejected answer is echoed back to the model; past this it is cut (it is the model's own).
MAX_ECHO_CHARS = 16_000

MockResponse = str | Exception


@dataclass(frozen=True)
class ModelChoice:
    """One litellm model string, its share of the calls, and extra litellm params.

    `params` go to the Router deployment as they are (`api_base`, `api_key` as
    "os.environ/NAME", custom prices, or litellm's own `mock_response` in tests).
    """

    model: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


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


class LLMUnavailable(AutoswarmError):
    """Every model and fallback failed this call (network, rate limit, key); try again later."""


@dataclass(frozen=True)
class _Job:
    """What to ask the model for, and what the hypothesis keeps whatever the model says."""

    instruction: str
    title: str | None = None  # None: the model's title
    rationale_prefix: str = ""
    author: str = ""


@dataclass(frozen=True)
class _Reply:
    text: str
    model: str
    cost_usd: float
    tokens: int


def parse_model_choice(text: str) -> ModelChoice:
    """A CLI model option: a litellm model string, with an optional weight ("MODEL=3")."""
    model, sep, weight = text.strip().rpartition("=")
    if not sep:
        model, weight = text.strip(), "1"
    try:
        value = float(weight)
    except ValueError:
        raise InvalidInput(f"model {text!r}: weight {weight!r} is not a number") from None
    if not model or value <= 0:
        raise InvalidInput(f"model {text!r}: expected MODEL or MODEL=WEIGHT with WEIGHT > 0")
    return ModelChoice(model, value)


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


def _litellm() -> Any:
    """litellm, imported on first use, with its price list read from the package (no fetch)."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    return litellm


class LLMProposer:
    """Proposes hypotheses with a language model: new ideas, repairs, humans' ideas (see module)."""

    def __init__(
        self,
        models: Sequence[ModelChoice],
        *,
        spend: SpendLedger,
        cap_usd: float,
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
        if max_attempts < 1 or cap_usd < 0:
            raise InvalidInput("max_attempts must be at least 1 and cap_usd not negative")
        self.models = tuple(models)
        self.fallbacks = tuple(fallbacks)
        self.name = f"llm:{self.models[0].model}"
        self.spend: SpendLedger = spend
        self.journal = journal if journal is not None else MemoryLedger()
        self.cap_usd = cap_usd
        self.max_attempts = max_attempts
        self.token_budget = token_budget
        self.max_output_tokens = max_output_tokens
        self.max_repairs = max_repairs
        self.temperature = temperature
        self.max_file_bytes = max_file_bytes
        self.calls = 0  # completion calls made, failed ones included
        self.conversation: list[dict[str, str]] = []  # the messages of the latest call
        self._mocks = _mock_iterator(mock_response)
        self._proposed: set[str] = set()
        self._repaired: set[str] = set()
        self._implemented: set[str] = set()
        self._deployments: dict[str, ModelChoice] = {}
        self._router = self._build_router(num_retries, timeout_s)

    # -- public -----------------------------------------------------------------------------

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
        diff_note = f"\nThe change that crashed:\n```diff\n{diff}\n```\n" if diff else ""
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
            count=self._count,
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
            reply = self._complete(messages)
            outcome = self._judge(context, job, reply)
            title = f"(rejected) {outcome}" if isinstance(outcome, str) else outcome.title
            self.spend.record(task_id, reply.model, reply.cost_usd, reply.tokens, title[:200])
            if isinstance(outcome, HypothesisCreate):
                logger.info(
                    "llm: task %s: %r from %s after %d calls ($%.4f)",
                    task_id,
                    outcome.title,
                    reply.model,
                    attempt,
                    reply.cost_usd,
                )
                return outcome
            logger.info("llm: task %s: answer %d rejected: %s", task_id, attempt, outcome)
            reasons.append(outcome)
            earlier = ""
            if len(reasons) > 1:
                earlier = "Earlier answers were rejected too:\n" + "\n".join(
                    f"- {reason}" for reason in reasons[:-1]
                )
                earlier += "\n"
            retry = render("retry.md", reason=outcome, earlier=earlier)
            messages = [
                *first,
                {"role": "assistant", "content": reply.text[:MAX_ECHO_CHARS]},
                {"role": "user", "content": retry},
            ]
        logger.warning(
            "llm: task %s: giving up after %d rejected answers; last: %s",
            task_id,
            self.max_attempts,
            reasons[-1],
        )
        return None

    def _judge(self, context: ProposerContext, job: _Job, reply: _Reply) -> HypothesisCreate | str:
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

    # -- litellm ------------------------------------------------------------------------------

    def _build_router(self, num_retries: int, timeout_s: float) -> Any:
        model_list: list[dict[str, Any]] = []
        groups = [(PRIMARY_GROUP, self.models)] + [
            (f"fallback-{j}", (choice,)) for j, choice in enumerate(self.fallbacks)
        ]
        for group, choices in groups:
            for i, choice in enumerate(choices):
                deployment_id = f"{group}-{i}"
                self._deployments[deployment_id] = choice
                params = {"model": choice.model, "weight": choice.weight, **choice.params}
                model_list.append(
                    {
                        "model_name": group,
                        "litellm_params": params,
                        "model_info": {"id": deployment_id},
                    }
                )
        fallbacks = [{PRIMARY_GROUP: [group for group, _ in groups[1:]]}] if self.fallbacks else []
        return _litellm().Router(
            model_list=model_list,
            fallbacks=fallbacks,
            num_retries=num_retries,
            timeout=timeout_s,
        )

    def _count(self, text: str) -> int:
        try:
            return int(_litellm().token_counter(model=self.models[0].model, text=text))
        except Exception:  # an unknown tokenizer must not stop a proposal
            return estimate_tokens(text)

    def _estimate_usd(self, messages: list[dict[str, str]]) -> float:
        """The most the next call can cost: its prompt and a full answer at the dearest price."""
        prompt_tokens = sum(self._count(m["content"]) + 4 for m in messages)
        dearest = 0.0
        for choice in self.models + self.fallbacks:
            input_usd, output_usd = self._prices(choice)
            dearest = max(dearest, prompt_tokens * input_usd + self.max_output_tokens * output_usd)
        return dearest

    @staticmethod
    def _prices(choice: ModelChoice) -> tuple[float, float]:
        if "input_cost_per_token" in choice.params or "output_cost_per_token" in choice.params:
            return (
                float(choice.params.get("input_cost_per_token", 0.0)),
                float(choice.params.get("output_cost_per_token", 0.0)),
            )
        try:
            info = _litellm().get_model_info(choice.model)
        except Exception:  # litellm raises a bare Exception for a model it has no price for
            return 0.0, 0.0
        return float(info.get("input_cost_per_token") or 0.0), float(
            info.get("output_cost_per_token") or 0.0
        )

    def _check_cap(self, task_id: str, messages: list[dict[str, str]]) -> None:
        total = self.spend.total(task_id)
        if total >= self.cap_usd:
            raise SpendCapReached(
                f"task {task_id}: LLM spend ${total:.4f} has reached the cap of "
                f"${self.cap_usd:.4f}; no further calls"
            )
        estimate = self._estimate_usd(messages)
        if total + estimate > self.cap_usd + 1e-12:
            raise SpendCapReached(
                f"task {task_id}: LLM spend ${total:.4f} plus the next call's estimate "
                f"${estimate:.4f} would pass the cap of ${self.cap_usd:.4f}; no further calls"
            )

    def _complete(self, messages: list[dict[str, str]]) -> _Reply:
        kwargs: dict[str, Any] = {"max_tokens": self.max_output_tokens}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        mock = next(self._mocks)
        if mock is not None:
            kwargs["mock_response"] = mock
        self.calls += 1
        self.conversation = list(messages)
        try:
            response = self._router.completion(model=PRIMARY_GROUP, messages=messages, **kwargs)
        except Exception as exc:  # litellm has many error classes; each means this call failed
            summary = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
            raise LLMUnavailable(f"every model failed: {type(exc).__name__}: {summary}") from exc
        hidden = getattr(response, "_hidden_params", {}) or {}
        choice = self._deployments.get(str(hidden.get("model_id")))
        model = choice.model if choice else str(hidden.get("litellm_model_name") or response.model)
        return _Reply(
            text=response.choices[0].message.content or "",
            model=model,
            cost_usd=self._cost(response, hidden),
            tokens=int(getattr(response.usage, "total_tokens", 0) or 0),
        )

    @staticmethod
    def _cost(response: Any, hidden: Mapping[str, Any]) -> float:
        cost = hidden.get("response_cost")
        if cost is None:
            try:
                cost = _litellm().completion_cost(completion_response=response)
            except Exception:  # no price known: counted as free, and said so
                logger.warning("llm: no price known for %s; its cost counts as 0", response.model)
                cost = 0.0
        return float(cost)


def _mock_iterator(
    mock: MockResponse | Sequence[MockResponse] | None,
) -> Iterator[MockResponse | None]:
    """One mock answer per call: a sequence is used in order, its last item repeated."""
    if mock is None or isinstance(mock, str | Exception):
        return itertools.repeat(mock)
    items = list(mock)
    return itertools.chain(items, itertools.repeat(items[-1] if items else None))
