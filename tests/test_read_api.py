"""The read API over HTTP against a real coordinator and Redis: every experiment filter,
both sorts and their cursors, the leaderboard, progress, lineage, contributors, one
experiment, the event stream, public reads, and the OpenAPI document (validated, and
fuzzed by schemathesis for server errors).

Most tests read one run driven step by step through the worker and proposer endpoints
(`tests/read_helpers.py`), so what each filter must find is known exactly.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import CoordinatorFactory, RunningCoordinator
from tests.read_helpers import HW, Run, drive_run, every_page, serve


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    root = tmp_path_factory.mktemp("read-api")
    served = serve(root)
    try:
        driven = drive_run(served, root)
        yield driven
        driven.close()
    finally:
        served.stop()


def ids(run: Run, **params: Any) -> list[str]:
    """Every experiment id the filters find, newest first, across all pages."""
    found: list[str] = []
    for page in every_page(run.served, "experiments", task_id=run.task_id, limit=3, **params):
        found += [e["experiment_id"] for e in page["experiments"]]
    return found


def named(run: Run, *names: str) -> set[str]:
    return {run.experiments[n] for n in names}


def replicate_of(run: Run) -> str:
    return run.experiments["lower-replicate"]


# -- filters -------------------------------------------------------------------------------


def test_the_state_filter_finds_the_queued_explore(run: Run) -> None:
    """status=queued: only the hypothesis nobody leased yet."""
    assert ids(run, status="queued") == [run.experiments["queued"]]


def test_the_kind_filter_finds_the_replicate(run: Run) -> None:
    """kind=replicate: the one replication of the kept change."""
    assert ids(run, kind="replicate") == [replicate_of(run)]


def test_the_verdict_filter_finds_both_runs_of_the_kept_change(run: Run) -> None:
    """verdict=kept: the explore and its replicate."""
    assert set(ids(run, verdict="kept")) == named(run, "lower", "lower-replicate")


def test_the_pending_verdict_is_the_unjudged_explore(run: Run) -> None:
    """verdict=pending: an explore still waiting, not the baselines."""
    assert ids(run, verdict="pending") == [run.experiments["queued"]]


def test_the_result_filter_finds_the_crash(run: Run) -> None:
    """result=crash: the run that crashed."""
    assert ids(run, result="crash") == [run.experiments["crash"]]


def test_the_worker_filter_finds_one_workers_runs(run: Run) -> None:
    """worker_id: the four runs worker b reported."""
    found = set(ids(run, worker_id=run.workers["b"].worker_id))
    assert found == named(run, "baseline-2", "lower-replicate", "baseline-4")


def test_the_workers_read_shows_each_worker_and_never_its_tokens_hash(run: Run) -> None:
    """`GET /api/v1/workers`: each worker's public record (owner, claims agreed), no token hash."""
    workers = {w["worker_id"]: w for w in run.served.get("workers")}
    a, b = (workers[run.workers[name].worker_id] for name in ("a", "b"))
    assert (a["owner"], b["owner"]) == ("team-a/alice", "bob") and b["hardware"] == HW
    assert a["agreed"] == 1  # its claim, `lower`, replicated by b
    assert all("token_hash" not in w for w in workers.values())


def test_the_worker_filter_takes_a_short_worker_id(run: Run) -> None:
    """worker_id by its first 8 characters finds what the full id finds."""
    worker_id = run.workers["b"].worker_id
    assert set(ids(run, worker_id=worker_id[:8])) == set(ids(run, worker_id=worker_id))


def test_the_owner_filter_finds_one_owners_runs(run: Run) -> None:
    """owner=team-a/alice: the baselines and explores worker a ran."""
    found = set(ids(run, owner="team-a/alice"))
    assert found == named(run, "baseline-1", "lower", "baseline-3", "higher", "crash")


def test_the_hardware_filter_leaves_out_what_ran_nowhere_yet(run: Run) -> None:
    """hardware: everything measured on the class; the queued explore has no class yet."""
    every = set(ids(run))
    assert set(ids(run, hardware=HW)) == every - {run.experiments["queued"]}


def test_the_proposer_filter_matches_the_proposers_family(run: Run) -> None:
    """proposer=llm: both runs of the LLM's hypothesis (`llm:<model>`)."""
    assert set(ids(run, proposer="llm")) == named(run, "lower", "lower-replicate")


