"""Hostile model archives against the evaluator's loader, run as tests/test_hostile.py runs
its payloads: the real runner, the real sandbox, the real tinylm evaluator.

Each archive (tests/hostile/build_crafted_models.py) is an honest export edited as an
attacker would; its payload hands it in as out/model.pt2 and prints a made-up score.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from autoswarm.shared.models import ResultStatus
from tests.test_hostile import HOSTILE, TINYLM, RunPayload, run_payload, sandbox, worker

pytestmark = [pytest.mark.sandbox, pytest.mark.slow]
FIXTURES = (run_payload, sandbox, worker)  # tests/test_hostile.py's, which pytest finds here


@pytest.fixture(scope="module")
def model_archives(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """build_models.py's archives and the crafted ones made from its honest export."""
    out = tmp_path_factory.mktemp("models")
    for script, source in (("build_models.py", TINYLM), ("build_crafted_models.py", None)):
        argv = [sys.executable, str(HOSTILE / script), str(out)]
        argv.append(str(source if source is not None else out / "honest.pt2"))
        subprocess.run(argv, check=True, capture_output=True, timeout=240)
    return lambda name: out / name


def assert_refused(out_error: str | None, status: ResultStatus, *needles: str) -> None:
    assert status is ResultStatus.INVALID, out_error
    for needle in needles:
        assert needle in (out_error or ""), out_error


def test_archive_naming_a_file_twice_is_refused_and_its_expr_str_never_runs(
    run_payload: RunPayload,
) -> None:
    """A second models/model.json carrying a sympify payload: refused, nothing run or shown."""
    out = run_payload("expr_str_twice.py", task_files=TINYLM, model="expr_str_twice.pt2")
    assert_refused(out.result.error, out.result.status, "twice")
    assert out.result.metric is None
    heldout = (out.exp_dir / "eval" / "heldout" / "val.bin").read_bytes()[:40].decode()
    assert heldout not in out.log


def test_code_in_a_name_of_the_program_never_runs(run_payload: RunPayload) -> None:
    """Python code as the input's name (torch writes names into code it runs): refused."""
    out = run_payload("code_in_a_name.py", task_files=TINYLM, model="code_in_a_name.pt2")
    assert_refused(out.result.error, out.result.status, "not a plain identifier")
    assert out.result.metric is None


def test_model_reading_a_file_while_scored_is_refused(run_payload: RunPayload) -> None:
    """aten.from_file on the held-out text is off the operator list: invalid, no score."""
    out = run_payload("reads_a_file.py", task_files=TINYLM, model="reads_a_file.pt2")
    assert_refused(out.result.error, out.result.status, "aten.from_file", "not allowed")
    assert out.result.metric is None
