"""The offline mutation proposer: moves one module-level UPPER_CASE number at a time.

It needs no key and no network. It reads the head's editable Python files with `ast`,
finds constants like `LEARNING_RATE = 3e-4`, rewrites exactly one literal (every other
byte of the file is kept), and learns from the task's history which (constant, direction)
arms pay off: Thompson sampling over the arms, and momentum after a kept change.

What it guarantees: every change parses; it never proposes a content it proposed before,
nor one whose hash is in the history or in flight; `None` once every step is spent.
What it does not do: invent code, change anything but numbers, or read non-Python files.
"""

from __future__ import annotations

import ast
import io
import logging
import math
import operator
import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from autoswarm.coordinator.proposers.edits import change_hashes
from autoswarm.shared.models import HypothesisCreate, HypothesisSummary, ProposerContext, Verdict

logger = logging.getLogger(__name__)

PROPOSER_NAME = "mutation"
UP = "up"
DOWN = "down"

_CONSTANT_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")
_TITLE = re.compile(r"^(?P<label>(?:\S+:)?[A-Z][A-Z0-9_]*) (?P<old>\S+) -> (?P<new>\S+)$")
_POWER_OF_TWO_TEXT = re.compile(r"^2\s*\*\*\s*\d+$")
# A seed is not an idea: moving it only samples noise, so it is never perturbed.
DEFAULT_EXCLUDE = ("SEED",)

# Base steps first, then the widened ones, used only once every arm's base steps are spent.
_FLOAT_FACTORS = ((2.0, 0.5, 1.25, 0.8), (4.0, 0.25, 10.0, 0.1))
# A float at 0.0 cannot be scaled; these are the first values worth trying above it.
_FLOAT_FROM_ZERO = ((0.1, 0.01), (1.0,))
_INT_FROM_ZERO = ((1, 2), (10,))
_FRACTION_FROM_ONE = ((0.9, 0.5), (0.99, 0.8, 0.25))
# A crash says the move breaks the code: it counts as this many failed tries.
_CRASH_PENALTY = 2.0
# Names that say "a fraction in (0, 1)": ADAM_BETA2, WARMUP_RATIO, DROPOUT, EMA_DECAY.
# A name decides, not the value: THRESHOLD = 0.5 may well want to be 1.5.
_FRACTION_WORDS = ("BETA", "DECAY", "RATIO", "FRAC", "DROPOUT", "MOMENTUM", "PROB", "EMA")
# (widened steps, retried moves): fresh base steps, then fresh wide ones, and only then a
# move already judged on an earlier head ("LR 0.1 -> 0.2" failed there, it likely fails here).
_PASSES = ((False, False), (True, False), (False, True), (True, True))
# A discarded change whose delta still pointed the right way is weak evidence for its arm.
_NEAR_MISS_REWARD = 0.3

Number = int | float
Arm = tuple[str, str]  # (constant label, UP or DOWN)

_BINARY_OPS: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Pow: operator.pow,
}


@dataclass(frozen=True)
class Constant:
    """One module-level `NAME = <number>` and where its value's text sits in the source."""

    path: str
    name: str
    value: Number
    text: str
    start: int  # character offsets of the value's text in the source
    end: int


@dataclass
class ArmStats:
    """What the history says about one (constant, direction) arm."""

    tries: int = 0
    successes: float = 0.0
    failures: float = 0.0
    kept_deltas: list[float] = field(default_factory=list)
    other_deltas: list[float] = field(default_factory=list)


def evaluate_number(node: ast.expr) -> Number | None:
    """The value of a numeric literal or a small arithmetic expression of them; else None."""
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return value if not isinstance(value, float) or math.isfinite(value) else None
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = evaluate_number(node.operand)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY_OPS:
        left, right = evaluate_number(node.left), evaluate_number(node.right)
        if left is None or right is None:
            return None
        # `2**10` is a size; `10**10**10` would hang the proposer computing it.
        if isinstance(node.op, ast.Pow) and (abs(right) > 64 or abs(left) > 2**20):
            return None
        try:
            result = _BINARY_OPS[type(node.op)](left, right)
        except (ZeroDivisionError, OverflowError):
            return None
        if not isinstance(result, int | float):  # a negative base to a fractional power
            return None
        return result if isinstance(result, int) or math.isfinite(result) else None
    return None