def test_the_model_filter_matches_the_llm_model(run: Run) -> None:
    """model=openai/gpt-4o-mini: the LLM's hypothesis, and nothing for another model."""
    assert set(ids(run, model="openai/gpt-4o-mini")) == named(run, "lower", "lower-replicate")
    assert ids(run, model="anthropic/claude") == []


def test_the_time_range_cuts_at_creation_time(run: Run) -> None:
    """until=the kept explore's creation time: it and everything queued before it."""
    detail = run.served.get(f"experiments/{run.experiments['lower']}")
    found = set(ids(run, until=detail["created_s"]))
    assert found == named(run, "baseline-1", "baseline-2", "lower")
    later = set(ids(run, since=detail["created_s"], kind="explore"))
    assert later == named(run, "lower", "higher", "crash", "queued")


def test_filters_combine(run: Run) -> None:
    """kind=explore and verdict=discarded: only the explore that scored worse."""
    assert ids(run, kind="explore", verdict="discarded") == [run.experiments["higher"]]


def test_an_unknown_filter_value_is_422(run: Run) -> None:
    """A verdict that does not exist is refused, not ignored."""
    with run.served.client() as http:
        answer = http.get("/api/v1/experiments", params={"verdict": "great"})
    assert answer.status_code == 422 and answer.json()["error"] == "invalid"


# -- sorting and cursors ---------------------------------------------------------------------


def test_pages_by_time_cover_every_experiment_once_newest_first(run: Run) -> None:
    """limit=2 pages: no experiment twice, none missing, sequence numbers falling."""
    seqs: list[int] = []
    for page in every_page(run.served, "experiments", task_id=run.task_id, limit=2):
        assert len(page["experiments"]) <= 2
        seqs += [e["seq"] for e in page["experiments"]]
    assert seqs == sorted(set(seqs), reverse=True) and len(seqs) == 9


def test_sort_by_score_lists_the_best_first_across_pages(run: Run) -> None:
    """sort=score (minimise): scored runs ascending, paged by a cursor."""
    metrics: list[float] = []
    for page in every_page(
        run.served, "experiments", task_id=run.task_id, sort="score", limit=3, view="summary"
    ):
        metrics += [e["metric"] for e in page["experiments"]]
    assert metrics == sorted(metrics) and metrics[0] == 0.5 and len(metrics) == 7


def test_sort_by_score_needs_a_task(run: Run) -> None:
    """Scores compare within one task and class: without task_id, 422."""
    with run.served.client() as http:
        answer = http.get("/api/v1/experiments", params={"sort": "score"})
    assert answer.status_code == 422


@pytest.mark.parametrize("cursor", ["s:nothing", "\u00b2", "\u0663"])
def test_a_foreign_cursor_is_422(run: Run, cursor: str) -> None:
    """A cursor that no page handed out is refused; so are digits other than 0-9 ("²" is
    a digit to str.isdigit but not to int)."""
    with run.served.client() as http:
        answer = http.get("/api/v1/experiments", params={"cursor": cursor})
    assert answer.status_code == 422, answer.text


def test_the_summary_view_joins_the_title_and_drops_the_log(run: Run) -> None:
    """view=summary: the hypothesis's title and proposer, no log tail."""
    page = run.served.get("experiments", task_id=run.task_id, kind="explore", view="summary")
    row = next(e for e in page["experiments"] if e["experiment_id"] == run.experiments["lower"])
    assert row["title"] == "lower" and row["proposer"] == "llm:openai/gpt-4o-mini"
    assert row["verdict"] == "kept" and "log_tail" not in json.dumps(row)


# -- one experiment, the task views -----------------------------------------------------------


def test_an_experiment_shows_hypothesis_reason_log_and_diff(run: Run) -> None:
    """The kept explore: its rationale, why it was kept, its log tail, its diff."""
    detail = run.served.get(f"experiments/{run.experiments['lower']}")
    assert detail["hypothesis"]["rationale"] == "a lower SCORE scores lower"
    assert detail["effective_verdict"] == "kept" and "kept, replicated by" in detail["reason"]
    assert detail["result"]["log_tail"] == "score: 0.5\n"
    assert "-SCORE = 1.0" in detail["diff"] and "+SCORE = 0.5" in detail["diff"]


