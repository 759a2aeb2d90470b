"""How fast the dashboard's pages and the read API answer with many experiments in Redis.

Loads N experiments (default 100,000) into a fresh redis-server: the first `--real` (default
1,000) through the store's own write path (the Lua scripts that submit, lease and report,
the real scheduler judging each result, git for the kept changes and merges), the rest by a
bulk loader that copies those records in pipelines (the same keys and fields the write path
wrote, with new ids, times, workers and scores, and their result and verdict events). Then
starts the coordinator, waits until its indexer has filed everything from scratch, and
times each dashboard page and read over HTTP: p50 / p95 of `-r` requests each (after one
warm-up). Target: under 200 ms. Prints markdown rows.

    .venv/bin/python bench/dashboard_latency.py [-n 100000] [--real 1000] [-r 50] [--browser]
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import platform
import random
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import redis

from autoswarm.coordinator import keys
from autoswarm.coordinator.hypotheses import submit_hypothesis
from autoswarm.coordinator.models import WorkerRecord
from autoswarm.coordinator.redis_server import free_port, redis_binary
from autoswarm.coordinator.scheduler import Scheduler
from autoswarm.coordinator.service import serve_in_thread
from autoswarm.coordinator.settings import CoordinatorSettings
from autoswarm.coordinator.store import NewExperiment, Store
from autoswarm.coordinator.tasks import register_task
from autoswarm.shared.lifetime import die_with_parent
from autoswarm.shared.models import ExperimentKind, HypothesisCreate, Result, ResultStatus

CLASSES = {
    "cuda:NVIDIA-H100-80GB-HBM3": 0.9,
    "cuda:NVIDIA-A100-SXM4-80GB": 1.0,
    "cpu:x86_64-16c": 1.3,
}
OWNERS = 60
WORKERS_PER_OWNER = 5
WITH_GIT = 100  # the first hypotheses go through git too, so their diffs are real
KEPT_EVERY = 4000
CRASH_EVERY = 20
LOG_TAIL = "step 100 | loss 1.234 | lr 3e-4\n" * 45  # ~1.5 KB, as a real run's tail
TRAIN = "LR = {lr!r}  # learning rate\nprint('---')\nprint('val_bpb: 1.0')\n"
TOML = '[task]\nname = "bench"\nbudget_s = 300\n\n[metric]\nname = "val_bpb"\n'
PROPOSERS = ["mutation", "llm:openai/gpt-4o-mini", "llm:anthropic/claude-sonnet", "human"]


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


class Loader:
    """Submits, leases, reports and judges experiments through the store and scheduler."""

    def __init__(self, store: Store, scheduler: Scheduler, task_id: str, n: int) -> None:
        self.store, self.scheduler, self.task_id, self.n = store, scheduler, task_id, n
        self.redis = redis.Redis.from_url(store.url, decode_responses=True)
        self.rng = random.Random(0)
        self.t0 = time.time() - n * 10.0
        self.now = self.t0
        self.workers: dict[str, list[WorkerRecord]] = {hw: [] for hw in CLASSES}
        self.turn = 0
        self.lr = 3e-4
        self.with_diff = ""
        self.hypotheses: dict[str, dict[str, str]] = {}

    def tick(self) -> float:
        self.now += 10.0
        return self.now

    def add_workers(self) -> None:
        for o in range(OWNERS):
            owner = f"team-{o % 6}/owner-{o}" if o % 2 else f"owner-{o}"
            for w in range(WORKERS_PER_OWNER):
                hw = list(CLASSES)[(o + w) % len(CLASSES)]
                record = WorkerRecord(
                    worker_id=f"w{o}-{w}",
                    name=f"{owner}-{w}",
                    hardware=hw,
                    owner=owner,
                    token_hash="0" * 64,
                    registered_s=self.t0,
                )
                self.store.put_worker(record)
                self.workers[hw].append(record)
        task = self.scheduler.reads.get_task(self.task_id)
        for hw in CLASSES:
            self.scheduler.ensure_class(task, hw)

    def queued(self) -> int:
        names = [keys.QUEUE_ANY, *(keys.queue(hw) for hw in CLASSES)]
        return sum(int(self.redis.zcard(name)) for name in names)

    def metric_for(self, kind: str, hw: str, candidate_metric: float | None) -> float | None:
        base = CLASSES[hw]
        if kind == "replicate" and candidate_metric is not None:
            return candidate_metric + self.rng.gauss(0, 0.001)
        if kind == "baseline":
            head = self.store.get_head(self.task_id, hw)
            runs = self.store.get_runs(self.task_id, hw).get(head.commit if head else "", [])
            centre = statistics.fmean(runs) if runs else base
            return centre + self.rng.gauss(0, 0.002)
        return None

    def handle(self, worker: WorkerRecord, experiment_id: str, token: int) -> None:
        exp = self.store.get_experiment(experiment_id)
        assert exp is not None
        hw = worker.hardware
        metric: float | None
        if exp.kind is ExperimentKind.MERGE:
            cand = self.store.get_experiment(exp.candidate_id or "")
            metric = cand.result.metric if cand and cand.result else None
        elif exp.kind is ExperimentKind.EXPLORE:
            seq = exp.seq
            if seq % CRASH_EVERY == 0:
                metric = None
            else:
                _, stats = self.scheduler.heads.stats(self.task_id, hw)
                centre = stats.mean if stats.mean is not None else CLASSES[hw]
                better = self.rng.random() < 1.0 / KEPT_EVERY * 4
                metric = centre - 0.05 if better else centre + abs(self.rng.gauss(0.02, 0.01))
        else:
            cand = self.store.get_experiment(exp.candidate_id or "")
            cand_metric = cand.result.metric if cand and cand.result else None
            metric = self.metric_for(exp.kind.value, hw, cand_metric)
        status = ResultStatus.OK if metric is not None else ResultStatus.CRASH
        result = Result(
            status=status,
            metric=metric,
            wall_s=295.0 + self.rng.random() * 10,
            peak_vram_mb=40_000.0 if hw.startswith("cuda") else None,
            peak_rss_mb=3_000.0,
            log_tail=LOG_TAIL,
            error=None if metric is not None else "RuntimeError: CUDA out of memory",
            hardware=hw,
        )
        self.store.report(
            experiment_id, worker.worker_id, token, result, now=self.tick(), max_attempts=3
        )
        self.scheduler.judge_experiment(experiment_id)

    def drain(self) -> None:
        """Lease and run everything queued, each class's workers in turn."""
        while self.queued():
            classes = list(CLASSES)
            leased = False
            for k in range(len(classes)):
                hw = classes[(self.turn + k) % len(classes)]
                pool = self.workers[hw]
                for j in range(min(len(pool), 8)):
                    worker = pool[(self.turn * 7 + j) % len(pool)]
                    got = self.store.lease(
                        worker.worker_id, worker.owner, hw, now=self.tick(), lease_ttl_s=600
                    )
                    if got is not None:
                        self.handle(worker, got.experiment_id, got.fencing_token)
                        leased = True
                        break
                if leased:
                    break
            self.turn += 1
            if not leased:
                raise RuntimeError("queued experiments that no worker can lease")

    def submit(self, i: int) -> None:
        task = self.scheduler.reads.get_task(self.task_id)
        head = self.scheduler.reads.primary_head(task)
        assert head is not None
        proposer = PROPOSERS[i % len(PROPOSERS)]
        title = f"try LR={self.lr * (1 + (i % 17) / 10):.3g} (idea {i})"
        if i < WITH_GIT:
            self.lr *= 1.01
            create = HypothesisCreate(
                task_id=self.task_id,
                title=title,
                rationale="a slightly different learning rate",
                change={"train.py": TRAIN.format(lr=self.lr)},
                proposer=proposer,
                author="bench",
            )
            submitted = submit_hypothesis(self.scheduler.reads, create)
            self.with_diff = self.with_diff or (submitted.experiment_id or "")
            return
        bundle = hashlib.sha256(f"bench-{i}".encode()).hexdigest()
        experiment_id, hypothesis_id = f"eb{i:09d}", f"hb{i:09d}"
        explore = NewExperiment(
            experiment_id,
            self.task_id,
            ExperimentKind.EXPLORE,
            None,
            {
                "hypothesis_id": hypothesis_id,
                "bundle_hash": bundle,
                "parent_commit": head.commit,
                "code_commit": "",
                "code_bytes": 100 + i % 50,
            },
        )
        fields = {
            "title": title,
            "rationale": "a slightly different learning rate",
            "proposer": proposer,
            "author": "bench",
            "parent_commit": head.commit,
            "change_hash": bundle,
        }
        self.store.submit_hypothesis(
            hypothesis_id, self.task_id, fields, explore, bundle, now=self.tick()
        )

    def load(self) -> None:
        self.add_workers()
        self.drain()
        explores = 0
        while int(self.redis.zcard(keys.task_experiments(self.task_id))) < self.n:
            self.submit(explores)
            explores += 1
            self.drain()

    def clone(self, count: int, batch: int = 1000) -> None:
        """`count` more explores, copied from the finished ones (see the module doc)."""
        done = [
            e
            for e in self.store.get_experiments(
                list(self.redis.zrange(keys.task_experiments(self.task_id), 0, -1))
            )
            if e.kind is ExperimentKind.EXPLORE and e.verdict is not None and e.result
        ]
        templates = [
            (self.redis.hgetall(keys.experiment(e.experiment_id)), e)
            for e in done
            if e.verdict is not None and e.verdict.value in ("discarded", "crashed")
        ]
        first = int(self.redis.incrby(keys.SEQ, 2 * count)) - 2 * count
        everyone = [w for pool in self.workers.values() for w in pool]
        for start in range(0, count, batch):
            pipe = self.redis.pipeline(transaction=False)
            for i in range(start, min(count, start + batch)):
                self._clone_one(pipe, i, first + 2 * i, templates, everyone)
            pipe.execute()

    def _clone_one(
        self,
        pipe: Any,
        i: int,
        seq: int,
        templates: list[tuple[dict[str, str], Any]],
        everyone: list[WorkerRecord],
    ) -> None:
        raw, exp = templates[i % len(templates)]
        worker = everyone[self.rng.randrange(len(everyone))]
        hyp = self.hypotheses.get(exp.hypothesis_id or "")
        if hyp is None:
            hyp = self.redis.hgetall(keys.hypothesis(exp.hypothesis_id or ""))
            self.hypotheses[exp.hypothesis_id or ""] = hyp
        hw, now = worker.hardware, self.tick()
        eid, hid, bundle = f"ec{i:09d}", f"hc{i:09d}", hashlib.sha256(f"c{i}".encode()).hexdigest()
        crashed = exp.verdict is not None and exp.verdict.value == "crashed"
        metric = None if crashed else CLASSES[hw] + abs(self.rng.gauss(0.02, 0.01))
        result = exp.result.model_copy(update={"metric": metric, "hardware": hw})
        hyp_fields = {**hyp, "hypothesis_id": hid, "seq": seq + 1, "created_s": now,
                      "experiment_id": eid, "change_hash": bundle, "metric": metric or "",
                      "hardware": hw, "title": f"{hyp.get('title', '')} (copy {i})"}  # fmt: skip
        exp_fields = {**raw, "experiment_id": eid, "hypothesis_id": hid, "seq": seq + 2,
                      "score": 2e12 + seq + 2, "created_s": now, "leased_s": now + 1,
                      "finished_s": now + 300, "worker_id": worker.worker_id,
                      "owner": worker.owner, "measured_on": hw, "bundle_hash": bundle,
                      "code_commit": "", "result": result.model_dump_json(),
                      "reported_worker": worker.worker_id}  # fmt: skip
        pipe.hset(keys.hypothesis(hid), mapping=hyp_fields)
        pipe.zadd(keys.task_hypotheses(self.task_id), {hid: seq + 1})
        pipe.hset(keys.experiment(eid), mapping=exp_fields)
        pipe.zadd(keys.EXPERIMENTS, {eid: seq + 2})
        pipe.zadd(keys.task_experiments(self.task_id), {eid: seq + 2})
        pipe.set(keys.explored(self.task_id, bundle), eid)
        status = result.status.value
        pipe.xadd(keys.EVENTS, {"type": "result", "experiment_id": eid, "task_id": self.task_id,
                                "kind": "explore", "status": status, "metric": metric or "",
                                "worker_id": worker.worker_id, "state": "done",
                                "time_s": now + 300}, maxlen=100_000)  # fmt: skip
        pipe.xadd(keys.EVENTS, {"type": "verdict", "task_id": self.task_id, "experiment_id": eid,
                                "hypothesis_id": hid, "verdict": raw.get("verdict", ""),
                                "reason": raw.get("reason", ""), "hardware": hw,
                                "metric": metric or "", "time_s": now + 300},
                  maxlen=100_000)  # fmt: skip


