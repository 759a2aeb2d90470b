"""The one module that imports litellm: endpoints, the Router, one call, prices and tokens.

litellm is imported on first use, never when the coordinator is imported (it is the optional
`llm` extra). Models are litellm model strings (`openai/...`, `anthropic/...`,
`ollama_chat/...`, `hosted_vllm/...`), each optionally with its own endpoint (`api_base`) and
the name of the environment variable holding its key; several with weights share one Router
group, fallbacks are further groups tried in order, and retries of a failed call are the
Router's (`num_retries`). Keys come only from the environment and are never logged.

Guarantees: `check_endpoint` refuses, before any call, a model that has neither a key nor an
endpoint; `LLMClient.complete` returns an answer, or raises one of three faults: `LLMRefused`
(the endpoint refuses this configuration: a bad key, an unknown model; retrying cannot help),
`LLMUnavailable` (network, rate limit, timeout: later may work) or `Malformed` (the endpoint
answered, but not with a usable chat completion: no choices, no message, no content, HTML,
truncated JSON). A call is abandoned at once when its `stop` event is set (`CallAbandoned`);
the HTTP request then finishes or times out in a daemon thread, unseen.
Does not: retry on its own beyond the Router, or know a price that neither litellm's list nor
the researcher gives.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from autoswarm.coordinator.proposers.base import ProposerStopped
from autoswarm.shared.errors import AutoswarmError, InvalidInput

logger = logging.getLogger(__name__)

PRIMARY_GROUP = "primary"
# The key a local endpoint ignores: OpenAI-compatible clients refuse to send no key at all.
NO_KEY = "no-key"
# How often a waiting call looks at its stop event.
STOP_POLL_S = 0.1
_LITELLM_LOGGERS = ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy")
# HTTP statuses that mean the configuration is wrong (key, model name, request shape).
_REFUSED_STATUS = frozenset({400, 401, 403, 404})
_UNAVAILABLE_STATUS = frozenset({408, 429, 503})
# httpx's and httpcore's base classes of a failed connection or a timeout (not of a status).
_TRANSPORT_ERRORS = frozenset({"TransportError", "NetworkError", "TimeoutException"})


class LLMRefused(ProposerStopped):
    """The endpoint refuses the call as configured (key, model name, request); not retried."""


class LLMUnavailable(AutoswarmError):
    """Every model and fallback failed this call (network, rate limit, timeout); try later."""


class CallAbandoned(AutoswarmError):
    """The call was abandoned because the proposer is stopping."""


class Malformed(Exception):
    """The endpoint answered, but not with a usable chat completion; `reason` says how."""

    def __init__(self, reason: str, model: str = "", prompt_tokens: int = 0) -> None:
        self.reason = reason
        self.model = model
        self.prompt_tokens = prompt_tokens  # 0: not reported
        super().__init__(reason)


@dataclass(frozen=True)
class ModelChoice:
    """One litellm model string, its share of the calls, and extra litellm params.

    `params` go to the Router deployment as they are (`api_base`, `api_key` as
    "os.environ/NAME", `input_cost_per_token`/`output_cost_per_token`, or litellm's own
    `mock_response` in tests).
    """

    model: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Reply:
    """One completion: its text, the model that answered, and its token counts."""

    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int


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


def spread(values: Sequence[str], count: int, option: str) -> list[str | None]:
    """A per-model option: none, one for every model, or one per model in order ("-": none)."""
    if not values:
        return [None] * count
    if len(values) == 1:
        values = list(values) * count
    if len(values) != count:
        raise InvalidInput(
            f"{option} is given {len(values)} times for {count} models: give it once "
            "(every model) or once per model, in the order of --model then --fallback "
            "('-' for none)"
        )
    return [None if v.strip() in ("", "-") else v.strip() for v in values]


def with_endpoint(
    choice: ModelChoice,
    *,
    api_base: str | None = None,
    api_key_env: str | None = None,
    price_in: str | None = None,
    price_out: str | None = None,
) -> ModelChoice:
    """`choice` with its endpoint, key variable and prices (USD per million tokens) set."""
    params = dict(choice.params)
    if api_base:
        params["api_base"] = api_base
    if api_key_env:
        if not api_key_env.isidentifier():
            raise InvalidInput(f"--api-key-env {api_key_env!r} is not a variable name")
        params["api_key"] = f"os.environ/{api_key_env}"
    elif api_base and litellm().validate_environment(choice.model).get("missing_keys"):
        params.setdefault("api_key", NO_KEY)  # a local server needs none, the client one
    for key, value, option in (
        ("input_cost_per_token", price_in, "--price-in"),
        ("output_cost_per_token", price_out, "--price-out"),
    ):
        if value is None:
            continue
        try:
            per_million = float(value)
        except ValueError:
            raise InvalidInput(f"{option} {value!r} is not a number") from None
        if not per_million >= 0:
            raise InvalidInput(f"{option} {value!r} must not be negative")
        params[key] = per_million / 1e6
    return ModelChoice(choice.model, choice.weight, params)


def check_endpoint(choice: ModelChoice) -> None:
    """Refuse, before any call, a model that has no key and no endpoint (one clear line)."""
    params = choice.params
    if "mock_response" in params:
        return
    key = str(params.get("api_key", ""))
    if key.startswith("os.environ/"):
        name = key.removeprefix("os.environ/")
        if not os.environ.get(name):
            raise InvalidInput(f"model {choice.model}: --api-key-env {name} is not set")
        return
    if key or params.get("api_base"):
        return
    missing = litellm().validate_environment(choice.model).get("missing_keys") or []
    provider = choice.model.partition("/")[0]
    if provider.startswith("ollama"):  # litellm's default endpoint is Ollama's own port here
        missing = [name for name in missing if name != "OLLAMA_API_BASE"]
    if provider == "hosted_vllm" and not os.environ.get("HOSTED_VLLM_API_BASE"):
        missing.append("HOSTED_VLLM_API_BASE")  # a self-hosted server has no default address
    if missing:
        raise InvalidInput(
            f"model {choice.model}: no key and no endpoint: set {' or '.join(missing)} "
            "(or --secret-file), or give --api-base URL (and --api-key-env NAME if it needs a key)"
        )


def litellm() -> Any:
    """litellm, imported on first use: its price list read from the package (no fetch), its
    own stream handlers removed so that its lines reach the entry point's handlers once."""
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm as module

    module.suppress_debug_info = True  # else a "Give Feedback" banner is printed per error
    for name in _LITELLM_LOGGERS:
        named = logging.getLogger(name)
        for handler in list(named.handlers):
            named.removeHandler(handler)
        named.propagate = True
    return module


