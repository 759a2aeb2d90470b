"""Worker actors on a Ray cluster: `autoswarm ray-workers`; the one module that imports ray.

`launch_ray_workers(...)` connects to a Ray cluster (or starts a local one) and keeps one
Ray actor per worker slot. Each actor runs the same `autoswarm.worker.loop.Worker` as a volunteer's
`autoswarm worker`, in a thread of the actor's process, with the same sandbox: Ray is the
scheduler, not the trust boundary.

What it guarantees:
- an actor asks Ray for `gpus_per_worker` GPUs and `cpus_per_worker` CPUs; its worker runs
  one slot per GPU Ray gave it (the CPU when none), named `<name>/<index>`, with its own
  state folder (`<state_dir>/ray-<name>/<index>`: outbox, lock, control socket) and a cache
  shared by the actors of a node;
- an actor that dies (its process killed, its node lost) is restarted by Ray
  (`max_restarts=-1`) and its worker starts again; the lease it held expires and the
  coordinator's reaper queues the experiment again, so it completes once, elsewhere;
- with `num_workers="auto"` the number of actors follows the coordinator's queue: every
  busy actor plus one per queued experiment, between `min_workers` and `max_workers`;
  surplus actors are asked to finish (no new lease) after the surplus lasted
  `scale_down_after_s`, and are removed once they stopped, so an autoscaling cluster grows
  with pending actors and shrinks with idle nodes (the queue is read with a token of the
  read scope: `read_token`);
- SIGTERM or a first SIGINT stops every worker as `autoswarm worker` stops (runs get the
  worker's `stop_grace_s`, leases are handed back, outboxes flushed); a second one stops
  the runs now.
What it does not do: place actors (Ray and its autoscaler do), confine experiments (the
sandbox does), or keep actors alive after the launcher exits (they share its fate).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Literal

from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import AutoswarmError, Forbidden, InvalidInput, Unauthorized
from autoswarm.worker.loop import EXIT_CANNOT_START, EXIT_ERROR, EXIT_OK, Worker
from autoswarm.worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

Trust = Literal["sandboxed", "trusted-code"]
NumWorkers = int | Literal["auto"]

# The launcher checks its actors this often; `poll_s` paces the queue-depth requests.
TICK_S = 1.0
# An actor that has not answered a status request in this long counts as starting (it may
# wait minutes for a GPU node the autoscaler is adding).
STATUS_TIMEOUT_S = 5.0
# After a stop, actors get their worker's grace plus this to hand leases back and exit.
STOP_MARGIN_S = 10.0
# Queued experiments counted at most (the API's page limit): more than any cluster's actors.
QUEUE_SCAN = 500
# Threads per actor: the worker's join, plus status / finish / stop answered meanwhile.
ACTOR_CONCURRENCY = 4


# ---- the autoscaling decision ----------------------------------------------------------------


def decide_workers(*, busy: int, queued: int, min_workers: int, max_workers: int) -> int:
    """How many worker actors the queue asks for: each busy one plus one per queued experiment."""
    return max(min_workers, min(max_workers, busy + queued))


@dataclass
class Autoscaler:
    """Grows at once, shrinks only after the surplus lasted `scale_down_after_s`.

    A proposer keeps a queue a few experiments deep and refills it in bursts: without the
    delay a worker that just finished would be removed between two proposals.
    """

    min_workers: int
    max_workers: int
    scale_down_after_s: float
    _surplus_since: float | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if not 0 <= self.min_workers <= self.max_workers:
            raise ValueError(
                f"workers: need 0 <= min ({self.min_workers}) <= max ({self.max_workers})"
            )

    def target(self, *, current: int, busy: int, queued: int, now_s: float) -> int:
        """The number of actors to have now (`now_s`: a monotonic clock)."""
        wanted = decide_workers(
            busy=busy, queued=queued, min_workers=self.min_workers, max_workers=self.max_workers
        )
        if wanted >= current:
            self._surplus_since = None
            return wanted
        if self._surplus_since is None:
            self._surplus_since = now_s
        if now_s - self._surplus_since < self.scale_down_after_s:
            return current
        self._surplus_since = None
        return wanted


def fetch_queue_depth(client: CoordinatorClient, hardware: Collection[str] = ()) -> int:
    """Experiments waiting for a lease that workers of `hardware` may run (any: all of them).

    Reads `GET /api/v1/experiments?status=queued`, which needs a token with the read scope.
    """
    body = client.get_json("experiments", {"status": "queued", "limit": QUEUE_SCAN})
    queued = body.get("experiments") if isinstance(body, dict) else None
    if not isinstance(queued, list):
        raise InvalidInput(f"GET /api/v1/experiments answered no experiments: {body!r:.200}")
    classes = set(hardware)
    return sum(
        1
        for exp in queued
        if isinstance(exp, dict) and (not classes or exp.get("hardware") in classes | {None})
    )


# ---- the actor ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ActorConfig:
    """What every worker actor is started with (besides its index)."""

    join: str
    token: str
    name: str = "ray"
    trust: Trust | None = None  # None: the node's AUTOSWARM_TRUST, else sandboxed
    log_level: int = logging.INFO
    # Further WorkerSettings fields (e.g. wait_s, stop_grace_s); the node's AUTOSWARM_*
    # environment fills what neither gives.
    settings: Mapping[str, Any] = field(default_factory=dict)


def actor_settings(config: ActorConfig, index: int, gpu_ids: list[str]) -> WorkerSettings:
    """The worker settings of actor `index`, given the GPU ids Ray assigned it."""
    given: dict[str, Any] = {
        **config.settings,
        "join": config.join,
        "token": config.token,
        "name": f"{config.name}/{index}",
        "gpus": ",".join(gpu_ids) if gpu_ids else "none",
    }
    if config.trust is not None:
        given["trust"] = config.trust
    settings = WorkerSettings(**given)
    base = settings.state_dir
    return settings.model_copy(
        update={
            "state_dir": base / f"ray-{config.name}" / str(index),
            "cache_dir": settings.cache_dir or base / "cache",
        }
    )


def _configure_actor_logging(level: int) -> None:
    # The actor's process is an entry point of its own: Ray leaves its root logger bare.
    root = logging.getLogger()
    if not any(getattr(h, "_autoswarm", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        handler._autoswarm = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    for noisy in ("httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class WorkerActor:
    """One worker in a Ray actor: its loop runs in a thread from the actor's creation on.

    Ray re-runs `__init__` when it restarts the actor, so a restarted actor works again
    without the launcher's help. `join` returns when the worker stopped.
    """

    def __init__(self, config: ActorConfig, index: int) -> None:
        import ray

        _configure_actor_logging(config.log_level)
        self.index = index
        self.exit_code: int | None = None
        self.error: str | None = None
        self.worker: Worker | None = None
        self._thread: threading.Thread | None = None
        gpu_ids = [str(gpu) for gpu in ray.get_gpu_ids()]
        if gpu_ids:
            # Ray narrows CUDA_VISIBLE_DEVICES to these GPUs, which renumbers them from 0
            # for torch; the worker selects and passes on GPUs by the node's numbering.
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        try:
            settings = actor_settings(config, index, gpu_ids)
        except ValueError as exc:  # e.g. a bad AUTOSWARM_* variable on this node
            # Raising here would kill the actor for good (Ray restarts no failed creation):
            # say why instead, and let the launcher stop.
            self.exit_code, self.error = EXIT_CANNOT_START, f"worker settings: {exc}"
            logger.error("ray actor %s: cannot start: %s", index, self.error)
            return
        self.worker = Worker(settings)
        self._thread = threading.Thread(target=self._run, name="worker", daemon=True)
        self._thread.start()
        logger.info(
            "ray actor %s: worker %s started (pid %d, gpus %s)",
            index,
            settings.name,
            os.getpid(),
            settings.gpus,
        )

    def _run(self) -> None:
        assert self.worker is not None
        try:
            self.exit_code = self.worker.run()
        except Exception:  # reported to the launcher, which replaces this actor
            self.error = traceback.format_exc(limit=5)
            logger.exception("ray actor %s: the worker failed", self.index)
            self.exit_code = EXIT_ERROR

    def join(self) -> dict[str, Any]:
        """Block until the worker stopped: its exit code, and why when it could not go on."""
        if self._thread is not None:
            self._thread.join()
        fatal = self.worker.controls.fatal if self.worker is not None else None
        return {"exit_code": self.exit_code, "fatal": fatal or self.error, "error": self.error}

    def status(self) -> dict[str, Any]:
        """The worker's status (as `autoswarm worker status`), plus the actor's pid."""
        own = {"pid": os.getpid(), "index": self.index}
        if self.worker is None:
            return {"state": "cannot start", "slots": [], **own}
        return {**self.worker.status(), **own}

    def finish(self) -> None:
        """Stop after the current experiment."""
        if self.worker is not None:
            self.worker.handle_command("finish")

    def stop(self, immediate: bool = False) -> None:
        """Stop as on SIGTERM (or, `immediate`, as on a second SIGINT)."""
        if self.worker is not None:
            self.worker.request_stop(immediate=immediate)


# ---- the launcher ----------------------------------------------------------------------------


@dataclass
class _Member:
    """One actor the launcher keeps, and what it last knew of it."""

    index: int
    handle: Any
    joined: Any  # the ObjectRef of handle.join()
    retiring: bool = False
    asked: Any = None  # the ObjectRef of a status() not answered yet
    pid: int | None = None
    busy: bool = False
    answered: bool = False
    hardware: tuple[str, ...] = ()  # the classes of its slots, once it answered


@dataclass(frozen=True)
class ResourceRequest:
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0


class RayLauncher:
    """Keeps worker actors on a connected Ray cluster (see module doc). Not thread-safe.

    `run(stop)` blocks until `stop` is set (then stops every worker), until a worker
    cannot start (exit code 2), or, with a fixed number, until every worker finished.
    """

    def __init__(
        self,
        config: ActorConfig,
        *,
        num_workers: NumWorkers,
        resources: ResourceRequest = ResourceRequest(),
        min_workers: int = 0,
        max_workers: int = 16,
        poll_s: float = 10.0,
        scale_down_after_s: float = 60.0,
        queue_depth: Callable[[Collection[str]], int] | None = None,
    ) -> None:
        if num_workers != "auto" and (not isinstance(num_workers, int) or num_workers < 1):
            raise ValueError(f"num_workers: a positive number or 'auto', not {num_workers!r}")
        if max_workers < 1:
            raise ValueError(f"max_workers: at least 1, not {max_workers}")
        self.config = config
        self.num_workers = num_workers
        self.resources = resources
        self.poll_s = poll_s
        self.autoscaler = Autoscaler(min_workers, max_workers, scale_down_after_s)
        self.members: dict[int, _Member] = {}
        self.exit_code = EXIT_OK
        self._queue_depth = queue_depth
        self._immediate = threading.Event()
        self._actor_class: Any = None

    # ---- actors --------------------------------------------------------------------------

    def _start_actor(self, index: int) -> None:
        import ray

        if self._actor_class is None:
            self._actor_class = ray.remote(WorkerActor)
        handle = self._actor_class.options(
            num_gpus=self.resources.gpus_per_worker,
            num_cpus=self.resources.cpus_per_worker,
            max_restarts=-1,
            # join, status, finish and stop survive a restart: they go to the new actor.
            max_task_retries=-1,
            max_concurrency=ACTOR_CONCURRENCY,
        ).remote(self.config, index)
        self.members[index] = _Member(index, handle, handle.join.remote())
        logger.info("ray launcher: actor %d requested", index)

    def _remove_actor(self, member: _Member) -> None:
        import ray

        ray.kill(member.handle, no_restart=True)
        self.members.pop(member.index, None)
        logger.info("ray launcher: actor %d removed", member.index)

    def _free_index(self) -> int:
        # The lowest free index: a new actor reuses a state folder (and its outbox).
        index = 0
        while index in self.members:
            index += 1
        return index

    def active(self) -> list[_Member]:
        """The actors that are not finishing."""
        return [m for m in self.members.values() if not m.retiring]

    # ---- the loop ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the first actors: `num_workers`, or `min_workers` for auto."""
        first = (
            self.num_workers if isinstance(self.num_workers, int) else self.autoscaler.min_workers
        )
        for _ in range(first):
            self._start_actor(self._free_index())

    def run(self, stop: threading.Event) -> int:
        """Keep the actors until stopped (see class doc); the exit code."""
        auto = self.num_workers == "auto"
        if not self.members:
            self.start()
        next_poll_s = 0.0
        while not stop.is_set():
            self._harvest()
            if self.exit_code == EXIT_CANNOT_START or not (auto or self.members):
                break
            if time.monotonic() >= next_poll_s:
                next_poll_s = time.monotonic() + self.poll_s
                self._survey()
                if auto:
                    self._autoscale()
            stop.wait(TICK_S)
        self.stop_all()
        return self.exit_code

    def request_immediate_stop(self) -> None:
        """Make the stop in progress (or the next one) stop runs now."""
        self._immediate.set()

    def _harvest(self) -> None:
        """Deal with actors whose worker stopped: removed, replaced, or the end of the run."""
        import ray

        refs = {m.joined: m for m in self.members.values()}
        if not refs:
            return
        ready, _ = ray.wait(list(refs), num_returns=len(refs), timeout=0)
        for ref in ready:
            member = refs[ref]
            try:
                outcome: dict[str, Any] = ray.get(ref)
            except ray.exceptions.RayError as exc:
                # Never answered: it could not be created (the package missing on the node?).
                code = EXIT_ERROR if member.pid is not None else EXIT_CANNOT_START
                outcome = {"exit_code": code, "fatal": str(exc)[:2000], "error": str(exc)}
            self._after_exit(member, outcome)

    def _after_exit(self, member: _Member, outcome: Mapping[str, Any]) -> None:
        code = outcome.get("exit_code")
        self._remove_actor(member)
        if code == EXIT_CANNOT_START:
            logger.error(
                "ray launcher: actor %d: its worker cannot start: %s; stopping",
                member.index,
                outcome.get("fatal") or "see its log",
            )
            self.exit_code = EXIT_CANNOT_START
        elif code == EXIT_OK:
            logger.info("ray launcher: actor %d: its worker finished", member.index)
        elif not member.retiring:
            logger.warning(
                "ray launcher: actor %d: its worker failed (%s); replacing it",
                member.index,
                outcome.get("error"),
            )
            self._start_actor(member.index)

    def _survey(self) -> None:
        """Ask every actor how it is; one that has not answered yet is starting."""
        import ray

        if not self.members:
            return
        for member in self.members.values():
            if member.asked is None:  # one question at a time to an actor still starting
                member.asked = member.handle.status.remote()
        asked = {m.asked: m for m in self.members.values()}
        ready, _ = ray.wait(list(asked), num_returns=len(asked), timeout=STATUS_TIMEOUT_S)
        for member in asked.values():
            member.answered = False
        for ref in ready:
            member = asked[ref]
            member.asked = None
            try:
                status: dict[str, Any] = ray.get(ref)
            except ray.exceptions.RayError:
                continue
            if member.pid is not None and status["pid"] != member.pid:
                logger.warning(
                    "ray launcher: actor %d was restarted (pid %s -> %s); its lease returns "
                    "through the coordinator",
                    member.index,
                    member.pid,
                    status["pid"],
                )
            member.pid = status["pid"]
            member.answered = True
            if member.retiring and not status.get("finishing"):  # restarted since asked
                member.handle.finish.remote()
            slots = status.get("slots", [])
            member.busy = any(s.get("experiment_id") for s in slots)
            member.hardware = tuple(str(s["hardware"]) for s in slots if s.get("hardware"))

    def _autoscale(self) -> None:
        if self._queue_depth is None:
            return
        try:
            classes = {c for m in self.members.values() for c in m.hardware}
            queued = self._queue_depth(classes)
        except AutoswarmError as exc:
            logger.warning("ray launcher: queue depth unknown (%s); keeping the actors", exc)
            return
        active = self.active()
        busy = sum(1 for m in active if m.busy)
        target = self.autoscaler.target(
            current=len(active), busy=busy, queued=queued, now_s=time.monotonic()
        )
        if target == len(active):
            return
        logger.info(
            "ray launcher: %d queued, %d of %d actors busy: scaling to %d",
            queued,
            busy,
            len(active),
            target,
        )
        for _ in range(target - len(active)):
            self._start_actor(self._free_index())
        surplus = len(active) - target
        # Starting actors go first (no work lost), then idle ones; busy ones never.
        for member in sorted(active, key=lambda m: (m.answered, -m.index)):
            if surplus <= 0 or member.busy:
                continue
            surplus -= 1
            if not member.answered:
                self._remove_actor(member)
            else:
                member.retiring = True
                member.handle.finish.remote()
                logger.info("ray launcher: actor %d asked to finish", member.index)

    def stop_all(self) -> None:
        """Stop every worker (handing leases back), wait for them, remove the actors."""
        import ray

        if not self.members:
            return
        immediate = self._immediate.is_set()
        logger.info("ray launcher: stopping %d actors", len(self.members))
        for member in self.members.values():
            member.handle.stop.remote(immediate)
        default_grace_s = WorkerSettings.model_fields["stop_grace_s"].default
        grace_s = float(self.config.settings.get("stop_grace_s", default_grace_s))
        refs = [m.joined for m in self.members.values()]
        deadline = time.monotonic() + grace_s + STOP_MARGIN_S
        pending = refs
        while pending and time.monotonic() < deadline:
            if self._immediate.is_set() and not immediate:
                immediate = True
                for member in self.members.values():
                    member.handle.stop.remote(True)
            _, pending = ray.wait(pending, num_returns=len(pending), timeout=TICK_S)
        if pending:
            logger.warning("ray launcher: %d actors did not stop in time", len(pending))
        for member in list(self.members.values()):
            self._remove_actor(member)


