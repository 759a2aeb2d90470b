"""The task format: a folder with `task.toml`, `program.md`, editable and protected files.

A karpathy/autoresearch checkout (train.py, prepare.py, program.md, no task.toml)
loads with AR's defaults (`_layout_defaults`). Every problem with a folder is reported as one
`TaskError` naming the file and the field, never as a traceback.

Folder conventions the runner relies on:
- the prepare step runs once per task version in a cache folder; what it writes to
  `data/` is visible to the run, what it writes to `heldout/` only to the evaluator, what
  it leaves under its HOME (`~/.cache/<name>`) to every run at the same place under its HOME;
- a folder with its own locked project (`autoswarm.shared.environment`) runs in its own environment;
- the run writes its artifacts to `out/` in its work folder;
- evaluator files (`[scoring] files`) are never copied into the run's work folder.
- an evaluator finds the worker's loader of exported programs beside it as `exported.py`
  (`autoswarm.worker.exported`); a task's evaluator or protected file that Python would import
  under that name instead is refused.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tomllib
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from autoswarm.shared.environment import (
    KERNEL_REPO,
    EnvironmentFilesError,
    EnvironmentKind,
    EnvironmentPlan,
    kernel_repos,
    plan_environment,
    read_environment_files,
)
from autoswarm.shared.errors import TaskError
from autoswarm.shared.hosts import HUB_HOSTS, HostRule
from autoswarm.shared.wire import Prose

TASK_FILE = "task.toml"
PROGRAM_FILE = "program.md"
MIN_BUDGET_S = 1.0
MAX_BUDGET_S = 24 * 3600.0
# The module the runner writes beside every evaluator (autoswarm/worker/exported.py as exported.py).
EVALUATOR_MODULE = "exported"


class Direction(StrEnum):
    MINIMIZE = "minimize"
    MAXIMIZE = "maximize"


class ScoringMode(StrEnum):
    SUMMARY = "summary"
    EVALUATOR = "evaluator"


class EvaluatorStart(StrEnum):
    AFTER_RUN = "after-run"  # started once the run has ended well
    WITH_RUN = "with-run"  # started with the run; reads one line from stdin, then scores


class Device(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class _Frozen(BaseModel):
    # A non-finite number in task.toml (`min_effect = inf`) is refused by name; stored as JSON
    # it would read back as null.
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


class MetricSpec(_Frozen):
    name: str = Field(
        default="val_bpb", min_length=1, max_length=64, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    direction: Direction = Direction.MINIMIZE
    # The noise of one run as the task's author knows it (sigma, in the metric's units), and
    # how many runs that knowledge weighs: the judge's prior, which measured runs outweigh.
    noise: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    noise_runs: int = Field(default=10, ge=1, le=10_000)
    # The scores that can be true, [lo, hi] (e.g. [0, 1] for an accuracy): a result outside
    # it is recorded as invalid, never judged. None: any finite score.
    range: tuple[float, float] | None = None

    @model_validator(mode="after")
    def _check_range(self) -> MetricSpec:
        if self.range is not None and not self.range[0] < self.range[1]:
            raise ValueError(f"range {list(self.range)} must be [lo, hi] with lo < hi")
        return self

    def outside(self, score: float) -> bool:
        """True when `score` cannot be true for this metric (outside `range`)."""
        return self.range is not None and not self.range[0] <= score <= self.range[1]


PYTHON_NAMES = ("python", "python3")  # a command starting so runs the task's interpreter
# karpathy/autoresearch: 5 min of training, killed past 10 min in all (its program.md).
AR_STARTUP_S = 240.0
AR_GRACE_S = 60.0


def preloadable(command: tuple[str, ...]) -> bool:
    """True for `python <script>.py [args...]`, the one form a preloading runner can start."""
    return len(command) >= 2 and command[0] in PYTHON_NAMES and command[1].endswith(".py")


def without_uv_run(command: tuple[str, ...]) -> tuple[str, ...]:
    """`uv run [python] X.py ARGS...` as `python X.py ARGS...`: X.py in the task's environment
    (the worker builds it from the task's lock; `uv` itself never runs in the sandbox)."""
    if not command or command[0] != "uv":
        return command
    rest = command[2:] if command[1:2] == ("run",) else ()
    if rest[:1] and rest[0] in PYTHON_NAMES:
        rest = rest[1:]
    if not rest or not rest[0].endswith(".py"):
        raise ValueError("`uv` is understood only as `uv run [python] SCRIPT.py [ARGS...]`")
    return ("python", *rest)


class RunSpec(_Frozen):
    command: tuple[str, ...] = ("python", "train.py")
    prepare: tuple[str, ...] | None = None
    # "auto": the task's own environment when it carries a locked project (pyproject.toml +
    # uv.lock, or requirements.txt; `autoswarm.shared.environment`), else the worker's. "worker":
    # always the worker's.
    environment: Literal["auto", "worker"] = "auto"
    # Hub repositories the run loads with `kernels.get_kernel` at import: fetched in the
    # prepare phase (the only one with network) into the prepared home's hub cache.
    kernels: tuple[Annotated[str, Field(pattern=KERNEL_REPO, max_length=200)], ...] = Field(
        default=(), max_length=16
    )
    # Hosts the prepare step may reach (`autoswarm.shared.hosts`: "huggingface.co", "*.hf.co",
    # "host:8080"), through the worker's allow-list proxy; none: prepare has no network.
    # The hub's come with `kernels`, the package index with the task's own environment.
    prepare_hosts: tuple[str, ...] = Field(default=(), max_length=32)
    startup_s: float = Field(default=30.0, ge=0, le=3600)
    grace_s: float = Field(default=5.0, ge=0, le=600)
    # Modules every run imports before its script, whose clock starts only after them; a
    # worker imports them ahead, in the next run's interpreter, while this run trains (the
    # script itself runs only on its turn). Needs a `python <script>.py` command. A
    # variable the script sets before importing one of them comes too late.
    preload: tuple[
        Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")], ...
    ] = Field(default=(), max_length=64)

    @field_validator("command", "prepare", mode="after")
    @classmethod
    def _without_uv_run(cls, command: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if command is not None and not command:
            raise ValueError("a command needs at least one word")
        return None if command is None else without_uv_run(command)

    @field_validator("prepare_hosts", mode="after")
    @classmethod
    def _hosts(cls, hosts: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(dict.fromkeys(str(HostRule.parse(host)) for host in hosts))

    @model_validator(mode="after")
    def _check_preload(self) -> RunSpec:
        if self.preload and not preloadable(self.command):
            raise ValueError("preload needs a command of the form ['python', '<script>.py', ...]")
        return self


class ScoringSpec(_Frozen):
    mode: ScoringMode = ScoringMode.SUMMARY
    command: tuple[str, ...] | None = None
    files: tuple[str, ...] = ()
    timeout_s: float = Field(default=120.0, gt=0, le=3600)
    # with-run: the evaluator imports and sets up while the run trains, so that its startup
    # is not added to every experiment; it must read one line from standard input before it
    # reads the artifacts, which the worker writes once the run has ended well (after-run
    # gives it an empty input, so such an evaluator runs either way). timeout_s counts from
    # that line.
    start: EvaluatorStart = EvaluatorStart.AFTER_RUN


class ResourceSpec(_Frozen):
    device: Device = Device.CPU
    memory_mb: int = Field(default=4096, ge=64, le=4_000_000)
    disk_mb: int = Field(default=2048, ge=16, le=4_000_000)
    # Cores one run of a CPU task should have to itself: `autoswarm up` runs one worker per
    # that many cores, each pinned to its own. None: the whole machine, one run at a time.
    cpus: int | None = Field(default=None, ge=1, le=4096)


class TaskSpec(_Frozen):
    """A task's resolved specification (what `task.toml` says, defaults filled in)."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_-]*$")
    description: Prose = ""
    editable: tuple[str, ...] = ("train.py",)
    protected: tuple[str, ...] = ("prepare.py",)
    budget_s: float = Field(default=300.0, ge=MIN_BUDGET_S, le=MAX_BUDGET_S)
    min_effect: float = Field(default=0.0, ge=0)
    metric: MetricSpec = MetricSpec()
    run: RunSpec = RunSpec()
    scoring: ScoringSpec = ScoringSpec()
    resources: ResourceSpec = ResourceSpec()

    @model_validator(mode="after")
    def _check_files(self) -> TaskSpec:
        if not self.editable:
            raise ValueError("at least one editable file is required")
        overlap = set(self.editable) & (set(self.protected) | set(self.scoring.files))
        if overlap:
            raise ValueError(f"files both editable and protected: {sorted(overlap)}")
        if self.scoring.mode is ScoringMode.EVALUATOR and not self.scoring.command:
            raise ValueError("scoring mode 'evaluator' needs [scoring] command")
        if self.scoring.start is EvaluatorStart.WITH_RUN and self.scoring.mode is not (
            ScoringMode.EVALUATOR
        ):
            raise ValueError("[scoring] start = 'with-run' needs mode 'evaluator'")
        if self.scoring.mode is ScoringMode.EVALUATOR:
            shadowing = [p for p in self.protected + self.scoring.files if shadows_loader(p)]
            if shadowing:
                raise ValueError(
                    f"{shadowing[0]!r} would replace the worker's loader of exported programs"
                    f" ({EVALUATOR_MODULE}.py, written beside the evaluator): rename it"
                )
        return self

    @property
    def lower_is_better(self) -> bool:
        return self.metric.direction is Direction.MINIMIZE

    @property
    def run_files(self) -> tuple[str, ...]:
        """Files copied into the run's work folder (never the evaluator's)."""
        return self.editable + self.protected

    @property
    def all_files(self) -> tuple[str, ...]:
        extra = (PROGRAM_FILE,) if PROGRAM_FILE not in self.run_files else ()
        return self.run_files + self.scoring.files + extra

    def is_better(self, a: float, b: float) -> bool:
        """True when score `a` beats score `b` in this task's direction."""
        return a < b if self.lower_is_better else a > b


def shadows_loader(path: str) -> bool:
    """Whether a file at `path` in the evaluator's folder is one Python could import as
    EVALUATOR_MODULE ahead of the worker's: a module of any suffix, a package, or bytecode
    in __pycache__ (an unchecked .pyc is used whatever the source)."""
    parts = PurePosixPath(path).parts
    if parts and parts[0] == "__pycache__":
        parts = parts[1:]
    return bool(parts) and parts[0].split(".", 1)[0] == EVALUATOR_MODULE


def _check_relative(path: str, where: str, field: str) -> str:
    p = PurePosixPath(path)
    if not path or p.is_absolute() or ".." in p.parts or "\\" in path:
        raise TaskError(where, field, f"path {path!r} escapes the task folder")
    return str(p)


def _toml_to_spec_dict(raw: dict[str, Any], default_name: str) -> dict[str, Any]:
    """Map the TOML layout ([task], [metric], [run], ...) onto TaskSpec's fields."""
    known = {"task", "metric", "run", "scoring", "resources"}
    unknown = set(raw) - known
    if unknown:
        raise TaskError(TASK_FILE, sorted(unknown)[0], f"unknown table; known: {sorted(known)}")
    data: dict[str, Any] = dict(raw.get("task", {}))
    data.setdefault("name", default_name)
    for table in ("metric", "run", "scoring", "resources"):
        if table in raw:
            data[table] = raw[table]
    return data


def _field_of(err: ValidationError) -> tuple[str, str]:
    first = err.errors()[0]
    loc = ".".join(str(x) for x in first["loc"]) or None
    msg = first["msg"]
    if first.get("type") == "enum" and "expected" in first.get("ctx", {}):
        msg = f"{first['input']!r} is not one of {first['ctx']['expected']}"
    return (loc or "task"), msg


def _default_name(folder: Path) -> str:
    slug = "".join(c if c.isalnum() or c in "-_" else "-" for c in folder.name.lower())
    return slug.strip("-_") or "task"


def _is_file(root: Path, path: str) -> bool:
    """Whether `path` is a regular file in the folder `root`. No symbolic link on the way
    is followed: one (a file or a folder above it) is refused, naming the file, since a
    task's files are committed and shown to proposers (a link could carry any file of
    this machine out)."""
    where = root
    parts = PurePosixPath(path).parts
    for i, part in enumerate(parts):
        where = where / part
        try:
            mode = os.lstat(where).st_mode
        except OSError:
            return False
        if stat.S_ISLNK(mode):
            raise TaskError(path, None, _LINK_REFUSED)
        if i < len(parts) - 1 and not stat.S_ISDIR(mode):
            return False
    return stat.S_ISREG(mode)


_LINK_REFUSED = "is a symbolic link; a task's files must be regular files inside its folder"


def _read_file(root: Path, path: str) -> bytes:
    """The content of a regular file in the folder (see `_is_file`)."""
    if not _is_file(root, path):
        raise TaskError(path, None, "file is missing or not a regular file")
    try:
        fd = os.open(root / path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:  # replaced by a link since it was checked
        raise TaskError(path, None, f"cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as file:
        return file.read()


def _spec_data(root: Path) -> dict[str, Any]:
    """The spec's fields from `task.toml`, or the autoresearch layout's when there is none."""
    if _is_file(root, TASK_FILE):
        try:
            raw = tomllib.loads(_read_file(root, TASK_FILE).decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise TaskError(TASK_FILE, None, f"not valid TOML: {exc}") from None
        return _toml_to_spec_dict(raw, _default_name(root))
    if (root / TASK_FILE).exists():
        raise TaskError(TASK_FILE, None, "not a regular file")
    return _layout_defaults(root)


def load_task(folder: str | Path) -> TaskSpec:
    """Load and check a task folder; raises `TaskError` naming the file and field."""
    root = Path(folder)
    if not root.is_dir():
        raise TaskError(str(root), None, "not a folder")
    data = _spec_data(root)
    for field in ("editable", "protected"):
        for i, path in enumerate(data.get(field, ())):
            if isinstance(path, str):
                _check_relative(path, TASK_FILE, f"task.{field}[{i}]")
    for i, path in enumerate(data.get("scoring", {}).get("files", ())):
        if isinstance(path, str):
            _check_relative(path, TASK_FILE, f"scoring.files[{i}]")
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        field, msg = _field_of(exc)
        raise TaskError(TASK_FILE, field, msg) from None
    _check_files_exist(root, spec)
    if (root / PROGRAM_FILE).exists() or (root / PROGRAM_FILE).is_symlink():
        _is_file(root, PROGRAM_FILE)  # a link is refused here, not only when read
    task_environment(root, spec)
    return spec


def _layout_defaults(root: Path) -> dict[str, Any]:
    """The spec of a folder without task.toml: karpathy/autoresearch's layout. With its own
    locked project (AR's pyproject.toml + uv.lock) the defaults are AR's: one CUDA GPU, its
    own environment, 5 minutes of training killed past 10 in all, kernels warmed, and its
    prepare.py may download from the hub (AR's shards are on huggingface.co)."""
    data: dict[str, Any] = {"name": _default_name(root)}
    run: dict[str, Any] = {}
    if _is_file(root, "prepare.py"):
        run["prepare"] = ["python", "prepare.py"]
    try:
        plan = plan_environment(_environment_files(root))
    except EnvironmentFilesError as exc:
        raise TaskError(exc.file, None, exc.message) from None
    if plan.kind is EnvironmentKind.UV_LOCK:
        data["resources"] = {"device": Device.CUDA.value}
        run |= {"startup_s": AR_STARTUP_S, "grace_s": AR_GRACE_S}
        if _is_file(root, "train.py"):
            run["kernels"] = list(kernel_repos(_read_file(root, "train.py")))
        if "prepare" in run:
            run["prepare_hosts"] = list(HUB_HOSTS)
    if run:
        data["run"] = run
    return data


def task_environment(folder: str | Path, spec: TaskSpec) -> EnvironmentPlan:
    """The `autoswarm.shared.environment.EnvironmentPlan` of a task folder; `TaskError` when its
    environment files cannot be read."""
    files = _environment_files(Path(folder))
    try:
        return plan_environment(files, worker_only=spec.run.environment == "worker")
    except EnvironmentFilesError as exc:
        raise TaskError(exc.file, None, exc.message) from None


def _environment_files(root: Path) -> dict[str, bytes]:
    try:
        return read_environment_files(root)
    except EnvironmentFilesError as exc:
        raise TaskError(exc.file, None, exc.message) from None


def _check_files_exist(root: Path, spec: TaskSpec) -> None:
    groups = (
        ("task.editable", spec.editable),
        ("task.protected", spec.protected),
        ("scoring.files", spec.scoring.files),
    )
    for field, paths in groups:
        for path in paths:
            if not _is_file(root, path):
                if not _is_file(root, TASK_FILE):  # the default autoresearch layout
                    raise TaskError(
                        path,
                        None,
                        f"file is missing: with no {TASK_FILE} a task folder is read as "
                        "karpathy/autoresearch's layout (train.py edited, prepare.py "
                        f"protected); add a {TASK_FILE} for any other layout",
                    )
                raise TaskError(path, field, "file is missing")


def read_task_files(folder: str | Path, spec: TaskSpec) -> dict[str, bytes]:
    """The task's files as {relative path: content}, program.md included when present; a
    symbolic link among them is refused (`TaskError` naming it), never followed."""
    root = Path(folder)
    files = {path: _read_file(root, path) for path in spec.run_files + spec.scoring.files}
    for extra in (PROGRAM_FILE, TASK_FILE):
        if _is_file(root, extra):
            files[extra] = _read_file(root, extra)
    files |= _environment_files(root)
    return files


def hash_files(files: dict[str, bytes]) -> str:
    """A content hash of a set of files, independent of order (sha256 hex)."""
    digest = hashlib.sha256()
    for path in sorted(files):
        content = files[path]
        digest.update(f"{path}\0{len(content)}\0".encode())
        digest.update(content)
    return digest.hexdigest()


def protected_hashes(folder: str | Path, spec: TaskSpec) -> dict[str, str]:
    """sha256 of each protected and evaluator file, to check before and after a run."""
    root = Path(folder)
    return {
        path: hashlib.sha256((root / path).read_bytes()).hexdigest()
        for path in spec.protected + spec.scoring.files
    }