def parse_number(text: str) -> Number | None:
    """A number as written in a title or a source file ("3e-4", "2**10", "1_000")."""
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError:
        return None
    return evaluate_number(tree.body)


def _line_starts(source: str) -> list[int]:
    # newline="" splits on \n, \r\n and \r like the tokenizer, without translating them.
    starts, offset = [], 0
    for line in io.StringIO(source, newline="").readlines():
        starts.append(offset)
        offset += len(line)
    return starts


def _assigned_names(stmt: ast.stmt) -> list[str]:
    targets: list[ast.expr] = []
    if isinstance(stmt, ast.Assign):
        targets = list(stmt.targets)
    elif isinstance(stmt, ast.AnnAssign | ast.AugAssign):
        targets = [stmt.target]
    names = []
    for target in targets:
        names += [n.id for n in ast.walk(target) if isinstance(n, ast.Name)]
    return names


def editable_constants(context: ProposerContext, exclude: tuple[str, ...]) -> list[Constant]:
    """The constants of the head's editable Python files, but those whose names hold a word
    of `exclude` (a seed is not an idea)."""
    found: list[Constant] = []
    for path in context.spec.editable:
        source = context.head_files.get(path)
        if source is None or not path.endswith(".py"):
            continue
        found += [
            c for c in find_constants(source, path) if not any(word in c.name for word in exclude)
        ]
    return found


