"""The shipped tasks: each loads, prepares its data deterministically, runs and is scored.

Every script runs as its own subprocess in a fresh folder holding only what the runner
would put there (the run: editable + protected files and data/; the evaluator: protected +
evaluator files, the worker's exported.py, data/, heldout/, artifacts/), with the folders
named by the runner's environment variables.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import io
import json
import math
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from autoswarm.shared.errors import TaskError
from autoswarm.shared.summary import parse_summary
from autoswarm.shared.task import EVALUATOR_MODULE, ScoringMode, load_task
from autoswarm.worker.scoring import LOADER_FILE
from tests.task_helpers import write_task

TASKS = Path(__file__).parents[1] / "tasks"
TINYLM = TASKS / "tinylm"
NANOCHAT = TASKS / "nanochat"
SHARPE = TASKS / "sharpe"
SHARPE_BASELINE = 0.284756  # strategy.py as shipped, on the shipped data (deterministic)
SMOKE = {"AUTOSWARM_SMOKE": "1"}  # nanochat's sizes for a seconds-long CPU check
# The evaluators of exported language models, and the batch shape each scores at
# ((EVAL_BATCH_SIZE, MAX_SEQ_LEN) of its prepare.py; nanochat at its smoke sizes).
LANGUAGE_MODELS = {TINYLM: (32, 128), NANOCHAT: (4, 64)}


def run_script(
    task: Path,
    script: str,
    cwd: Path,
    files: list[str],
    env: dict[str, str],
    timeout_s: float = 120,
) -> subprocess.CompletedProcess[str]:
    """Copy `files` from the task into `cwd`, run `python script` there, return the result."""
    cwd.mkdir(parents=True, exist_ok=True)
    for name in files:
        shutil.copyfile(task / name, cwd / name)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSWARM_")}
    full_env |= {"PYTHONDONTWRITEBYTECODE": "1"} | env
    return subprocess.run(
        [sys.executable, script],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )


def prepare(task: Path, root: Path, env: dict[str, str] | None = None) -> Path:
    """Run the task's prepare step (make_data.py) in `root`; data/ and heldout/ land there."""
    spec = load_task(task)
    files = list(spec.protected + spec.scoring.files)
    done = run_script(task, "make_data.py", root, files, env or {})
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def train(task: Path, prepared: Path, work: Path, env: dict[str, str]) -> Path:
    """Run the task's editable script in `work` with the prepared data; returns its out/."""
    spec = load_task(task)
    out = work / "out"
    env = env | {"AUTOSWARM_DATA_DIR": str(prepared / "data"), "AUTOSWARM_OUT_DIR": str(out)}
    done = run_script(task, spec.run.command[1], work, list(spec.run_files), env)
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def evaluate(
    task: Path, prepared: Path, artifacts: Path, ev: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the task's evaluator in `ev` on `artifacts`; the caller checks the outcome."""
    spec = load_task(task)
    env = (env or {}) | {
        "AUTOSWARM_ARTIFACTS_DIR": str(artifacts),
        "AUTOSWARM_DATA_DIR": str(prepared / "data"),
        "AUTOSWARM_HELDOUT_DIR": str(prepared / "heldout"),
    }
    files = list(spec.protected + spec.scoring.files)
    ev.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(LOADER_FILE, ev / f"{EVALUATOR_MODULE}.py")  # as the runner does
    return run_script(task, "evaluate.py", ev, files, env)


def metric_of(done: subprocess.CompletedProcess[str], name: str) -> float:
    assert done.returncode == 0, done.stdout + done.stderr
    return parse_summary(done.stdout)[name]


def refused(done: subprocess.CompletedProcess[str]) -> str:
    """The evaluator's error, after checking it exited non-zero and printed no metric."""
    assert done.returncode != 0, done.stdout
    assert parse_summary(done.stdout) == {}, done.stdout
    return done.stdout + done.stderr


@pytest.fixture(scope="session")
def tinylm_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tinylm's prepared folder (data/train.bin, heldout/val.bin), made once per session."""
    return prepare(TINYLM, tmp_path_factory.mktemp("tinylm-prepared"))


@pytest.fixture(scope="session")
def nanochat_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """nanochat's prepared folder at its smoke sizes (AUTOSWARM_SMOKE=1), made once."""
    return prepare(NANOCHAT, tmp_path_factory.mktemp("nanochat-prepared"), SMOKE)


@pytest.fixture(scope="session")
def sharpe_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sharpe's prepared folder (data/history.npy, heldout/future_returns.npy)."""
    return prepare(SHARPE, tmp_path_factory.mktemp("sharpe-prepared"))


# ---- task folders --------------------------------------------------------------------------


@pytest.mark.parametrize("folder", [TINYLM, NANOCHAT, SHARPE], ids=lambda p: p.name)
def test_task_loads_in_evaluator_mode(folder: Path) -> None:
    """Each shipped task loads, scores with its own evaluator and hides its prepare script."""
    spec = load_task(folder)
    assert spec.scoring.mode is ScoringMode.EVALUATOR
    assert spec.run.prepare == ("python", "make_data.py")
    assert "make_data.py" in spec.scoring.files  # the run never sees how data is made
    assert "evaluate.py" not in spec.run_files
    assert (folder / "program.md").is_file()


# ---- held-out data from a secret -----------------------------------------------------------

HELDOUT_FILES = {TINYLM: "val.bin", NANOCHAT: "val.bin", SHARPE: "future_returns.npy"}
TRAIN_FILES = {TINYLM: "train.bin", NANOCHAT: "train.bin", SHARPE: "history.npy"}


@pytest.mark.slow
@pytest.mark.parametrize("task", [TINYLM, NANOCHAT, SHARPE], ids=lambda p: p.name)
def test_heldout_data_comes_from_the_secret_and_training_data_does_not(
    task: Path, tmp_path: Path
) -> None:
    """One secret, one held-out set; another secret or none (the public seed), another; the
    training data is the same in all."""
    smoke = {"AUTOSWARM_SMOKE": "1"}  # nanochat's small corpus; the others ignore it
    made = {}
    for name, secret in (("public", ""), ("a", "a" * 64), ("a2", "a" * 64), ("b", "b" * 64)):
        env = smoke | ({"AUTOSWARM_HELDOUT_SECRET": secret} if secret else {})
        root = prepare(task, tmp_path / name, env)
        made[name] = (
            (root / "data" / TRAIN_FILES[task]).read_bytes(),
            (root / "heldout" / HELDOUT_FILES[task]).read_bytes(),
        )
    assert len({train for train, _ in made.values()}) == 1
    assert made["a"][1] == made["a2"][1]
    assert len({made[name][1] for name in ("public", "a", "b")}) == 3


# ---- the loader of exported programs (autoswarm/worker/exported.py)
# ----------------------------------

FORBIDDEN_OPERATORS = (  # files, processes, random state, uninitialised memory, data to host
    "from_file",
    "save",
    "load",
    "empty",
    "empty_like",
    "empty_strided",
    "new_empty",
    "rand",
    "rand_like",
    "randn",
    "randn_like",
    "randint",
    "randint_like",
    "randperm",
    "bernoulli",
    "normal",
    "uniform",
    "multinomial",
    "native_dropout",
    "_fused_dropout",
    "exponential",
    "geometric",
    "cauchy",
    "log_normal",
    "poisson",
    "_local_scalar_dense",
    "item",
    "set_",
    "resize_",
    "copy_",
    "as_strided",
)


SHADOWING_FILES = (  # what Python would import as `exported` ahead of the worker's file
    "exported.py",
    "exported/__init__.py",
    "exported.cpython-311-x86_64-linux-gnu.so",
    "__pycache__/exported.cpython-311.pyc",
)
EVALUATOR_TOML = """
[task]
name = "own-loader"
protected = ["prepare.py"{protected}]

[scoring]
mode = "{mode}"
command = ["python", "evaluate.py"]
files = ["evaluate.py"{files}]
"""


def test_evaluators_of_exported_programs_share_one_loader() -> None:
    """No task ships a loader: tinylm's and nanochat's evaluators import the worker's one
    module (written beside them as exported.py), which imports nothing of autoswarm's."""
    found = importlib.util.find_spec("autoswarm.worker.exported")  # found, not imported (torch)
    assert found is not None and found.origin == str(LOADER_FILE)
    assert not list(TASKS.glob("*/exported*")) and not list(TASKS.glob("*/__pycache__"))
    for folder in (TINYLM, NANOCHAT):
        assert not any("exported" in name for name in load_task(folder).scoring.files)
        source = (folder / "evaluate.py").read_text()
        assert "    from exported import Refused, check_causal, load_model" in source
        assert (
            "    from autoswarm.worker.exported import Refused, check_causal, load_model" in source
        )  # by hand
        assert "torch.export.load" not in source and "zipfile" not in source
    imported = set()
    for node in ast.walk(ast.parse(LOADER_FILE.read_text())):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & {"shared", "worker", "coordinator", "autoswarm"}, imported


@pytest.mark.parametrize("name", SHADOWING_FILES)
@pytest.mark.parametrize("field", ["files", "protected"])
def test_a_task_cannot_bring_its_own_loader(tmp_path: Path, name: str, field: str) -> None:
    """An evaluator-mode task whose evaluator or protected files hold a module Python would
    import as `exported` is refused at load, naming the file."""
    listed = {"files": "", "protected": "", field: f', "{name}"'}
    toml = EVALUATOR_TOML.format(mode="evaluator", **listed)
    write_task(
        tmp_path,
        {"task.toml": toml} | dict.fromkeys(("train.py", "prepare.py", "evaluate.py", name), ""),
    )
    with pytest.raises(TaskError, match=f"{name}.*loader of exported programs"):
        load_task(tmp_path)


def test_files_named_like_the_loader_are_refused_only_where_they_would_replace_it(
    tmp_path: Path,
) -> None:
    """A loader-like file in a subfolder or in a summary-mode task is no evaluator's module."""
    empty = ("train.py", "prepare.py", "evaluate.py", "lib/exported.py", "exported.py")
    toml = EVALUATOR_TOML.format(mode="evaluator", protected="", files=', "lib/exported.py"')
    write_task(tmp_path, {"task.toml": toml} | dict.fromkeys(empty, ""))
    assert "lib/exported.py" in load_task(tmp_path).scoring.files
    toml = EVALUATOR_TOML.format(mode="summary", protected=', "exported.py"', files="")
    (tmp_path / "task.toml").write_text(toml.replace('command = ["python", "evaluate.py"]', ""))
    assert "exported.py" in load_task(tmp_path).protected


def test_operator_list_holds_only_pure_aten_operators() -> None:
    """Every listed operator is an aten operator with a pure overload, none reads files or
    draws random numbers (its out= and in-place overloads are refused by their schema)."""
    import torch

    from autoswarm.worker import exported

    allowed = exported.ALLOWED_OPERATORS
    assert not set(FORBIDDEN_OPERATORS) & allowed
    for name in sorted(allowed):
        packet = getattr(torch.ops.aten, name)  # raises for a name that is no aten operator
        overloads = [getattr(packet, overload) for overload in packet.overloads()]
        assert any(not op._schema.is_mutable for op in overloads), name


def test_sympy_never_parses_while_a_program_loads(tmp_path: Path) -> None:
    """Past the archive checks, a SymInt's expr_str reaching sympify is refused, never run."""
    import sympy.parsing.sympy_parser
    import torch

    from autoswarm.worker import exported

    canary = tmp_path / "canary"
    model = export_model("uniform", tmp_path / "model.pt2")
    with zipfile.ZipFile(model) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    name = next(n for n in entries if n.endswith("models/model.json"))
    doc = json.loads(entries[name])
    values = doc["graph_module"]["graph"]["tensor_values"]
    code = f"__import__('pathlib').Path({str(canary)!r}).touch() or 32"
    sizes = next(iter(values.values()))["sizes"]
    sizes[0] = {"as_expr": {"expr_str": code, "hint": {"as_int": 32}}}
    entries[name] = json.dumps(doc).encode()
    with pytest.raises(exported.Refused, match="symbolic shapes"):
        exported.repack({n.split("/", 1)[1]: data for n, data in entries.items()})
    unchecked = io.BytesIO()
    with zipfile.ZipFile(unchecked, "w") as archive:
        for member, data in entries.items():
            archive.writestr(member, data)
    unchecked.seek(0)
    with pytest.raises(exported.Refused, match="evaluate or unpickle"):
        exported.load_program(unchecked)  # the checks skipped: the guard alone
    assert not canary.exists()
    assert sympy.parsing.sympy_parser.parse_expr is not exported.refuse  # put back
    assert torch.load.__module__ == "torch.serialization"


# ---- tinylm --------------------------------------------------------------------------------


def test_tinylm_corpus_is_checksummed_and_identical_across_runs(
    tinylm_data: Path, tmp_path: Path
) -> None:
    """make_data.py in two fresh folders writes byte-identical files matching its checksums."""
    again = prepare(TINYLM, tmp_path)
    for rel in ("data/train.bin", "heldout/val.bin"):
        assert (again / rel).read_bytes() == (tinylm_data / rel).read_bytes()
    source = (TINYLM / "make_data.py").read_text()
    train_sha = hashlib.sha256((again / "data/train.bin").read_bytes()).hexdigest()
    val_sha = hashlib.sha256((again / "heldout/val.bin").read_bytes()).hexdigest()
    assert f'TRAIN_SHA256 = "{train_sha}"' in source
    assert f'VAL_SHA256 = "{val_sha}"' in source
    assert (again / "data/train.bin").stat().st_size == 1_500_000


def export_model(kind: str, path: Path, shape: tuple[int, int] = LANGUAGE_MODELS[TINYLM]) -> Path:
    """Export a small hand-written model (a key of `models` below) to path, for batches of
    `shape` (tinylm's by default)."""
    import torch
    import torch.nn.functional as F

    class Uniform(torch.nn.Module):
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return torch.zeros(idx.shape[0], idx.shape[1], 256) + 0.0 * idx[..., None]

    class LookAhead(torch.nn.Module):  # logits at t count the bytes at t..T-1, the next included
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            return F.one_hot(idx, 256).float().flip(1).cumsum(1).flip(1)

    class MixRows(torch.nn.Module):  # causal within a row, but sees the other rows
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            onehot = F.one_hot(idx, 256).float()
            return onehot + onehot.mean(0, keepdim=True)

    class PeekThrice(torch.nn.Module):  # causal but at positions 32, 64, 96: they see t + 1
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            source = torch.arange(idx.shape[1])
            source = source + ((source % 32 == 0) & (source > 0)).long()
            return F.one_hot(idx[:, source], 256).float()

    class RowIndex(torch.nn.Module):  # causal, but its logits depend on the row's place
        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            rows = torch.arange(idx.shape[0], dtype=torch.float32)[:, None, None]
            return F.one_hot(idx, 256).float() + rows

    models = {
        "uniform": Uniform,
        "lookahead": LookAhead,
        "mix_rows": MixRows,
        "peek_thrice": PeekThrice,
        "row_index": RowIndex,
    }
    model = models[kind]()
    example = torch.zeros(*shape, dtype=torch.long)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.export.save(torch.export.export(model, (example,)), path)
    return path


@pytest.fixture(params=list(LANGUAGE_MODELS), ids=lambda folder: folder.name)
def language_model(
    request: pytest.FixtureRequest, tinylm_data: Path
) -> tuple[Path, Path, dict[str, str]]:
    """Each evaluator of exported language models: its task, prepared folder and environment."""
    folder: Path = request.param
    if folder == NANOCHAT:
        return folder, request.getfixturevalue("nanochat_data"), SMOKE
    return folder, tinylm_data, {}


def evaluate_model(
    kind: str, language_model: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    """One of `export_model`'s models, exported at the task's shape, through its evaluator."""
    folder, prepared, env = language_model
    export_model(kind, tmp_path / "artifacts" / "model.pt2", LANGUAGE_MODELS[folder])
    return evaluate(folder, prepared, tmp_path / "artifacts", tmp_path / "eval", env)


def test_a_uniform_model_scores_exactly_8_bits(
    language_model: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A model with all-zero logits (uniform over 256 bytes) gets val_bpb 8.0, on both."""
    done = evaluate_model("uniform", language_model, tmp_path)
    assert metric_of(done, "val_bpb") == pytest.approx(8.0, abs=1e-3)


def test_both_evaluators_reject_a_model_that_looks_ahead(
    language_model: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """Logits that depend on later bytes fail the causality check: exit 1, no metric."""
    assert "not causal" in refused(evaluate_model("lookahead", language_model, tmp_path))


def test_both_evaluators_reject_rows_that_see_each_other(
    language_model: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A model whose rows read the other windows of the batch is refused."""
    done = evaluate_model("mix_rows", language_model, tmp_path)
    assert "not causal" in refused(done) or "not independent" in done.stdout


def test_both_evaluators_reject_a_model_keyed_on_its_row_index(
    language_model: tuple[Path, Path, dict[str, str]], tmp_path: Path
) -> None:
    """A causal model whose logits depend on the row's place in the batch is refused."""
    assert "not independent" in refused(evaluate_model("row_index", language_model, tmp_path))


def test_tinylm_evaluator_rejects_a_model_peeking_at_three_positions(
    tinylm_data: Path, tmp_path: Path
) -> None:
    """Three peeked bytes per 128-byte window are caught: the cut points are random."""
    export_model("peek_thrice", tmp_path / "artifacts" / "model.pt2")
    done = evaluate(TINYLM, tinylm_data, tmp_path / "artifacts", tmp_path / "eval")
    assert "not causal" in refused(done)  # it would pass with probability ~exp(-21)


def test_the_evaluators_of_exported_language_models_check_the_same_things() -> None:
    """tinylm's and nanochat's evaluators differ only in their settings: the same checks of
    a model's output (`fail`, `run`), the loader's one causality and row-independence check
    on every batch, cuts seeded from os.urandom, the loss from the raw logits, the same
    summary lines."""
    trees = {folder: ast.parse((folder / "evaluate.py").read_text()) for folder in LANGUAGE_MODELS}
    functions = {
        folder: {
            node.name: ast.dump(node) for node in tree.body if isinstance(node, ast.FunctionDef)
        }
        for folder, tree in trees.items()
    }
    assert functions[TINYLM] == functions[NANOCHAT] and set(functions[TINYLM]) == {"fail", "run"}
    for folder, tree in trees.items():
        source = (folder / "evaluate.py").read_text()
        names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}
        assert {"CAUSAL_TOL", "CHECK_PASSES", "WHOLE_ROWS", "check_causal"} <= names, folder.name
        assert "for _ in range(CHECK_PASSES):" in source and "torch.inference_mode()" in source
        assert 'int.from_bytes(os.urandom(8), "little")' in source
        assert "F.cross_entropy(logits.view(-1, VOCAB_SIZE)" in source
        assert 'print(f"val_bpb:' in source and 'print(f"eval_tokens:' in source


def rewrite_archive(path: Path, name: str, content: bytes) -> None:
    """Replace (or add) one member of a zip archive."""
    with zipfile.ZipFile(path) as src:
        members = {item.filename: src.read(item.filename) for item in src.infolist()}
    root = next(iter(members)).split("/", 1)[0]
    members[f"{root}/{name}"] = content
    with zipfile.ZipFile(path, "w") as dst:
        for member, data in members.items():
            dst.writestr(member, data)


def test_tinylm_evaluator_never_unpickles_code(tinylm_data: Path, tmp_path: Path) -> None:
    """A code-running pickle inside the archive is never read: no canary, the model scored."""
    import torch

    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(canary), "w"))

    model = export_model("uniform", tmp_path / "artifacts" / "model.pt2")
    evil = io.BytesIO()
    torch.save({"inputs": Evil()}, evil)
    rewrite_archive(model, "data/sample_inputs/model.pt", evil.getvalue())
    done = evaluate(TINYLM, tinylm_data, tmp_path / "artifacts", tmp_path / "eval")
    assert metric_of(done, "val_bpb") == pytest.approx(8.0, abs=1e-4)
    assert not canary.exists()


