"""The model's answer: parsing it, applying its search/replace edits, and checking the result.

The model answers one JSON object `{"title", "rationale", "edits": [{"file", "search",
"replace"}], "journal"}`. Each edit is applied in order to the head's editable file it names;
its `search` text must occur exactly once in that file as the earlier edits left it.

What this module guarantees: a change it returns touches only editable files, differs from
the head, fits the size limit and parses (`ast.parse` for `.py`, `json.loads` for `.json`).
Everything else is a `Rejection` whose `reason` is written for the model to read and fix.
What it does not do: judge whether the idea is good, or run the code.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from autoswarm.shared.models import (
    MAX_FILE_BYTES,
    MAX_RATIONALE_CHARS,
    MAX_TITLE_CHARS,
    HypothesisSummary,
)
from autoswarm.shared.task import TaskSpec, hash_files

MAX_EDITS = 30
_FENCE = re.compile(r"^```[a-zA-Z]*\s*\n(.*)\n```\s*$", re.DOTALL)


class Rejection(Exception):
    """An answer that cannot become a hypothesis; `reason` tells the model what to fix."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True)
class Edit:
    """Replace the one occurrence of `search` in `file` with `replace`."""

    file: str
    search: str
    replace: str


@dataclass(frozen=True)
class Answer:
    """A model's answer, parsed but not yet applied."""

    title: str
    rationale: str
    edits: tuple[Edit, ...]
    journal: str | None


def _json_object(text: str) -> object:
    """The JSON object in `text`, fenced or bare, with prose around it tolerated."""
    stripped = text.strip()
    fenced = _FENCE.match(stripped)
    if fenced:
        stripped = fenced.group(1).strip()
    start, end = stripped.find("{"), stripped.rfind("}")
    if start < 0 or end < start:
        raise Rejection("malformed JSON: the answer holds no JSON object")
    try:
        return json.loads(stripped[start : end + 1])
    except json.JSONDecodeError as exc:
        where = f"line {exc.lineno} column {exc.colno}"
        raise Rejection(f"malformed JSON: {exc.msg} at {where}") from None


def _text_field(data: Mapping[str, object], key: str, *, required: bool) -> str:
    value = data.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise Rejection(f"malformed answer: field {key!r} must be a non-empty string")
    return value


def parse_answer(text: str) -> Answer:
    """The answer in `text`, or a `Rejection` saying what is malformed."""
    data = _json_object(text)
    if not isinstance(data, dict):
        raise Rejection("malformed answer: expected one JSON object")
    title = " ".join(_text_field(data, "title", required=True).split())[:MAX_TITLE_CHARS]
    rationale = _text_field(data, "rationale", required=False).strip()[:MAX_RATIONALE_CHARS]
    journal = data.get("journal")
    raw_edits = data.get("edits")
    if not isinstance(raw_edits, list) or not raw_edits:
        raise Rejection("malformed answer: 'edits' must be a non-empty list")
    if len(raw_edits) > MAX_EDITS:
        raise Rejection(f"too many edits ({len(raw_edits)}; at most {MAX_EDITS}): one idea only")
    edits = []
    for number, raw in enumerate(raw_edits, 1):
        if not isinstance(raw, dict):
            raise Rejection(f"malformed answer: edit {number} is not an object")
        fields = [raw.get(key) for key in ("file", "search", "replace")]
        if not all(isinstance(f, str) for f in fields):
            raise Rejection(
                f"malformed answer: edit {number} needs string fields 'file', 'search', 'replace'"
            )
        edits.append(Edit(*(str(f) for f in fields)))
    return Answer(
        title=title,
        rationale=rationale,
        edits=tuple(edits),
        journal=journal if isinstance(journal, str) else None,
    )


def _check_parses(path: str, content: str) -> None:
    try:
        if path.endswith(".py"):
            ast.parse(content, filename=path)
        elif path.endswith(".json"):
            json.loads(content)
    except SyntaxError as exc:
        line = (exc.text or "").strip()
        where = f"line {exc.lineno}" + (f" ({line!r})" if line else "")
        raise Rejection(f"{path} no longer parses: SyntaxError at {where}: {exc.msg}") from None
    except json.JSONDecodeError as exc:
        raise Rejection(f"{path} is no longer valid JSON: {exc.msg} at line {exc.lineno}") from None


def apply_edits(
    edits: Iterable[Edit],
    head_files: Mapping[str, str],
    spec: TaskSpec,
    *,
    max_file_bytes: int = MAX_FILE_BYTES,
) -> dict[str, str]:
    """The new full content of every file the edits change; a `Rejection` if any fails."""
    files = dict(head_files)
    for number, edit in enumerate(edits, 1):
        if edit.file not in spec.editable:
            kind = "protected" if edit.file in spec.protected else "not editable"
            raise Rejection(
                f"edit {number}: {edit.file!r} is {kind}; only {', '.join(spec.editable)} "
                "may be edited"
            )
        if edit.file not in files:
            raise Rejection(f"edit {number}: {edit.file!r} is not in the head")
        if not edit.search:
            raise Rejection(f"edit {number}: 'search' is empty; copy the text to replace")
        count = files[edit.file].count(edit.search)
        if count != 1:
            where = "does not occur" if count == 0 else f"occurs {count} times"
            raise Rejection(
                f"edit {number}: the search text {where} in {edit.file}; it must occur exactly "
                "once: copy it exactly from the current file, with enough lines to be unique"
            )
        files[edit.file] = files[edit.file].replace(edit.search, edit.replace, 1)
    change = {path: text for path, text in files.items() if text != head_files.get(path)}
    if not change:
        raise Rejection("the edits change nothing")
    for path, content in change.items():
        size = len(content.encode())
        if size > max_file_bytes:
            raise Rejection(f"{path} would be {size} bytes, over the {max_file_bytes}-byte limit")
        _check_parses(path, content)
    return change


def change_hashes(change: Mapping[str, str], head_files: Mapping[str, str]) -> set[str]:
    """The hashes a change may be known by (the changed files, the whole tree, one file alone).

    The same conventions as the mutation proposer's, so both recognise each other's work.
    """
    changed = {path: text.encode() for path, text in change.items()}
    tree = {path: text.encode() for path, text in head_files.items()} | changed
    hashes = {hash_files(changed), hash_files(tree)}
    if len(change) == 1:
        hashes.add(hashlib.sha256(next(iter(change.values())).encode()).hexdigest())
    return hashes


def repeat_reason(
    hashes: set[str],
    history: Iterable[HypothesisSummary],
    in_flight: Iterable[HypothesisSummary],
) -> str | None:
    """Why this code must not be submitted again (tried, or in flight), or None if it is new."""
    for summary in in_flight:
        if summary.change_hash and summary.change_hash in hashes:
            return f"this exact code is in flight as {summary.title!r}; propose another idea"
    for summary in history:
        if summary.change_hash and summary.change_hash in hashes:
            return (
                f"this exact code was already tried as {summary.title!r} "
                f"(verdict {summary.verdict}); propose another idea"
            )
    return None