def timed(client: httpx.Client, path: str, params: dict[str, Any], rounds: int) -> list[float]:
    client.get(path, params=params).raise_for_status()  # warm-up
    out = []
    for _ in range(rounds):
        start = time.perf_counter()
        answer = client.get(path, params=params)
        out.append((time.perf_counter() - start) * 1000)
        answer.raise_for_status()
    return out


def reads(
    client: httpx.Client, task_id: str, with_diff: str
) -> list[tuple[str, str, dict[str, Any]]]:
    """(label, path, params) of every page and read to time."""
    api = "/api/v1"
    h100 = "cuda:NVIDIA-H100-80GB-HBM3"
    table = {"task_id": task_id, "view": "summary", "limit": 50}
    page = client.get(f"{api}/experiments", params={**table, "limit": 500}).json()
    newest = page["experiments"][0]["created_s"]
    deep = page["next_cursor"]
    total = int(client.get(f"{api}/tasks/{task_id}/leaderboard").json()["counts"]["kind:explore"])
    for _ in range(max(0, total // 1000 - 1)):  # half-way down
        deep = client.get(
            f"{api}/experiments", params={**table, "limit": 500, "cursor": deep}
        ).json()["next_cursor"]
    mid = newest - (newest - page["experiments"][-1]["created_s"]) * total / 1000
    kept = client.get(f"{api}/experiments", params={"task_id": task_id, "verdict": "kept"}).json()
    return [
        ("dashboard page `/tasks/{id}` (HTML)", f"/tasks/{task_id}", {}),
        ("`app.js`", "/ui/app.js", {}),
        ("tasks", f"{api}/tasks", {}),
        ("task", f"{api}/tasks/{task_id}", {}),
        ("leaderboard", f"{api}/tasks/{task_id}/leaderboard", {}),
        ("progress (2,000 newest points)", f"{api}/tasks/{task_id}/progress", {}),
        ("lineage tree", f"{api}/tasks/{task_id}/lineage", {}),
        ("experiments table, page 1", f"{api}/experiments", table),
        ("experiments table, half-way down", f"{api}/experiments", {**table, "cursor": deep}),
        ("filter verdict=kept", f"{api}/experiments", {**table, "verdict": "kept"}),
        ("filter result=crash", f"{api}/experiments", {**table, "result": "crash"}),
        (
            "filter kind=explore & verdict=discarded & hardware=H100",
            f"{api}/experiments",
            {**table, "kind": "explore", "verdict": "discarded", "hardware": h100},
        ),
        ("filter owner", f"{api}/experiments", {**table, "owner": "team-1/owner-1"}),
        ("filter model", f"{api}/experiments", {**table, "model": "anthropic/claude-sonnet"}),
        ("filter time range", f"{api}/experiments", {**table, "since": mid, "until": mid + 50_000}),
        ("filter state=queued (none)", f"{api}/experiments", {**table, "status": "queued"}),
        ("sort=score, H100", f"{api}/experiments", {**table, "sort": "score", "hardware": h100}),
        ("one experiment with its diff", f"{api}/experiments/{with_diff}", {}),
        ("one kept experiment", f"{api}/experiments/{kept['experiments'][0]['experiment_id']}", {}),
        ("contributors", f"{api}/contributors", {}),
    ]


def browser_load(base_url: str, token: str, task_id: str, rounds: int) -> list[float]:
    """Chromium: ms from navigation to the task page drawn (chart, table, leaderboard)."""
    from playwright.sync_api import sync_playwright

    out = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox"]
        )
        page = browser.new_page()
        page.goto(f"{base_url}/#token={token}")
        for _ in range(rounds):
            start = time.perf_counter()
            page.goto(f"{base_url}/tasks/{task_id}")
            page.wait_for_selector("body[data-ready='1']")
            out.append((time.perf_counter() - start) * 1000)
        browser.close()
    return out


def wait_indexed(url: str) -> float:
    """Seconds until the indexer has filed every experiment."""
    client = redis.Redis.from_url(url, decode_responses=True)
    start = time.perf_counter()
    last = int(client.zrevrange(keys.EXPERIMENTS, 0, 0, withscores=True)[0][1])
    while int(client.hget(keys.IX_CURSOR, "seq") or 0) < last:
        time.sleep(0.2)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="experiments (default 100,000)")
    parser.add_argument("--real", type=int, default=1000, help="through the write path")
    parser.add_argument("-r", type=int, default=50, help="requests per read (default 50)")
    parser.add_argument("--browser", action="store_true", help="also time Chromium page loads")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        port = free_port()
        server = subprocess.Popen(
            [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(root)],
            stdout=subprocess.DEVNULL,
            preexec_fn=die_with_parent(),
        )  # fmt: skip
        url = f"redis://127.0.0.1:{port}/0"
        try:
            time.sleep(0.5)
            run(root, url, args)
        finally:
            server.terminate()
            server.wait()


