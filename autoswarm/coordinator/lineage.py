"""The lineage: one bare git repo per task, holding accepted changes and every experiment's code.

This is the only module that imports git. Content goes in and out as `{task-relative path:
bytes}` (the whole task folder), never as a working tree: the repo is bare.

Guarantees:
- no repo object outlives a call: each operation opens the repo and closes it before
  returning (GitPython leaks file handles and `cat-file` processes in long-lived ones);
- branch heads move only by compare-and-swap (`git update-ref <ref> <new> <old>`), so two
  coordinators can never overwrite each other's change;
- `commit_change` is idempotent by its `Experiment:` trailer and `store_experiment` by its
  experiment_id, so a coordinator that crashed mid-way can simply call them again;
- `merge` never writes anything: it returns the merged files or raises `MergeConflict`,
  never a file with conflict markers;
- a full sha's files are read from git once per process (`files_at`'s cache): a sha
  names the same content forever;
- every failure is a `LineageError` with a message; a raw git exception never escapes.

Does not:
- lock anything beyond the refs' compare-and-swap, pack or gc the repo, or push anywhere;
- keep file modes: every file is stored as a regular, non-executable file;
- follow renames in `merge` (a task's files have fixed paths).
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path, PurePosixPath
from typing import TypeAlias, cast

import cachetools
import git
from gitdb.base import IStream
from gitdb.db.loose import LooseObjectDB

from autoswarm.shared.errors import LineageError, MergeConflict
from autoswarm.shared.models import Frozen

logger = logging.getLogger(__name__)

IDENTITY = "autoswarm <autoswarm@localhost>"
EXPERIMENT_TRAILER = "Experiment"
EXPERIMENTS_PREFIX = "refs/experiments/"
BRANCH_PREFIX = "hw/"
# Set for every git subprocess, so a machine with no git config works the same.
_GIT_ENV = {
    "GIT_AUTHOR_NAME": "autoswarm",
    "GIT_AUTHOR_EMAIL": "autoswarm@localhost",
    "GIT_COMMITTER_NAME": "autoswarm",
    "GIT_COMMITTER_EMAIL": "autoswarm@localhost",
    "GIT_TERMINAL_PROMPT": "0",
}
_NO_COMMIT = "0" * 40
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
# files_at's cache: (repo path, full sha) -> files, at most 64 MiB of file contents.
_FILES: cachetools.LRUCache[tuple[str, str], dict[str, bytes]] = cachetools.LRUCache(
    maxsize=64 * 2**20, getsizeof=lambda files: 1 + sum(len(b) for b in files.values())
)
_CACHE_LOCK = threading.Lock()  # both caches'
# Commits already found in a repo, by (repo path, full sha): what a sha names never changes.
_COMMITS: cachetools.LRUCache[tuple[str, str], bool] = cachetools.LRUCache(maxsize=4096)
_EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_REF_PART = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_TRAILER_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")
_TRAILER_LINE = re.compile(r"^([A-Za-z][A-Za-z0-9-]*): ?(.*)$")
# C0 controls but newline and tab, read back as U+FFFD (a message written with a NUL).
_CONTROL_TO_FFFD = {c: "\ufffd" for c in range(32) if chr(c) not in "\n\t"}

_Node: TypeAlias = dict[str, "bytes | _Node"]
_Writer: TypeAlias = Callable[[bytes, bytes], bytes]  # (object kind, data) -> binary sha
Content: TypeAlias = str | Mapping[str, bytes]  # a commit (or tree) sha, or the files themselves


class CommitInfo(Frozen):
    """One commit of a lineage branch, as `history` reads it back."""

    sha: str
    parent: str | None
    title: str
    trailers: dict[str, str]
    timestamp: int  # commit time, unix seconds


def branch_for(hardware: str) -> str:
    """The lineage branch of a hardware class: `cuda:NVIDIA-H100` -> `hw/cuda-NVIDIA-H100`.

    For a canonical class (`autoswarm.shared.wire.check_hardware_class`, all the API accepts) this
    is `hw/` + the class with its colon as a dash: one branch per class. Other names (stored
    before classes were canonical) are made ref-safe and may share a branch; adding such a
    class to a task is refused (`Heads.ensure_class`)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", hardware.strip())
    slug = re.sub(r"\.{2,}", ".", slug).strip(".-")
    if slug.endswith(".lock"):
        slug = slug[: -len(".lock")] + "-lock"
    if not slug:
        raise LineageError(f"hardware class {hardware!r} gives no branch name")
    return BRANCH_PREFIX + slug


