"""Path and query parameters, checked by the wire's types (autoswarm/shared/wire.py): ids are short
runs of `[A-Za-z0-9_.-]`, hardware classes canonical, names one line, numbers finite."""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from autoswarm.shared.wire import ID_PATTERN, MAX_ID_CHARS, HardwareClass, Name

TaskId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
WorkerId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
ExperimentId = Annotated[str, Path(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
IdQuery = Annotated[str | None, Query(min_length=1, max_length=MAX_ID_CHARS, pattern=ID_PATTERN)]
HardwareQuery = Annotated[HardwareClass | None, Query()]
NameQuery = Annotated[Name | None, Query()]
TokenId = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[0-9a-fA-F]+$")]