def test_tinylm_evaluator_refuses_unexpected_archive_members(
    tinylm_data: Path, tmp_path: Path
) -> None:
    """An archive carrying anything torch.export.save would not write (e.g. compiled code) fails."""
    model = export_model("uniform", tmp_path / "artifacts" / "model.pt2")
    rewrite_archive(model, "data/aotinductor/model/model.so", b"\x7fELF")
    done = evaluate(TINYLM, tinylm_data, tmp_path / "artifacts", tmp_path / "eval")
    assert "unexpected file" in refused(done)


@pytest.mark.slow
def test_tinylm_trains_exports_and_scores_end_to_end(tinylm_data: Path, tmp_path: Path) -> None:
    """train.py with a 2 s budget exports a model that the evaluator scores."""
    out = train(TINYLM, tinylm_data, tmp_path / "work", {"AUTOSWARM_BUDGET_S": "2"})
    assert (out / "model.pt2").is_file()
    val_bpb = metric_of(evaluate(TINYLM, tinylm_data, out, tmp_path / "eval"), "val_bpb")
    assert math.isfinite(val_bpb) and 0.5 < val_bpb < 9.0  # 2 s of steps: near 8 when busy


# ---- sharpe --------------------------------------------------------------------------------


def test_sharpe_runs_and_scores_end_to_end(sharpe_data: Path, tmp_path: Path) -> None:
    """strategy.py as shipped writes positions the evaluator scores at the recorded baseline."""
    out = train(SHARPE, sharpe_data, tmp_path / "work", {})
    sharpe = metric_of(evaluate(SHARPE, sharpe_data, out, tmp_path / "eval"), "sharpe")
    assert math.isfinite(sharpe)
    assert sharpe == pytest.approx(SHARPE_BASELINE, abs=1e-4)


