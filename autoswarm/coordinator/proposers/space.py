"""The search space of a task's numeric constants: one scale per constant, read from its value
and its name, and refined by what the lineage measured.

A constant's scale says how a step should look: a learning rate or any positive float moves on
a log scale (x2 is as far from x0.5 as from the value), a decay-like fraction (ADAM_BETA2,
EMA_DECAY) on a log scale of its distance to 1 (0.9 -> 0.99 is one step, as 0.99 -> 0.999), an
int as an int on a log scale, a power of two through its exponent, and a zero linearly above
zero. Each range is centred on the head's value (so it follows the head), widened to hold every
value measured so far, and walled off where a single move made the task unusable (it crashed, or
scored exactly 0.0: a threshold no signal passes).

What it guarantees: every value it returns keeps the constant's type and sign, an int stays at
least 1 when it started at 1 or more, a fraction stays inside (0, 1). What it does not do: know
a constant's real bounds; a value inside the range may still crash the task.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from autoswarm.coordinator.proposers.mutation import Constant, Number, format_number, parse_number

# Names that say "a fraction in (0, 1)": ADAM_BETA2, WARMUP_RATIO, DROPOUT, EMA_DECAY.
FRACTION_WORDS = ("BETA", "DECAY", "RATIO", "FRAC", "DROPOUT", "MOMENTUM", "PROB", "EMA")
# How far a range reaches each side of the head's value: x10 for a float (a learning rate
# is worth trying at a tenth and ten times), x10 for an int (LOOKBACK 5: 1 to 50), 3
# doublings for a power of two (BATCH 2**6: 2**3 to 2**9).
FLOAT_SPAN = 10.0
INT_SPAN = 10.0
POW2_SPAN = 3
# A decay's distance to 1 is at least this (0.999); a decay of exactly 1.0 (no decay) sits here.
MIN_DISTANCE = 1e-3
# A decay of exactly 1.0 reaches down to 0.5 (halving each step).
NO_DECAY_SPAN = 0.5
# The widest a decay's distance to 1 gets: a fraction named like a decay stays above 0.
MAX_DISTANCE = 0.99
# A zero has no scale to read; these are its ranges (a count of skipped days, a weight decay).
INT_FROM_ZERO = 8
FLOAT_FROM_ZERO = 1.0
# Floats are proposed with this many significant digits: readable titles, no near-repeats.
DIGITS = 3


class Scale(StrEnum):
    LOG = "log"  # a positive float, its value on a log scale
    NEGATIVE_LOG = "negative-log"  # a negative float, its magnitude on a log scale
    DECAY = "decay"  # a fraction near 1, its distance to 1 on a log scale
    LINEAR = "linear"  # a float at zero, linear above it
    INT_LOG = "int-log"  # a positive int, on a log scale
    INT = "int"  # an int at zero or below, linear
    POWER_OF_TWO = "power-of-two"  # an int 2**k, its exponent k


@dataclass(frozen=True)
class Dimension:
    """One constant as the optimizer sees it: a scale and a range in the scale's coordinate."""

    label: str  # the name in titles (path:NAME when two editable files share a name)
    constant: Constant  # the head's constant
    scale: Scale
    low: float
    high: float

    @property
    def integer(self) -> bool:
        return self.scale in (Scale.INT_LOG, Scale.INT, Scale.POWER_OF_TWO)

    @property
    def log(self) -> bool:
        return self.scale in (Scale.LOG, Scale.NEGATIVE_LOG, Scale.DECAY, Scale.INT_LOG)

    def coordinate(self, value: Number) -> float | None:
        """Where `value` sits on this scale; None if the scale cannot hold it (a sign flip)."""
        if self.scale is Scale.LOG:
            return float(value) if value > 0 else None
        if self.scale is Scale.NEGATIVE_LOG:
            return float(-value) if value < 0 else None
        if self.scale is Scale.DECAY:
            return max(1.0 - float(value), MIN_DISTANCE) if value < 1 + 1e-12 else None
        if self.scale is Scale.POWER_OF_TWO:
            as_int = int(value)
            if as_int != value or as_int < 1 or as_int & (as_int - 1):
                return None
            return float(as_int.bit_length() - 1)
        if self.scale is Scale.INT_LOG:
            return float(value) if value >= 1 else None
        # A zero moves up only; a negative int stays negative (no sign flips).
        return float(value) if (value >= 0) == (self.constant.value >= 0) else None

    def clip(self, coordinate: float) -> float:
        return min(max(coordinate, self.low), self.high)

    def value(self, coordinate: float) -> Number:
        """The constant's value at a coordinate, as the file will write it (rounded)."""
        value = self._raw_value(self.clip(coordinate))
        written = parse_number(self.text(value))
        return value if written is None else written

    def _raw_value(self, coordinate: float) -> Number:
        if self.scale is Scale.POWER_OF_TWO:
            return int(2 ** round(coordinate))
        if self.integer:
            return round(coordinate)
        if self.scale is Scale.DECAY:
            if coordinate <= MIN_DISTANCE * (1 + 1e-9) and self.constant.value == 1:
                return 1.0  # no decay, as the head had it
            return 1.0 - _round(coordinate)
        rounded = _round(coordinate)
        return -rounded if self.scale is Scale.NEGATIVE_LOG else rounded

    def text(self, value: Number) -> str:
        """`value` written in the file's own notation ("3e-4", "2**7", "1_000")."""
        text = format_number(value, self.constant.text)
        return text if parse_number(text) is not None else repr(value)


