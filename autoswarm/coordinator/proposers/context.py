"""What the LLM proposer tells the model: prompts from data files, fitted to a token budget.

The prompt holds the task's rules (system prompt), program.md, the head's editable files,
the research journal, a table of every hypothesis tried on the task (verdict, delta and the
judge's one-line reason), what is in flight, recent crashes with their log tails, the best
and worst recent diffs, and the read-only files program.md names. It also chooses what to
ask for: a repair of a crash with an obvious fault, or a new idea.

Budgeting guarantees: the head's files are never cut; every hypothesis title is always
listed (the oldest lose their verdict, delta and reason first, then their titles are
shortened); anything cut is cut at a line boundary, oldest first, with a note saying how
much. What is added, in order while it fits: the 30 newest full rows, 3 crashes, 2 best and
2 worst diffs, the read-only files (cut to what is left), then older full rows. The prompt
exceeds its budget only when the head's files and the titles alone do (logged).
Host paths (a worker's folders in a log tail) never reach the model: `strip_host_paths`.
It does not know the model's tokenizer: the caller passes a counter (`estimate_tokens`,
characters / 4, when none is known).
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from string import Template

from autoswarm.shared.models import HypothesisSummary, ProposerContext, Verdict

logger = logging.getLogger(__name__)

TokenCounter = Callable[[str], int]

REPAIR_PREFIX = "Repair: "
# Rows shown in full before crashes and diffs get their share of the budget.
RECENT_FULL_ROWS = 30
MAX_CRASHES = 3
CRASH_TAIL_LINES = 15
MAX_DIFFS = 2  # best and worst each
DIFF_WINDOW = 50  # judged hypotheses a "recent" diff is chosen from
MAX_DIFF_LINES = 80
MAX_LOG_LINE_CHARS = 300
MAX_REASON_CHARS = 160
SHORT_TITLE_CHARS = 60
# Piecewise token counts drift from the count of the whole text at section boundaries.
_SAFETY = 0.98

# Faults a repair can fix without rethinking the idea: (kind, pattern on the error line).
_OBVIOUS_FAULTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("syntax error", re.compile(r"\b(SyntaxError|IndentationError|TabError)\b")),
    ("typo", re.compile(r"\b(NameError|UnboundLocalError|AttributeError|ImportError)\b")),
    (
        "shape mismatch",
        re.compile(
            r"(RuntimeError|ValueError).*(shape|size mismatch|size of tensor|mat1 and mat2|"
            r"dimension|must match)",
            re.IGNORECASE,
        ),
    ),
    ("out of memory", re.compile(r"out of memory|OutOfMemoryError|\bMemoryError\b", re.I)),
    (
        "wrong call",
        re.compile(r"TypeError.*(argument|positional|keyword|not callable|unsupported operand)"),
    ),
)
# A directory prefix of an absolute path ("/home/ada/.autoswarm/workers/w0/run/"), not of a URL.
_PACKAGES_DIR = re.compile(r"(?<![\w/.~-])[/~][^\s\"':]*/(?:site|dist)-packages/")
_HOST_DIR = re.compile(r"(?<![\w/.~-])(?:~/|/)(?:[\w.@+-]+/)+(?=[\w.@+-])")
_ERROR_LINE = re.compile(r"^\s*[\w.]*(Error|Exception)\b.*|.*out of memory.*", re.IGNORECASE)


@functools.cache
def load_template(name: str) -> str:
    """A prompt template shipped in `autoswarm/coordinator/proposers/prompts/`."""
    return (
        resources.files("autoswarm.coordinator.proposers.prompts").joinpath(name).read_text("utf-8")
    )


def render(name: str, **values: object) -> str:
    """A prompt template with its `$name` placeholders filled (a missing one is an error)."""
    return Template(load_template(name)).substitute({k: str(v) for k, v in values.items()})


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate: about four characters a token for English and code."""
    return (len(text) + 3) // 4


def extra_text(record: object, name: str) -> str:
    """An optional text field the coordinator may add to a record (e.g. `diff`), else ""."""
    value = getattr(record, name, "")
    return value if isinstance(value, str) else ""


def strip_host_paths(text: str) -> str:
    """`text` with every absolute path cut to its file name (a package's to its own path)."""
    return _HOST_DIR.sub("", _PACKAGES_DIR.sub("", text))


def base_title(title: str) -> str:
    """The idea a title names, without its "Repair: " prefixes."""
    while title.startswith(REPAIR_PREFIX):
        title = title[len(REPAIR_PREFIX) :]
    return title


