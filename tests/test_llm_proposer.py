"""The LLM proposer, through litellm's own Router: its `mock_response`, and a real local server
speaking the OpenAI chat-completions protocol on 127.0.0.1 (tests/llm_helpers.py).

An opt-in test marked `llm` makes one real proposal (AUTOSWARM_TEST_LLM=1 and a key).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from autoswarm.cli.propose_cmd import LLMOptions, build_proposers
from autoswarm.coordinator.proposers.base import run_proposer_loop, run_proposer_loops
from autoswarm.coordinator.proposers.context import build_prompt, estimate_tokens, strip_host_paths
from autoswarm.coordinator.proposers.ledger import FileLedger, MemoryLedger
from autoswarm.coordinator.proposers.llm import (
    CallAbandoned,
    LLMProposer,
    LLMRefused,
    ModelChoice,
    load_secret_file,
    parse_model_choice,
)
from autoswarm.shared.errors import InvalidInput, SpendCapReached
from autoswarm.shared.models import (
    HypothesisCreate,
    HypothesisSummary,
    ProposerContext,
    Verdict,
)
from autoswarm.shared.task import TaskSpec, hash_files, load_task, read_task_files
from tests.cli_helpers import invoke
from tests.conftest import RunningCoordinator, wait_until
from tests.llm_helpers import HANG, MALFORMED, chat_server, completion
from tests.read_helpers import (
    HW,
    HandWorker,
    Run,
    hand_task,
    hand_worker,
    serve,
    submit,
    wait_verdict,
)
from tests.worker_helpers import register_task

REPO = Path(__file__).resolve().parents[1]
MODEL = "openai/gpt-4o-mini"

SOURCE = '''"""A tiny payload in Karpathy's style."""

LEARNING_RATE = 3e-4  # step size of the optimiser
DEPTH = 2  # layers


def train():
    return LEARNING_RATE * DEPTH