def test_an_experiment_is_found_by_a_unique_prefix_of_eight_characters(run: Run) -> None:
    """The 8- and 12-character prefixes the tables print name the experiment; 7 do not."""
    full = run.experiments["lower"]
    for short in (full[:8], full[:12]):
        assert run.served.get(f"experiments/{short}")["experiment_id"] == full
    with run.served.client() as http:
        answer = http.get(f"/api/v1/experiments/{full[:7]}")
    assert answer.status_code == 404 and "at least 8 characters" in answer.text


def test_an_ambiguous_prefix_is_refused_listing_what_it_matches(redis_url: str) -> None:
    """Two ids that share their first 8 characters: one error naming both, nothing found."""
    from autoswarm.coordinator import keys
    from autoswarm.coordinator.short_ids import resolve_experiment_id
    from autoswarm.coordinator.store import Store
    from autoswarm.shared.errors import InvalidInput

    store = Store(redis_url)
    try:
        store._r.zadd(keys.EXPERIMENTS, {"e1234567aaaaaaa": 1, "e1234567bbbbbbb": 2})
        with pytest.raises(InvalidInput, match="e1234567aaaaaaa, e1234567bbbbbbb"):
            resolve_experiment_id(store, "e1234567")
    finally:
        store._r.delete(keys.EXPERIMENTS)
        store.close()


def test_the_leaderboard_shows_the_head_its_spread_and_the_chain(run: Run) -> None:
    """One class: head mean 0.5 over its two baselines (the runs that kept it are not in the
    head's mean: they were chosen for scoring well), the kept change with delta -0.5."""
    board = run.served.get(f"tasks/{run.task_id}/leaderboard")
    (cls,) = board["classes"]
    assert cls["hardware"] == HW and cls["mean"] == 0.5 and cls["runs"] == 2
    first, kept = cls["chain"]
    assert first["experiment_id"] is None
    assert kept["title"] == "lower" and kept["delta"] == -0.5 and kept["owner"] == "team-a/alice"
    assert kept["commit"] == cls["head_commit"]


def test_progress_has_a_point_per_scored_run_and_flags_the_kept_one(run: Run) -> None:
    """Seven scored runs; only the kept explore is flagged kept, with its title."""
    progress = run.served.get(f"tasks/{run.task_id}/progress")
    (series,) = progress["series"]
    assert progress["total"] == 7 and len(series["points"]) == 7
    kept = [p for p in series["points"] if p[2]]
    assert [p[4] for p in kept] == [run.experiments["lower"]]
    assert series["kept_titles"] == {run.experiments["lower"]: "lower"}


def test_the_lineage_tree_counts_what_was_tried_on_each_commit(run: Run) -> None:
    """Root, then the kept change as its child and the head; three tried on the new head."""
    tree = run.served.get(f"tasks/{run.task_id}/lineage")
    root, child = tree["nodes"]
    assert root["commit"] == tree["root"] and root["tried"] == 1
    assert child["parent"] == root["commit"] and child["heads"] == [HW]
    assert child["experiment_id"] == run.experiments["lower"] and child["tried"] == 3


def test_contributors_are_credited_with_the_published_formula(run: Run) -> None:
    """Alice's kept change earns her the bonus; bob has work credit; alice's team counts."""
    answer = run.served.get("contributors")
    people = {c["owner"]: c for c in answer["contributors"]}
    alice, bob = people["team-a/alice"], people["bob"]
    assert alice["kept"] == 1 and alice["bonus_s"] > 0 and alice["experiments"] == 5
    assert bob["kept"] == 0 and bob["work_s"] > 0 and bob["experiments"] == 3
    assert alice["credit"] == pytest.approx(alice["work_s"] + alice["bonus_s"])
    assert [t["team"] for t in answer["teams"]] == ["team-a"]
    assert "budget_s" in answer["formula"] and answer["factors"]


# -- the event stream ------------------------------------------------------------------------


def read_stream(
    served: RunningCoordinator,
    params: dict[str, str],
    found: list[dict[str, Any]],
    connected: threading.Event | None = None,
) -> None:
    """Collect events from the stream until a `result` arrives (or 20 s pass)."""
    with (
        served.client() as http,
        http.stream("GET", "/api/v1/events/stream", params=params, timeout=20) as answer,
    ):
        for line in answer.iter_lines():
            if connected is not None and line == ": connected":
                connected.set()
            if line.startswith("data:"):
                found.append(json.loads(line[5:]))
                if found[-1]["type"] == "result":
                    return