def _check_ref_part(name: str, what: str) -> str:
    if not _REF_PART.match(name) or ".." in name or name.endswith((".lock", ".")):
        raise LineageError(f"{what} {name!r} is not a valid git ref name")
    return name


def _branch_ref(branch: str) -> str:
    for part in branch.split("/"):
        if not part:
            raise LineageError(f"branch {branch!r} is not a valid git ref name")
        _check_ref_part(part, "branch")
    return f"refs/heads/{branch}"


def _experiment_ref(experiment_id: str) -> str:
    return EXPERIMENTS_PREFIX + _check_ref_part(experiment_id, "experiment_id")


def _split_path(path: str) -> list[str]:
    parts = path.split("/")
    bad = (
        not path
        or "\\" in path
        or "\0" in path
        or PurePosixPath(path).is_absolute()
        or any(p in ("", ".", "..") or p.lower() == ".git" for p in parts)
    )
    if bad:
        raise LineageError(f"path {path!r} is not a task-relative file path")
    return parts


def _nest(files: Mapping[str, bytes]) -> _Node:
    """Turn flat paths into nested folders; refuses a path that is both a file and a folder."""
    root: _Node = {}
    for path, content in files.items():
        if not isinstance(content, bytes):
            raise LineageError(f"content of {path!r} is not bytes")
        *folders, name = _split_path(path)
        node = root
        for folder in folders:
            child = node.setdefault(folder, {})
            if not isinstance(child, dict):
                raise LineageError(f"path {path!r} runs through the file {folder!r}")
            node = child
        if name in node:
            raise LineageError(f"path {path!r} is both a file and a folder")
        node[name] = content
    return root


def _hash_object(kind: bytes, data: bytes) -> bytes:
    return hashlib.sha1(b"%s %d\0" % (kind, len(data)) + data, usedforsecurity=False).digest()


def _store_object(repo: git.Repo) -> _Writer:
    """Writes loose objects the way git does (zlib, a temporary file renamed into place), in
    this process: gitdb's loose store, where the repo's own store starts a `git` per object."""
    loose = LooseObjectDB(str(Path(repo.common_dir) / "objects"))

    def write(kind: bytes, data: bytes) -> bytes:
        return cast(bytes, loose.store(IStream(kind, len(data), io.BytesIO(data))).binsha)

    return write


def _write_tree(node: _Node, write: _Writer) -> bytes:
    """Write (or only hash) a tree the way git does; returns its binary sha."""
    entries: list[tuple[bytes, bytes]] = []
    for name, child in node.items():
        raw = name.encode()
        if isinstance(child, dict):
            # git sorts a folder as if its name ended in "/"
            entries.append((raw + b"/", b"40000 " + raw + b"\0" + _write_tree(child, write)))
        else:
            entries.append((raw, b"100644 " + raw + b"\0" + write(b"blob", child)))
    entries.sort()
    return write(b"tree", b"".join(entry for _, entry in entries))


def _write_commit(repo: git.Repo, tree: str, parent: str | None, message: str) -> str:
    stamp = f"{IDENTITY} {int(time.time())} +0000"
    head = [f"tree {tree}"] + ([f"parent {parent}"] if parent else [])
    head += [f"author {stamp}", f"committer {stamp}"]
    data = ("\n".join(head) + "\n\n" + message.strip("\n") + "\n").encode()
    return _store_object(repo)(b"commit", data).hex()