def _causes(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _summary(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0][:300] if text else ""
    return f"{type(exc).__name__}: {first}"


def classify(exc: Exception) -> Exception:
    """What a failed call means: `LLMRefused`, `LLMUnavailable` or `Malformed` (see module)."""
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    refused = name in ("AuthenticationError", "PermissionDeniedError", "NotFoundError")
    refused |= name == "BadRequestError" or status in _REFUSED_STATUS
    if refused or "Missing credentials" in str(exc):  # a key that is missing stays missing
        return LLMRefused(f"the endpoint refuses the call: {_summary(exc)}")
    network = any(
        isinstance(cause, OSError | TimeoutError)
        or any(base.__name__ in _TRANSPORT_ERRORS for base in type(cause).__mro__)
        for cause in _causes(exc)
    )
    if network or status in _UNAVAILABLE_STATUS:
        return LLMUnavailable(f"every model failed: {_summary(exc)}")
    return Malformed(f"the endpoint's answer was not a usable chat completion ({_summary(exc)})")


class LLMClient:
    """The Router over every model and fallback, and one abandonable call at a time."""

    def __init__(
        self,
        models: Sequence[ModelChoice],
        fallbacks: Sequence[ModelChoice] = (),
        *,
        num_retries: int = 1,
        timeout_s: float = 120.0,
    ) -> None:
        self.models = tuple(models)
        self.fallbacks = tuple(fallbacks)
        self._deployments: dict[str, ModelChoice] = {}
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
        fallback_groups = [group for group, _ in groups[1:]]
        self._router = litellm().Router(
            model_list=model_list,
            fallbacks=[{PRIMARY_GROUP: fallback_groups}] if fallback_groups else [],
            num_retries=num_retries,
            timeout=timeout_s,
            # A failed call would put a lone deployment in a 5 s cooldown, and the next
            # attempt, a retry of a malformed answer, would fail with "No deployments".
            disable_cooldowns=True,
        )

    @property
    def choices(self) -> tuple[ModelChoice, ...]:
        return self.models + self.fallbacks

    def count(self, text: str) -> int:
        """Tokens of `text` by the first model's tokenizer (else about four characters each)."""
        try:
            return int(litellm().token_counter(model=self.models[0].model, text=text))
        except Exception:  # an unknown tokenizer must not stop a proposal
            return (len(text) + 3) // 4

    def prices(self, choice: ModelChoice) -> tuple[float, float] | None:
        """USD per input and output token: the researcher's, else litellm's list, else None."""
        params = choice.params
        if "input_cost_per_token" in params or "output_cost_per_token" in params:
            return (
                float(params.get("input_cost_per_token", 0.0)),
                float(params.get("output_cost_per_token", 0.0)),
            )
        try:
            info = litellm().get_model_info(choice.model)
        except Exception:  # litellm raises a bare Exception for a model it has no price for
            return None
        prices = (
            float(info.get("input_cost_per_token") or 0.0),
            float(info.get("output_cost_per_token") or 0.0),
        )
        return prices if any(prices) else None

    def choice_of(self, model: str) -> ModelChoice:
        """The configured choice for a model string (the first model's when unknown)."""
        return next((c for c in self.choices if c.model == model), self.models[0])

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        stop: threading.Event,
        **kwargs: Any,
    ) -> Reply:
        """One chat completion through the Router (see the module doc for its faults)."""
        if stop.is_set():
            raise CallAbandoned("no call made: the proposer is stopping")
        done = threading.Event()
        box: dict[str, Any] = {}

        def call() -> None:
            try:
                box["response"] = self._router.completion(
                    model=PRIMARY_GROUP, messages=messages, **kwargs
                )
            except Exception as exc:  # litellm has many error classes; classified below
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=call, name="llm-call", daemon=True).start()
        while not done.wait(STOP_POLL_S):
            if stop.is_set():
                raise CallAbandoned("the call in flight was abandoned: the proposer is stopping")
        if "error" in box:
            fault = classify(box["error"])
            raise fault from box["error"]
        return self._reply(box["response"], messages)

    def _reply(self, response: Any, messages: list[dict[str, str]]) -> Reply:
        hidden = getattr(response, "_hidden_params", {}) or {}
        choice = self._deployments.get(str(hidden.get("model_id")))
        model = choice.model if choice else str(hidden.get("litellm_model_name") or "")
        model = model or self.models[0].model
        choices = getattr(response, "choices", None) or []
        message = getattr(choices[0], "message", None) if choices else None
        content = getattr(message, "content", None) if message is not None else None
        usage = getattr(response, "usage", None)
        prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
        text = content if isinstance(content, str) else ""
        for missing, what in ((not choices, "choices"), (message is None, "message")):
            if missing:
                raise Malformed(f"the endpoint's answer had no {what}", model, prompt_tokens)
        if not text.strip():
            raise Malformed("the endpoint's answer had no content", model, prompt_tokens)
        if not prompt_tokens:  # not every endpoint reports usage: counted here instead
            prompt_tokens = sum(self.count(m["content"]) + 4 for m in messages)
        return Reply(text, model, prompt_tokens, completion_tokens or self.count(text))