# -- faults and repairs ---------------------------------------------------------------------


@dataclass(frozen=True)
class Fault:
    """An obvious fault read from a log tail: its kind and the error line quoted."""

    kind: str
    line: str


def error_line(log_tail: str) -> str:
    """The last line of a log tail that names an error, or its last non-empty line."""
    lines = [line.rstrip() for line in strip_host_paths(log_tail).splitlines() if line.strip()]
    for line in reversed(lines):
        if _ERROR_LINE.match(line):
            return line.strip()[:MAX_LOG_LINE_CHARS]
    return lines[-1].strip()[:MAX_LOG_LINE_CHARS] if lines else ""


def obvious_fault(log_tail: str) -> Fault | None:
    """The fault of a crash when it is obvious (typo, syntax, shape, OOM), else None."""
    line = error_line(log_tail)
    for kind, pattern in _OBVIOUS_FAULTS:
        if pattern.search(line):
            return Fault(kind, line)
    return None


@dataclass(frozen=True)
class RepairJob:
    """A crashed hypothesis worth one more try, and the fault to fix."""

    crashed: HypothesisSummary
    fault: Fault
    original_title: str
    attempt: int  # 1 for the first repair of the idea


def choose_repair(
    context: ProposerContext, *, max_repairs: int, skip: frozenset[str] = frozenset()
) -> RepairJob | None:
    """The newest crashed idea with an obvious fault and repairs left, or None.

    An idea is left dead once `max_repairs` repairs of it were tried, once any of them ran
    to a verdict other than crashed (the idea was then tested), or when its latest crash is
    not obvious. An idea with a repair in flight waits for it. `skip` holds hypothesis ids
    this proposer already repaired.
    """
    in_flight_ideas = {base_title(h.title) for h in context.in_flight}
    repairs: dict[str, int] = {}
    settled: set[str] = set()
    for summary in context.history:
        idea = base_title(summary.title)
        if summary.title.startswith(REPAIR_PREFIX):
            repairs[idea] = repairs.get(idea, 0) + 1
            if summary.verdict not in (Verdict.CRASHED, Verdict.PENDING):
                settled.add(idea)
    seen: set[str] = set()
    for summary in reversed(context.history):  # newest first: each idea's latest outcome
        idea = base_title(summary.title)
        if idea in seen:
            continue
        seen.add(idea)
        if summary.verdict is not Verdict.CRASHED or not summary.log_tail:
            continue
        if idea in settled or idea in in_flight_ideas or summary.hypothesis_id in skip:
            continue
        done = repairs.get(idea, 0)
        fault = obvious_fault(summary.log_tail)
        if done >= max_repairs or fault is None:
            logger.debug("repair: %r is left dead (%d repairs, fault %s)", idea, done, fault)
            continue
        return RepairJob(summary, fault, idea, done + 1)
    return None


def best_and_worst(
    history: Sequence[HypothesisSummary | None], *, lower_is_better: bool
) -> list[tuple[str, int]]:
    """("best" | "worst", index) of the extremes among the last judged rows (None: skipped)."""
    sign = -1.0 if lower_is_better else 1.0
    deltas = {i: h.delta for i, h in enumerate(history) if h is not None and h.delta is not None}
    recent = list(deltas)[-DIFF_WINDOW:]
    ranked = sorted(recent, key=lambda i: sign * deltas[i], reverse=True)
    best = ranked[:MAX_DIFFS]
    worst = [i for i in reversed(ranked) if i not in best][:MAX_DIFFS]
    return [("best", i) for i in best] + [("worst", i) for i in worst]


def rows_worth_a_diff(history: Sequence[HypothesisSummary], *, lower_is_better: bool) -> set[int]:
    """The history rows whose diff a prompt can show: the best and worst recent changes and
    the newest crashes (a repair quotes the diff that crashed). The coordinator reads only
    these diffs from git."""
    rows = {i for _, i in best_and_worst(list(history), lower_is_better=lower_is_better)}
    crashed = [i for i, h in enumerate(history) if h.verdict is Verdict.CRASHED]
    return rows | set(crashed[-2 * MAX_CRASHES :])


# -- the prompt -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prompt:
    """The system and user messages, their token count, and what was left out."""

    system: str
    user: str
    tokens: int
    notes: tuple[str, ...] = ()


