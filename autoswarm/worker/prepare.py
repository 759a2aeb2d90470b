"""Preparing a task version once per machine (`run.prepare`, trusted, and the hub kernels its
runs load), in the task's own environment when it has one; cached by `prepare_key`."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from autoswarm.shared.environment import read_environment_files
from autoswarm.shared.errors import AutoswarmError, TaskError
from autoswarm.shared.task import TASK_FILE, TaskSpec, hash_files, task_environment
from autoswarm.worker.environments import (
    HOME,
    KERNELS_WARM,
    EnvironmentBuildFailed,
    TaskEnvironment,
    build_environment,
    environment_key,
    ready_environment,
)
from autoswarm.worker.launch import describe_exit, resolve
from autoswarm.worker.leftovers import remove_tree
from autoswarm.worker.prepare_network import PrepareNetwork, declare_in_task, prepare_hosts
from autoswarm.worker.runfiles import OnTick, copy_files, locked, make_readonly, read_log
from autoswarm.worker.sandbox import scrub_env

logger = logging.getLogger(__name__)

PREPARE_TIMEOUT_S = 3600.0
# The variable that hands a task's held-out secret to its prepare step, and to nothing else:
# runs and evaluators get scrubbed environments, and the prepare cache key holds its hash.
HELDOUT_SECRET_ENV = "AUTOSWARM_HELDOUT_SECRET"


class PrepareError(AutoswarmError):
    """A task's prepare step failed: the machinery cannot run it, the experiment is not at fault."""


def prepare_key(
    task_dir: Path, spec: TaskSpec, heldout_secret: str | None = None, environment: str = ""
) -> str:
    """The cache key of a task version: its protected and evaluator files, task.toml, prepare,
    the kernels it fetches, the hash of its held-out secret (a new secret: new held-out
    data) and the key of its environment (prepare runs in it)."""
    files = {path: (task_dir / path).read_bytes() for path in spec.protected + spec.scoring.files}
    toml_path = task_dir / TASK_FILE
    if toml_path.is_file():
        files[TASK_FILE] = toml_path.read_bytes()
    files["\0prepare"] = repr(spec.run.prepare).encode()
    if spec.run.kernels:
        files["\0kernels"] = repr(spec.run.kernels).encode()
    if environment:
        files["\0environment"] = environment.encode()
    if heldout_secret:
        files["\0heldout-secret"] = hashlib.sha256(heldout_secret.encode()).hexdigest().encode()
    return hash_files(files)[:32]


