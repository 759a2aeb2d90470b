"""The results CLI against a real coordinator: `autoswarm export` in every format (the TSV
read by pandas, its first five columns karpathy/autoresearch's byte for byte), `plot`,
`status`, `leaderboard`, `experiments` and `show`."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from autoswarm.cli.numbers import decimals_for, score_text
from autoswarm.cli.report import ExperimentRow, progress_title
from tests.cli_helpers import invoke
from tests.conftest import CoordinatorFactory, wait_until
from tests.read_helpers import Run, drive_run, serve

AUTORESEARCH_HEADER = "commit\tscore\tmemory_gb\tstatus\tdescription"


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("export")
    served = serve(root)
    try:
        driven = drive_run(served, root)
        yield driven
        driven.close()
    finally:
        served.stop()


def cli(run: Run, *args: str) -> str:
    """Run `autoswarm ARGS` against the run's coordinator; its stdout (exit code 0)."""
    answer = invoke(*args, "--join", run.served.base_url, "--token", run.served.admin_token)
    assert answer.exit_code == 0, answer.output
    return answer.stdout


def test_the_tsv_header_starts_with_autoresearchs_five_columns(run: Run) -> None:
    """The first line begins `commit<TAB>score<TAB>memory_gb<TAB>status<TAB>description<TAB>`."""
    text = cli(run, "export", "--task", run.task_id, "--format", "tsv")
    assert text.encode().split(b"\n")[0].startswith(AUTORESEARCH_HEADER.encode() + b"\t")


def test_the_tsv_is_read_by_pandas_one_row_per_finished_experiment(run: Run) -> None:
    """pandas reads it: the first baseline kept, the kept change, the worse one, the crash."""
    text = cli(run, "export", "--task", run.task_id, "--format", "tsv")
    frame = pd.read_csv(io.StringIO(text), sep="\t")
    assert list(frame.columns[:5]) == AUTORESEARCH_HEADER.split("\t")
    assert list(frame["status"]) == ["keep", "keep", "discard", "crash"]
    assert list(frame["description"]) == ["baseline", "lower", "higher", "crash"]
    assert list(frame["score"]) == [1.0, 0.5, 2.0, 0.0]
    assert frame["commit"].str.len().eq(7).all() and frame["memory_gb"].eq(0.5).all()


