"""The git lineage on real bare repos in a temp folder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from autoswarm.coordinator.lineage import Lineage, branch_for
from autoswarm.shared.errors import LineageError, MergeConflict

BRANCH = "hw/cpu-x86_64-2c"
TRAIN = b"LEARNING_RATE = 0.1  # step size\nSTEPS = 10  # iterations\n\nprint('---')\n"
FILES = {
    "train.py": TRAIN,
    "prepare.py": b"print('prepared')\n",
    "program.md": b"# tinylm\n",
    "task.toml": b'[task]\nname = "demo"\n',
    "evaluator/score.py": b"print('val_bpb: 1.0')\n",
}


def _with(files: dict[str, bytes], **changes: bytes) -> dict[str, bytes]:
    return {**files, **{f"{name}.py": content for name, content in changes.items()}}


def _trailers(experiment_id: str) -> dict[str, str]:
    return {
        "Experiment": experiment_id,
        "Metric": "val_bpb=0.98",
        "Delta": "-0.02",
        "Worker": "w1",
        "Replicated-by": "w2",
        "Hardware": "cpu:x86_64-2c",
    }


def _git(repo: Path, *args: str) -> str:
    done = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True)
    return done.stdout


@pytest.fixture
def lineage(tmp_path: Path) -> Lineage:
    return Lineage(tmp_path / "lineages", "demo")


@pytest.fixture
def root(lineage: Lineage) -> str:
    return lineage.init(FILES, branch=BRANCH, message="demo: initial task")


def _keep(lineage: Lineage, parent: str, experiment_id: str, train: bytes) -> str:
    return lineage.commit_change(
        BRANCH,
        _with(FILES, train=train),
        parent=parent,
        title=f"change {experiment_id}",
        rationale="Because it should help.",
        trailers=_trailers(experiment_id),
    )


def test_init_creates_head_with_files(lineage: Lineage, root: str) -> None:
    """init makes the first commit on the branch, and its files read back byte for byte."""
    assert lineage.head(BRANCH) == root
    assert lineage.files_at(root) == FILES
    assert _git(lineage.path, "rev-parse", "--is-bare-repository").strip() == "true"


def test_init_is_idempotent(lineage: Lineage, root: str) -> None:
    """A second init returns the existing head instead of committing again."""
    again = lineage.init(_with(FILES, train=b"X = 1\n"), branch=BRANCH, message="again")
    assert again == root
    assert len(lineage.history(BRANCH)) == 1


def test_head_of_missing_branch_is_none(lineage: Lineage, root: str) -> None:
    """head() of a branch that does not exist is None, not an error."""
    assert lineage.head("hw/cuda-NVIDIA-H100-80GB-HBM3") is None
    assert Lineage(lineage.path.parent, "other").head(BRANCH) is None


def test_commit_change_trailers_read_back(lineage: Lineage, root: str) -> None:
    """An accepted change's title, parent and trailers read back from history, newest first."""
    sha = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    newest, oldest = lineage.history(BRANCH)
    assert (newest.sha, newest.parent, newest.title) == (sha, root, "change e1")
    assert newest.trailers == _trailers("e1")
    assert oldest.sha == root and oldest.parent is None
    assert lineage.head(BRANCH) == sha
    assert lineage.find_by_experiment(BRANCH, "e1") == sha


def test_commit_change_is_idempotent_by_experiment_trailer(lineage: Lineage, root: str) -> None:
    """Committing the same Experiment again returns the first commit, even with a stale parent."""
    first = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    again = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    assert again == first
    assert [info.sha for info in lineage.history(BRANCH)] == [first, root]


def test_commit_change_refuses_stale_parent(lineage: Lineage, root: str) -> None:
    """A change made on a head that has since moved is refused and the head stays put."""
    first = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    with pytest.raises(LineageError, match="moved"):
        _keep(lineage, root, "e2", TRAIN.replace(b"10", b"20"))
    assert lineage.head(BRANCH) == first


def test_commit_works_without_git_config(
    lineage: Lineage, root: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commits carry the autoswarm identity on a machine with no git config at all."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    sha = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    assert _git(lineage.path, "log", "-1", "--format=%an <%ae>", sha).strip() == (
        "autoswarm <autoswarm@localhost>"
    )


def test_store_experiment_ref_and_diff(lineage: Lineage, root: str) -> None:
    """An experiment's code is kept under refs/experiments/<id> and diffs against its parent."""
    sha = lineage.store_experiment(
        "e7", _with(FILES, train=TRAIN.replace(b"0.1", b"0.3")), parent=root, message="e7"
    )
    assert _git(lineage.path, "rev-parse", "refs/experiments/e7").strip() == sha
    assert lineage.experiment_commit("e7") == sha
    diff = lineage.diff("e7")
    assert "-LEARNING_RATE = 0.1  # step size" in diff
    assert "+LEARNING_RATE = 0.3  # step size" in diff
    assert "prepare.py" not in diff
    assert lineage.diff_commits(root, sha) == diff


def test_store_experiment_is_idempotent(lineage: Lineage, root: str) -> None:
    """Storing the same experiment twice returns the same commit; other code is refused."""
    files = _with(FILES, train=TRAIN.replace(b"0.1", b"0.3"))
    first = lineage.store_experiment("e7", files, parent=root, message="e7")
    assert lineage.store_experiment("e7", files, parent=root, message="e7") == first
    with pytest.raises(LineageError, match="other code"):
        lineage.store_experiment("e7", FILES, parent=root, message="e7")


