"""Coordinator load: lease+report cycles per second, and their latency, by registered workers.

One real coordinator (`python -m autoswarm.coordinator`, its own process, embedded Redis, a temp
data folder, loopback) per fsync mode. A tiny summary-mode task is registered over the API and W
simulated workers (100, 1,000, 10,000: registered once, the levels add to them) under one
worker token. The generator, one asyncio loop in this process, keeps `--concurrency`
cycles in flight, each over its own keep-alive connection: a random registered worker
leases (`wait_s` 0), the fake experiment takes no time, and the worker reports it. Every
cycle is the real path: auth, the worker check, the lease script, the report script and the
judge's verdict (with its event, the indexer's filing and the log lines).

Explores are queued straight into the coordinator's Redis through the store's own
`submit_hypothesis` script (a hypothesis plus its explore, on the head's code): the API path
commits each change to git, too slow to queue the tens of thousands a run needs. Results
score worse than the head (metric 2.0 against baselines of 1.0, lower is better), so every
explore is discarded and the judge queues no replicate: the queue only drains.

The generator speaks HTTP/1.1 itself (no httpx: on 2 shared cores its cost per request
would be counted against the coordinator). The CPU of the coordinator, its Redis and the
generator is read from /proc and reported per cycle, so a reader can tell which one was
short of CPU. Latency is measured in the generator: it includes the generator's own loop.

Target (issue 3): at least 1,000 cycles/s with p99 under 50 ms at 10,000 workers.

    .venv/bin/python bench/coordinator_load.py                        # both fsync modes
    .venv/bin/python bench/coordinator_load.py --workers 100 --duration-s 5 --fsync everysec
    .venv/bin/python bench/coordinator_load.py --profile /tmp/load-profile  # py-spy, extra
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import math
import os
import platform
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from autoswarm.coordinator import keys
from autoswarm.coordinator.heads import new_id
from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.shared.client import CoordinatorClient
from autoswarm.shared.errors import AutoswarmError
from autoswarm.shared.lifetime import die_with_parent
from autoswarm.shared.models import ExperimentKind

REPO = Path(__file__).resolve().parent.parent
HARDWARE = "cpu:load-sim"
TASK_NAME = "loadsim"
HEAD_METRIC = 1.0  # what baselines report
WORSE_METRIC = 2.0  # what every other run reports: never better than the head (minimize)
REQUEST_TIMEOUT_S = 30.0
START_TIMEOUT_S = 60.0
MAX_ERRORS = 100  # a level stops early after this many failed requests
DRAIN_TIMEOUT_S = 120.0  # the judge's catching up after a level, at most
QUIET_CPU = 0.15  # the coordinator counts as idle below this share of a core

TASK_TOML = f"""\
[task]
name = "{TASK_NAME}"
description = "A load-test task: the runs are simulated, nothing executes."
editable = ["train.py"]
protected = []
budget_s = 60

[metric]
name = "score"
direction = "minimize"
"""
TRAIN_PY = """\
SCORE = 1.0  # the metric this run reports
print("---")
print(f"score: {SCORE}")
"""
PROGRAM_MD = "# loadsim\n\nA task for the coordinator's load benchmark.\n"


# ---- a minimal HTTP/1.1 keep-alive client ------------------------------------------------------


class Http:
    """One keep-alive connection to the coordinator; JSON in, (status, body) out."""

    def __init__(self, port: int, token: str) -> None:
        self.port = port
        self.token = token
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None or self._writer.is_closing():
            self._reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self._reader, self._writer

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()
        self._reader = self._writer = None

    async def post(self, path: str, payload: dict[str, Any]) -> tuple[int, bytes]:
        body = json.dumps(payload, separators=(",", ":")).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        return await asyncio.wait_for(self._exchange(head + body), REQUEST_TIMEOUT_S)

    async def get(self, path: str) -> tuple[int, bytes]:
        head = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\n"
            f"Authorization: Bearer {self.token}\r\n\r\n"
        ).encode()
        return await asyncio.wait_for(self._exchange(head), REQUEST_TIMEOUT_S)

    async def _exchange(self, request: bytes) -> tuple[int, bytes]:
        reader, writer = await self._open()
        writer.write(request)
        status_line = await reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("the coordinator closed the connection")
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
        body = await (_read_chunked(reader) if chunked else reader.readexactly(length))
        if close:
            await self.close()
        return status, body


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while size := int((await reader.readline()).split(b";")[0], 16):
        parts.append(await reader.readexactly(size))
        await reader.readline()
    await reader.readline()
    return b"".join(parts)


# ---- the coordinator process -------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stat_cpu_s(stat: Path) -> float:
    """User + system CPU seconds from a /proc stat file; 0 if it is gone."""
    try:
        fields = stat.read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int | None) -> float:
    """CPU seconds a process has used, all its threads."""
    return 0.0 if pid is None else _stat_cpu_s(Path(f"/proc/{pid}/stat"))


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def tree_cpu_s(pid: int | None, skip: int | None) -> float:
    """CPU seconds of a process and its descendants (the API processes), but `skip`'s."""
    if pid is None:
        return 0.0
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        if current != skip:
            total += cpu_s(current)
            todo += _children(current)
    return total