def test_the_tsv_is_written_for_people_rounded_to_the_noise_with_iso_times(run: Run) -> None:
    """Scores and deltas at the decimals the head's noise justifies (no 17-digit floats),
    seconds to 0.1, finish times as ISO 8601 in UTC."""
    heads = json.loads(cli(run, "leaderboard", "--task", run.task_id, "--json"))[0]["classes"]
    decimals = decimals_for(heads[0]["std"])
    rows = [line.split("\t") for line in cli(run, "export", "--format", "tsv").splitlines()]
    head, body = rows[0], rows[1:]
    for row in body:
        cell = dict(zip(head, row, strict=True))
        assert re.fullmatch(rf"-?\d+\.\d{{{decimals}}}", cell["score"]), cell
        assert cell["delta"] == "" or re.fullmatch(rf"[+-]\d+\.\d{{{decimals}}}", cell["delta"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", cell["finished_at"]), cell
        assert cell["wall_s"] == "" or re.fullmatch(r"\d+\.\d", cell["wall_s"]), cell


def test_each_rows_delta_is_its_score_against_the_head_its_reason_names(run: Run) -> None:
    """delta = the row's score minus the head mean its reason compares with ("vs head X"),
    at the noise's decimals; empty for the baseline and the crash, compared with nothing."""
    heads = json.loads(cli(run, "leaderboard", "--task", run.task_id, "--json"))[0]["classes"]
    decimals = decimals_for(heads[0]["std"])
    found = json.loads(cli(run, "experiments", "--task", run.task_id, "--json"))
    reasons = {e["experiment_id"]: e["reason"] for e in found}
    rows = [line.split("\t") for line in cli(run, "export", "--format", "tsv").splitlines()]
    compared = 0
    for row in rows[1:]:
        cell = dict(zip(rows[0], row, strict=True))
        named = re.search(r"vs head (\S+) over", reasons[cell["experiment_id"]])
        if cell["kind"] == "baseline" or cell["status"] == "crash" or named is None:
            assert cell["delta"] == "", cell
            continue
        compared += 1
        exp = next(e for e in found if e["experiment_id"] == cell["experiment_id"])
        assert exp["head_metric"] == pytest.approx(float(named.group(1)), rel=1e-5)
        metric = exp["metric"]
        assert cell["delta"] == f"{metric - float(named.group(1)):+.{decimals}f}", cell
    assert compared == 2


def test_a_workers_summary_counts_its_kept_runs_and_the_contributors_credit(run: Run) -> None:
    """Alice's worker ran two baselines and three explores, `lower` kept; bob's ran two
    baselines and the replicate that confirmed it: each counts its runs, one kept, and its
    owner's credit on the contributors page (each owner has this one worker)."""
    for name, owner, runs in (("a", "team-a/alice", 5), ("b", "bob", 3)):
        worker = run.workers[name]

        def matched() -> bool:
            page = run.served.get("contributors")["contributors"]
            owed = next(c["credit"] for c in page if c["owner"] == owner)  # noqa: B023
            answer = worker.http.get(f"/api/v1/workers/{worker.worker_id}/summary")  # noqa: B023
            assert answer.status_code == 200, answer.text
            summary = answer.json()
            assert (summary["runs"], summary["kept"]) == (runs, 1), summary  # noqa: B023
            return bool(summary["credit"] == pytest.approx(owed, rel=1e-6))

        wait_until(matched, what=f"{owner}'s credit as the contributors page has it")


def test_noise_is_written_one_way_its_first_digit_and_one_more() -> None:
    """0.00123 -> 4 decimals; a noise of 7.49e-17 is 0 at 6 decimals, never in e-notation."""
    assert decimals_for(0.00123) == 4 and decimals_for(0.05) == 3 and decimals_for(None) == 6
    assert score_text(0.2847123, 0.00123, 5) == "0.2847 ± 0.0012 (n=5)"
    assert score_text(1.0, 7.49e-17, 5) == "1.000000 ± 0.000000 (n=5)"
    assert score_text(None, None, 0) == "—"


def test_the_plots_title_counts_kept_changes_not_the_baseline() -> None:
    """A baseline (`keep`, as autoresearch's first row) and one kept change: 1 improvement."""
    rows = [
        ExperimentRow("a" * 7, 1.0, 0.0, "keep", "baseline", kind="baseline"),
        ExperimentRow("b" * 7, 0.5, 0.0, "keep", "lower", kind="explore"),
        ExperimentRow("c" * 7, 2.0, 0.0, "discard", "higher", kind="explore"),
    ]
    assert progress_title(rows) == "Progress: 3 Experiments, 1 Kept Improvements"


def test_csv_and_jsonl_carry_the_same_rows(run: Run) -> None:
    """CSV has the same header; each JSONL line names the metric after the task's."""
    csv_text = cli(run, "export", "--task", run.task_id, "--format", "csv")
    assert pd.read_csv(io.StringIO(csv_text)).columns[1] == "score"
    lines = cli(run, "export", "--task", run.task_id, "--format", "jsonl").splitlines()
    assert [json.loads(line)["score"] for line in lines] == [1.0, 0.5, 2.0, None]


def test_parquet_is_written_to_a_file(run: Run, tmp_path: Path) -> None:
    """--format parquet -o FILE: pandas reads the four rows back."""
    path = tmp_path / "results.parquet"
    cli(run, "export", "--task", run.task_id, "--format", "parquet", "-o", str(path))
    assert list(pd.read_parquet(path)["status"]) == ["keep", "keep", "discard", "crash"]


def test_plot_writes_progress_png(run: Run, tmp_path: Path) -> None:
    """`autoswarm plot` writes a PNG."""
    path = tmp_path / "progress.png"
    cli(run, "plot", "--task", run.task_id, "-o", str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_experiments_filters_as_the_api_does(run: Run) -> None:
    """--verdict kept --kind explore: the kept change only."""
    found = json.loads(cli(run, "experiments", "--verdict", "kept", "--kind", "explore", "--json"))
    assert [e["title"] for e in found] == ["lower"]


def test_show_prints_the_reason_and_the_diff(run: Run) -> None:
    """`autoswarm show ID`: why it was kept and its diff."""
    text = cli(run, "show", run.experiments["lower"])
    assert "kept, replicated by" in text and "+SCORE = 0.5" in text


def test_leaderboard_and_status_answer_json(run: Run) -> None:
    """--json: the leaderboard's chain, and the status's heads and workers."""
    boards = json.loads(cli(run, "leaderboard", "--task", run.task_id, "--json"))
    assert [c["title"] for c in boards[0]["classes"][0]["chain"]][-1] == "lower"
    state = json.loads(cli(run, "status", "--json"))
    assert state["workers"] == 2 and state["tasks"][0]["task"]["task_id"] == run.task_id


def test_status_once_renders_the_table(run: Run) -> None:
    """`autoswarm status --once` prints the heads table and the latest experiments."""
    text = cli(run, "status", "--once")
    assert run.task_id in text and "latest experiments" in text


def test_a_private_coordinator_without_a_token_is_an_error(run: Run) -> None:
    """No token: exit code 1, saying how to give one; a wrong one: the coordinator's reason."""
    answer = invoke("leaderboard", "--join", run.served.base_url, "--token", "")
    assert answer.exit_code == 1 and "pass --token" in answer.output, answer.output
    wrong = invoke("leaderboard", "--join", run.served.base_url, "--token", "not-a-token")
    assert wrong.exit_code == 1 and "pass --token" not in wrong.output, wrong.output


def test_a_join_url_copied_with_the_api_prefix_works(run: Run) -> None:
    """`--join http://HOST:PORT/api/v1/`: the prefix is not added twice."""
    joined = cli(run, "leaderboard", "--task", run.task_id, "--json")
    prefixed = f"{run.served.base_url}/api/v1/"
    answer = invoke("leaderboard", "--join", prefixed, "--token", run.served.admin_token,
                    "--task", run.task_id, "--json")  # fmt: skip
    assert answer.exit_code == 0 and json.loads(answer.stdout) == json.loads(joined), answer.output


def test_a_public_coordinator_needs_no_token(coordinator_factory: CoordinatorFactory) -> None:
    """`--token ""` against a public-read coordinator: the (empty) leaderboard, exit code 0."""
    public = coordinator_factory(public_read=True)
    answer = invoke("leaderboard", "--join", public.base_url, "--token", "", "--json")
    assert answer.exit_code == 0 and json.loads(answer.stdout) == []