def _round(value: float) -> float:
    return float(f"{value:.{DIGITS}g}") if value else 0.0


def is_fraction_name(name: str) -> bool:
    return any(word in name for word in FRACTION_WORDS)


def scale_of(constant: Constant) -> Scale:
    """The scale a constant's value and name suggest (see the module doc)."""
    value, text = constant.value, "".join(constant.text.split())
    if isinstance(value, int):
        if value >= 1 and value & (value - 1) == 0 and (value >= 8 or "**" in text):
            return Scale.POWER_OF_TWO  # 64, 2**6: sizes double; 1, 2, 4 are likely counts
        return Scale.INT_LOG if value >= 1 else Scale.INT
    if is_fraction_name(constant.name) and 0.5 < value <= 1:
        return Scale.DECAY
    if value > 0:
        return Scale.LOG
    return Scale.NEGATIVE_LOG if value < 0 else Scale.LINEAR


def base_range(constant: Constant, scale: Scale) -> tuple[float, float]:
    """The range around the head's value before the lineage refines it."""
    value = constant.value
    if scale is Scale.LOG:
        high = value * FLOAT_SPAN
        if is_fraction_name(constant.name):  # DROPOUT = 0.1: up to 0.99, not 1.0
            high = min(high, MAX_DISTANCE)
        return value / FLOAT_SPAN, max(high, value)
    if scale is Scale.NEGATIVE_LOG:
        return -value / FLOAT_SPAN, -value * FLOAT_SPAN
    if scale is Scale.DECAY:
        if value == 1:  # no decay yet: anything from 0.999 down to a half-life of one step
            return MIN_DISTANCE, NO_DECAY_SPAN
        distance = 1.0 - value
        return max(distance / FLOAT_SPAN, MIN_DISTANCE), min(distance * FLOAT_SPAN, MAX_DISTANCE)
    if scale is Scale.LINEAR:
        return 0.0, FLOAT_FROM_ZERO
    if scale is Scale.POWER_OF_TWO:
        exponent = int(value).bit_length() - 1
        return float(max(exponent - POW2_SPAN, 0)), float(exponent + POW2_SPAN)
    if scale is Scale.INT_LOG:
        return float(max(1, math.floor(value / INT_SPAN))), float(math.ceil(value * INT_SPAN))
    if value == 0:
        return 0.0, float(INT_FROM_ZERO)
    return float(value * INT_SPAN), float(min(-1, value // INT_SPAN))  # a negative int


def labels_of(constants: Iterable[Constant]) -> dict[Constant, str]:
    """Each constant's name in titles; a name in two editable files is told apart by path."""
    found = list(constants)
    names = [c.name for c in found]
    return {c: c.name if names.count(c.name) == 1 else f"{c.path}:{c.name}" for c in found}


@dataclass(frozen=True)
class Measured:
    """One configuration the lineage measured, as far as the space is concerned."""

    values: Mapping[str, Number]  # by label
    usable: bool  # False: it crashed or scored exactly 0.0
    moved: frozenset[str]  # the labels it changed from the head it was proposed on
    base: Mapping[str, Number]  # the head's values it was proposed on, by label


def build_space(constants: list[Constant], measured: Iterable[Measured]) -> list[Dimension]:
    """One dimension per constant: its base range around the head, widened to every usable
    value measured, and walled off halfway to a value that alone made the task unusable."""
    labels = labels_of(constants)
    dimensions = []
    seen = list(measured)
    for constant in constants:
        scale = scale_of(constant)
        low, high = base_range(constant, scale)
        dim = Dimension(labels[constant], constant, scale, low, high)
        dimensions.append(_refined(dim, seen))
    return dimensions


def _refined(dim: Dimension, measured: list[Measured]) -> Dimension:
    """`dim` widened to the usable values measured and walled off before unusable ones."""
    head = dim.coordinate(dim.constant.value)
    assert head is not None  # the scale was read from this very value
    usable = [head]
    usable += [
        c
        for m in measured
        if m.usable and dim.label in m.values
        if (c := dim.coordinate(m.values[dim.label])) is not None
    ]
    low, high = min(dim.low, *usable), max(dim.high, *usable)
    for m in measured:
        if m.usable or m.moved != {dim.label} or dim.label not in m.base:
            continue
        bad, base = dim.coordinate(m.values[dim.label]), dim.coordinate(m.base[dim.label])
        if bad is None or base is None or bad == base:
            continue
        # Halfway (on the scale) from the last usable value on that side to the bad one.
        if bad > base:
            edge = max(c for c in usable if c < bad) if any(c < bad for c in usable) else base
            high = min(high, _between(edge, bad, dim.log))
        else:
            edge = min(c for c in usable if c > bad) if any(c > bad for c in usable) else base
            low = max(low, _between(edge, bad, dim.log))
    if dim.integer:
        low, high = math.ceil(low - 1e-9), math.floor(high + 1e-9)
    low, high = min(low, head), max(high, head)
    return replace(dim, low=float(low), high=float(high))


def _between(a: float, b: float, log: bool) -> float:
    if log and a > 0 and b > 0:
        return math.sqrt(a * b)
    return (a + b) / 2
