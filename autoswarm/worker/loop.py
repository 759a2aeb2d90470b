"""The worker process: its slots, its outbox, its control socket, and how it stops.

`run_worker(settings)` is what `autoswarm worker --join URL --token T` calls. It runs one
`WorkerSlot` per chosen GPU (or one for the CPU) until it is told to stop:
- a first SIGINT (Ctrl-C) does what `autoswarm worker finish` does: no new leases, the
  current runs complete and are reported, prefetched leases are handed back, exit 0;
- SIGTERM: no new leases; a run still going after `stop_grace_s` is stopped and its lease
  handed back; prefetched leases are handed back; the outbox is flushed once; exit 0;
- a second SIGINT or SIGTERM: runs are stopped now and their leases handed back;
- `pause` / `resume` from a second terminal.
Exit codes: 0 stopped as asked, 2 cannot start (no token, token refused, no sandbox, state
folder in use, bad --gpus), 1 anything else.
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from types import FrameType
from typing import Any

from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import AutoswarmError, InvalidInput, SandboxUnavailable
from autoswarm.worker.backoff import Backoff
from autoswarm.worker.bundles import BundleCache
from autoswarm.worker.control import ControlServer, StateLock, WorkerAlreadyRunning
from autoswarm.worker.hardware import HardwareInfo, cpu_count, detect_hardware, select_gpus
from autoswarm.worker.outbox import Outbox, OutboxFlusher
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Sandbox
from autoswarm.worker.settings import WorkerSettings
from autoswarm.worker.slot import POLL_S, Controls, SlotState, WorkerSlot
from autoswarm.worker.token_check import token_refused

logger = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_CANNOT_START = 0, 1, 2
# A slot blocked in a long poll has nothing to hand back; after this it is not waited for.
LONG_POLL_ABANDON_S = 1.0


def choose_sandbox(settings: WorkerSettings, *, cuda: bool = False) -> Sandbox:
    """The bubblewrap sandbox, or `Unsandboxed` when the operator trusts the code.

    Raises `SandboxUnavailable` (with the fix in its message) when no sandbox can be made:
    a volunteer's worker refuses untrusted work rather than run it unconfined.
    """
    from autoswarm.worker.bwrap import make_sandbox  # probes bwrap: only when a worker starts
    from autoswarm.worker.doctor import Status, sandbox_self_test

    sandbox = make_sandbox(settings.trust)
    if settings.trust == "trusted-code":
        return sandbox
    # The self-test starts a real sandbox and tries the network and a secret from inside.
    failed = [c for c in sandbox_self_test(sandbox, cuda=cuda) if c.status is Status.FAIL]
    if failed:
        detail = "; ".join(f"{c.name}: {c.detail}" for c in failed)
        raise SandboxUnavailable(f"the sandbox self-test failed ({detail}); run autoswarm doctor")
    logger.info("worker %s: sandbox self-test passed", settings.name)
    return sandbox


class Worker:
    """One worker process: slots, outbox, control socket (see module doc)."""

    def __init__(
        self,
        settings: WorkerSettings,
        *,
        sandbox: Sandbox | None = None,
        hardware: HardwareInfo | None = None,
    ) -> None:
        self.settings = settings
        self.sandbox = sandbox
        self.hardware = hardware
        self.controls = Controls(stop_grace_s=settings.stop_grace_s)
        self.slots: list[WorkerSlot] = []
        self.outbox = Outbox(settings.state_dir / "outbox")
        self._signals = 0

    # ---- control -------------------------------------------------------------------------

    def request_stop(self, *, immediate: bool = False) -> None:
        """Stop leasing; stop runs after the grace (now if `immediate`); then exit."""
        if not self.controls.stop.is_set():
            self.controls.stop_requested_at = time.monotonic()
            logger.info(
                "worker %s: stopping (runs get %.0f s to finish)",
                self.settings.name,
                self.controls.stop_grace_s,
            )
            self.controls.stop.set()
        if immediate and not self.controls.kill.is_set():
            logger.warning(
                "worker %s: stopping now: runs are stopped and their leases handed back",
                self.settings.name,
            )
            self.controls.kill.set()

    def handle_command(self, command: str) -> dict[str, Any]:
        """Answer one control command (pause, resume, finish, status)."""
        name = self.settings.name
        detail = ""
        if command == "pause":
            self.controls.paused.set()
            detail = "paused: no new experiment is leased; the current one runs to its end"
        elif command == "resume":
            self.controls.paused.clear()
            detail = "resumed: leasing experiments again"
        elif command == "finish":
            self.controls.finishing.set()
            detail = (
                "finishing: the worker stops after the current experiment (an idle one once"
                f" its wait for work ends, within {self.settings.wait_s:g} s)"
            )
        if detail:
            logger.info("worker %s: %s", name, detail)
        return {"ok": True, "detail": detail, **self.status()}

    def status(self) -> dict[str, Any]:
        controls = self.controls
        state = "running"
        if controls.stop.is_set():
            state = "stopping"
        elif controls.finishing.is_set():
            state = "finishing"
        elif controls.paused.is_set():
            state = "paused"
        return {
            "name": self.settings.name,
            "coordinator": self.settings.join,
            "state": state,
            "paused": controls.paused.is_set(),
            "finishing": controls.finishing.is_set(),
            "stopping": controls.stop.is_set(),
            "outbox": len(self.outbox.pending()),
            "slots": [slot.view() for slot in self.slots],
        }

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._signals += 1
        if signum == signal.SIGINT and self._signals == 1:
            self.controls.finishing.set()
            logger.warning(
                "worker %s: finishing: the current run completes and is reported, then the "
                "worker stops (Ctrl-C again stops it now and hands it back)",
                self.settings.name,
            )
            return
        self.request_stop(immediate=self._signals > 1)

    # ---- running -------------------------------------------------------------------------

    def run(self) -> int:
        """Run until stopped; the exit code (see module doc)."""
        settings = self.settings
        try:
            token = settings.resolved_token()
            refused = token_refused(settings.join, token, timeout_s=settings.request_timeout_s)
            if refused is not None:
                raise InvalidInput(
                    f"the coordinator refused this token ({refused}): check --token, or ask "
                    "its operator for a worker token"
                )
            slots = self._slot_plan()
            cuda = any(gpu is not None for _, _, gpu in slots)
            sandbox = self.sandbox or choose_sandbox(settings, cuda=cuda)
        except (ValueError, OSError, AutoswarmError) as exc:
            logger.error("worker %s: cannot start: %s", settings.name, exc)
            return EXIT_CANNOT_START
        settings.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        lock = StateLock(settings.state_dir)
        try:
            lock.acquire()
        except WorkerAlreadyRunning as exc:
            logger.error("worker %s: cannot start: %s", settings.name, exc)
            return EXIT_CANNOT_START
        client = CoordinatorClient(settings.join, token, timeout_s=settings.request_timeout_s)
        flusher = OutboxFlusher(
            self.outbox, client, Backoff(settings.backoff_min_s, settings.backoff_max_s)
        )
        control = ControlServer(settings.state_dir, self.handle_command)
        try:
            flusher.start()
            flusher.kick()  # reports left by an earlier run go first
            control.start()
            self._install_signals()
            self.slots = [
                self._make_slot(slot, hardware, gpu, client, sandbox, flusher)
                for slot, hardware, gpu in slots
            ]
            for slot in self.slots:
                slot.thread.start()
            self._wait_for_slots()
        finally:
            flusher.stop()
            left = self.outbox.flush(client)
            if left:
                logger.warning(
                    "worker %s: %d reports wait in %s for the next start",
                    settings.name,
                    left,
                    self.outbox.folder,
                )
            control.stop()
            client.close()
            lock.release()
        if self.controls.fatal:
            return EXIT_CANNOT_START
        logger.info("worker %s: stopped", settings.name)
        return EXIT_OK

    def _slot_plan(self) -> list[tuple[str, str, int | None]]:
        """(slot name, hardware class, GPU index) for each slot to run."""
        spec = self.settings.gpus
        if spec is not None and spec.strip().lower() in ("none", ""):
            info = self.hardware or HardwareInfo(platform.machine() or "unknown", cpu_count())
            return [("cpu", info.cpu_class, None)]
        info = self.hardware or detect_hardware()
        if spec is not None and not info.gpus:
            raise InvalidInput(f"--gpus {spec}: no CUDA GPU here ({info.note})")
        indices = select_gpus(spec, count=len(info.gpus))
        if not indices:
            return [("cpu", info.cpu_class, None)]
        by_index = {gpu.index: gpu for gpu in info.gpus}
        return [(f"gpu{i}", by_index[i].hardware_class, i) for i in indices]

    def _make_slot(
        self,
        slot: str,
        hardware: str,
        gpu: int | None,
        client: CoordinatorClient,
        sandbox: Sandbox,
        flusher: OutboxFlusher,
    ) -> WorkerSlot:
        settings = self.settings
        cache_dir = settings.resolved_cache_dir
        env = {} if gpu is None else {"CUDA_VISIBLE_DEVICES": str(gpu)}
        runner = Runner(
            work_root=settings.resolved_work_dir / slot,
            cache_root=cache_dir,
            sandbox=sandbox,
            hardware=hardware,
            env=env,
        )
        name = settings.name if slot == "cpu" else f"{settings.name}/{slot}"
        return WorkerSlot(
            slot=slot,
            name=name,
            hardware=hardware,
            client=client,
            runner=runner,
            bundles=BundleCache(cache_dir),
            outbox=self.outbox,
            flusher=flusher,
            controls=self.controls,
            settings=settings,
        )

    def _install_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return  # e.g. a Ray actor: its owner calls request_stop()
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _wait_for_slots(self) -> None:
        while True:
            if self.controls.fatal:
                self.request_stop(immediate=True)
            alive = [slot for slot in self.slots if slot.thread.is_alive()]
            if not alive:
                return
            if self.controls.stop.is_set():
                waited_s = time.monotonic() - self.controls.stop_requested_at
                blocked = all(
                    slot.current is None and slot.state in (SlotState.LEASING, SlotState.WAITING)
                    for slot in alive
                )
                if blocked and waited_s > LONG_POLL_ABANDON_S:
                    return
            time.sleep(POLL_S)


def run_worker(settings: WorkerSettings, *, sandbox: Sandbox | None = None) -> int:
    """Run a worker until it is stopped; its exit code. Call from the main thread."""
    return Worker(settings, sandbox=sandbox).run()