print("---")
print(f"score: {train():.6f}")
'''

SPEC = TaskSpec(name="toy", editable=("train.py",), protected=("prepare.py",))


def make_context(
    history: list[HypothesisSummary] | None = None,
    in_flight: list[HypothesisSummary] | None = None,
) -> ProposerContext:
    return ProposerContext(
        task_id="toy",
        spec=SPEC,
        program="Make score as low as you can. Only train.py may change.",
        head_commit="c0ffee",
        head_files={"train.py": SOURCE},
        head_metric=0.0006,
        history=history or [],
        in_flight=in_flight or [],
    )


def answer(
    title: str = "Deeper model",
    search: str = "DEPTH = 2  # layers",
    replace: str = "DEPTH = 3  # layers",
    file: str = "train.py",
    journal: str = "- depth is untested",
) -> str:
    edits = [{"file": file, "search": search, "replace": replace}]
    return json.dumps(
        {"title": title, "rationale": "More layers.", "edits": edits, "journal": journal}
    )


def tree_hash(content: str) -> str:
    return hash_files({"train.py": content.encode()})


def summary(
    n: int,
    title: str,
    verdict: Verdict = Verdict.DISCARDED,
    *,
    change_hash: str | None = None,
    log_tail: str = "",
    delta: float | None = 0.001,
) -> HypothesisSummary:
    return HypothesisSummary(
        hypothesis_id=f"h{n}",
        title=title,
        proposer="llm:x",
        verdict=verdict,
        delta=delta,
        change_hash=change_hash,
        log_tail=log_tail,
    )


def make_proposer(mock: Any, **kwargs: Any) -> LLMProposer:
    kwargs.setdefault("spend", MemoryLedger())
    kwargs.setdefault("cap_usd", 1.0)
    return LLMProposer([ModelChoice(MODEL)], num_retries=0, mock_response=mock, **kwargs)


def last_prompt(proposer: LLMProposer) -> str:
    return proposer.conversation[-1]["content"]


# -- a good answer ----------------------------------------------------------------------------


def test_good_answer_becomes_hypothesis_with_full_new_file() -> None:
    """A valid answer becomes a HypothesisCreate whose change is the whole edited file."""
    ledger = MemoryLedger()
    proposer = make_proposer(answer(), spend=ledger)
    hypothesis = proposer.propose(make_context())
    assert hypothesis is not None
    assert hypothesis.change == {"train.py": SOURCE.replace("DEPTH = 2", "DEPTH = 3")}
    assert (hypothesis.title, hypothesis.proposer) == ("Deeper model", f"llm:{MODEL}")
    assert hypothesis.parent_commit == "c0ffee"
    assert proposer.calls == 1


def test_every_call_is_recorded_with_its_cost_and_title() -> None:
    """The ledger holds litellm's cost of the call and the title it produced."""
    ledger = MemoryLedger()
    make_proposer(answer(), spend=ledger).propose(make_context())
    [entry] = ledger.entries("toy")
    assert (entry.model, entry.title) == (MODEL, "Deeper model")
    assert entry.cost_usd > 0
    assert ledger.total("toy") == entry.cost_usd


# -- rejections, each re-asked with its reason ------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "reason"),
    [
        ('{"title": "Deeper", "edits": [', "malformed JSON"),
        (answer(search="DEPTH = 7  # layers"), "the search text does not occur in train.py"),
        (answer(file="prepare.py", search="x", replace="y"), "'prepare.py' is protected"),
        (answer(replace="DEPTH = = 3"), "train.py no longer parses: SyntaxError"),
        (answer(search="DEPTH", replace="N_LAYER"), "the search text occurs 2 times in train.py"),
    ],
    ids=["malformed-json", "search-missing", "protected-file", "syntax-error", "ambiguous"],
)
def test_rejected_answer_is_reasked_with_its_reason(bad: str, reason: str) -> None:
    """A bad answer is rejected, and the second prompt carries the reason."""
    proposer = make_proposer([bad, answer()])
    hypothesis = proposer.propose(make_context())
    assert hypothesis is not None and hypothesis.title == "Deeper model"
    assert proposer.calls == 2
    assert "Your answer was rejected" in last_prompt(proposer)
    assert reason in last_prompt(proposer)


def test_repeat_of_tried_code_is_rejected() -> None:
    """Code whose hash is in the history is rejected as already tried, then re-asked."""
    tried = SOURCE.replace("DEPTH = 2", "DEPTH = 3")
    history = [summary(1, "Three layers", change_hash=tree_hash(tried))]
    other = answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4")
    proposer = make_proposer([answer(), other])
    hypothesis = proposer.propose(make_context(history))
    assert hypothesis is not None and hypothesis.title == "Higher LR"
    assert "already tried as 'Three layers'" in last_prompt(proposer)


def test_answer_that_changes_nothing_is_rejected() -> None:
    """Edits that leave the head as it is are rejected (the head itself is never proposed)."""
    proposer = make_proposer([answer(replace="DEPTH = 2  # layers"), answer()])
    assert proposer.propose(make_context()) is not None
    assert "the edits change nothing" in last_prompt(proposer)


def test_gives_up_after_max_attempts_with_none() -> None:
    """Bad answers only: max_attempts calls, then None, each call still recorded."""
    ledger = MemoryLedger()
    proposer = make_proposer("no json here", spend=ledger, max_attempts=3)
    assert proposer.propose(make_context()) is None
    assert proposer.calls == 3
    titles = [e.title for e in ledger.entries("toy")]
    assert len(titles) == 3
    assert all(title.startswith("(rejected) malformed JSON") for title in titles)


def test_own_earlier_proposal_is_not_proposed_again() -> None:
    """The same code from the same proposer is rejected before the coordinator lists it."""
    other = answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4")
    proposer = make_proposer([answer(), answer(), other])
    assert proposer.propose(make_context()) is not None
    second = proposer.propose(make_context())
    assert second is not None and second.title == "Higher LR"
    assert "you proposed this exact code already" in last_prompt(proposer)


# -- routing: fallbacks -----------------------------------------------------------------------


def test_rate_limit_on_first_model_falls_back_to_second() -> None:
    """A RateLimitError from the primary model is answered by the fallback model."""
    ledger = MemoryLedger()
    proposer = LLMProposer(
        [ModelChoice(MODEL, params={"mock_response": "litellm.RateLimitError"})],
        fallbacks=[ModelChoice("openai/gpt-4o", params={"mock_response": answer()})],
        spend=ledger,
        cap_usd=1.0,
        num_retries=0,
    )
    hypothesis = proposer.propose(make_context())
    assert hypothesis is not None and hypothesis.proposer == "llm:openai/gpt-4o"
    assert [e.model for e in ledger.entries("toy")] == ["openai/gpt-4o"]


# -- spend cap --------------------------------------------------------------------------------

# litellm's mock answer counts 10 prompt and 20 completion tokens: each call costs $0.05 here,
# and with max_output_tokens=20 the pre-call estimate is exactly that too.
PRICED = {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0025}


def priced_proposer(ledger: MemoryLedger, cap_usd: float, mock: Any) -> LLMProposer:
    return LLMProposer(
        [ModelChoice(MODEL, params=PRICED)],
        spend=ledger,
        cap_usd=cap_usd,
        max_attempts=5,
        max_output_tokens=20,
        num_retries=0,
        mock_response=mock,
    )


def test_spend_reaching_the_cap_stops_calls_with_a_clear_message() -> None:
    """At the cap the proposer raises SpendCapReached and makes no further call."""
    ledger = MemoryLedger()
    proposer = priced_proposer(ledger, 0.10, "not json")
    with pytest.raises(
        SpendCapReached, match=r"reached the cap of \$0\.1000 \(--cap-usd\); no further calls"
    ):
        proposer.propose(make_context())
    assert proposer.calls == 2
    assert ledger.total("toy") == pytest.approx(0.10)
    with pytest.raises(SpendCapReached):
        proposer.propose(make_context())
    assert proposer.calls == 2


def test_call_that_could_pass_the_cap_is_not_made() -> None:
    """A call whose estimated cost would pass the cap is refused before it is made."""
    proposer = priced_proposer(MemoryLedger(), 0.04, answer())
    with pytest.raises(SpendCapReached, match="estimate"):
        proposer.propose(make_context())
    assert proposer.calls == 0


def test_proposer_loop_ends_with_the_cap_error_once_the_cap_is_reached() -> None:
    """run_proposer_loop submits what the cap allows, then raises SpendCapReached."""
    ledger = MemoryLedger()
    coordinator = SharedCoordinator()
    proposer = priced_proposer(ledger, 0.10, [answer(), answer(title="x", replace="DEPTH = 4")])
    with pytest.raises(SpendCapReached, match="--cap-usd"):
        run_proposer_loop(coordinator, "toy", proposer, queue_ahead=10, poll_s=0.01)
    assert len(coordinator.submitted) == 2 and proposer.calls == 2


# -- two proposers at once --------------------------------------------------------------------


class SharedCoordinator:
    """A context source two proposers share: each sees what the other has in flight."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.in_flight: list[HypothesisSummary] = []
        self.submitted: list[HypothesisCreate] = []
        self.duplicates = 0
        self.first_submitted = threading.Event()

    def context(self, task_id: str) -> ProposerContext:
        with self.lock:
            return make_context(in_flight=list(self.in_flight))

    def submit_hypothesis(self, hypothesis: HypothesisCreate) -> dict[str, Any]:
        assert hypothesis.change is not None
        change_hash = tree_hash(hypothesis.change["train.py"])
        with self.lock:
            duplicate = any(h.change_hash == change_hash for h in self.in_flight)
            self.duplicates += duplicate
            n = len(self.submitted)
            self.submitted.append(hypothesis)
            self.in_flight.append(
                summary(n, hypothesis.title, Verdict.PENDING, change_hash=change_hash)
            )
        self.first_submitted.set()
        return {"hypothesis_id": f"h{n}", "experiment_id": f"e{n}", "duplicate": duplicate}


class LateCoordinator:
    """The shared coordinator as the second proposer sees it: it reads after the first submits."""

    def __init__(self, shared: SharedCoordinator) -> None:
        self.shared = shared

    def context(self, task_id: str) -> ProposerContext:
        assert self.shared.first_submitted.wait(30)
        return self.shared.context(task_id)

    def submit_hypothesis(self, hypothesis: HypothesisCreate) -> dict[str, Any]:
        return self.shared.submit_hypothesis(hypothesis)


def test_two_proposers_at_once_do_not_submit_the_same_idea() -> None:
    """Both models answer the same idea first; the second proposer sees it in flight."""
    shared = SharedCoordinator()
    other = answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4")
    first, second = make_proposer([answer(), other]), make_proposer([answer(), other])
    threads = [
        threading.Thread(
            target=run_proposer_loop,
            args=(client, "toy", proposer),
            kwargs={"queue_ahead": 10, "poll_s": 0.01, "max_hypotheses": 1},
        )
        for client, proposer in ((shared, first), (LateCoordinator(shared), second))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(h.title for h in shared.submitted) == ["Deeper model", "Higher LR"]
    assert shared.duplicates == 0
    assert "- Deeper model" in second.conversation[1]["content"]  # listed as in flight
    assert "code is in flight as 'Deeper model'" in last_prompt(second)


# -- the prompt -------------------------------------------------------------------------------


def big_history(n: int) -> list[HypothesisSummary]:
    history = []
    for i in range(n):
        if i % 50 == 7:
            tail = "Traceback (most recent call last):\n  ...\nValueError: a strange thing " * 3
            history.append(
                summary(i, f"Idea {i}: reorder the data", Verdict.CRASHED, log_tail=tail)
            )
        else:
            verdict = Verdict.KEPT if i % 40 == 0 else Verdict.DISCARDED
            history.append(
                summary(i, f"Idea {i}: scale LEARNING_RATE by {1 + i / 1000:.3f}", verdict)
            )
    return history


def test_prompt_for_500_experiments_fits_its_budget_and_lists_every_title() -> None:
    """500 past experiments: the prompt stays within budget, every title and the code whole."""
    import litellm

    history = big_history(500)
    proposer = make_proposer(answer(), token_budget=9_000)
    assert proposer.propose(make_context(history)) is not None
    system, user = (m["content"] for m in proposer.conversation)
    tokens = sum(litellm.token_counter(model=MODEL, text=text) for text in (system, user))
    assert tokens <= 9_000
    assert all(h.title in user for h in history)
    assert SOURCE.rstrip() in user
    assert "older rows: verdict and delta omitted" in user
    assert "| 500 | Idea 499" in user  # the newest row keeps its verdict and delta


def test_titles_are_shortened_before_any_is_dropped() -> None:
    """When titles alone overflow the budget, each is shortened but still listed."""
    history = [summary(i, f"Idea {i} " + "with a long explanation " * 8) for i in range(200)]
    prompt = build_prompt(
        make_context(history), instruction="Propose.", budget_tokens=8_000, count=estimate_tokens
    )
    assert all(f"Idea {i} with a long" in prompt.user for i in range(200))
    assert "1. Idea 0 with a long explanation with a long explanation with…" in prompt.user
    assert SOURCE.rstrip() in prompt.user and prompt.tokens <= 8_000
    assert "titles shortened to 60 characters" in prompt.notes


class SummaryWithDiff(HypothesisSummary):
    """A history row as the coordinator will send it once it adds each row's diff."""

    diff: str = ""


def test_best_and_worst_recent_diffs_are_shown_when_provided() -> None:
    """Rows that carry a diff: the best and the worst recent ones appear in the prompt."""
    history = [
        SummaryWithDiff(
            hypothesis_id=f"h{i}",
            title=f"Idea {i}",
            proposer="llm:x",
            verdict=Verdict.DISCARDED,
            delta=delta,
            diff=f"-DEPTH = 2\n+DEPTH = {i}",
        )
        for i, delta in enumerate([0.01, -0.02, 0.03, 0.0, -0.01, 0.005])
    ]
    prompt = build_prompt(make_context(list(history)), instruction="Propose.")
    shown = [
        line
        for line in prompt.user.splitlines()
        if line.startswith("### best") or line.startswith("### worst")
    ]
    assert shown == [
        "### best: 2. Idea 1 (-0.02)",  # lower is better here
        "### best: 5. Idea 4 (-0.01)",
        "### worst: 3. Idea 2 (+0.03)",
        "### worst: 1. Idea 0 (+0.01)",
    ]
    assert "+DEPTH = 4" in prompt.user


def test_journal_returned_by_the_model_is_shown_in_the_next_prompt() -> None:
    """The journal the model returns is kept per task and shown the next time."""
    other = answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4")
    ledger = MemoryLedger()
    first = answer(journal="- deeper nets train slower")
    proposer = make_proposer([first, other], spend=ledger, journal=ledger)
    proposer.propose(make_context())
    proposer.propose(make_context())
    assert "- deeper nets train slower" in proposer.conversation[1]["content"]
    assert ledger.journal("toy") == "- depth is untested"


# -- repairs ----------------------------------------------------------------------------------

NAME_ERROR = (
    'Traceback (most recent call last):\n  File "train.py", line 8, in train\n'
    "NameError: name 'gelu' is not defined\n"
)


def test_crash_with_an_obvious_fault_gets_a_repair_citing_it() -> None:
    """A NameError crash is repaired: title "Repair: ...", the error line quoted."""
    history = [summary(1, "Use GELU", Verdict.CRASHED, log_tail=NAME_ERROR, delta=None)]
    proposer = make_proposer(answer(title="anything"))
    hypothesis = proposer.propose(make_context(history))
    assert hypothesis is not None and hypothesis.title == "Repair: Use GELU"
    assert "NameError: name 'gelu' is not defined" in hypothesis.rationale
    assert "NameError: name 'gelu' is not defined" in last_prompt(proposer)


def test_repairs_stop_at_their_bound() -> None:
    """An idea whose two repairs crashed too is left dead: a new idea is asked for."""
    history = [
        summary(i, title, Verdict.CRASHED, log_tail=NAME_ERROR, delta=None)
        for i, title in enumerate(["Use GELU", "Repair: Use GELU", "Repair: Use GELU"])
    ]
    proposer = make_proposer(answer())
    hypothesis = proposer.propose(make_context(history))
    assert hypothesis is not None and hypothesis.title == "Deeper model"


def test_crash_with_an_unknown_fault_is_left_dead() -> None:
    """A crash whose error is not obviously fixable gets no repair."""
    tail = "Fatal Python error: Segmentation fault\n"
    history = [summary(1, "Fused kernel", Verdict.CRASHED, log_tail=tail, delta=None)]
    hypothesis = make_proposer(answer()).propose(make_context(history))
    assert hypothesis is not None and hypothesis.title == "Deeper model"


# -- human hypotheses -------------------------------------------------------------------------


def test_human_text_hypothesis_is_implemented_keeping_its_author() -> None:
    """A text-only hypothesis gets its code; title, rationale and author are the human's."""
    idea = HypothesisCreate(
        task_id="toy", title="Three layers", rationale="Depth is cheap here.", author="ada"
    )
    proposer = make_proposer(answer(title="the model's own title"))
    hypothesis = proposer.implement(make_context(), idea)
    assert hypothesis is not None
    assert (hypothesis.title, hypothesis.author) == ("Three layers", "ada")
    assert hypothesis.rationale.startswith("Depth is cheap here.")
    assert hypothesis.proposer == f"llm:{MODEL}" and hypothesis.change is not None
    assert "Title: Three layers" in last_prompt(proposer)


def test_propose_implements_a_pending_human_hypothesis_first() -> None:
    """A pending text-only hypothesis in the context is implemented before any new idea."""
    idea = HypothesisSummary(
        hypothesis_id="h9",
        title="Three layers",
        proposer="human",
        verdict=Verdict.PENDING,
        rationale="Depth is cheap here.",
        author="ada",
    )
    context = make_context().model_copy(update={"pending": [idea]})
    other = answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4")
    proposer = make_proposer([answer(title="the model's own title"), other])
    first = proposer.propose(context)
    assert first is not None and (first.title, first.author) == ("Three layers", "ada")
    assert first.implements == "h9"
    second = proposer.propose(context)  # implemented once, then back to new ideas
    assert second is not None and (second.title, second.author) == ("Higher LR", "")


# -- ledger, secrets, the import seam ---------------------------------------------------------


def test_model_options_carry_their_weights() -> None:
    """ "MODEL=WEIGHT" sets a weight; a bare model string weighs 1."""
    assert parse_model_choice("ollama_chat/llama3:8b=2.5") == ModelChoice(
        "ollama_chat/llama3:8b", 2.5
    )
    assert parse_model_choice(MODEL) == ModelChoice(MODEL, 1.0)


def test_file_ledger_keeps_spend_and_journal_across_instances(tmp_path: Path) -> None:
    """A FileLedger reopened on its file has the same entries, total and latest journal."""
    path = tmp_path / "spend.jsonl"
    ledger = FileLedger(path)
    ledger.record("toy", MODEL, 0.25, 100, "Deeper model")
    ledger.record("other", MODEL, 1.0, 10, "elsewhere")
    ledger.save_journal("toy", "- first")
    ledger.save_journal("toy", "- second")
    reopened = FileLedger(path)
    assert reopened.total("toy") == 0.25
    assert [e.title for e in reopened.entries("toy")] == ["Deeper model"]
    assert reopened.journal("toy") == "- second"


def test_secret_file_fills_the_environment_and_returns_only_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KEY=VALUE lines go to the environment; only their names come back."""
    monkeypatch.delenv("AUTOSWARM_TEST_SECRET", raising=False)
    secret = tmp_path / "secrets.env"
    secret.write_text("# keys\nexport AUTOSWARM_TEST_SECRET='s3cret'\n\n")
    names = load_secret_file(secret)
    assert names == ["AUTOSWARM_TEST_SECRET"]
    assert os.environ["AUTOSWARM_TEST_SECRET"] == "s3cret"
    monkeypatch.delenv("AUTOSWARM_TEST_SECRET")


def test_importing_the_llm_proposer_does_not_import_litellm() -> None:
    """litellm is imported when a proposer is built, not when the coordinator is imported."""
    code = "import sys, autoswarm.coordinator.proposers.llm; assert 'litellm' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


# -- one real proposal (opt-in) ---------------------------------------------------------------

_KEYS = {
    "OPENAI_API_KEY": "openai/gpt-4o-mini",
    "ANTHROPIC_API_KEY": "anthropic/claude-3-5-haiku-latest",
}
_KEY = next((k for k in _KEYS if os.environ.get(k)), None)


@pytest.mark.llm
@pytest.mark.skipif(
    os.environ.get("AUTOSWARM_TEST_LLM") != "1" or _KEY is None,
    reason="real LLM call: set AUTOSWARM_TEST_LLM=1 and OPENAI_API_KEY or ANTHROPIC_API_KEY",
)
def test_one_real_proposal() -> None:
    """A real model proposes one valid hypothesis for the toy task, under a small cap."""
    assert _KEY is not None
    model = os.environ.get("AUTOSWARM_TEST_LLM_MODEL", _KEYS[_KEY])
    ledger = MemoryLedger()
    proposer = LLMProposer([ModelChoice(model)], spend=ledger, cap_usd=0.50, max_attempts=3)
    hypothesis = proposer.propose(make_context())
    assert hypothesis is not None and hypothesis.change is not None
    assert set(hypothesis.change) == {"train.py"}
    assert 0 < ledger.total("toy") <= 0.50


def test_spend_reaches_the_coordinator_metrics(
    coordinator: RunningCoordinator, task_dir: Path
) -> None:
    """Every call's cost, told to a real coordinator, adds up on /metrics to the ledger's."""
    from autoswarm.shared.client import CoordinatorClient

    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as admin:
        task_id = admin.register_task(read_task_files(task_dir, load_task(task_dir)))["task_id"]
    ledger = MemoryLedger()
    proposer = priced_proposer(ledger, 10.0, "not json")  # every answer rejected, each paid
    token = coordinator.create_token("proposer", "llm")
    with CoordinatorClient(coordinator.base_url, token) as client:
        proposer.report_spend_to(client)
        context = make_context().model_copy(update={"task_id": task_id})
        assert proposer.propose(context) is None
    assert proposer.calls == 5
    text = httpx.get(f"{coordinator.base_url}/metrics", trust_env=False).text
    found = {
        (sample.name, sample.labels.get("task_id")): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("autoswarm_proposer_")
    }
    assert found[("autoswarm_proposer_spend_usd_total", task_id)] == pytest.approx(
        ledger.total(task_id)
    )
    assert ledger.total(task_id) == pytest.approx(0.25)
    assert found[("autoswarm_proposer_calls_total", task_id)] == 5


# -- a real local server speaking the OpenAI protocol, through litellm's own client ------------

LOCAL = "openai/local-model"  # a name litellm has no price for


def local_choice(url: str, model: str = LOCAL, **params: Any) -> ModelChoice:
    return ModelChoice(model, params={"api_base": url, "api_key": "no-key", **params})


def local_proposer(url: str, **kwargs: Any) -> LLMProposer:
    kwargs.setdefault("spend", MemoryLedger())
    kwargs.setdefault("cap_usd", 1.0)
    kwargs.setdefault("num_retries", 0)
    return LLMProposer([local_choice(url)], **kwargs)


@pytest.mark.parametrize("provider", ["openai", "hosted_vllm"])
@pytest.mark.parametrize("shape", list(MALFORMED))
def test_malformed_answer_of_a_real_server_is_rejected_and_asked_again(
    shape: str, provider: str
) -> None:
    """A 200 that is no usable chat completion is a rejected, recorded answer; the next is used."""
    ledger = MemoryLedger()
    with chat_server(MALFORMED[shape], completion(answer())) as server:
        proposer = LLMProposer(
            [local_choice(server.url, f"{provider}/local-model")],
            spend=ledger,
            cap_usd=1.0,
            num_retries=0,
        )
        hypothesis = proposer.propose(make_context())
    assert hypothesis is not None and hypothesis.title == "Deeper model"
    assert len(server.requests) == 2
    rejected, kept = ledger.entries("toy")
    assert rejected.title.startswith("(rejected) the endpoint's answer")
    assert rejected.tokens > 0 and kept.tokens == 1100


def test_malformed_answers_never_stop_the_proposer_loop() -> None:
    """A server that only answers empty choices: the loop keeps proposing until it is stopped."""
    with chat_server(MALFORMED["empty-choices"]) as server:
        proposer = local_proposer(server.url, max_attempts=2)
        stop = threading.Event()
        loop = threading.Thread(
            target=run_proposer_loop,
            args=(SharedCoordinator(), "toy", proposer),
            kwargs={"stop": stop, "poll_s": 0.01, "queue_ahead": 10},
        )
        loop.start()
        wait_until(lambda: len(server.requests) >= 6 or not loop.is_alive(), 60, "6 calls")
        alive = loop.is_alive()
        stop.set()
        loop.join(30)
    assert alive and len(server.requests) >= 6
    assert not loop.is_alive()


def test_model_with_no_key_and_no_endpoint_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`openai/...` without OPENAI_API_KEY or --api-base: one clear error, no call, no retry."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(InvalidInput, match="no key and no endpoint: set OPENAI_API_KEY"):
        LLMProposer([ModelChoice(MODEL)], spend=MemoryLedger(), cap_usd=1.0)


def test_propose_without_a_key_exits_at_start_with_one_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`autoswarm propose --model openai/...` with no key: exit 2 and one error, before joining."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    result = invoke("propose", "--task", "t", "--proposer", "llm", "--model", MODEL,
                    "--ledger", str(tmp_path / "spend.jsonl"), "--token", "x",
                    "--join", "http://127.0.0.1:9")  # fmt: skip
    assert result.exit_code == 2
    assert result.stderr.count("error:") == 1 and "OPENAI_API_KEY" in result.stderr
    assert "--api-base" in result.stderr


def test_api_base_and_key_variable_reach_the_local_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--api-base and --api-key-env: the call goes to that server with that variable's key."""
    monkeypatch.setenv("LOCAL_LLM_KEY", "sk-local-test")
    options = LLMOptions(
        [LOCAL], api_base=[], api_key_env=["LOCAL_LLM_KEY"], ledger=tmp_path / "spend.jsonl"
    )
    with chat_server(completion(answer())) as server:
        options = dataclasses.replace(options, api_base=[server.url])
        [proposer] = build_proposers("llm", options, seed=0)
        assert isinstance(proposer, LLMProposer)
        assert proposer.propose(make_context()) is not None
    [request] = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["authorization"] == "Bearer sk-local-test"
    assert request["body"]["model"] == "local-model"


def test_each_model_reaches_its_own_endpoint_in_order(tmp_path: Path) -> None:
    """Two --api-base values: the model's own server first, the fallback's when it fails."""
    other = answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4")
    down = (503, "application/json", '{"error": {"message": "overloaded"}}')
    with chat_server(down) as first, chat_server(completion(other)) as second:
        options = LLMOptions(
            [LOCAL],
            fallbacks=["hosted_vllm/second-model"],
            api_base=[first.url, second.url],
            ledger=tmp_path / "spend.jsonl",
            retries=0,
        )
        [proposer] = build_proposers("llm", options, seed=0)
        hypothesis = proposer.propose(make_context())
    assert hypothesis is not None and hypothesis.proposer == "llm:hosted_vllm/second-model"
    assert len(first.requests) >= 1 and len(second.requests) == 1
    assert second.requests[0]["body"]["model"] == "second-model"


def test_given_prices_count_dollars_for_a_model_litellm_cannot_price(tmp_path: Path) -> None:
    """--price-in 2 --price-out 10 (USD per million): the ledger holds tokens times prices."""
    with chat_server(completion(answer())) as server:
        options = LLMOptions(
            [LOCAL],
            api_base=[server.url],
            price_in=["2"],
            price_out=["10"],
            ledger=tmp_path / "spend.jsonl",
        )
        [proposer] = build_proposers("llm", options, seed=0)
        assert proposer.propose(make_context()) is not None
    [entry] = FileLedger(tmp_path / "spend.jsonl").entries("toy")
    assert entry.tokens == 1100
    assert entry.cost_usd == pytest.approx(1000 * 2e-6 + 100 * 10e-6)


def test_model_with_no_price_is_capped_by_its_tokens() -> None:
    """No price known or given: its calls are $0 but their tokens stop at --cap-tokens."""
    ledger = MemoryLedger()
    with chat_server(completion("not json")) as server:
        proposer = local_proposer(
            server.url, spend=ledger, cap_tokens=3_000, max_output_tokens=500, max_attempts=5
        )
        with pytest.raises(SpendCapReached, match="--cap-tokens"):
            proposer.propose(make_context())
    entries = ledger.entries("toy")
    assert [e.cost_usd for e in entries] == [0.0, 0.0]
    assert sum(e.tokens for e in entries) == 2_200 and len(server.requests) == 2


def test_answer_without_usage_is_counted_in_tokens_all_the_same() -> None:
    """An endpoint that reports no usage: the prompt and answer are counted here."""
    ledger = MemoryLedger()
    with chat_server(completion(answer(), usage=False)) as server:
        assert local_proposer(server.url, spend=ledger).propose(make_context()) is not None
    [entry] = ledger.entries("toy")
    assert entry.tokens > estimate_tokens(SOURCE)


def test_propose_reaching_a_cap_exits_non_zero_with_one_line(
    coordinator: RunningCoordinator, task_dir: Path, tmp_path: Path
) -> None:
    """`propose` whose token cap is too small for one call: exit 1, one error line, no call."""
    from autoswarm.shared.client import CoordinatorClient

    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as admin:
        task_id = admin.register_task(read_task_files(task_dir, load_task(task_dir)))["task_id"]
    token = coordinator.create_token("proposer", "llm")
    with chat_server(completion(answer())) as server:
        result = invoke("propose", "--task", task_id, "--proposer", "llm", "--model", LOCAL,
                        "--api-base", server.url, "--cap-tokens", "100",
                        "--ledger", str(tmp_path / "spend.jsonl"), "--join", coordinator.base_url,
                        "--token", token)  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.count("error:") == 1 and "--cap-tokens" in result.stderr
    assert "submitted" not in result.stdout and server.requests == []


def test_stop_abandons_the_call_in_flight() -> None:
    """A server that never answers: setting the stop event ends the call at once."""
    errors: list[Exception] = []
    with chat_server(HANG) as server:
        proposer = local_proposer(server.url, timeout_s=600)
        stop = threading.Event()
        proposer.abandon_on(stop)

        def run() -> None:
            try:
                proposer.propose(make_context())
            except Exception as exc:
                errors.append(exc)

        call = threading.Thread(target=run)
        call.start()
        assert server.received.wait(30)
        stop.set()
        call.join(30)
        finished = not call.is_alive()
    assert finished and len(errors) == 1 and isinstance(errors[0], CallAbandoned)


def test_litellm_lines_reach_the_log_handlers_once(capfd: pytest.CaptureFixture[str]) -> None:
    """A failing call: litellm's Router lines go to the root handlers only, never its own."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    root, router_logger = logging.getLogger(), logging.getLogger("LiteLLM Router")
    keep, level, router_level = Keep(logging.INFO), root.level, router_logger.level
    root.addHandler(keep)
    root.setLevel(logging.INFO)
    router_logger.setLevel(logging.INFO)  # the CLI sets WARNING; its INFO lines are counted here
    try:
        with chat_server((500, "application/json", '{"error": {"message": "boom"}}')) as server:
            proposer = local_proposer(server.url, num_retries=1, max_attempts=1)
            assert proposer.propose(make_context()) is None
    finally:
        root.removeHandler(keep)
        root.setLevel(level)
        router_logger.setLevel(router_level)
    router = [r for r in seen if r.name == "LiteLLM Router" and "Exception" in r.getMessage()]
    assert len(router) == len(server.requests) == 2
    out, err = capfd.readouterr()
    assert "litellm.completion(" not in out + err


def test_host_paths_are_cut_to_file_names() -> None:
    """A worker's folders and site-packages prefixes are cut; URLs and code are left alone."""
    tail = (
        'File "/home/ada/.autoswarm/workers/w0/run/e1/train.py", line 8, in train\n'
        'File "/usr/lib/python3.12/site-packages/torch/nn/functional.py", line 2\n'
        "see http://127.0.0.1:8470/api/v1 and x = a/b\n"
        "NameError: name 'gelu' is not defined (in ~/work/train.py)\n"
    )
    assert strip_host_paths(tail) == (
        'File "train.py", line 8, in train\n'
        'File "torch/nn/functional.py", line 2\n'
        "see http://127.0.0.1:8470/api/v1 and x = a/b\n"
        "NameError: name 'gelu' is not defined (in train.py)\n"
    )


HOST_TAIL = (
    "Traceback (most recent call last):\n"
    '  File "/home/ada/.autoswarm/workers/w0/runs/e1/train.py", line 1, in <module>\n'
    "NameError: name 'gelu' is not defined\n"
)


def crash_with_tail(worker: HandWorker, tail: str) -> None:
    """The next explore lease, reported as a crash whose log tail is `tail`."""
    lease = worker.lease("explore")
    result = {"status": "crash", "metric": None, "hardware": HW, "wall_s": 1.5}
    result |= {"peak_rss_mb": 512.0, "log_tail": tail, "error": "crashed", "exit_code": 1}
    answer = worker.http.post(
        "/api/v1/results",
        json={
            "worker_id": worker.worker_id,
            "experiment_id": lease["experiment_id"],
            "fencing_token": lease["fencing_token"],
            "result": result,
        },
    )
    assert answer.status_code == 201, answer.text


def test_prompt_the_server_received_carries_the_whole_context(tmp_path: Path) -> None:
    """Through a real coordinator: the repair prompt holds the crashed diff, the best diffs,
    the judge's reasons and the read-only file program.md names, and no host path."""
    from autoswarm.shared.client import CoordinatorClient

    served = serve(tmp_path)
    folder = hand_task(tmp_path)
    (folder / "program.md").write_text("# tiny\n\nMake `score` lower. Read prepare.py.\n")
    (folder / "prepare.py").write_text("SEQ_LEN = 128  # fixed: shared with the evaluator\n")
    run = Run(served, register_task(served, folder))
    repair = answer(title="x", search="SCORE = 0.5  #", replace="SCORE = 0.3  #")
    try:
        a, b = hand_worker(run, "alice", "a"), hand_worker(run, "bob", "b")
        a.run("baseline", 1.0), b.run("baseline", 1.0)
        submit(run, "lower", 0.5, "llm:x")
        a.run("explore", 0.5), b.run("replicate", 0.5)
        wait_verdict(run, "lower", "kept")
        a.run("baseline", 0.5), b.run("baseline", 0.5)
        submit(run, "higher", 2.0, "mutation")
        a.run("explore", 2.0)
        wait_verdict(run, "higher", "discarded")
        submit(run, "crash", 0.25, "human")
        crash_with_tail(a, HOST_TAIL)
        wait_verdict(run, "crash", "crashed")
        reasons = {h["title"]: h["reason"] for h in served.get(f"tasks/{run.task_id}/hypotheses")}
        with chat_server(completion(repair)) as server:
            token = served.create_token("proposer", "llm")
            with CoordinatorClient(served.base_url, token) as client:
                hypothesis = local_proposer(server.url).propose(client.context(run.task_id))
    finally:
        run.close()
        served.stop()
    assert hypothesis is not None and hypothesis.title == "Repair: crash"
    [prompt] = server.prompts()
    assert "The change that crashed:\n```diff" in prompt and "+SCORE = 0.25" in prompt
    assert "### best: " in prompt and "+SCORE = 0.5" in prompt and "+SCORE = 2.0" in prompt
    assert all(reasons[t][:60] in prompt for t in ("lower", "higher") if reasons[t])
    assert reasons["higher"] and reasons["lower"]
    assert "### prepare.py (read-only)" in prompt and "SEQ_LEN = 128" in prompt
    assert 'File "train.py", line 1' in prompt and "/home/ada" not in prompt


def test_ctrl_c_ends_propose_during_a_call_that_never_answers(
    coordinator: RunningCoordinator, task_dir: Path, tmp_path: Path
) -> None:
    """SIGINT while the endpoint holds the call: `autoswarm propose` ends without waiting."""
    from autoswarm.shared.client import CoordinatorClient

    with CoordinatorClient(coordinator.base_url, coordinator.admin_token) as admin:
        task_id = admin.register_task(read_task_files(task_dir, load_task(task_dir)))["task_id"]
    token = coordinator.create_token("proposer", "llm")
    with chat_server(HANG) as server:
        argv = [sys.executable, "-m", "autoswarm", "propose", "--task", task_id,
                "--proposer", "llm", "--model", LOCAL, "--api-base", server.url,
                "--llm-timeout-s", "600", "--ledger", str(tmp_path / "spend.jsonl"),
                "--join", coordinator.base_url, "--token", token]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
        try:
            assert server.received.wait(120)
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=60)
        finally:
            proc.kill()
    assert proc.returncode == 0 and "submitted 0 hypotheses" in out


def test_a_cap_stops_up_s_proposers_with_the_reason() -> None:
    """`up`'s proposer thread: a cap reached sets the swarm's stop and keeps the error to show."""
    from autoswarm.cli.up import Swarm

    swarm = Swarm()
    proposer = priced_proposer(MemoryLedger(), 0.04, answer())
    swarm.run_proposers(SharedCoordinator(), "toy", [proposer], queue_ahead=10, poll_s=0.01)
    assert swarm.stop.is_set() and isinstance(swarm.proposer_error, SpendCapReached)


def test_up_shows_the_proposer_lines_under_its_live_table() -> None:
    """A proposer's log line reaches the live view once, in the panel under the table."""
    from rich.console import Console

    from autoswarm.cli.up import Swarm, render

    swarm = Swarm()
    logger = logging.getLogger("autoswarm.coordinator.proposers.llm")
    logger.addHandler(swarm.log)
    try:
        logger.warning("llm: task %s: answer %d rejected: %s", "toy", 1, "no content")
    finally:
        logger.removeHandler(swarm.log)
    console = Console(width=120, record=True)
    console.print(render(SPEC, {"heads": []}, [], {}, [], swarm))
    text = console.export_text()
    assert text.count("answer 1 rejected: no content") == 1
    assert text.index("answer 1 rejected") > text.index("latest experiments")


def test_up_with_a_local_model_stops_at_its_token_cap_with_exit_1(
    tmp_path: Path, task_dir: Path
) -> None:
    """`autoswarm up --proposer llm --api-base URL --cap-tokens N`: the local server answers
    until the cap, then `up` stops with one error line and exit code 1."""
    with chat_server(completion(answer(journal="- one")), completion("not json")) as server:
        argv = [sys.executable, "-m", "autoswarm", "up", "--task", str(task_dir),
                "--workers", "1", "--trust", "trusted-code", "--data-dir", str(tmp_path / "d"),
                "--out", str(tmp_path / "out"), "--proposer", "llm", "--model", LOCAL,
                "--api-base", server.url, "--cap-tokens", "5000",
                "--llm-attempts", "2"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 1, done.stdout + done.stderr
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and "the proposer stopped" in errors[0]
    assert "--cap-tokens" in done.stderr and len(server.requests) >= 1


def test_concurrent_proposers_share_out_the_bound() -> None:
    """--llm-concurrency 2: two proposer loops at once submit the bounded number in all."""
    shared = SharedCoordinator()
    ideas = [
        answer(),
        answer(title="Higher LR", search="LEARNING_RATE = 3e-4", replace="LEARNING_RATE = 6e-4"),
        answer(title="Four layers", replace="DEPTH = 4  # layers"),
    ]
    proposers = [make_proposer(ideas), make_proposer(ideas)]
    sent = run_proposer_loops(
        shared, "toy", proposers, stop=threading.Event(), max_hypotheses=3, poll_s=0.01
    )
    assert sent == 3 and len(shared.submitted) == 3
    assert all(p.calls > 0 for p in proposers)


def test_vllm_model_without_an_endpoint_is_refused_before_any_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`hosted_vllm/...` with no --api-base and no HOSTED_VLLM_API_BASE: one clear error."""
    monkeypatch.delenv("HOSTED_VLLM_API_BASE", raising=False)
    with pytest.raises(InvalidInput, match=r"set HOSTED_VLLM_API_BASE.*or give --api-base"):
        LLMProposer([ModelChoice("hosted_vllm/qwen")], spend=MemoryLedger(), cap_usd=1.0)


def test_refused_key_ends_the_proposer_loop_with_the_reason() -> None:
    """A 401 from the endpoint is not retried as a passing fault: the loop ends with it."""
    refused = (401, "application/json", '{"error": {"message": "invalid api key"}}')
    with chat_server(refused) as server:
        proposer = local_proposer(server.url)
        with pytest.raises(LLMRefused, match="invalid api key"):
            run_proposer_loop(SharedCoordinator(), "toy", proposer, poll_s=0.01)
    assert len(server.requests) == 1


def test_api_base_keeps_the_providers_key_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """--api-base with OPENAI_API_KEY set (a gateway): that key is sent, not a placeholder."""
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    with chat_server(completion(answer())) as server:
        options = LLMOptions([LOCAL], api_base=[server.url], ledger=tmp_path / "spend.jsonl")
        [proposer] = build_proposers("llm", options, seed=0)
        assert proposer.propose(make_context()) is not None
    assert server.requests[0]["headers"]["authorization"] == "Bearer sk-from-env"