def find_constants(source: str, path: str = "") -> list[Constant]:
    """Module-level `UPPER_CASE = <number>` assignments, in file order (bools excluded).

    A name bound more than once at module level is skipped: which binding matters is not
    knowable from the text, and rewriting the wrong one would change nothing.
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    counts: dict[str, int] = {}
    for stmt in tree.body:
        for name in _assigned_names(stmt):
            counts[name] = counts.get(name, 0) + 1
    starts = _line_starts(source)
    raw_lines = io.StringIO(source, newline="").readlines()

    def offset(lineno: int, col_bytes: int) -> int:
        # ast columns are UTF-8 byte offsets; slicing the str needs character offsets.
        line = raw_lines[lineno - 1]
        return starts[lineno - 1] + len(line.encode()[:col_bytes].decode())

    found = []
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
            target, value_node = stmt.targets[0], stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            target, value_node = stmt.target, stmt.value
        else:
            continue
        if not isinstance(target, ast.Name) or not _CONSTANT_NAME.match(target.id):
            continue
        value = evaluate_number(value_node)
        if value is None or counts[target.id] != 1 or value_node.end_lineno is None:
            continue
        start = offset(value_node.lineno, value_node.col_offset)
        end = offset(value_node.end_lineno, value_node.end_col_offset or 0)
        found.append(Constant(path, target.id, value, source[start:end], start, end))
    return found


def replace_constant(
    source: str, constant: Constant, new_text: str, *, check: bool = True
) -> str | None:
    """The source with only the constant's value text replaced; None if it would not parse
    (`check=False`: not parsed here; the caller parses the one it keeps)."""
    new_source = source[: constant.start] + new_text + source[constant.end :]
    return new_source if not check or _parses(new_source) else None


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


def format_number(value: Number, like: str) -> str:
    """Write `value` the way `like` (the original text) writes numbers: "3e-4" -> "6e-4"."""
    if isinstance(value, int):
        if _POWER_OF_TWO_TEXT.match(like) and value > 0 and value & (value - 1) == 0:
            return f"2**{value.bit_length() - 1}"
        return f"{value:_}" if "_" in like else str(value)
    rounded = float(f"{value:.4g}")  # 3e-4 * 1.25 is 0.00037500000000000006 otherwise
    if "e" in like.lower():
        mantissa, exponent = f"{rounded:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return repr(rounded)


def _int_ladder(magnitude: int) -> tuple[list[int], list[int]]:
    """Candidate magnitudes for a positive int: base steps, then widened ones."""
    step = max(1, round(magnitude / 4))  # a quarter: 3 -> 4, 300 -> 375; never 1_000_001
    if magnitude & (magnitude - 1) == 0:  # a power of two: its neighbours first
        base = [magnitude * 2, magnitude // 2, magnitude + step, magnitude - step]
        return base, [magnitude * 4, magnitude // 4]
    base = [magnitude + step, magnitude - step, magnitude * 2, magnitude // 2]
    return base, [magnitude * 4, magnitude // 4, magnitude * 10, magnitude // 10]


def perturbations(value: Number, *, fraction: bool = False) -> list[tuple[Number, bool]]:
    """(new value, widened) candidates for a value, base steps first.

    A perturbation never changes a value's sign nor takes a non-zero value to zero: a
    positive int is almost always a size, a count or a number of steps, where 0 or less
    breaks the run; a positive float is a rate or a scale that scaling keeps positive.
    A zero only moves up (a zero rate or count has no meaningful negative). With
    `fraction`, a float in (0, 1] stays in (0, 1), and above 0.5 its distance to 1 is
    scaled, as decays are tuned (0.95 -> 0.975 or 0.9).
    """
    levels: list[list[Number]]
    if value == 0:
        zero_levels = _INT_FROM_ZERO if isinstance(value, int) else _FLOAT_FROM_ZERO
        levels = [list(level) for level in zero_levels]
    elif isinstance(value, int):
        sign = 1 if value > 0 else -1
        levels = [[sign * m for m in level] for level in _int_ladder(abs(value))]
    elif fraction and value == 1.0:  # HORIZON_DECAY = 1.0 (no decay): only down, decay-like
        levels = [list(level) for level in _FRACTION_FROM_ONE]
    elif fraction and 0.5 < value < 1:  # a decay like ADAM_BETA2 = 0.95: its distance to 1
        levels = [[1 - (1 - value) * f for f in factors] for factors in _FLOAT_FACTORS]
    else:
        levels = [[value * f for f in factors] for factors in _FLOAT_FACTORS]
    fraction = fraction and isinstance(value, float) and 0 < value <= 1
    seen: set[Number] = {value}
    out: list[tuple[Number, bool]] = []
    for widened, candidates in enumerate(levels):
        for candidate in candidates:
            same_sign = value == 0 or (candidate > 0) == (value > 0)
            in_range = not fraction or 0 < candidate < 1
            # 1 - (1 - 0.9) * 10 is 2e-16, not 0: what is that close to zero counts as zero
            nonzero = abs(candidate) > 1e-9 * abs(value) if value else candidate != 0
            if nonzero and same_sign and in_range and candidate not in seen:
                seen.add(candidate)
                out.append((candidate, bool(widened)))
    return out


@dataclass(frozen=True)
class _Option:
    arm: Arm
    constant: Constant
    new_value: Number
    new_text: str
    title: str
    content: str
    hashes: frozenset[str]


class MutationProposer:
    """Proposes one constant moved one step, choosing the step by what has paid off.

    History is read oldest first (the order the coordinator lists it). Its own memory
    (every content it proposed, every head it saw) lives as long as the object does.
    """

    name = PROPOSER_NAME

    def __init__(self, seed: int = 0, *, exclude: Iterable[str] = DEFAULT_EXCLUDE) -> None:
        self._rng = random.Random(seed)
        self._exclude = tuple(exclude)
        self._proposed: set[str] = set()

    def propose(self, context: ProposerContext) -> HypothesisCreate | None:
        """The next hypothesis for this head, or None when every perturbation is spent."""
        constants = self._constants(context)
        if not constants:
            logger.info("mutation: task %s: no numeric constants to move", context.task_id)
            return None
        for path, content in context.head_files.items():  # a head once seen is never re-proposed
            self._proposed |= change_hashes({path: content}, context.head_files)
        blocked = self._proposed | {
            h.change_hash for h in context.history + context.in_flight if h.change_hash
        }
        stats, last_kept = self.learn(context)
        busy = {arm for arm in map(self._arm_of, context.in_flight) if arm is not None}
        tried = {
            h.title
            for h in context.history + context.in_flight
            if h.proposer == self.name and not _worth_retrying(h, context.spec.lower_is_better)
        }
        for widened, retry in _PASSES:
            options = self._options(
                context, constants, blocked, tried if not retry else set(), widened
            )
            while options:
                option, momentum = self._choose(options, stats, last_kept, busy)
                if _parses(option.content):  # parsed only once chosen: a file per option is slow
                    arm_stats = stats.get(option.arm, ArmStats())
                    return self._hypothesis(context, option, arm_stats, momentum)
                del options[option.arm]
        logger.info("mutation: task %s: every perturbation is spent", context.task_id)
        return None

    def learn(self, context: ProposerContext) -> tuple[dict[Arm, ArmStats], Arm | None]:
        """Per-arm statistics from the history, and the arm of the last judged change if kept."""
        better = 1.0 if not context.spec.lower_is_better else -1.0
        stats: dict[Arm, ArmStats] = {}
        last_judged: tuple[Arm, bool] | None = None
        for summary in context.history:
            arm = self._arm_of(summary)
            if arm is None or summary.verdict in (Verdict.PENDING, Verdict.CONFLICT):
                continue  # a conflict says nothing about the value, only about timing
            arm_stats = stats.setdefault(arm, ArmStats())
            arm_stats.tries += 1
            gain = None if summary.delta is None else summary.delta * better
            if summary.verdict is Verdict.KEPT:
                arm_stats.kept_deltas.append(gain if gain is not None else 0.0)
            elif gain is not None:
                arm_stats.other_deltas.append(gain)
            success, failure = _reward(summary.verdict, gain)
            arm_stats.successes += success
            arm_stats.failures += failure
            last_judged = (arm, summary.verdict is Verdict.KEPT)
        last_kept = last_judged[0] if last_judged and last_judged[1] else None
        return stats, last_kept

    def _arm_of(self, summary: HypothesisSummary) -> Arm | None:
        """Read an arm back from one of our own titles ("LR 3e-4 -> 6e-4" is LR, up)."""
        if summary.proposer != self.name:
            return None
        match = _TITLE.match(summary.title)
        if match is None:
            return None
        old, new = parse_number(match["old"]), parse_number(match["new"])
        if old is None or new is None or old == new:
            return None
        return match["label"], UP if new > old else DOWN

    def _constants(self, context: ProposerContext) -> list[Constant]:
        return editable_constants(context, self._exclude)

    @staticmethod
    def _labels(constants: list[Constant]) -> dict[Constant, str]:
        # A name defined in two editable files is told apart by its path.
        names = [c.name for c in constants]
        return {c: c.name if names.count(c.name) == 1 else f"{c.path}:{c.name}" for c in constants}

    def _options(
        self,
        context: ProposerContext,
        constants: list[Constant],
        blocked: set[str],
        tried: set[str],
        widened: bool,
    ) -> dict[Arm, _Option]:
        """For each arm, its first candidate not blocked, not in `tried`, within the steps."""
        options: dict[Arm, _Option] = {}
        labels = self._labels(constants)
        for constant in constants:
            source = context.head_files[constant.path]
            fraction = any(word in constant.name for word in _FRACTION_WORDS)
            for new_value, is_wide in perturbations(constant.value, fraction=fraction):
                if is_wide and not widened:
                    continue
                arm = (labels[constant], UP if new_value > constant.value else DOWN)
                if arm in options:
                    continue
                new_text = format_number(new_value, constant.text)
                parsed = parse_number(new_text)
                if parsed is None or parsed == constant.value:
                    continue  # rounding for the title ate the step
                title = f"{arm[0]} {''.join(constant.text.split())} -> {new_text}"
                if title in tried:
                    continue
                content = replace_constant(source, constant, new_text, check=False)
                if content is None:
                    continue
                hashes = change_hashes({constant.path: content}, context.head_files)
                if hashes & blocked:
                    continue
                options[arm] = _Option(
                    arm, constant, parsed, new_text, title, content, frozenset(hashes)
                )
        return options

    def _choose(
        self,
        options: dict[Arm, _Option],
        stats: dict[Arm, ArmStats],
        last_kept: Arm | None,
        busy: set[Arm],
    ) -> tuple[_Option, bool]:
        """Momentum after a kept change; otherwise Thompson sampling over the free arms."""
        if last_kept is not None and last_kept in options and last_kept not in busy:
            return options[last_kept], True
        free = [arm for arm in options if arm not in busy] or list(options)
        best_arm, best_draw = free[0], -1.0
        for arm in free:
            arm_stats = stats.get(arm, ArmStats())
            draw = self._rng.betavariate(1.0 + arm_stats.successes, 1.0 + arm_stats.failures)
            if draw > best_draw:
                best_arm, best_draw = arm, draw
        return options[best_arm], False

    def _hypothesis(
        self, context: ProposerContext, option: _Option, stats: ArmStats, momentum: bool
    ) -> HypothesisCreate:
        self._proposed |= option.hashes
        rationale = _rationale(option, stats, momentum)
        logger.info("mutation: task %s: proposing %s", context.task_id, option.title)
        return HypothesisCreate(
            task_id=context.task_id,
            title=option.title,
            rationale=rationale,
            change={option.constant.path: option.content},
            proposer=self.name,
            parent_commit=context.head_commit,
        )


def _reward(verdict: Verdict, gain: float | None) -> tuple[float, float]:
    """(success, failure) weights of one judged change for its arm's Beta posterior."""
    if verdict is Verdict.KEPT:
        return 1.0, 0.0
    if verdict is Verdict.CRASHED:
        return 0.0, _CRASH_PENALTY
    near = verdict in (Verdict.DISCARDED, Verdict.NOT_REPRODUCED)
    if near and gain is not None and gain > 0:
        return _NEAR_MISS_REWARD, 1.0 - _NEAR_MISS_REWARD
    return 0.0, 1.0


