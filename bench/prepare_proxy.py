"""Prepare's network: what the allow-list proxy costs a download, and what it costs to start.

A local HTTP server (this process, a thread) serves a file of `--mb` MiB of random bytes.
`curl` fetches it three ways, each `--repeat` times, the best kept:
    direct     on the host, no proxy (the old prepare phase's network)
    narrowed   inside `PrepareNetwork.narrowed` under bubblewrap: the step's own empty
               network namespace, the relay inside, the worker's proxy thread outside
    start      the narrowed wrapper around `true`: what each prepare step now pays to start
The proxy runs in this process as it does in a worker; on 2 shared cores the server, curl,
the relay and the proxy compete for the same CPUs, so the ratio is a floor.

    .venv/bin/python bench/prepare_proxy.py              # 256 MiB, best of 3
    .venv/bin/python bench/prepare_proxy.py --mb 64 --repeat 5
"""

from __future__ import annotations

import argparse
import functools
import http.server
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from autoswarm.worker.bwrap import make_sandbox
from autoswarm.worker.prepare_network import PrepareNetwork


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def best_s(argv: list[str], env: dict[str, str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    curl = shutil.which("curl")
    if curl is None:
        sys.exit("curl is needed")
    folder = Path(tempfile.mkdtemp(prefix="prepare-proxy-"))
    (folder / "blob").write_bytes(os.urandom(args.mb * 2**20))
    handler = functools.partial(_Quiet, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    url = f"http://127.0.0.1:{port}/blob"
    fetch = [curl, "-sSf", "-o", "/dev/null", url]
    env = {"PATH": "/usr/bin:/bin"}
    network = PrepareNetwork.for_sandbox(make_sandbox("sandboxed"))
    log = folder / "log"
    try:
        direct = best_s([*fetch, "--noproxy", "*"], env, args.repeat)
        hosts = [f"127.0.0.1:{port}"]
        with network.narrowed(fetch, env, hosts=hosts, declare=str, log_path=log) as step:
            narrowed = best_s(step.argv, step.env, args.repeat)
        with network.narrowed(["true"], env, hosts=hosts, declare=str, log_path=log) as step:
            start = best_s(step.argv, step.env, max(args.repeat, 5))
    finally:
        server.shutdown()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"cores: {os.cpu_count()}, file: {args.mb} MiB, best of {args.repeat}")
    print(f"direct:   {direct:.3f} s  {args.mb / direct:8.1f} MiB/s")
    print(f"narrowed: {narrowed:.3f} s  {args.mb / narrowed:8.1f} MiB/s")
    print(f"start:    {start * 1000:.0f} ms for a narrowed `true` (bwrap, relay, proxy thread)")


if __name__ == "__main__":
    main()