@contextmanager
def _stop_on_signals(stop: threading.Event, launcher: RayLauncher) -> Iterator[None]:
    """SIGTERM or a first SIGINT sets `stop`; a second makes the stop immediate."""
    if threading.current_thread() is not threading.main_thread():
        yield  # e.g. a test or an embedding program: it sets `stop` itself
        return
    signals = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal signals
        signals += 1
        logger.info("ray launcher: signal %d: stopping the workers", signum)
        if signals > 1:
            launcher.request_immediate_stop()
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def connect_ray(address: str | None) -> bool:
    """Connect to the Ray cluster at `address` ("local" or None: a new local one).

    Returns True when this call connected (and the caller should disconnect), False when
    the process was already connected.
    """
    import ray

    if ray.is_initialized():
        return False
    local = address is None or address == "local"
    ray.init(address=None if local else address, namespace="autoswarm", log_to_driver=True)
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]
    logger.info(
        "ray launcher: connected to %s: %s CPUs, %s GPUs",
        "a local Ray" if local else address,
        resources.get("CPU", 0),
        resources.get("GPU", 0),
    )
    return True


def _can_read_queue(client: CoordinatorClient) -> bool:
    """Whether the queue depth can be read; if not, the error says what to give instead."""
    try:
        fetch_queue_depth(client)
    except (Unauthorized, Forbidden) as exc:
        logger.error(
            "ray launcher: --num-workers auto reads the coordinator's queue and needs a token "
            "with the read scope (--read-token): %s",
            exc,
        )
        return False
    except AutoswarmError as exc:  # the coordinator is away: the workers will wait for it too
        logger.warning("ray launcher: queue depth unknown for now: %s", exc)
    return True