def run(root: Path, url: str, args: argparse.Namespace) -> None:
    token = "as_bench_" + secrets.token_urlsafe(12)
    settings = CoordinatorSettings(
        redis_url=url,
        data_dir=root / "data",
        port=free_port(),
        admin_token=token,
        baseline_runs=2,
        reaper_interval_s=1.0,
    )
    task_dir = root / "task"
    task_dir.mkdir()
    (task_dir / "task.toml").write_text(TOML)
    (task_dir / "train.py").write_text(TRAIN.format(lr=3e-4))
    (task_dir / "prepare.py").write_text("")
    store = Store(url)
    scheduler = Scheduler(store, settings)
    task = register_task(store, settings, task_dir)
    start = time.perf_counter()
    loader = Loader(store, scheduler, task.task_id, min(args.n, args.real))
    loader.load()
    real_s = time.perf_counter() - start
    copies = args.n - int(loader.redis.zcard(keys.task_experiments(task.task_id)))
    loader.clone(max(0, copies))
    load_s = time.perf_counter() - start
    memory = redis.Redis.from_url(url).info("memory")["used_memory_human"]
    store.close()
    handle = serve_in_thread(settings)
    try:
        index_s = wait_indexed(url)
        client = httpx.Client(
            base_url=handle.url, headers={"Authorization": f"Bearer {token}"}, timeout=60
        )
        rows = []
        for label, path, params in reads(client, task.task_id, loader.with_diff):
            times = timed(client, path, params, args.r)
            rows.append((label, statistics.median(times), p95(times)))
        if args.browser:
            times = browser_load(handle.url, token, task.task_id, max(5, args.r // 5))
            rows.append(("Chromium: task page drawn", statistics.median(times), p95(times)))
        client.close()
    finally:
        handle.stop()
    date = datetime.date.today().isoformat()
    cpu = f"{platform.machine()}, Python {platform.python_version()}"
    print(f"{date}, {cpu}: {args.n} experiments ({args.real} through the write path in "
          f"{real_s:.0f} s, all in {load_s:.0f} s; Redis {memory}); indexed from scratch "
          f"in {index_s:.1f} s")  # fmt: skip
    print("| read | p50 ms | p95 ms |\n| --- | --- | --- |")
    for label, p50, high in rows:
        print(f"| {label} | {p50:.1f} | {high:.1f} |")


if __name__ == "__main__":
    main()