def _worth_retrying(summary: HypothesisSummary, lower_is_better: bool) -> bool:
    """A move not reproduced although its runs' mean beat the head: the judge's call on two
    noisy runs, not a verdict on the idea. It may be proposed again on a later head (its
    code there differs; the same code is never proposed twice)."""
    if summary.verdict is not Verdict.NOT_REPRODUCED or summary.delta is None:
        return False
    return (-summary.delta if lower_is_better else summary.delta) > 0


def _times(n: int) -> str:
    return {1: "once", 2: "twice"}.get(n, f"{n} times")


def _deltas(values: list[float]) -> str:
    return ", ".join(f"{v:+.4g}" for v in values[-5:])


def _rationale(option: _Option, stats: ArmStats, momentum: bool) -> str:
    label, direction = option.arm
    verb = "scaling up" if direction == UP else "scaling down"
    if isinstance(option.constant.value, int):
        verb = "raising" if direction == UP else "lowering"
    if stats.kept_deltas:
        why = f"{verb} {label} paid off {_times(len(stats.kept_deltas))}: "
        why += _deltas(stats.kept_deltas)
        if momentum:
            why += "; it was just kept, so pushing on the same way"
    elif stats.tries:
        why = f"{verb} {label} has not paid off in {stats.tries} tries"
        if stats.other_deltas:
            why += f" ({_deltas(stats.other_deltas)})"
        why += "; trying another step size"
    else:
        why = f"{verb} {label} has no results yet; exploring"
    ratio = option.new_value / option.constant.value if option.constant.value else None
    step = f" (x{ratio:.3g})" if ratio is not None else ""
    return (
        f"{why}. Changes only {option.constant.name} in {option.constant.path}: "
        f"{option.constant.text} -> {option.new_text}{step}."
    )