def system_prompt(context: ProposerContext) -> str:
    spec = context.spec
    return render(
        "system.md",
        editable=", ".join(spec.editable),
        protected=", ".join(spec.protected + spec.scoring.files) or "(none)",
        metric=spec.metric.name,
        direction="lower" if spec.lower_is_better else "higher",
        budget_s=f"{spec.budget_s:g}",
    )


def _fmt(value: float | None) -> str:
    return "—" if value is None else f"{value:+.4g}"


def _task_line(context: ProposerContext) -> str:
    spec = context.spec
    better = "lower" if spec.lower_is_better else "higher"
    head = "not measured yet"
    if context.head_metric is not None:
        head = f"{spec.metric.name} = {context.head_metric:.6g}"
        if context.head_std is not None:
            head += f" ± {context.head_std:.2g} (run-to-run noise)"
    effect = f"; a change must beat it by more than {spec.min_effect:g}" if spec.min_effect else ""
    return (
        f"Task {spec.name}: {better} {spec.metric.name} is better; every run gets "
        f"{spec.budget_s:g} s. Head {context.head_commit[:12]}: {head}{effect}."
    )


def _files_section(context: ProposerContext) -> str:
    blocks = []
    for path in context.spec.editable:
        content = context.head_files.get(path)
        if content is None:
            continue
        lang = "python" if path.endswith(".py") else ""
        blocks.append(f"### {path}\n```{lang}\n{content.rstrip()}\n```")
    return "\n\n".join(blocks)


def _keep_lines(text: str, max_tokens: int, count: TokenCounter) -> tuple[str, int]:
    """The first whole lines of `text` within `max_tokens`, and how many lines were dropped."""
    lines = text.splitlines()
    kept, used = [], 0
    for line in lines:
        cost = count(line + "\n")
        if used + cost > max_tokens:
            break
        kept.append(line)
        used += cost
    return "\n".join(kept), len(lines) - len(kept)


def _tail_lines(text: str, n: int) -> str:
    lines = [line.rstrip() for line in strip_host_paths(text).splitlines() if line.strip()][-n:]
    return "\n".join(
        line if len(line) <= MAX_LOG_LINE_CHARS else line[:MAX_LOG_LINE_CHARS] + " …"
        for line in lines
    )


