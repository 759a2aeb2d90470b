"""The store's Lua scripts as files: named keys and arguments, one copy of each constant,
and no placeholder key handed to any script (against a real Redis)."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from importlib import resources
from typing import Any

import pytest
import redis

from autoswarm.coordinator import keys
from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.shared.models import ExperimentKind

HW = "cpu:test-2c"
TASK = "demo"
COMMIT = "c" * 40
NOW = 1_000_000.0
SLOT = re.compile(r"\b(KEYS|ARGV)\[(\d+)\]")
# Prepended to the others; they bind no KEYS/ARGV of their own.
LIBRARIES = {"lib.lua", "leasing.lua"}


def _scripts() -> dict[str, str]:
    folder = resources.files("autoswarm.coordinator.scripts")
    return {
        item.name: item.read_text(encoding="utf-8")
        for item in folder.iterdir()
        if item.name.endswith(".lua")
    }


@pytest.fixture
def store(redis_url: str) -> Iterator[Store]:
    store = Store(redis_url)
    yield store
    store.close()


def test_every_script_binds_its_keys_and_arguments_to_named_locals_first() -> None:
    """KEYS and ARGV appear only in the bindings at the top of a script (its first block of
    code), and each one bound is named in the script's header."""
    scripts = {name: source for name, source in _scripts().items() if name not in LIBRARIES}
    assert len(scripts) > 10
    for name, source in scripts.items():
        lines = source.splitlines()
        header = "\n".join(itertools.takewhile(lambda line: line.startswith("--"), lines))
        bindings, _, body = source.removeprefix(header).strip("\n").partition("\n\n")
        assert "KEYS" not in body and "ARGV" not in body, f"{name}: KEYS or ARGV past the top"
        assert all(line.startswith(("local ", "  ")) for line in bindings.splitlines()), name
        unnamed = {slot.group(0) for slot in SLOT.finditer(bindings)} - set(
            slot.group(0) for slot in SLOT.finditer(header)
        )
        assert not unnamed, f"{name} binds {sorted(unnamed)} without naming them in its header"


def test_the_event_streams_length_bound_is_written_once() -> None:
    """Every XADD goes through one helper, whose MAXLEN is one named constant."""
    sources = _scripts()
    adds = [name for name, source in sources.items() if "'XADD'" in source]
    assert adds == ["lib.lua"]
    assert sources["lib.lua"].count("100000") == 1


def test_no_script_is_handed_a_placeholder_key(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call without a hypothesis, a follow-up, an experiment or a preemption hands its
    script only keys it uses: never one key twice (a placeholder stood in for each)."""
    handed: list[tuple[str, list[str]]] = []
    run = store._run

    def spy(name: str, script_keys: list[str], args: list[Any]) -> Any:
        handed.append((name, list(script_keys)))
        return run(name, script_keys, args)

    monkeypatch.setattr(store, "_run", spy)
    baseline = NewExperiment("", TASK, ExperimentKind.BASELINE, HW, {"bundle_hash": "h" * 64})
    store.add_class(TASK, HW, {"commit": COMMIT}, baseline, ["base0"], now=NOW)
    store.submit_hypothesis("h1", TASK, {"title": "text only"}, None, None, now=NOW)
    store.conclude(
        "base0",
        task_id=TASK,
        experiment={},
        hypothesis_id=None,
        hypothesis=None,
        event={"type": "verdict"},
        now=NOW,
    )
    again = NewExperiment("base1", TASK, ExperimentKind.BASELINE, HW, {"bundle_hash": "h" * 64})
    store.recheck(again, hypothesis_id=None, hypothesis=None, event={"type": "t"}, now=NOW)
    leased = store.lease("w1", "alice", HW, now=NOW, lease_ttl_s=10.0)
    assert leased is not None
    store.heartbeat(leased.experiment_id, "w1", leased.fencing_token, now=NOW, ttl_s=10.0)
    store.apply_keep(
        task_id=TASK,
        hardware=HW,
        commit="d" * 40,
        head_fields={},
        runs=[1.0, 1.0],
        candidate_id="base0",
        replicate_id="base1",
        hypothesis_id=None,
        hypothesis={},
        experiment={},
        bundle_hash="d" * 64,
        event={"type": "kept"},
        baseline=baseline,
        baseline_ids=["base2"],
        now=NOW,
    )
    assert {name for name, _ in handed} >= {
        "submit",
        "conclude",
        "recheck",
        "heartbeat",
        "apply_keep",
    }
    for name, script_keys in handed:
        assert len(set(script_keys)) == len(script_keys), f"{name}: {script_keys}"


def test_a_decision_with_every_part_records_each_part(
    store: Store, redis_client: redis.Redis
) -> None:
    """A decision with a hypothesis, a follow-up, a pair of runs and observations records
    all four, each under its own key."""
    follow = NewExperiment("rep1", TASK, ExperimentKind.REPLICATE, HW, {"bundle_hash": "b"})
    assert store.conclude(
        "exp1",
        task_id=TASK,
        experiment={"verdict": "pending"},
        hypothesis_id="h1",
        hypothesis={"reason": "replicating"},
        event={"type": "verdict"},
        follow_up=follow,
        pair=(HW, COMMIT, [1.0, 1.5]),
        observed=(HW, [("exp1", COMMIT, "w1", 1.0)]),
        now=NOW,
    )
    assert redis_client.hget(keys.hypothesis("h1"), "reason") == "replicating"
    assert redis_client.zscore(keys.queue(HW), "rep1") is not None
    assert redis_client.hget(keys.runs(TASK, HW), COMMIT) == '["1.0", "1.5"]'
    assert redis_client.hexists(keys.observations(TASK, HW), "exp1")