def loop_cpu_s(pid: int | None) -> float:
    """CPU seconds of a process's main thread (the coordinator's event loop)."""
    return 0.0 if pid is None else _stat_cpu_s(Path(f"/proc/{pid}/task/{pid}/stat"))


@dataclass
class Coordinator:
    """A coordinator process on loopback with its own data folder and embedded Redis."""

    data_dir: Path
    fsync: str
    log_level: str
    api_processes: int = 1
    port: int = field(default_factory=free_port)
    admin_token: str = field(default_factory=lambda: "as_bench_" + secrets.token_urlsafe(16))
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def redis_pid(self) -> int | None:
        try:
            return int((self.data_dir / "redis" / "redis.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def redis_url(self) -> str:
        """The embedded Redis's URL, from the config file it keeps in the data folder."""
        conf = dict(
            line.split(" ", 1)
            for line in (self.data_dir / "redis" / "redis.conf").read_text().splitlines()
        )
        return f"redis://:{conf['requirepass']}@127.0.0.1:{conf['port']}/0"

    def start(self) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUTOSWARM_")}
        env |= {
            # The repository first, then whatever the caller had (carried wheels, say).
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
            "AUTOSWARM_DATA_DIR": str(self.data_dir),
            "AUTOSWARM_PORT": str(self.port),
            "AUTOSWARM_ADMIN_TOKEN": self.admin_token,
            "AUTOSWARM_REDIS_APPENDFSYNC": self.fsync,
            "AUTOSWARM_LOG_LEVEL": self.log_level,
            "AUTOSWARM_LEASE_TTL_S": "600",  # every lease is reported at once; none expires
            "AUTOSWARM_API_PROCESSES": str(self.api_processes),
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with (self.data_dir / "coordinator.log").open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "autoswarm.coordinator"],
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent(),  # a benchmark stopped by a signal leaves no server
            )
        with self.client() as client:
            deadline = time.monotonic() + START_TIMEOUT_S
            while True:
                try:
                    client.get_json("/readyz")
                    return
                except AutoswarmError:
                    if time.monotonic() > deadline or self.process.poll() is not None:
                        log_text = (self.data_dir / "coordinator.log").read_text()[-3000:]
                        raise RuntimeError(f"coordinator did not start:\n{log_text}") from None
                    time.sleep(0.2)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def client(self, token: str | None = None) -> CoordinatorClient:
        return CoordinatorClient(self.url, token or self.admin_token, timeout_s=30)

    def cpu_s(self) -> float:
        """The coordinator's CPU seconds: all its API processes, its Redis not included."""
        return tree_cpu_s(self.pid, self.redis_pid)

    def wait_quiet(self, timeout_s: float = 30.0) -> None:
        """Wait until the coordinator's background work (indexing) has settled."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            before = self.cpu_s()
            time.sleep(0.5)
            if (self.cpu_s() - before) / 0.5 < QUIET_CPU:
                return


# ---- setting up: task, workers, queue ----------------------------------------------------------


def register_task(coordinator: Coordinator) -> str:
    files = {"task.toml": TASK_TOML, "train.py": TRAIN_PY, "program.md": PROGRAM_MD}
    with coordinator.client() as admin:
        task = admin.register_task({path: text.encode() for path, text in files.items()})
    return str(task["task_id"])


async def register_workers(
    port: int, token: str, first: int, count: int, concurrency: int
) -> list[str]:
    """Register workers `first` .. `first + count - 1` over the API, `concurrency` at once."""
    names = iter(range(first, first + count))
    ids: dict[int, str] = {}

    async def register() -> None:
        http = Http(port, token)
        try:
            for index in names:
                payload = {"name": f"sim-{index}", "hardware": HARDWARE, "slot": "cpu"}
                status, body = await http.post("/api/v1/workers", payload)
                if status != 201:
                    raise RuntimeError(f"registering sim-{index}: {status} {body[:200]!r}")
                ids[index] = json.loads(body)["worker_id"]
        finally:
            await http.close()

    await asyncio.gather(*(register() for _ in range(concurrency)))
    return [ids[i] for i in sorted(ids)]


def queue_explores(store: Store, task_id: str, count: int, threads: int = 16) -> None:
    """Queue `count` explores of the head's code, each with its own hypothesis."""
    head = store.get_head(task_id, HARDWARE)
    if head is None or not head.ready:
        raise RuntimeError(f"task {task_id} has no measured head on {HARDWARE}")

    def submit(index: int) -> None:
        hypothesis_id, experiment_id = new_id("h"), new_id("e")
        explore = NewExperiment(
            experiment_id,
            task_id,
            ExperimentKind.EXPLORE,
            None,
            {
                "hypothesis_id": hypothesis_id,
                "bundle_hash": head.bundle_hash,
                "parent_commit": head.commit,
                "code_commit": head.commit,
                "code_bytes": head.code_bytes,
            },
        )
        fields = {"title": f"load {index}", "proposer": "load", "parent_commit": head.commit}
        # The explored marker is per submission: the same code may be queued many times here.
        store.submit_hypothesis(
            hypothesis_id, task_id, fields, explore, f"load-{experiment_id}", now=time.time()
        )

    # Concurrent submits share Redis's fsyncs (one per event-loop turn under "always").
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, range(count)))