def _git(repo: git.Repo, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    with tempfile.TemporaryFile() as istream:
        if stdin is not None:
            istream.write(stdin)
            istream.seek(0)
        try:
            result = repo.git.execute(
                ["git", *args],
                istream=istream if stdin is not None else None,
                with_extended_output=True,
                with_exceptions=False,
                stdout_as_string=False,
                strip_newline_in_stdout=False,
                env=_GIT_ENV,
            )
        except git.GitCommandNotFound as exc:
            raise LineageError(f"git is not installed: {exc}") from None
    return result


def _run(repo: git.Repo, *args: str, stdin: bytes | None = None) -> bytes:
    status, out, err = _git(repo, *args, stdin=stdin)
    if status != 0:
        raise LineageError(f"git {args[0]} failed: {err.strip()}")
    return out


def _resolve(repo: git.Repo, rev: str, kind: str = "commit") -> str | None:
    """The sha of `rev` peeled to `kind`, or None if there is no such object."""
    if not rev or rev.startswith("-") or any(c in rev for c in "\0\n "):
        raise LineageError(f"{rev!r} is not a commit name")
    status, out, _ = _git(repo, "rev-parse", "--verify", "--quiet", f"{rev}^{{{kind}}}")
    return out.decode().strip() if status == 0 else None


def _update_ref(repo: git.Repo, ref: str, new: str, old: str | None) -> str | None:
    """Move `ref` to `new` only if it is still at `old` (None: absent); the refusal, if any."""
    status, _, err = _git(repo, "update-ref", ref, new, old or _NO_COMMIT)
    if status == 0:
        return None
    return err.strip() or "refused"


def _parse_message(body: str) -> tuple[str, dict[str, str]]:
    """The title and the trailers (the last paragraph, when every line is `Key: value`)."""
    paragraphs = re.split(r"\n[ \t]*\n", body.strip("\n"))
    title = paragraphs[0].split("\n", 1)[0].strip()
    if len(paragraphs) < 2:
        return title, {}
    matches = [_TRAILER_LINE.match(line) for line in paragraphs[-1].split("\n")]
    trailers = {m.group(1): m.group(2).strip() for m in matches if m}
    return title, trailers if all(matches) else {}


def _commit_info(sha: str, raw: bytes) -> CommitInfo:
    """A commit object's parent, committer time, title and trailers (NULs and other control
    characters in its message read as U+FFFD)."""
    head, _, message = raw.partition(b"\n\n")
    parent: str | None = None
    stamp = 0
    for line in head.decode("utf-8", "replace").split("\n"):
        key, _, value = line.partition(" ")
        if key == "parent" and parent is None:
            parent = value.strip()
        elif key == "committer":
            stamp = int(value.rsplit(" ", 2)[-2])
    body = message.decode("utf-8", "replace").translate(_CONTROL_TO_FFFD)
    title, trailers = _parse_message(body)
    return CommitInfo(sha=sha, parent=parent, title=title, trailers=trailers, timestamp=stamp)


def _change_message(title: str, rationale: str, trailers: Mapping[str, str]) -> str:
    title = title.strip()
    if not title or "\n" in title:
        raise LineageError("a change's title must be one non-empty line")
    for key, value in trailers.items():
        if not _TRAILER_KEY.match(key) or "\n" in value:
            raise LineageError(f"trailer {key!r}: {value!r} is not a one-line `Key: value`")
    lines = "\n".join(f"{key}: {value.strip()}" for key, value in trailers.items())
    rationale = rationale.strip("\n")
    return "\n\n".join(part for part in (title, rationale, lines) if part)


def _merge_text(base: bytes, theirs: bytes, ours: bytes) -> bytes | None:
    """`git merge-file -p` of one file; None when it does not merge cleanly."""
    with tempfile.TemporaryDirectory(prefix="autoswarm-merge-") as tmp:
        for name, content in (("ours", ours), ("base", base), ("theirs", theirs)):
            (Path(tmp) / name).write_bytes(content)
        status, out, _ = git.Git(tmp).execute(
            ["git", "merge-file", "-p", "--quiet", "ours", "base", "theirs"],
            with_extended_output=True,
            with_exceptions=False,
            stdout_as_string=False,
            strip_newline_in_stdout=False,
            env=_GIT_ENV,
        )
    # exit status: the number of conflicts, or negative on error (binary files included)
    return out if status == 0 else _merge_in_place(base, theirs, ours)


def _merge_in_place(base: bytes, theirs: bytes, ours: bytes) -> bytes | None:
    """Merge edits that only rewrite lines in place, no line rewritten by both; else None.

    git calls edits to adjacent lines a conflict; two constants on neighbouring lines, each
    changed by one side, are the usual case here and have only one sensible result.
    """
    lines = [text.splitlines(keepends=True) for text in (base, theirs, ours)]
    if len({len(side) for side in lines}) != 1 or b"\0" in base + theirs + ours:
        return None
    merged = []
    for b, t, o in zip(*lines, strict=True):
        if t != b and o != b and t != o:
            return None
        merged.append(o if t == b else t)
    return b"".join(merged)


def _merge_path(
    base: bytes | None, theirs: bytes | None, ours: bytes | None
) -> tuple[bool, bytes | None]:
    """(clean, content) of one path; content None means the file is deleted."""
    if theirs in (ours, base):
        return True, ours
    if ours == base:
        return True, theirs
    if theirs is None or ours is None:
        return False, None  # changed on one side, deleted on the other
    merged = _merge_text(base or b"", theirs, ours)
    return merged is not None, merged


class Lineage:
    """The git lineage of one task: a bare repo at `root/<task_id>.git`.

    Branches are lineage branches (one per hardware class, see `branch_for`); their tips
    are heads. Every experiment's code lives under `refs/experiments/<experiment_id>`.
    """

    def __init__(self, root: Path, task_id: str) -> None:
        self.task_id = _check_ref_part(task_id, "task_id")
        self.path = Path(root) / f"{task_id}.git"

    branch_for = staticmethod(branch_for)

    @property
    def exists(self) -> bool:
        return (self.path / "HEAD").is_file()

    @contextmanager
    def _open(self) -> Iterator[git.Repo]:
        try:
            repo = git.Repo(self.path)
        except (git.NoSuchPathError, git.InvalidGitRepositoryError):
            raise LineageError(f"task {self.task_id}: no lineage at {self.path}") from None
        try:
            yield repo
        finally:
            repo.close()

    def _commit(self, repo: git.Repo, rev: str) -> str:
        key = (str(self.path), rev)
        with _CACHE_LOCK:
            if key in _COMMITS:
                return rev
        sha = _resolve(repo, rev)
        if sha is None:
            raise LineageError(f"task {self.task_id}: unknown commit {rev!r}")
        if sha == rev:  # a full sha, and a commit's
            with _CACHE_LOCK:
                _COMMITS[key] = True
        return sha

    def init(self, files: Mapping[str, bytes], *, branch: str, message: str) -> str:
        """Create the repo if absent and the first commit on `branch`; its head if it exists."""
        ref = _branch_ref(branch)
        if not self.exists:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                git.Repo.init(self.path, mkdir=True, bare=True, initial_branch=branch).close()
            except (OSError, git.GitCommandError) as exc:
                raise LineageError(
                    f"task {self.task_id}: cannot create {self.path}: {exc}"
                ) from None
            logger.info("lineage %s: created %s", self.task_id, self.path)
        with self._open() as repo:
            current = _resolve(repo, ref)
            if current is not None:
                return current
            tree = _write_tree(_nest(files), _store_object(repo)).hex()
            commit = _write_commit(repo, tree, None, message)
            refused = _update_ref(repo, ref, commit, None)
            if refused is None:
                logger.info("lineage %s: %s starts at %s", self.task_id, branch, commit)
                return commit
            current = _resolve(repo, ref)  # another coordinator created it meanwhile
            if current is None:
                raise LineageError(f"task {self.task_id}: cannot create {branch}: {refused}")
            return current

    def ensure_branch(self, branch: str, from_commit: str) -> str:
        """The head of `branch`, creating the branch at `from_commit` if it does not exist."""
        ref = _branch_ref(branch)
        with self._open() as repo:
            current = _resolve(repo, ref)
            if current is not None:
                return current
            commit = self._commit(repo, from_commit)
            refused = _update_ref(repo, ref, commit, None)
            if refused is None:
                logger.info("lineage %s: %s branched at %s", self.task_id, branch, commit)
                return commit
            current = _resolve(repo, ref)
            if current is None:
                raise LineageError(f"task {self.task_id}: cannot create {branch}: {refused}")
            return current

    def head(self, branch: str) -> str | None:
        """The head of `branch`, or None if the lineage or the branch does not exist."""
        ref = _branch_ref(branch)
        if not self.exists:
            return None
        with self._open() as repo:
            return _resolve(repo, ref)

    def branches(self) -> dict[str, str]:
        """Every lineage branch and its head."""
        if not self.exists:
            return {}
        with self._open() as repo:
            fmt = "--format=%(refname:lstrip=2) %(objectname)"
            out = _run(repo, "for-each-ref", fmt, "refs/heads/").decode()
        heads: dict[str, str] = {}
        for line in out.splitlines():
            branch, _, sha = line.rpartition(" ")
            heads[branch] = sha
        return heads

    def files_at(self, commit: str) -> dict[str, bytes]:
        """All files of a commit (or tree), by task-relative path.

        Read once per full sha (what a sha names never changes) and then served from a
        process-wide cache: the judge reads the same heads and merges again and again."""
        if not _FULL_SHA.match(commit):
            return self._read_files(commit)
        key = (str(self.path), commit)
        with _CACHE_LOCK:
            cached = _FILES.get(key)
        if cached is None:
            cached = self._read_files(commit)
            with _CACHE_LOCK, suppress(ValueError):  # larger than the whole cache
                _FILES[key] = cached
        return dict(cached)

    def _read_files(self, commit: str) -> dict[str, bytes]:
        with self._open() as repo:
            tree = _resolve(repo, commit, "tree")
            if tree is None:
                raise LineageError(f"task {self.task_id}: unknown commit {commit!r}")
            listing = _run(repo, "ls-tree", "-r", "-z", "--full-tree", tree)
            files: dict[str, bytes] = {}
            for entry in listing.decode().split("\0"):
                if not entry:
                    continue
                meta, path = entry.split("\t", 1)
                _, kind, sha = meta.split(" ")
                if kind == "blob":
                    files[path] = repo.odb.stream(bytes.fromhex(sha)).read()
            return files

    def tree_hash(self, files: Mapping[str, bytes]) -> str:
        """The git tree sha of these files, computed without writing: same files, same hash."""
        return _write_tree(_nest(files), _hash_object).hex()

    def store_experiment(
        self, experiment_id: str, files: Mapping[str, bytes], *, parent: str, message: str
    ) -> str:
        """Keep an experiment's code under `refs/experiments/<experiment_id>`; its commit sha.

        Idempotent for the same experiment_id and files; refuses the same id with other files.
        """
        ref = _experiment_ref(experiment_id)
        tree = self.tree_hash(files)
        with self._open() as repo:
            existing = _resolve(repo, ref)
            if existing is None:
                parent_sha = self._commit(repo, parent)
                _write_tree(_nest(files), _store_object(repo))
                commit = _write_commit(repo, tree, parent_sha, message)
                refused = _update_ref(repo, ref, commit, None)
                if refused is None:
                    logger.debug("lineage %s: experiment %s at %s", self.task_id, ref, commit)
                    return commit
                existing = _resolve(repo, ref)
                if existing is None:
                    raise LineageError(f"task {self.task_id}: cannot write {ref}: {refused}")
            if _resolve(repo, existing, "tree") != tree:
                raise LineageError(
                    f"task {self.task_id}: experiment {experiment_id} is stored with other code"
                )
            return existing

    def drop_experiment(self, experiment_id: str, commit: str) -> None:
        """Remove `refs/experiments/<experiment_id>` if it is still at `commit`: the code of
        an experiment that was never recorded (its submission lost a race)."""
        ref = _experiment_ref(experiment_id)
        with self._open() as repo:
            status, _, err = _git(repo, "update-ref", "-d", ref, commit)
        if status != 0:
            logger.warning("lineage %s: %s not removed: %s", self.task_id, ref, err.strip())

    def experiment_commit(self, experiment_id: str) -> str | None:
        """The commit holding an experiment's code, or None if it was never stored."""
        ref = _experiment_ref(experiment_id)
        if not self.exists:
            return None
        with self._open() as repo:
            return _resolve(repo, ref)

    def commit_change(
        self,
        branch: str,
        files: Mapping[str, bytes],
        *,
        parent: str,
        title: str,
        rationale: str,
        trailers: Mapping[str, str],
    ) -> str:
        """Commit an accepted change on `branch` if its head is still `parent`; the commit sha.

        Idempotent: a change whose `Experiment:` trailer is already on the branch is returned,
        not committed again. A head that moved past `parent` is refused with `LineageError`.
        """
        ref = _branch_ref(branch)
        experiment_id = trailers.get(EXPERIMENT_TRAILER, "").strip()
        if not experiment_id:
            raise LineageError(f"a change needs an {EXPERIMENT_TRAILER!r} trailer")
        message = _change_message(title, rationale, trailers)
        with self._open() as repo:
            done = self._find(repo, ref, experiment_id)
            if done is not None:
                logger.info(
                    "lineage %s: experiment %s already on %s", self.task_id, experiment_id, branch
                )
                return done
            parent_sha = self._commit(repo, parent)
            head = _resolve(repo, ref)
            if head is None:
                raise LineageError(f"task {self.task_id}: branch {branch!r} does not exist")
            if head != parent_sha:
                raise LineageError(f"task {self.task_id}: {branch} moved to {head}, not {parent}")
            tree = _write_tree(_nest(files), _store_object(repo)).hex()
            commit = _write_commit(repo, tree, parent_sha, message)
            refused = _update_ref(repo, ref, commit, parent_sha)
            if refused is not None:
                done = self._find(repo, ref, experiment_id)
                if done is not None:
                    return done
                raise LineageError(f"task {self.task_id}: {branch} moved past {parent}: {refused}")
            logger.info(
                "lineage %s: experiment %s kept on %s as %s",
                self.task_id,
                experiment_id,
                branch,
                commit,
            )
            return commit

    def _find(self, repo: git.Repo, ref: str, experiment_id: str) -> str | None:
        if _resolve(repo, ref) is None:
            return None
        for info in self._history(repo, ref):
            if info.trailers.get(EXPERIMENT_TRAILER) == experiment_id:
                return info.sha
        return None

    def find_by_experiment(self, branch: str, experiment_id: str) -> str | None:
        """The commit on `branch` whose `Experiment:` trailer is `experiment_id`, or None."""
        ref = _branch_ref(branch)
        if not self.exists:
            return None
        with self._open() as repo:
            return self._find(repo, ref, experiment_id)

    def history(self, branch: str, limit: int | None = None) -> list[CommitInfo]:
        """The commits of `branch`, newest first."""
        ref = _branch_ref(branch)
        with self._open() as repo:
            if _resolve(repo, ref) is None:
                raise LineageError(f"task {self.task_id}: branch {branch!r} does not exist")
            return self._history(repo, ref, limit)

    def _history(self, repo: git.Repo, ref: str, limit: int | None = None) -> list[CommitInfo]:
        # The raw commit objects, not `git log`'s formats: those end a message at its first
        # NUL, losing the trailers of a commit whose title once carried one.
        args = ["rev-list", "--first-parent"]
        if limit is not None:
            args.append(f"--max-count={limit}")
        shas = _run(repo, *args, ref, "--").decode().split()
        if not shas:
            return []
        out = _run(repo, "cat-file", "--batch", stdin="".join(f"{s}\n" for s in shas).encode())
        infos = []
        at = 0
        for sha in shas:
            header_end = out.index(b"\n", at)
            size = int(out[at:header_end].split()[2])
            raw = out[header_end + 1 : header_end + 1 + size]
            at = header_end + 1 + size + 1
            infos.append(_commit_info(sha, raw))
        return infos

    def diff(self, experiment_id: str) -> str:
        """Unified diff of an experiment's code against the head it was made on."""
        ref = _experiment_ref(experiment_id)
        with self._open() as repo:
            commit = _resolve(repo, ref)
            if commit is None:
                raise LineageError(f"task {self.task_id}: no experiment {experiment_id!r}")
            parent = _resolve(repo, f"{commit}^")
            return self._diff(repo, parent or _EMPTY_TREE, commit)

    def diff_commits(self, a: str, b: str) -> str:
        """Unified diff from commit `a` to commit `b`."""
        with self._open() as repo:
            return self._diff(repo, self._commit(repo, a), self._commit(repo, b))

    def _diff(self, repo: git.Repo, a: str, b: str) -> str:
        out = _run(repo, "diff", "--no-color", "--no-ext-diff", "--no-textconv", a, b, "--")
        return out.decode("utf-8", "replace")

    def merge(self, base: Content, theirs: Content, ours: Content) -> dict[str, bytes]:
        """Three-way merge of a change (`base` -> `theirs`) onto a newer head `ours`.

        Each is a commit sha or the files themselves. Returns the merged files; raises
        `MergeConflict` naming every conflicting path and writes nothing, ever.
        """
        base_files, their_files, our_files = (self._content(c) for c in (base, theirs, ours))
        merged: dict[str, bytes] = {}
        conflicts: list[str] = []
        for path in sorted(base_files.keys() | their_files.keys() | our_files.keys()):
            clean, content = _merge_path(
                base_files.get(path), their_files.get(path), our_files.get(path)
            )
            if not clean:
                conflicts.append(path)
            elif content is not None:
                merged[path] = content
        if conflicts:
            logger.info("lineage %s: merge conflict in %s", self.task_id, conflicts)
            raise MergeConflict(conflicts)
        return merged

    def _content(self, content: Content) -> dict[str, bytes]:
        return self.files_at(content) if isinstance(content, str) else dict(content)