def launch_ray_workers(
    *,
    address: str | None,
    join: str,
    token: str,
    num_workers: NumWorkers,
    gpus_per_worker: float = 0.0,
    cpus_per_worker: float = 1.0,
    trust: Trust | None = None,
    min_workers: int = 0,
    max_workers: int = 16,
    poll_s: float = 10.0,
    scale_down_after_s: float = 60.0,
    name: str = "ray",
    read_token: str | None = None,
    settings: Mapping[str, Any] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run worker actors on a Ray cluster until stopped; the exit code (as `autoswarm worker`).

    `read_token`: a token with the read scope, for the queue depth that `num_workers="auto"`
    follows (default `token`); `settings`: further WorkerSettings fields for every worker;
    `stop`: set it to stop from another thread (from the main thread, SIGTERM and SIGINT
    do). Raises ValueError for impossible numbers (negative resources, min above max).
    """
    if gpus_per_worker < 0 or cpus_per_worker < 0:
        raise ValueError("gpus_per_worker and cpus_per_worker must not be negative")
    config = ActorConfig(
        join=join,
        token=token,
        name=name,
        trust=trust,
        log_level=logging.getLogger().getEffectiveLevel(),
        settings=dict(settings or {}),
    )
    client = CoordinatorClient(join, read_token or token)
    stop = stop or threading.Event()
    launcher = RayLauncher(
        config,
        num_workers=num_workers,
        resources=ResourceRequest(gpus_per_worker, cpus_per_worker),
        min_workers=min_workers,
        max_workers=max_workers,
        poll_s=poll_s,
        scale_down_after_s=scale_down_after_s,
        queue_depth=lambda classes: fetch_queue_depth(client, classes),
    )
    if num_workers == "auto" and not _can_read_queue(client):
        client.close()
        return EXIT_CANNOT_START
    connected = connect_ray(address)
    try:
        with _stop_on_signals(stop, launcher):
            return launcher.run(stop)
    finally:
        client.close()
        if connected:
            import ray

            ray.shutdown()