def queue_depth(client: redis.Redis) -> int:
    return int(client.zcard(keys.QUEUE_ANY))


# ---- the load ----------------------------------------------------------------------------------


@dataclass
class Level:
    """What one level measured."""

    fsync: str
    workers: int
    concurrency: int
    processes: int = 1
    duration_s: float = 0.0
    cycles: int = 0
    empty: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    lease_ms: list[float] = field(default_factory=list)
    report_ms: list[float] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)
    cpu: dict[str, float] = field(default_factory=dict)
    redis_calls: Counter[str] = field(default_factory=Counter)
    loop_ms: float = math.nan  # python_speed_ms() right after the level
    backlog: int = 0  # results not yet judged when the load stopped
    drain_s: float = 0.0  # how long the judge took to apply them (counted in duration_s)

    @property
    def rate(self) -> float:
        return self.cycles / self.duration_s if self.duration_s else 0.0


def quantile(values: Sequence[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _report_payload(lease: dict[str, Any], worker_id: str) -> dict[str, Any]:
    metric = HEAD_METRIC if lease["kind"] == ExperimentKind.BASELINE.value else WORSE_METRIC
    return {
        "experiment_id": lease["experiment_id"],
        "fencing_token": lease["fencing_token"],
        "worker_id": worker_id,
        "result": {
            "status": "ok",
            "metric": metric,
            "metrics": {"score": metric},
            "exit_code": 0,
            "wall_s": 0.0,
            "training_s": 0.0,
            "hardware": HARDWARE,
        },
    }


async def one_cycle(http: Http, worker_id: str, level: Level) -> str | None:
    """Lease, then report at once; what failed, or None (a cycle, or an empty queue)."""
    start = time.perf_counter()
    try:
        status, body = await http.post("/api/v1/leases", {"worker_id": worker_id, "wait_s": 0})
    except (OSError, TimeoutError, ValueError) as exc:
        await http.close()
        return f"lease {type(exc).__name__}"
    leased = time.perf_counter()
    if status == 204:
        level.empty += 1
        await asyncio.sleep(0.01)  # an empty queue: do not spin
        return None
    if status != 200:
        return f"lease {status}"
    lease = json.loads(body)
    try:
        status, body = await http.post("/api/v1/results", _report_payload(lease, worker_id))
    except (OSError, TimeoutError, ValueError) as exc:
        await http.close()
        return f"report {type(exc).__name__}"
    done = time.perf_counter()
    if status not in (200, 201):
        return f"report {status}"
    level.cycles += 1
    level.kinds[lease["kind"]] += 1
    level.lease_ms.append((leased - start) * 1000)
    level.report_ms.append((done - leased) * 1000)
    return None


async def drive(
    port: int,
    token: str,
    worker_ids: Sequence[str],
    level: Level,
    duration_s: float,
    max_cycles: int,
) -> None:
    """`level.concurrency` loops of lease -> report until `duration_s` or `max_cycles`."""
    deadline = time.monotonic() + duration_s
    rng = random.Random(level.workers)

    async def loop() -> None:
        http = Http(port, token)
        try:
            while time.monotonic() < deadline and level.cycles + level.empty < max_cycles:
                failure = await one_cycle(http, rng.choice(worker_ids), level)
                if failure is not None:
                    level.errors[failure] += 1
                    if sum(level.errors.values()) >= MAX_ERRORS:
                        return
        finally:
            await http.close()

    await asyncio.gather(*(loop() for _ in range(level.concurrency)))


def command_calls(client: redis.Redis) -> Counter[str]:
    """Redis's count of calls by command (INFO commandstats), Lua's calls included."""
    stats = client.info("commandstats")
    return Counter({k.removeprefix("cmdstat_"): int(v["calls"]) for k, v in stats.items()})


def run_level(session: Session, level: Level, duration_s: float, max_cycles: int) -> Level:
    coordinator = session.coordinator
    calls = command_calls(session.redis)

    def cpu_now() -> dict[str, float]:
        return {
            "coordinator": coordinator.cpu_s(),
            "redis": cpu_s(coordinator.redis_pid),
            "generator": time.process_time(),
            # One process: its event loop's thread (several: meaningless, the parent's).
            "event loop": loop_cpu_s(coordinator.pid),
        }

    before = cpu_now()
    start = time.monotonic()
    asyncio.run(
        drive(
            coordinator.port,
            session.token,
            session.worker_ids[: level.workers],
            level,
            duration_s,
            max_cycles,
        )
    )
    # The judge applies verdicts off the request path: the level lasts until it caught up.
    level.backlog = int(session.redis.zcard(keys.JUDGE))
    stopped = time.monotonic()
    while session.redis.zcard(keys.JUDGE) and time.monotonic() - stopped < DRAIN_TIMEOUT_S:
        time.sleep(0.01)
    level.drain_s = time.monotonic() - stopped
    level.duration_s = time.monotonic() - start
    after = cpu_now()
    level.cpu = {name: after[name] - before[name] for name in before}
    level.redis_calls = command_calls(session.redis) - calls
    level.redis_calls["info"] -= 1
    level.loop_ms = python_speed_ms()
    return level


def redis_per_cycle(level: Level) -> str:
    """Redis commands per cycle, the most frequent first (the coordinator's background
    indexer and reaper included)."""
    if not level.cycles:
        return "no cycles"
    total = sum(level.redis_calls.values()) / level.cycles
    top = ", ".join(
        f"{name} {n / level.cycles:.1f}" for name, n in level.redis_calls.most_common(8)
    )
    return f"{total:.1f} Redis commands per cycle ({top})"


def cpu_split(level: Level) -> str:
    """The coordinator's CPU per cycle: its event loop against its other threads."""
    if not level.cycles or level.processes > 1:
        return f"coordinator CPU per cycle: {level.cpu['coordinator'] / level.cycles * 1000:.1f} ms"
    loop_ms = level.cpu["event loop"] / level.cycles * 1000
    rest_ms = level.cpu["coordinator"] / level.cycles * 1000 - loop_ms
    return f"coordinator CPU per cycle: event loop {loop_ms:.1f} ms, other threads {rest_ms:.1f} ms"


async def probe_floor(port: int, token: str, count: int = 200) -> tuple[float, float]:
    """p50 and p99 ms of an authenticated no-op request, one at a time: the framework's
    floor (a 404 for an unknown bundle: auth, routing, one Redis read, an error answer)."""
    http = Http(port, token)
    times: list[float] = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            await http.get(f"/api/v1/bundles/{'0' * 64}")
            times.append((time.perf_counter() - start) * 1000)
    finally:
        await http.close()
    return quantile(times, 0.5), quantile(times, 0.99)


def python_speed_ms() -> float:
    """CPU milliseconds of a fixed pure-Python loop: how much a CPU millisecond bought just
    now (on a shared machine the same code costs more CPU time when the cores are busy)."""
    start = time.process_time()
    total = 0
    for i in range(1_000_000):
        total += i
    return (time.process_time() - start) * 1000


def run_baselines(session: Session) -> None:
    """Lease and report the head's baselines, so explores become eligible."""
    level = Level("warm-up", len(session.worker_ids), 1)
    run_level(session, level, 30.0, max_cycles=50)
    if level.kinds[ExperimentKind.BASELINE.value] == 0 or level.errors:
        raise RuntimeError(f"the baselines did not run: {level}")


# ---- profiling ---------------------------------------------------------------------------------


def profile_summary(raw: Path, top: int = 15) -> list[str]:
    """Self and inclusive sample shares from py-spy's collapsed stacks."""
    self_by_fn: Counter[str] = Counter()
    self_by_pkg: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        self_by_fn[frames[-1]] += count
        self_by_pkg[_package(stack.split(";")[-1])] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"py-spy: {total} samples"]
    lines.append("self time by package:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in self_by_pkg.most_common(top)]
    lines.append("self time by function:")
    lines += [f"  {n / total:6.1%}  {name}" for name, n in self_by_fn.most_common(top)]
    lines.append("inclusive, the coordinator's own functions:")
    ours = [(k, n) for k, n in inclusive.most_common() if "coordinator/" in k or "shared/" in k]
    lines += [f"  {n / total:6.1%}  {name}" for name, n in ours[: top * 2]]
    return lines


def _frame(frame: str) -> str:
    """`fn (path:line)` -> `fn (short path)`."""
    name, _, where = frame.partition(" (")
    path = where.rsplit(":", 1)[0]
    return f"{name} ({_short(path)})"


def _short(path: str) -> str:
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.replace(str(REPO) + "/", "")


def _package(frame: str) -> str:
    path = _short(frame.partition(" (")[2].rsplit(":", 1)[0])
    parts = path.split("/")
    if parts[0].startswith(".") or parts[0].isdigit() or len(parts) == 1:
        return "stdlib " + parts[-1]
    return parts[0] if parts[0] not in ("coordinator", "shared") else "/".join(parts[:2])


def profile_level(session: Session, level: Level, duration_s: float, folder: Path) -> None:
    """One extra level with py-spy sampling the coordinator (not in the table)."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    folder.mkdir(parents=True, exist_ok=True)
    raw = folder / f"coordinator-{level.fsync}-{level.workers}.txt"
    pid = str(session.coordinator.pid)
    command = [py_spy, "record", "--pid", pid, "--duration", str(math.ceil(duration_s))]
    # --gil: only the thread holding the GIL, i.e. where the coordinator's CPU goes.
    command += ["--rate", "200", "--nonblocking", "--gil", "--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(1.0)  # py-spy attaches
    run_level(session, level, duration_s - 1.5, max_cycles=10**7)
    _, spy_err = spy.communicate(timeout=60)
    if spy.returncode != 0 or not raw.exists():
        print(f"py-spy failed ({spy.returncode}): {spy_err.decode()[-2000:]}")
        return
    print(
        f"\nprofile ({level.fsync}, {level.workers:,} workers, {level.rate:.0f} cycles/s under "
        f"py-spy), collapsed stacks in {raw}"
    )
    for line in profile_summary(raw):
        print(line)


# ---- one fsync mode, every level ---------------------------------------------------------------


def fmt_level(level: Level) -> str:
    per_cycle = {
        k: (v / level.cycles * 1000 if level.cycles else math.nan) for k, v in level.cpu.items()
    }
    cores = " / ".join(
        f"{level.cpu[k] / level.duration_s:.2f}" for k in ("coordinator", "redis", "generator")
    )
    ms = " / ".join(f"{per_cycle[k]:.1f}" for k in ("coordinator", "redis", "generator"))
    return (
        f"| {level.processes} | {level.fsync} | {level.workers:,} | {level.concurrency} "
        f"| {level.cycles:,} "
        f"| {level.rate:.0f} | {quantile(level.lease_ms, 0.5):.1f} / "
        f"{quantile(level.lease_ms, 0.99):.1f} | {quantile(level.report_ms, 0.5):.1f} / "
        f"{quantile(level.report_ms, 0.99):.1f} | {ms} | {cores} | {level.loop_ms:.0f} |"
    )


@dataclass
class Session:
    """One running coordinator with the benchmark's task, token and workers."""

    coordinator: Coordinator
    store: Store
    redis: redis.Redis  # for the queue's depth and Redis's command counts
    task_id: str
    token: str
    worker_ids: list[str] = field(default_factory=list)

    def add_workers(self, count: int, concurrency: int) -> None:
        started = time.monotonic()
        first = len(self.worker_ids)
        port = self.coordinator.port
        self.worker_ids += asyncio.run(
            register_workers(port, self.token, first, count - first, concurrency)
        )
        took = time.monotonic() - started
        print(
            f"{self.coordinator.fsync}: {count:,} workers registered "
            f"({(count - first) / took:.0f}/s)",
            flush=True,
        )

    def top_up(self, want: int) -> None:
        """Queue explores until `want` are waiting."""
        missing = want - queue_depth(self.redis)
        if missing > 0:
            started = time.monotonic()
            queue_explores(self.store, self.task_id, missing)
            took = time.monotonic() - started
            print(f"{self.coordinator.fsync}: {missing:,} explores queued ({took:.1f} s)")
        self.coordinator.wait_quiet()


def start_session(coordinator: Coordinator) -> Session:
    task_id = register_task(coordinator)
    with coordinator.client() as admin:
        token = admin.create_token("worker", "load")
    url = coordinator.redis_url()
    return Session(coordinator, Store(url), redis.Redis.from_url(url), task_id, token)


def run_mode(fsync: str, args: argparse.Namespace, rows: list[str]) -> None:
    with tempfile.TemporaryDirectory(prefix="coordinator-load-") as tmp:
        coordinator = Coordinator(
            Path(tmp) / "coordinator", fsync, args.log_level, args.api_processes
        )
        coordinator.start()
        session: Session | None = None
        try:
            session = start_session(coordinator)
            floor = asyncio.run(probe_floor(coordinator.port, session.token))
            print(
                f"{fsync}: one authenticated 404, one at a time: p50 {floor[0]:.1f} ms, "
                f"p99 {floor[1]:.1f} ms"
            )
            rate = 0.0
            for count in sorted(args.workers):
                session.add_workers(count, args.concurrency)
                if len(session.worker_ids) == count == min(args.workers):
                    run_baselines(session)
                # Enough for the level at 1.5x the last rate seen (at least --queue).
                session.top_up(max(args.queue, int(rate * args.duration_s * 1.5)))
                level = Level(fsync, count, args.concurrency, args.api_processes)
                run_level(session, level, args.duration_s, args.max_cycles)
                rate = level.rate
                rows.append(fmt_level(level))
                print(rows[-1], flush=True)
                print(f"  {redis_per_cycle(level)}")
                print(f"  {cpu_split(level)}")
                print(
                    f"  judge backlog when the load stopped: {level.backlog:,} results, "
                    f"applied in {level.drain_s:.2f} s (counted in the level's time)"
                )
                if level.empty or level.errors:
                    print(f"  empty leases {level.empty}, errors {dict(level.errors)}")
            if args.profile is not None:
                session.top_up(int(rate * args.duration_s * 1.5))
                level = Level(fsync, len(session.worker_ids), args.concurrency, args.api_processes)
                profile_level(session, level, args.duration_s, args.profile)
        finally:
            if session is not None:
                session.store.close()
                session.redis.close()
            coordinator.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workers", default="100,1000,10000", help="registered workers per level, comma-separated"
    )
    parser.add_argument(
        "--fsync", default="always,everysec", help="the embedded Redis's appendfsync modes to run"
    )
    parser.add_argument("--duration-s", type=float, default=20.0, help="seconds per level")
    parser.add_argument("--concurrency", type=int, default=32, help="cycles in flight")
    parser.add_argument("--max-cycles", type=int, default=200_000, help="cap per level")
    parser.add_argument(
        "--queue", type=int, default=10_000, help="explores queued at least before each level"
    )
    parser.add_argument("--log-level", default="INFO", help="the coordinator's log level")
    parser.add_argument(
        "--api-processes", type=int, default=1, help="the coordinator's API processes"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="one extra level per mode under py-spy; stacks in this folder",
    )
    args = parser.parse_args()
    args.workers = [int(n) for n in args.workers.split(",")]
    args.fsync = args.fsync.split(",")
    load = os.getloadavg()[0]
    print(
        f"coordinator load, {datetime.date.today()}, {platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()}, load average "
        f"{load:.1f}, {args.duration_s:.0f} s per level, log level {args.log_level}, "
        f"loop CPU ms {python_speed_ms():.0f}"
    )
    rows = [
        "| API processes | fsync | workers | in flight | cycles | cycles/s | lease ms p50 / p99 "
        "| report ms p50 / p99 | CPU ms per cycle: coordinator / redis / generator "
        "| cores: coordinator / redis / generator | loop CPU ms |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for fsync in args.fsync:
        run_mode(fsync, args, rows)
    print("\n" + "\n".join(rows))
    print(f"load average after: {os.getloadavg()[0]:.1f}, loop CPU ms {python_speed_ms():.0f}")


if __name__ == "__main__":
    main()