def _one_line(text: str, limit: int) -> str:
    line = " ".join(strip_host_paths(text).replace("|", "/").split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _full_row(number: int, summary: HypothesisSummary) -> str:
    reason = _one_line(summary.reason, MAX_REASON_CHARS)
    return f"| {number} | {summary.title} | {summary.verdict} | {_fmt(summary.delta)} | {reason} |"


def _short_row(number: int, summary: HypothesisSummary, short: bool) -> str:
    title = summary.title
    if short and len(title) > SHORT_TITLE_CHARS:
        title = title[: SHORT_TITLE_CHARS - 1] + "…"
    return f"{number}. {title}"


def _crash_block(number: int, summary: HypothesisSummary) -> str:
    tail = _tail_lines(summary.log_tail, CRASH_TAIL_LINES)
    return f"### {number}. {summary.title}\n```\n{tail}\n```"


def clip_diff(diff: str, max_lines: int = MAX_DIFF_LINES) -> str:
    """A diff's first `max_lines` lines, fenced, with a note of how many more there were."""
    lines = diff.rstrip().splitlines()
    note = ""
    if len(lines) > max_lines:
        note = f"\n({len(lines) - max_lines} more diff lines omitted)"
        lines = lines[:max_lines]
    body = "\n".join(lines)
    return f"```diff\n{body}\n```{note}"


def _diff_block(label: str, number: int, summary: HypothesisSummary) -> str:
    head = f"### {label}: {number}. {summary.title} ({_fmt(summary.delta)})"
    return f"{head}\n{clip_diff(extra_text(summary, 'diff'))}"


def _read_only_block(path: str, text: str, dropped: int) -> str:
    lang = "python" if path.endswith(".py") else ""
    note = f"\n({dropped} more lines omitted)" if dropped else ""
    return f"### {path} (read-only)\n```{lang}\n{text.rstrip()}\n```{note}"


@dataclass
class _Layout:
    """Which optional parts are in: full rows (by history index), crashes, diffs, and the
    read-only files (path: the lines kept, how many dropped)."""

    full: set[int] = field(default_factory=set)
    crashes: list[int] = field(default_factory=list)
    diffs: list[tuple[str, int]] = field(default_factory=list)
    read_only: dict[str, tuple[str, int]] = field(default_factory=dict)
    short_titles: bool = False
    program: str = ""
    program_note: str = ""


class _Builder:
    def __init__(
        self,
        context: ProposerContext,
        instruction: str,
        journal: str,
        count: TokenCounter,
    ) -> None:
        self.context = context
        self.history = context.history
        self.instruction = instruction
        self.journal = journal.strip() or "(empty: start one with your first lessons)"
        self.count = count
        self.system = system_prompt(context)

    def history_section(self, layout: _Layout) -> str:
        if not self.history:
            return "(none yet: this is the first hypothesis)"
        old = [i for i in range(len(self.history)) if i not in layout.full]
        parts = []
        if old:
            parts.append(
                f"Titles only ({len(old)} older rows: verdict and delta omitted):\n"
                + "\n".join(_short_row(i + 1, self.history[i], layout.short_titles) for i in old)
            )
        if layout.full:
            rows = [_full_row(i + 1, self.history[i]) for i in sorted(layout.full)]
            parts.append(
                "| # | title | verdict | delta | why (the judge) |\n|---|---|---|---|---|\n"
                + "\n".join(rows)
            )
        return "\n\n".join(parts)

    def crashes_section(self, layout: _Layout) -> str:
        crashed = self.crashed()
        if not layout.crashes:
            return "(none)" if not crashed else f"({len(crashed)} crashes omitted)"
        blocks = [_crash_block(i + 1, self.history[i]) for i in layout.crashes]
        if len(crashed) > len(layout.crashes):
            blocks.append(f"({len(crashed) - len(layout.crashes)} older crashes omitted)")
        return "\n\n".join(blocks)

    def read_only_section(self, layout: _Layout) -> str:
        files = self.context.read_only_files
        if not files:
            return "(none named in program.md)"
        blocks = [_read_only_block(path, *layout.read_only[path]) for path in layout.read_only]
        left_out = [path for path in files if path not in layout.read_only]
        if left_out:
            blocks.append(f"({', '.join(left_out)} omitted: no room in the prompt)")
        return "\n\n".join(blocks)

    def diffs_section(self, layout: _Layout) -> str:
        if not layout.diffs:
            return "(none)"
        return "\n\n".join(_diff_block(label, i + 1, self.history[i]) for label, i in layout.diffs)

    def crashed(self) -> list[int]:
        """History indices of crashes with a log tail, newest first."""
        return [
            i
            for i in reversed(range(len(self.history)))
            if self.history[i].verdict is Verdict.CRASHED and self.history[i].log_tail.strip()
        ]

    def diff_candidates(self) -> list[tuple[str, int]]:
        """("best" | "worst", history index) of recent judged hypotheses that carry a diff."""
        with_diff = [h if extra_text(h, "diff") else None for h in self.history]
        return best_and_worst(with_diff, lower_is_better=self.context.spec.lower_is_better)

    def user(self, layout: _Layout) -> str:
        in_flight = "\n".join(f"- {h.title}" for h in self.context.in_flight) or "(none)"
        program = layout.program.strip() or "(no program.md)"
        return render(
            "user.md",
            task=_task_line(self.context),
            program=program + layout.program_note,
            files=_files_section(self.context),
            journal=self.journal,
            n_history=len(self.history),
            history=self.history_section(layout),
            in_flight=in_flight,
            crashes=self.crashes_section(layout),
            diffs=self.diffs_section(layout),
            read_only=self.read_only_section(layout),
            instruction=self.instruction,
        )

    def tokens(self, layout: _Layout) -> int:
        return self.count(self.system) + self.count(self.user(layout))


def _fit_base(builder: _Builder, layout: _Layout, budget: int) -> list[str]:
    """Shrink the mandatory part (title lengths, then program.md) until it fits, if it can."""
    notes: list[str] = []
    over = builder.tokens(layout) - budget
    if over > 0:
        layout.short_titles = True
        notes.append(f"titles shortened to {SHORT_TITLE_CHARS} characters")
        over = builder.tokens(layout) - budget
    if over > 0 and layout.program:
        program_tokens = builder.count(layout.program)
        kept, dropped = _keep_lines(layout.program, max(0, program_tokens - over), builder.count)
        layout.program = kept
        layout.program_note = f"\n\n(program.md: {dropped} more lines omitted)"
        notes.append(f"program.md cut by {dropped} lines")
        over = builder.tokens(layout) - budget
    if over > 0:
        logger.warning("prompt: head files and titles alone are %d tokens over budget", over)
    return notes


def build_prompt(
    context: ProposerContext,
    *,
    instruction: str,
    journal: str = "",
    budget_tokens: int = 24_000,
    count: TokenCounter = estimate_tokens,
) -> Prompt:
    """The prompt for `context` within `budget_tokens` (see the module doc for what is kept)."""
    builder = _Builder(context, instruction, journal, count)
    layout = _Layout(program=context.program)
    notes = _fit_base(builder, layout, budget_tokens)
    used = builder.tokens(layout)
    room = int(budget_tokens * _SAFETY) - used
    history = builder.history
    newest_first = list(reversed(range(len(history))))
    # Upgrades in order of worth; each is taken only if it fits what is left.
    upgrades: list[tuple[str, int, int]] = []  # (kind, index, token cost)
    for i in newest_first[:RECENT_FULL_ROWS]:
        upgrades.append(("row", i, _row_cost(builder, i, layout.short_titles)))
    for i in builder.crashed()[:MAX_CRASHES]:
        upgrades.append(("crash", i, count(_crash_block(i + 1, history[i])) + 2))
    for j, (label, i) in enumerate(builder.diff_candidates()):
        upgrades.append((f"diff:{label}", j, count(_diff_block(label, i + 1, history[i])) + 2))
    diffs = builder.diff_candidates()
    taken: list[tuple[str, int]] = []
    room = _take(upgrades, room, taken, layout, diffs)
    room = _take_read_only(builder, layout, room, taken)
    older = newest_first[RECENT_FULL_ROWS:]
    _take(
        [("row", i, _row_cost(builder, i, layout.short_titles)) for i in older],
        room,
        taken,
        layout,
        diffs,
    )
    # The whole text may count a little differently from its pieces: undo the last upgrades.
    while taken and builder.tokens(layout) > budget_tokens:
        kind, index = taken.pop()
        _undo(layout, kind, index, diffs)
    omitted_rows = len(history) - len(layout.full)
    if omitted_rows:
        notes.append(f"{omitted_rows} oldest rows as titles only")
    for path in context.read_only_files:
        dropped = layout.read_only[path][1] if path in layout.read_only else -1
        if dropped:
            notes.append(
                f"{path} (read-only) " + ("left out" if dropped < 0 else f"cut by {dropped} lines")
            )
    return Prompt(builder.system, builder.user(layout), builder.tokens(layout), tuple(notes))


def _take(
    upgrades: Sequence[tuple[str, int, int]],
    room: int,
    taken: list[tuple[str, int]],
    layout: _Layout,
    diffs: Sequence[tuple[str, int]],
) -> int:
    """Apply each upgrade that fits in `room`, in order; the room left."""
    for kind, index, cost in upgrades:
        if cost > room:
            continue
        room -= cost
        taken.append((kind, index))
        _apply(layout, kind, index, diffs)
    return room


def _take_read_only(
    builder: _Builder, layout: _Layout, room: int, taken: list[tuple[str, int]]
) -> int:
    """Each read-only file, whole or cut at a line boundary to the room left; the room left."""
    for index, (path, text) in enumerate(builder.context.read_only_files.items()):
        overhead = builder.count(_read_only_block(path, "", 1)) + 4
        if room <= overhead:
            break
        kept, dropped = _keep_lines(text, room - overhead, builder.count)
        if not kept.strip():
            break
        layout.read_only[path] = (kept, dropped)
        taken.append(("read", index))
        room -= builder.count(kept) + overhead
    return room


def _row_cost(builder: _Builder, i: int, short: bool) -> int:
    summary = builder.history[i]
    full = builder.count(_full_row(i + 1, summary) + "\n")
    return max(0, full - builder.count(_short_row(i + 1, summary, short) + "\n")) + 1


def _apply(layout: _Layout, kind: str, index: int, diffs: Sequence[tuple[str, int]]) -> None:
    if kind == "row":
        layout.full.add(index)
    elif kind == "crash":
        layout.crashes.append(index)
    else:
        layout.diffs.append(diffs[index])


def _undo(layout: _Layout, kind: str, index: int, diffs: Sequence[tuple[str, int]]) -> None:
    if kind == "row":
        layout.full.discard(index)
    elif kind == "crash":
        layout.crashes.remove(index)
    elif kind == "read":
        layout.read_only.pop(list(layout.read_only)[-1])
    else:
        layout.diffs.remove(diffs[index])
