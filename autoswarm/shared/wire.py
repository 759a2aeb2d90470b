"""What crosses the wire: the field types every request body is built from, and the worker's
request bodies. The client builds its requests from these models and the API parses them
with the same ones, so both sides refuse the same things.

Guarantees, for every model built from these types:
- numbers are finite (no NaN, no infinity), ints and floats have bounds;
- strings have a length bound and no control characters (`Cc`) or lone surrogates (`Cs`):
  one-line text has none at all, prose keeps newlines and tabs (a CR or CRLF reads as a
  newline), and log text is cleaned rather than refused (a payload's output is not the
  worker's to choose);
- ids are short runs of `[A-Za-z0-9_.-]`; maps and lists have a bound on their entries;
- a hardware class has one canonical form, `kind:name`, whose lineage branch
  `hw/kind-name` no other canonical class has (`check_hardware_class`).

Does not: bound what a number means to a task (a task's `[metric] range` does that, checked
by the coordinator), or check that an id names something that exists.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

# Experiment, worker and hypothesis ids are a letter and 15 hex digits; task ids are names.
MAX_ID_CHARS = 64
MAX_NAME_CHARS = 100
MAX_HARDWARE_CHARS = 100
# Fencing tokens are Redis integers compared in Lua, where numbers are doubles: exact to 2**53.
MAX_FENCING_TOKEN = 2**53
# Seconds, megabytes: far beyond any real run (MAX_BUDGET_S is a day), far below overflow.
MAX_SECONDS = 1e7
MAX_MEGABYTES = 1e9
MAX_METRICS = 256
MAX_METRIC_NAME_CHARS = 64

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
_ID = re.compile(ID_PATTERN)
_HW_KIND = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_HW_NAME = re.compile(r"^[A-Za-z0-9_](?:[A-Za-z0-9_-]|\.(?!\.))*$")
# Control characters (Unicode category Cc) and lone surrogates (Cs); prose keeps \n and \t.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_CONTROL_IN_PROSE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\ud800-\udfff]")


def check_line(text: str) -> str:
    """One line of text: no control characters at all."""
    bad = _CONTROL.search(text)
    if bad is not None and bad.group() in "\n\r":
        raise ValueError("must be one line")
    if bad is not None:
        raise ValueError(f"control character {bad.group()!r} is not allowed in one-line text")
    return text


def check_prose(text: str) -> str:
    """Prose: newlines and tabs, no other control characters (CR and CRLF read as newlines)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    bad = _CONTROL_IN_PROSE.search(text)
    if bad is not None:
        raise ValueError(f"control character {bad.group()!r} is not allowed (only newline, tab)")
    return text


def clean_log(text: object) -> object:
    """A log's text with CRs as newlines and other control characters as U+FFFD."""
    if not isinstance(text, str):
        return text
    return _CONTROL_IN_PROSE.sub("\ufffd", text.replace("\r\n", "\n").replace("\r", "\n"))


def suggest_hardware_class(raw: str) -> str | None:
    """The canonical class closest to `raw` (`cpu x86_64 2c` -> `cpu:x86_64-2c`), if any."""
    text = raw.strip()
    kind, sep, name = text.partition(":")
    if not sep:
        kind, _, name = text.partition(" ")
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", name.strip())
    name = re.sub(r"\.{2,}", ".", name).strip(".-").removesuffix(".lock")
    candidate = f"{kind.strip().lower()}:{name}"
    return candidate if hardware_problem(candidate) is None else None


def hardware_problem(hardware: str) -> str | None:
    """Why `hardware` is not a canonical hardware class, else None."""
    kind, sep, name = hardware.partition(":")
    if len(hardware) > MAX_HARDWARE_CHARS:
        return f"longer than {MAX_HARDWARE_CHARS} characters"
    if not sep or not _HW_KIND.match(kind):
        return "must be kind:name with a lowercase kind such as cpu or cuda"
    if not _HW_NAME.match(name) or name.endswith((".", "-", ".lock")):
        return (
            "its name must be letters, digits, '_', '-' and single dots, and must not end "
            "with '.', '-' or '.lock'"
        )
    return None


def check_hardware_class(hardware: str) -> str:
    """A canonical hardware class (`cuda:NVIDIA-H100-80GB-HBM3`, `cpu:x86_64-8c`).

    `kind:name` with no dash in the kind: its lineage branch `hw/kind-name` names it and no
    other class, so two classes never share a branch."""
    problem = hardware_problem(hardware)
    if problem is None:
        return hardware
    hint = suggest_hardware_class(hardware)
    also = f" (did you mean {hint!r}?)" if hint and hint != hardware else ""
    raise ValueError(f"hardware class {hardware[:120]!r} is not canonical: {problem}{also}")


def _check_id(text: str) -> str:
    if not _ID.match(text):
        raise ValueError(f"{text[:80]!r} is not an id (letters, digits, '_', '.', '-')")
    return text


Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_check_id)]
HardwareClass = Annotated[
    str, Field(min_length=3, max_length=MAX_HARDWARE_CHARS), AfterValidator(check_hardware_class)
]
Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS), AfterValidator(check_line)]
MetricName = Annotated[
    str,
    Field(min_length=1, max_length=MAX_METRIC_NAME_CHARS, pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$"),
]
Finite = Annotated[float, Field(allow_inf_nan=False)]
Seconds = Annotated[float, Field(ge=0, le=MAX_SECONDS, allow_inf_nan=False)]
Megabytes = Annotated[float, Field(ge=0, le=MAX_MEGABYTES, allow_inf_nan=False)]
FencingToken = Annotated[int, Field(ge=0, le=MAX_FENCING_TOKEN)]
# Constrain length at the field: `title: Line = Field(min_length=1, max_length=200)`.
Line = Annotated[str, AfterValidator(check_line)]
Prose = Annotated[str, AfterValidator(check_prose)]
LogText = Annotated[str, BeforeValidator(clean_log)]


class WireModel(BaseModel):
    """Base of every model that crosses the wire: frozen, no unknown fields, finite floats."""

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


# ---------------------------------------------------------------------------------------
# The worker's request bodies (docs/protocol.md); autoswarm.shared.models has the rest
# ---------------------------------------------------------------------------------------


class LeaseRequest(WireModel):
    worker_id: Id
    wait_s: float = Field(default=0.0, ge=0, le=60)


class LeaseAction(WireModel):
    worker_id: Id
    fencing_token: FencingToken


class HeartbeatRequest(LeaseAction):
    # True: the worker can stop this run and start another that the answer hands it
    # (`switch_to`), so a young explore may be preempted by a waiting baseline, replicate
    # or merge. A worker that cannot leaves it false and is never switched.
    can_switch: bool = False
    # How long the run of this lease has run (0 while it waits behind the worker's current
    # run): an explore is preempted only within a share of its budget of this. Absent: the
    # time since it was leased counts.
    running_s: Seconds | None = None