def test_the_stream_replays_events_after_an_id(run: Run) -> None:
    """after=0 replays the recorded results and verdicts from the start."""
    found: list[dict[str, Any]] = []
    read_stream(run.served, {"after": "0", "task_id": run.task_id}, found)
    assert found[-1]["experiment_id"] == run.experiments["baseline-1"]


def test_the_stream_delivers_a_new_result(tmp_path: Path) -> None:
    """A result reported while a viewer listens reaches it as a `result` event."""
    served = serve(tmp_path)
    try:
        driven = drive_run(served, tmp_path)
        found: list[dict[str, Any]] = []
        connected = threading.Event()
        listener = threading.Thread(target=read_stream, args=(served, {}, found, connected))
        listener.start()
        assert connected.wait(20)
        lease = driven.workers["a"].lease("explore")
        driven.workers["a"].report(lease, 0.75)
        listener.join(20)
        driven.close()
    finally:
        served.stop()
    assert [e["experiment_id"] for e in found if e["type"] == "result"] == [
        driven.experiments["queued"]
    ]


# -- access ----------------------------------------------------------------------------------


def test_reads_need_a_token_unless_public(coordinator_factory: CoordinatorFactory) -> None:
    """public_read=False: 401 without a token; public_read=True: 200, and a bad token 401."""
    private = coordinator_factory()
    public = coordinator_factory(public_read=True)
    assert httpx.get(f"{private.base_url}/api/v1/experiments").status_code == 401
    assert httpx.get(f"{public.base_url}/api/v1/experiments").status_code == 200
    bad = {"Authorization": "Bearer nope"}
    assert httpx.get(f"{public.base_url}/api/v1/tasks", headers=bad).status_code == 401


def test_a_public_coordinator_reads_for_any_known_token(
    coordinator_factory: CoordinatorFactory,
) -> None:
    """public_read=True: a worker's token may read too (it could read without one)."""
    public = coordinator_factory(public_read=True)
    worker = {"Authorization": f"Bearer {public.create_token('worker', 'w')}"}
    assert httpx.get(f"{public.base_url}/api/v1/contributors", headers=worker).status_code == 200


def test_the_dashboard_is_served_offline(run: Run) -> None:
    """Every dashboard address answers the page; its files come from the package."""
    with run.served.client("") as http:
        for path in ("/", f"/tasks/{run.task_id}", "/experiments/x", "/contributors"):
            page = http.get(path)
            assert page.status_code == 200 and '<script src="/ui/app.js"' in page.text
        script = http.get("/ui/app.js")
        assert script.status_code == 200 and "text/javascript" in script.headers["content-type"]
        assert http.get("/ui/secrets.txt").status_code == 404
    assert 'src="http' not in page.text and 'href="http' not in page.text  # nothing from a CDN


# -- the OpenAPI document --------------------------------------------------------------------


def test_the_openapi_document_validates(run: Run) -> None:
    """openapi-spec-validator accepts the document, and it lists the read endpoints."""
    from openapi_spec_validator import validate

    with run.served.client("") as http:
        document = http.get("/openapi.json").json()
    validate(document)
    for path in ("leaderboard", "progress", "lineage"):
        assert f"/api/v1/tasks/{{task_id}}/{path}" in document["paths"]
    assert (
        "/api/v1/events/stream" in document["paths"] and "/api/v1/contributors" in document["paths"]
    )


def test_schemathesis_finds_no_server_error(run: Run) -> None:
    """Property-based requests to every GET and the admin/proposer POSTs never get a 5xx."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    with run.served.client("") as http:
        document = http.get("/openapi.json").json()
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {run.served.admin_token}"}
    checked = []
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.path == "/api/v1/events/stream" or operation.method.upper() not in (
            "GET",
            "POST",
        ):
            continue
        if operation.method.upper() == "POST" and operation.path not in (
            "/api/v1/hypotheses",
            "/api/v1/tokens",
            "/api/v1/tasks",
        ):
            continue

        @settings(
            max_examples=20,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def call(case: Any) -> None:
            response = case.call(base_url=run.served.base_url, headers=headers, timeout=30)
            assert response.status_code < 500, (case.method, case.path, response.text)

        call()
        checked.append(f"{operation.method.upper()} {operation.path}")
    assert "GET /api/v1/experiments" in checked and "POST /api/v1/hypotheses" in checked