def test_sharpe_longer_lookback_beats_the_baseline(sharpe_data: Path, tmp_path: Path) -> None:
    """One constant-tuning step (LOOKBACK_DAYS 5 -> 10) improves the held-out Sharpe ratio."""
    task = tmp_path / "task"
    shutil.copytree(SHARPE, task)
    source = (task / "strategy.py").read_text()
    assert "LOOKBACK_DAYS = 5 " in source
    (task / "strategy.py").write_text(source.replace("LOOKBACK_DAYS = 5 ", "LOOKBACK_DAYS = 10 "))
    out = train(task, sharpe_data, tmp_path / "work", {})
    sharpe = metric_of(evaluate(task, sharpe_data, out, tmp_path / "eval"), "sharpe")
    assert sharpe > SHARPE_BASELINE + 0.2


def test_sharpe_evaluator_rejects_too_much_exposure(sharpe_data: Path, tmp_path: Path) -> None:
    """Positions above MAX_GROSS in total are refused: exit 1, no metric."""
    import numpy as np

    (tmp_path / "artifacts").mkdir()
    np.save(tmp_path / "artifacts" / "positions.npy", np.ones((512, 20, 8)))
    done = evaluate(SHARPE, sharpe_data, tmp_path / "artifacts", tmp_path / "eval")
    assert "exceeds MAX_GROSS" in refused(done)