class Preparer:
    """Prepares task versions into `cache_root/prepare/<key>/` (data/, heldout/ and home/,
    the prepare step's HOME), each once, and builds their environments under
    `cache_root/envs/` (`autoswarm.worker.environments`). Under the bubblewrap sandbox the build,
    the kernels and the prepare step reach only the hosts `autoswarm.worker.prepare_network` allows
    them,
    through the worker's allow-list proxy (`network`)."""

    def __init__(
        self, cache_root: Path, extra_env: Mapping[str, str], network: PrepareNetwork
    ) -> None:
        self.cache_root = cache_root
        self.extra_env = dict(extra_env)
        self.network = network
        self._environments: dict[Path, TaskEnvironment | None] = {}

    def environment_of(self, prepared: Path) -> TaskEnvironment | None:
        """The environment a prepared folder was made in (None: the worker's)."""
        return self._environments.get(prepared)

    def prepare(
        self,
        task_dir: Path,
        spec: TaskSpec,
        *,
        on_tick: OnTick | None = None,
        heldout_secret: str | None = None,
    ) -> Path:
        """The prepared folder of this task version, running `run.prepare` once (trusted), in
        the task's own environment, built first when it has one (`autoswarm.worker.environments`);
        `heldout_secret` reaches the prepare step alone (see `HELDOUT_SECRET_ENV`)."""
        environment = self._environment(task_dir, spec, on_tick)
        env_key = "" if environment is None else environment.root.name
        key = prepare_key(task_dir, spec, heldout_secret, env_key)
        root = self.cache_root / "prepare"
        final = root / key
        self._environments[final] = environment
        if final.is_dir():
            return final
        root.mkdir(parents=True, exist_ok=True)
        if spec.run.prepare is None and not spec.run.kernels:
            for name in ("data", "heldout", HOME):
                (final / name).mkdir(parents=True, exist_ok=True)
            return final
        with locked(root / f"{key}.lock", on_tick):
            if final.is_dir():  # another runner prepared it while we waited
                return final
            tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            try:
                self._run_prepare(task_dir, spec, tmp, on_tick, heldout_secret, environment)
                for name in ("data", "heldout", HOME):
                    make_readonly(tmp / name)
                tmp.rename(final)
            finally:
                remove_tree(tmp)
        logger.info("runner: task %s prepared in %s", spec.name, final)
        return final

    def _environment(
        self, task_dir: Path, spec: TaskSpec, on_tick: OnTick | None
    ) -> TaskEnvironment | None:
        """The task's own environment, built once per lock and platform; None: the worker's."""
        try:
            plan = task_environment(task_dir, spec)
        except TaskError as exc:
            raise PrepareError(f"task {spec.name}: {exc}") from None
        if not plan.own:
            return None
        envs = self.cache_root / "envs"
        root = envs / environment_key(read_environment_files(task_dir), plan)
        built = ready_environment(root)
        if built is not None:
            return built
        envs.mkdir(parents=True, exist_ok=True)
        with locked(envs / f"{root.name}.lock", on_tick):
            built = ready_environment(root)  # another runner built it while we waited
            if built is not None:
                return built
            try:
                return build_environment(
                    task_dir, plan, root, on_tick=on_tick, network=self.network
                )
            except EnvironmentBuildFailed as exc:
                raise PrepareError(f"task {spec.name}: {exc}") from None

    def _run_prepare(
        self,
        task_dir: Path,
        spec: TaskSpec,
        tmp: Path,
        on_tick: OnTick | None,
        heldout_secret: str | None,
        environment: TaskEnvironment | None,
    ) -> None:
        """The prepare step, then the hub kernels the run loads at import (`[run] kernels`),
        with HOME at tmp/home: what they leave there every run finds under its own HOME."""
        for name in ("data", "heldout", ".tmp", HOME):
            (tmp / name).mkdir(parents=True)
        copy_files(task_dir, tmp, spec.protected + spec.scoring.files, readonly=False)
        env = scrub_env(os.environ, home=tmp / HOME, tmp_dir=tmp / ".tmp") | self.extra_env
        env["AUTOSWARM_DATA_DIR"] = str(tmp / "data")
        env["AUTOSWARM_HELDOUT_DIR"] = str(tmp / "heldout")
        python = sys.executable if environment is None else environment.python
        if spec.run.kernels:
            self._prepare_step(
                spec, [python, "-c", KERNELS_WARM, *spec.run.kernels], tmp, env, on_tick
            )
        if spec.run.prepare is not None:
            if heldout_secret:
                env[HELDOUT_SECRET_ENV] = heldout_secret
            self._prepare_step(spec, resolve(spec.run.prepare, python), tmp, env, on_tick)

    def _prepare_step(
        self,
        spec: TaskSpec,
        argv: list[str],
        tmp: Path,
        env: dict[str, str],
        on_tick: OnTick | None,
    ) -> None:
        log_path = tmp / "prepare.log"
        hosts = prepare_hosts(spec.run.prepare_hosts, kernels=bool(spec.run.kernels))
        outcome, _ = self.network.supervise(
            argv,
            env,
            hosts=hosts,
            declare=declare_in_task,
            log_path=log_path,
            cwd=tmp,
            marker=f"prepare-{uuid.uuid4().hex[:16]}",
            deadline_s=PREPARE_TIMEOUT_S,
            on_tick=on_tick,
        )
        if outcome.timed_out or outcome.exit_code != 0:
            why = "timed out" if outcome.timed_out else describe_exit(outcome.exit_code)
            tail = read_log(log_path)[-2000:]
            raise PrepareError(f"task {spec.name}: prepare {why}; its log ends:\n{tail}")
