"""The task format: task.toml, autoresearch defaults, and clear errors for broken folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoswarm.shared.errors import TaskError
from autoswarm.shared.task import (
    Direction,
    ScoringMode,
    hash_files,
    load_task,
    protected_hashes,
    read_task_files,
)

REPO = Path(__file__).resolve().parents[1]


def make_folder(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def autoresearch_layout(root: Path) -> Path:
    return make_folder(
        root,
        {"train.py": "print('x')\n", "prepare.py": "X = 1\n", "program.md": "# go\n"},
    )


def test_autoresearch_layout_loads_with_defaults(tmp_path: Path) -> None:
    """train.py + prepare.py + program.md, no task.toml: a karpathy/autoresearch checkout."""
    spec = load_task(autoresearch_layout(tmp_path / "myrun"))
    assert spec.name == "myrun"
    assert spec.editable == ("train.py",)
    assert spec.protected == ("prepare.py",)
    assert spec.metric.name == "val_bpb"
    assert spec.metric.direction is Direction.MINIMIZE
    assert spec.budget_s == 300
    assert spec.run.command == ("python", "train.py")
    assert spec.run.prepare == ("python", "prepare.py")
    assert spec.scoring.mode is ScoringMode.SUMMARY


def test_task_toml_overrides(tmp_path: Path) -> None:
    """Every table of task.toml is read into the frozen spec."""
    folder = make_folder(
        tmp_path / "t",
        {
            "strategy.py": "A = 1\n",
            "evaluate.py": "",
            "task.toml": """
[task]
name = "sharpe"
editable = ["strategy.py"]
protected = []
budget_s = 10
[metric]
name = "sharpe"
direction = "maximize"
[run]
command = ["python", "strategy.py"]
[scoring]
mode = "evaluator"
command = ["python", "evaluate.py"]
files = ["evaluate.py"]
[resources]
device = "cpu"
memory_mb = 512
""",
        },
    )
    spec = load_task(folder)
    assert spec.name == "sharpe"
    assert spec.metric.direction is Direction.MAXIMIZE
    assert spec.scoring.files == ("evaluate.py",)
    assert spec.run_files == ("strategy.py",)
    assert spec.is_better(2.0, 1.0)
    with pytest.raises(Exception, match="frozen"):
        spec.budget_s = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("toml", "path", "field", "message"),
    [
        ('[task]\neditable = ["missing.py"]\n', "missing.py", "task.editable", "missing"),
        ('[metric]\ndirection = "sideways"\n', "task.toml", "metric.direction", "sideways"),
        ("[task]\nbudget_s = 0\n", "task.toml", "budget_s", "greater than or equal"),
        ("[task]\nbudget_s = 1e9\n", "task.toml", "budget_s", "less than or equal"),
        ('[task]\nprotected = ["train.py"]\n', "task.toml", "task", "both editable and protected"),
        ('[task]\neditable = ["../evil.py"]\n', "task.toml", "task.editable[0]", "escapes"),
        ('[task]\neditable = ["/etc/passwd"]\n', "task.toml", "task.editable[0]", "escapes"),
        ("[task\n", "task.toml", None, "not valid TOML"),
        ("[bogus]\nx = 1\n", "task.toml", "bogus", "unknown table"),
        ('[scoring]\nmode = "evaluator"\n', "task.toml", "task", "needs [scoring] command"),
        ('[scoring]\nstart = "with-run"\n', "task.toml", "task", "needs mode 'evaluator'"),
        ('[scoring]\nstart = "early"\n', "task.toml", "scoring.start", "after-run"),
        ('[task]\nnmae = "typo"\n', "task.toml", "nmae", "Extra inputs"),
        ('[run]\npreload = ["os; rm"]\n', "task.toml", "run.preload.0", "should match"),
        (
            '[run]\ncommand = ["bash", "run.sh"]\npreload = ["torch"]\n',
            "task.toml",
            "run",
            "preload needs a command of the form",
        ),
    ],
)
def test_broken_folder_gets_one_clear_error(
    tmp_path: Path, toml: str, path: str, field: str | None, message: str
) -> None:
    """Each broken task folder raises one TaskError naming the file and the field."""
    folder = autoresearch_layout(tmp_path / "t")
    (folder / "task.toml").write_text(toml)
    with pytest.raises(TaskError) as info:
        load_task(folder)
    assert info.value.path == path
    assert info.value.field == field
    assert message in str(info.value)


def test_symlink_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    """An editable file that is a symlink to outside the folder is refused, naming it."""
    outside = tmp_path / "secret.py"
    outside.write_text("X = 1\n")
    folder = autoresearch_layout(tmp_path / "t")
    (folder / "train.py").unlink()
    (folder / "train.py").symlink_to(outside)
    with pytest.raises(TaskError, match=r"train\.py: is a symbolic link"):
        load_task(folder)


def test_missing_folder_is_a_task_error(tmp_path: Path) -> None:
    """A path that is not a folder gets a TaskError, not a traceback."""
    with pytest.raises(TaskError, match="not a folder"):
        load_task(tmp_path / "nope")


def test_a_folder_without_task_toml_or_train_py_says_that_task_toml_is_missing(
    tmp_path: Path,
) -> None:
    """No task.toml means the autoresearch layout: its error says so, and what to add."""
    folder = tmp_path / "strategy"
    folder.mkdir()
    (folder / "strategy.py").write_text("X = 1\n")
    with pytest.raises(TaskError, match=r"with no task\.toml") as info:
        load_task(folder)
    assert "train.py" in str(info.value) and "add a task.toml" in str(info.value)


def test_hash_files_is_order_independent_and_content_sensitive(tmp_path: Path) -> None:
    """The bundle hash depends on content and names, not on dict order."""
    a = {"a.py": b"1", "b.py": b"2"}
    b = {"b.py": b"2", "a.py": b"1"}
    assert hash_files(a) == hash_files(b)
    assert hash_files(a) != hash_files({"a.py": b"1", "b.py": b"3"})
    assert hash_files({"ab": b"c"}) != hash_files({"a": b"bc"})


def test_read_task_files_and_protected_hashes(tmp_path: Path) -> None:
    """The task's files include program.md; protected hashes cover protected files."""
    folder = autoresearch_layout(tmp_path / "t")
    spec = load_task(folder)
    files = read_task_files(folder, spec)
    assert set(files) == {"train.py", "prepare.py", "program.md"}
    hashes = protected_hashes(folder, spec)
    assert set(hashes) == {"prepare.py"}
    (folder / "prepare.py").write_text("X = 2\n")
    assert protected_hashes(folder, spec) != hashes


@pytest.mark.parametrize("name", ["tinylm", "nanochat", "sharpe"])
def test_shipped_tasks_load(name: str) -> None:
    """Every task shipped in tasks/ is a valid task folder."""
    folder = REPO / "tasks" / name
    if not folder.exists():
        pytest.fail(f"tasks/{name} is missing")
    assert load_task(folder).name == name