def test_sharpe_evaluator_never_unpickles_positions(sharpe_data: Path, tmp_path: Path) -> None:
    """An object array (a pickle) in positions.npy is refused without running it."""
    import numpy as np

    canary = tmp_path / "canary"

    class Evil:
        def __reduce__(self) -> tuple[object, tuple[str, str]]:
            return (open, (str(canary), "w"))

    (tmp_path / "artifacts").mkdir()
    evil = np.empty(1, dtype=object)
    evil[0] = Evil()
    np.save(tmp_path / "artifacts" / "positions.npy", evil, allow_pickle=True)
    done = evaluate(SHARPE, sharpe_data, tmp_path / "artifacts", tmp_path / "eval")
    assert "cannot read" in refused(done)
    assert not canary.exists()


# ---- nanochat ------------------------------------------------------------------------------


def test_nanochat_refuses_to_train_without_cuda(tmp_path: Path) -> None:
    """Without a GPU (and without AUTOSWARM_SMOKE) train.py exits 1 with a clear message."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: nanochat would train")
    spec = load_task(NANOCHAT)
    done = run_script(NANOCHAT, "train.py", tmp_path, list(spec.run_files), {})
    assert done.returncode == 1
    assert "needs a CUDA GPU" in done.stdout


@pytest.mark.slow
def test_nanochat_smoke_runs_end_to_end_on_cpu(tmp_path: Path) -> None:
    """AUTOSWARM_SMOKE=1: prepare, train (tiny model, 2 s, no compile), export and score."""
    smoke = {"AUTOSWARM_SMOKE": "1"}
    prepared = prepare(NANOCHAT, tmp_path / "prepared", smoke)
    assert (prepared / "data" / "train.bin").stat().st_size == 262_144
    out = train(NANOCHAT, prepared, tmp_path / "work", smoke)
    val_bpb = metric_of(evaluate(NANOCHAT, prepared, out, tmp_path / "eval", smoke), "val_bpb")
    assert math.isfinite(val_bpb) and 0.0 < val_bpb < 9.0