def test_tree_hash_is_the_content_address(lineage: Lineage, root: str) -> None:
    """Equal files give the git tree of their commit; any change gives another hash."""
    assert lineage.tree_hash(dict(reversed(FILES.items()))) == lineage.tree_hash(FILES)
    assert lineage.tree_hash(FILES) == _git(lineage.path, "rev-parse", f"{root}^{{tree}}").strip()
    assert lineage.tree_hash(_with(FILES, train=TRAIN + b"\n")) != lineage.tree_hash(FILES)
    assert lineage.files_at(lineage.tree_hash(FILES)) == FILES


def test_clean_merge_keeps_both_changes(lineage: Lineage, root: str) -> None:
    """Two changes to different constants of one file both survive a three-way merge."""
    ours = _keep(lineage, root, "e1", TRAIN.replace(b"STEPS = 10", b"STEPS = 20"))
    theirs = lineage.store_experiment(
        "e2", _with(FILES, train=TRAIN.replace(b"0.1", b"0.3")), parent=root, message="e2"
    )
    merged = lineage.merge(root, theirs, ours)
    assert merged == _with(FILES, train=TRAIN.replace(b"0.1", b"0.3").replace(b"= 10", b"= 20"))


def test_clean_merge_of_added_lines(lineage: Lineage, root: str) -> None:
    """A changed constant and lines added further down merge like git merge-file."""
    added = TRAIN + b"print('done')\n"
    ours = _keep(lineage, root, "e1", added)
    theirs = {**FILES, "train.py": TRAIN.replace(b"0.1", b"0.3"), "extra.md": b"notes\n"}
    merged = lineage.merge(root, theirs, ours)
    assert merged == {**theirs, "train.py": added.replace(b"0.1", b"0.3")}


def test_conflicting_merge_raises_and_changes_nothing(lineage: Lineage, root: str) -> None:
    """Both sides changing one line raise MergeConflict naming the file; no ref moves."""
    ours = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    theirs = lineage.store_experiment(
        "e2", _with(FILES, train=TRAIN.replace(b"0.1", b"0.3")), parent=root, message="e2"
    )
    refs = _git(lineage.path, "for-each-ref")
    with pytest.raises(MergeConflict) as info:
        lineage.merge(root, theirs, ours)
    assert info.value.paths == ["train.py"]
    assert _git(lineage.path, "for-each-ref") == refs


def test_unknown_commit_is_a_lineage_error(lineage: Lineage, root: str) -> None:
    """Unknown commits and experiments raise LineageError, never a raw git error."""
    with pytest.raises(LineageError, match="unknown commit"):
        lineage.files_at("0" * 40)
    with pytest.raises(LineageError, match="no experiment"):
        lineage.diff("nope")
    with pytest.raises(LineageError, match="unknown commit"):
        _keep(lineage, "deadbeef", "e1", TRAIN)


def test_a_commits_files_are_read_from_git_once(
    lineage: Lineage, root: str, tmp_path: Path
) -> None:
    """files_at of a full sha is served from memory after the first read (the repo could go
    away and it would still answer); a caller changing what it got changes nothing; another
    repo without that commit still says it is unknown."""
    first = lineage.files_at(root)
    first["train.py"] = b"changed by the caller"
    hidden = lineage.path.with_name("moved.git")
    lineage.path.rename(hidden)
    try:
        assert lineage.files_at(root) == FILES  # not read from git: the repo is not there
        with pytest.raises(LineageError):
            lineage.files_at(BRANCH)  # a name, not a sha: always read
    finally:
        hidden.rename(lineage.path)
    other = Lineage(tmp_path / "other", "demo")
    other.init({"x.py": b"x = 1\n"}, branch=BRANCH, message="another task")
    with pytest.raises(LineageError, match="unknown commit"):
        other.files_at(root)


def test_bad_paths_are_refused(lineage: Lineage) -> None:
    """A path that leaves the task folder never reaches a tree."""
    for path in ("../x.py", "/abs.py", "a//b.py", ".git/config", ""):
        with pytest.raises(LineageError, match="path"):
            lineage.tree_hash({path: b"x"})


@pytest.mark.parametrize(
    "hardware",
    [
        "cuda:NVIDIA-H100-80GB-HBM3",
        "cpu:x86_64-2c",
        "cuda:NVIDIA GeForce RTX 4090",
        "cpu:a..b.lock",
    ],
)
def test_branch_for_yields_valid_ref_names(hardware: str) -> None:
    """Every hardware class maps to a branch name git accepts."""
    branch = branch_for(hardware)
    assert branch.startswith("hw/")
    subprocess.run(["git", "check-ref-format", "--branch", branch], check=True, capture_output=True)
    subprocess.run(["git", "check-ref-format", f"refs/heads/{branch}"], check=True)


def test_branch_for_keeps_readable_names() -> None:
    """The usual hardware classes keep their words in the branch name."""
    assert branch_for("cuda:NVIDIA-H100-80GB-HBM3") == "hw/cuda-NVIDIA-H100-80GB-HBM3"
    assert branch_for("cpu:x86_64-2c") == "hw/cpu-x86_64-2c"


def test_ensure_branch_starts_a_new_hardware_class(lineage: Lineage, root: str) -> None:
    """ensure_branch creates a branch at a commit once, then returns its head."""
    gpu = branch_for("cuda:NVIDIA-H100-80GB-HBM3")
    assert lineage.ensure_branch(gpu, root) == root
    moved = _keep(lineage, root, "e1", TRAIN.replace(b"0.1", b"0.2"))
    assert lineage.ensure_branch(BRANCH, root) == moved
    assert lineage.branches() == {BRANCH: moved, gpu: root}
