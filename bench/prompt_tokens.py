"""Prompt tokens per hypothesis of the LLM proposer, and how the context budget trims them.

The prompt of a hypothesis's first call (system + user message) is built as the proposer
builds it (`build_prompt`, litellm's tokenizer for gpt-4o-mini) for two tasks: tinylm as
shipped, and an AutoResearch-sized stand-in (a 630-line train.py and a 390-line read-only
prepare.py that program.md names, both assembled from this repository's task code), each
after 0 to 1,000 hypotheses (realistic titles, verdicts, deltas, the judge's reasons, diffs
on the rows the coordinator fills, crash log tails), under budgets of 8k to 32k tokens
(the default is 24k). Prints one markdown table row per case: the total and each section.

    LITELLM_LOCAL_MODEL_COST_MAP=True .venv/bin/python bench/prompt_tokens.py
"""

from __future__ import annotations

import argparse
import os
import random
import re
from collections.abc import Callable
from pathlib import Path

from autoswarm.coordinator.proposers.context import build_prompt, render, rows_worth_a_diff
from autoswarm.shared.models import HypothesisSummary, ProposerContext, Verdict
from autoswarm.shared.task import load_task

REPO = Path(__file__).resolve().parents[1]
MODEL = "openai/gpt-4o-mini"
AR_TRAIN_LINES = 630
AR_PREPARE_LINES = 390
# The user message's sections shown per case, as `user.md` names them.
SECTIONS = (
    "The head's editable files",
    "Read-only files program.md names",
    "Hypotheses tried on this task",
    "Best and worst recent changes",
    "Recent crashes",
)
IDEAS = (
    "scale LEARNING_RATE by {x}",
    "set N_LAYER to {n}",
    "warmup for {n} steps, then cosine decay",
    "RMSNorm instead of LayerNorm",
    "rotary embeddings with base {n}",
    "weight decay {x} on matrices only",
    "tie the input and output embeddings",
    "batch size {n} with gradient accumulation",
)
REASONS = (
    "discarded: {d:+.4f} is within the noise (±{s:.4f}, 3 head runs)",
    "discarded: worse than the head by {d:+.4f}",
    "kept: beat the head by {d:+.4f} (> {s:.4f}) and replicated on another worker",
    "crashed: the run exited with code 1",
)
CRASH_TAIL = (
    "step 00120 | loss 2.4310 | lr 3.00e-04\n"
    "Traceback (most recent call last):\n"
    '  File "/home/ada/.autoswarm/workers/w0/runs/e{n}/train.py", line {n}, in <module>\n'
    "    logits = model(x)\n"
    '  File "/usr/lib/python3.12/site-packages/torch/nn/modules/module.py", line 1736\n'
    "RuntimeError: mat1 and mat2 shapes cannot be multiplied (64x{n} and 128x256)\n"
)


def code_lines(paths: list[Path], n: int) -> str:
    """`n` lines of this repository's task code, in order, repeated as needed."""
    source = [line for p in paths for line in p.read_text().splitlines()]
    return "\n".join(source[i % len(source)] for i in range(n)) + "\n"


def diff_for(rng: random.Random, n: int) -> str:
    lines = [f"--- a/train.py\n+++ b/train.py\n@@ -{n},7 +{n},7 @@"]
    for _ in range(rng.randint(2, 6)):
        lines.append(f"-LEARNING_RATE = {rng.random():.2e}  # step size of the optimiser")
        lines.append(f"+LEARNING_RATE = {rng.random():.2e}  # step size of the optimiser")
    return "\n".join(lines)


def history(n: int, lower_is_better: bool) -> list[HypothesisSummary]:
    rng = random.Random(n)
    rows = []
    for i in range(n):
        idea = rng.choice(IDEAS).format(x=round(rng.uniform(0.5, 2), 2), n=rng.randint(2, 512))
        crashed = rng.random() < 0.08
        delta = None if crashed else round(rng.gauss(0.01, 0.03), 4)
        reason = REASONS[3] if crashed else rng.choice(REASONS[:3])
        verdict = Verdict.CRASHED if crashed else Verdict.DISCARDED
        if reason.startswith("kept"):
            verdict = Verdict.KEPT
        rows.append(
            HypothesisSummary(
                hypothesis_id=f"h{i}",
                title=f"{idea} ({i})",
                proposer="llm:openai/gpt-4o-mini",
                verdict=verdict,
                delta=delta,
                reason=reason.format(d=delta or 0.0, s=0.015),
                log_tail=CRASH_TAIL.format(n=i) if crashed else "",
            )
        )
    worth = rows_worth_a_diff(rows, lower_is_better=lower_is_better)
    return [
        r.model_copy(update={"diff": diff_for(rng, i)}) if i in worth else r
        for i, r in enumerate(rows)
    ]


def contexts() -> dict[str, ProposerContext]:
    """The two tasks' contexts with no history (a case adds its own)."""
    tiny = REPO / "tasks" / "tinylm"
    spec = load_task(tiny)
    tinylm = ProposerContext(
        task_id="tinylm",
        spec=spec,
        program=(tiny / "program.md").read_text(),
        head_commit="0" * 40,
        head_files={"train.py": (tiny / "train.py").read_text()},
        head_metric=1.02,
        head_std=0.015,
        read_only_files={"prepare.py": (tiny / "prepare.py").read_text()},
    )
    tasks = REPO / "tasks"
    sources = [*sorted(tasks.glob("*/train.py")), tasks / "sharpe" / "strategy.py"]
    ar = tinylm.model_copy(
        update={
            "task_id": "ar-sized",
            "head_files": {"train.py": code_lines(sources, AR_TRAIN_LINES)},
            "read_only_files": {
                "prepare.py": code_lines(sorted(tasks.glob("*/*.py"))[::-1], AR_PREPARE_LINES)
            },
        }
    )
    return {"tinylm": tinylm, "AR-sized": ar}


def section_tokens(user: str, count: Callable[[str], int]) -> dict[str, int]:
    """Tokens per `## ` section of the user message."""
    parts = re.split(r"^## ", user, flags=re.MULTILINE)
    out = {}
    for part in parts[1:]:
        name, _, body = part.partition("\n")
        out[name.split(" (")[0].strip()] = count(body)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--histories", default="0,100,150,300,1000")
    parser.add_argument("--budgets", default="8000,16000,24000,32000")
    args = parser.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    def count(text: str) -> int:
        return int(litellm.token_counter(model=MODEL, text=text))

    print(
        "| task | history | budget | prompt tokens | editable files | read-only files "
        "| history rows | diffs | crashes | trimmed |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, base in contexts().items():
        for n in (int(x) for x in args.histories.split(",")):
            context = base.model_copy(update={"history": history(n, base.spec.lower_is_better)})
            for budget in (int(x) for x in args.budgets.split(",")):
                prompt = build_prompt(
                    context, instruction=render("ideate.md"), budget_tokens=budget, count=count
                )
                total = count(prompt.system) + count(prompt.user)
                parts = section_tokens(prompt.user, count)
                cells = [str(parts[section]) for section in SECTIONS]
                notes = "; ".join(prompt.notes) or "—"
                print(f"| {name} | {n} | {budget} | {total} | {' | '.join(cells)} | {notes} |")


if __name__ == "__main__":
    main()
