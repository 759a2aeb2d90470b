"""The prepare phase's network: its own empty namespace, out only through the worker's
allow-list proxy, to the package index and the hosts the task declares. Local HTTP servers
stand in for an allowed and a not-allowed host; nothing here needs the internet."""

from __future__ import annotations

import functools
import http.server
import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from autoswarm.cli.task_explain import explain_task
from autoswarm.shared.environment import environment_hosts
from autoswarm.shared.errors import SandboxUnavailable, TaskError
from autoswarm.shared.hosts import HostRule, url_host
from autoswarm.shared.task import load_task
from autoswarm.worker import egress
from autoswarm.worker.bwrap import make_sandbox
from autoswarm.worker.egress import EgressProxy
from autoswarm.worker.prepare import PrepareError
from autoswarm.worker.prepare_network import PYPI_HOSTS, index_hosts
from autoswarm.worker.runner import Runner
from autoswarm.worker.sandbox import Sandbox
from tests.cli_helpers import invoke
from tests.conftest import RunningCoordinator
from tests.environment_helpers import make_ar_fixture
from tests.task_helpers import write_task
from tests.test_environments import WORKER_TOML
from tests.test_hostile_heldout import finished_experiment
from tests.worker_helpers import WorkerFactory, register_task

GREETING = "hello from the allowed host"
FETCH_PREPARE = '''\
"""Fetches from a declared and an undeclared host, tries one directly; writes what came."""
import json, os, socket, urllib.request
ALLOWED = {allowed}  # port of the host task.toml declares
OTHER = {other}  # port of a host it does not
came = {{}}
for name, port in (("allowed", ALLOWED), ("other", OTHER)):
    try:
        url = f"http://127.0.0.1:{{port}}/greeting.txt"
        came[name] = urllib.request.urlopen(url, timeout=20).read().decode()
    except Exception as exc:
        came[name] = f"failed: {{exc}}"
try:
    socket.create_connection(("127.0.0.1", ALLOWED), timeout=5).close()
    came["direct"] = "reached"
except OSError as exc:
    came["direct"] = f"failed: {{exc}}"
with open(os.path.join(os.environ["AUTOSWARM_DATA_DIR"], "came.json"), "w") as f:
    json.dump(came, f)
print(came)
'''
FETCH_TRAIN = f'''\
"""Reports what prepare could fetch."""
import json
came = json.load(open("data/came.json"))
print("---")
print(f"allowed_ok:  {{int(came['allowed'] == {GREETING!r})}}")
print(f"other_ok:    {{int(not came['other'].startswith('failed'))}}")
print(f"direct_ok:   {{int(came['direct'] == 'reached')}}")
'''
FETCH_TOML = """\
[task]
name = "fetcher"
budget_s = 5

[metric]
name = "allowed_ok"
direction = "maximize"

[run]
prepare = ["python", "prepare.py"]
{hosts}
"""


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], int]]:
    """Starts local HTTP servers, each serving a folder of the given files; their ports."""
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(files: dict[str, str]) -> int:
        folder = tmp_path / f"site-{len(servers)}"
        folder.mkdir()
        for name, text in files.items():
            (folder / name).write_text(text)
        return serve_folder(folder)

    def serve_folder(folder: Path) -> int:
        handler = functools.partial(_Quiet, directory=str(folder))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return int(server.server_address[1])

    start.folder = serve_folder  # type: ignore[attr-defined]
    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def sandbox_or_skip() -> Sandbox:
    try:
        return make_sandbox("sandboxed")
    except SandboxUnavailable as exc:
        pytest.skip(f"bubblewrap cannot run here: {exc}")


def fetch_task(root: Path, allowed: int, other: int, hosts: str) -> Path:
    return write_task(
        root / "fetcher",
        {
            "prepare.py": FETCH_PREPARE.format(allowed=allowed, other=other),
            "train.py": FETCH_TRAIN,
            "task.toml": FETCH_TOML.format(hosts=hosts),
        },
    )


def came(prepared: Path) -> dict[str, str]:
    return dict(json.loads((prepared / "data" / "came.json").read_text()))


# ---- the prepare step --------------------------------------------------------------------


def test_prepare_reaches_a_declared_host_through_the_proxy_and_no_other(
    tmp_path: Path, serve: Callable[[dict[str, str]], int]
) -> None:
    """Declared 127.0.0.1:A: the fetch from A works; B is refused, its line in the prepare
    log naming the host and the field to declare it in; a direct connection fails."""
    allowed, other = serve({"greeting.txt": GREETING}), serve({"greeting.txt": "secret"})
    folder = fetch_task(tmp_path, allowed, other, f'prepare_hosts = ["127.0.0.1:{allowed}"]')
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=sandbox_or_skip())
    prepared = runner.preparer.prepare(folder, load_task(folder))
    got = came(prepared)
    assert got["allowed"] == GREETING
    assert got["other"].startswith("failed") and "403" in got["other"], got
    assert got["direct"].startswith("failed"), got
    log = (prepared / "prepare.log").read_text()
    refused = [line for line in log.splitlines() if line.startswith("autoswarm:")]
    assert refused == [
        f"autoswarm: prepare's network refused 127.0.0.1:{other}: not declared by the task; "
        f'add it to task.toml: [run] prepare_hosts = ["127.0.0.1:{other}"]'
    ]


def test_a_prepare_that_declares_no_host_reaches_none(
    tmp_path: Path, serve: Callable[[dict[str, str]], int]
) -> None:
    """No prepare_hosts: nothing passes, not even a host on this machine's loopback."""
    allowed, other = serve({"greeting.txt": GREETING}), serve({"greeting.txt": "secret"})
    folder = fetch_task(tmp_path, allowed, other, "")
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=sandbox_or_skip())
    got = came(runner.preparer.prepare(folder, load_task(folder)))
    assert all(value.startswith("failed") for value in got.values()), got


def test_a_failed_prepare_names_the_refused_host_in_its_error(
    tmp_path: Path, serve: Callable[[dict[str, str]], int]
) -> None:
    """A prepare that fails because a host was refused: the error's log tail says which
    host, and where to declare it."""
    other = serve({"greeting.txt": "secret"})
    fetch = (
        f"import urllib.request\nurllib.request.urlopen('http://127.0.0.1:{other}/greeting.txt')\n"
    )
    folder = write_task(
        tmp_path / "strict",
        {"prepare.py": fetch, "train.py": FETCH_TRAIN, "task.toml": FETCH_TOML.format(hosts="")},
    )
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=sandbox_or_skip())
    with pytest.raises(PrepareError, match=rf"refused 127\.0\.0\.1:{other}.*prepare_hosts"):
        runner.preparer.prepare(folder, load_task(folder))


def test_task_run_prepares_through_the_proxy(
    tmp_path: Path, serve: Callable[[dict[str, str]], int]
) -> None:
    """`task run --trust sandboxed`: the declared host's content reaches the run's data, the
    undeclared one and a direct connection do not."""
    sandbox_or_skip()
    allowed, other = serve({"greeting.txt": GREETING}), serve({"greeting.txt": "secret"})
    folder = fetch_task(tmp_path, allowed, other, f'prepare_hosts = ["127.0.0.1:{allowed}"]')
    work = tmp_path / "local"
    answer = invoke("task", "run", str(folder), "--budget", "5", "--trust", "sandboxed",
                    "--work-dir", str(work))  # fmt: skip
    assert answer.exit_code == 0, answer.output
    assert "allowed_ok:  1" in answer.stdout
    assert "other_ok:    0" in answer.stdout
    assert "direct_ok:   0" in answer.stdout
    logs = [p.read_text() for p in work.glob("cache/prepare/*/prepare.log")]
    assert len(logs) == 1 and f"refused 127.0.0.1:{other}" in logs[0]


def test_a_sandboxed_worker_prepares_through_the_proxy(
    coordinator: RunningCoordinator,
    tmp_path: Path,
    serve: Callable[[dict[str, str]], int],
) -> None:
    """A real sandboxed worker: its prepare fetches from the declared host only."""
    sandbox_or_skip()
    allowed, other = serve({"greeting.txt": GREETING}), serve({"greeting.txt": "secret"})
    folder = fetch_task(tmp_path, allowed, other, f'prepare_hosts = ["127.0.0.1:{allowed}"]')
    task_id = register_task(coordinator, folder)
    workers = WorkerFactory(tmp_path / "workers")
    state = tmp_path / "workers" / "w1" / "state"
    token = coordinator.create_token("worker", "volunteer")
    try:
        workers.start(coordinator, token, "w1", "--trust", "sandboxed", state_dir=state)
        experiment = finished_experiment(coordinator, task_id)
    finally:
        workers.stop_all()
    result = experiment["result"]
    assert isinstance(result, dict)
    assert result["status"] == "ok", json.dumps(result)[:3000]
    assert result["metrics"]["allowed_ok"] == 1
    assert result["metrics"]["other_ok"] == 0
    assert result["metrics"]["direct_ok"] == 0
    logs = [p.read_text() for p in state.glob("cache/prepare/*/prepare.log")]
    assert len(logs) == 1 and f"refused 127.0.0.1:{other}" in logs[0]


# ---- the environment build ---------------------------------------------------------------


def requirements_task(root: Path) -> Path:
    fixture = make_ar_fixture(root, port=1, heldout_glob="/nonexistent", task_toml=WORKER_TOML)
    for name in ("pyproject.toml", "uv.lock"):
        (fixture.folder / name).unlink()
    (fixture.folder / "requirements.txt").write_text("kernels==0.0.1\n")
    return fixture.folder


WHEEL = "kernels-0.0.1-py3-none-any.whl"


def package_index(root: Path, wheels: Path, wheel_url: str) -> Path:
    """A PEP 503 index folder whose one project, kernels, links its wheel at `wheel_url`;
    the wheel itself beside it."""
    project = root / "simple" / "kernels"
    project.mkdir(parents=True)
    (project / "index.html").write_text(
        f'<html><body><a href="{wheel_url}">{WHEEL}</a></body></html>'
    )
    (root / WHEEL).write_bytes((wheels / WHEEL).read_bytes())
    return root


def test_an_environment_builds_from_the_workers_index_through_the_proxy(
    tmp_path: Path, serve: Callable[[dict[str, str]], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker's UV_INDEX_URL is a local HTTP host: uv reaches it through the proxy and
    the run imports the package it installed."""
    sandbox = sandbox_or_skip()
    folder = requirements_task(tmp_path)
    index = serve.folder(package_index(tmp_path / "index", tmp_path / "wheels", f"/{WHEEL}"))  # type: ignore[attr-defined]
    monkeypatch.setenv("UV_INDEX_URL", f"http://127.0.0.1:{index}/simple")
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=sandbox)
    result = runner.run(folder, load_task(folder), budget_s=5)
    assert result.status == "ok", result.log_tail
    assert result.metric == pytest.approx(1.9)


def test_an_environment_build_reaches_no_host_beyond_the_index(
    tmp_path: Path, serve: Callable[[dict[str, str]], int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index links its wheel on another host: uv is refused there, and the build's
    error names that host; nothing is built."""
    sandbox = sandbox_or_skip()
    folder = requirements_task(tmp_path)
    elsewhere = serve.folder(tmp_path / "wheels")  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{elsewhere}/{WHEEL}"
    index = serve.folder(package_index(tmp_path / "index", tmp_path / "wheels", url))  # type: ignore[attr-defined]
    monkeypatch.setenv("UV_INDEX_URL", f"http://127.0.0.1:{index}/simple")
    runner = Runner(work_root=tmp_path / "w", cache_root=tmp_path / "c", sandbox=sandbox)
    with pytest.raises(PrepareError, match=rf"refused 127\.0\.0\.1:{elsewhere}"):
        runner.preparer.prepare(folder, load_task(folder))
    assert list((tmp_path / "c" / "envs").glob("*/ready")) == []


# ---- the proxy against hostile clients ---------------------------------------------------


def exchange(path: Path, request: bytes, *, timeout_s: float = 20.0) -> bytes:
    """Send `request` to the proxy's socket; everything it answers before closing."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(timeout_s)
        client.connect(str(path))
        client.sendall(request)
        answer = b""
        while chunk := client.recv(65536):
            answer += chunk
        return answer


@pytest.fixture
def proxy(serve: Callable[[dict[str, str]], int]) -> Iterator[tuple[EgressProxy, int]]:
    """A proxy allowing one local host; that host's port."""
    port = serve({"greeting.txt": GREETING})
    running = EgressProxy((HostRule.parse(f"127.0.0.1:{port}"),), lambda h, p: f"no {h}:{p}")
    running.start()
    yield running, port
    running.stop()


def test_the_proxy_tunnels_connect_and_forwards_plain_http_to_an_allowed_host(
    proxy: tuple[EgressProxy, int],
) -> None:
    """CONNECT host:port is tunnelled as it is; `GET http://host/...` is forwarded."""
    running, port = proxy
    assert running.socket_path is not None
    inner = f"GET /greeting.txt HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    tunnelled = exchange(
        running.socket_path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n{inner}".encode()
    )
    assert tunnelled.startswith(b"HTTP/1.1 200 Connection established") and tunnelled.endswith(
        GREETING.encode()
    )
    forwarded = exchange(
        running.socket_path,
        f"GET http://127.0.0.1:{port}/greeting.txt HTTP/1.1\r\nHost: x\r\n"
        "Proxy-Connection: keep-alive\r\n\r\n".encode(),
    )
    assert forwarded.startswith(b"HTTP/1.0 200") and forwarded.endswith(GREETING.encode())


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"HELLO\r\n\r\n", b"400"),
        (b"GET /greeting.txt HTTP/1.1\r\n\r\n", b"400"),  # not a proxy request
        (b"CONNECT user@127.0.0.1:80 HTTP/1.1\r\n\r\n", b"400"),
        (b"CONNECT 127.0.0.1:99999 HTTP/1.1\r\n\r\n", b"400"),
        (b"GET https://127.0.0.1/ HTTP/1.1\r\n\r\n", b"400"),  # https is CONNECT's
        (b"\xff\xfe\x00garbage\r\n\r\n", b"400"),
        (b"GET http://127.0.0.1/ HTTP/1.1\r\nX: " + b"a" * 40000 + b"\r\n\r\n", b"431"),
        (b"CONNECT example.com:443 HTTP/1.1\r\n\r\n", b"403"),
        (b"GET http://127.0.0.1:1/ HTTP/1.1\r\n\r\n", b"403"),  # the allowed host, another port
    ],
)
def test_the_proxy_answers_hostile_requests_with_one_status_and_goes_on(
    proxy: tuple[EgressProxy, int], request_bytes: bytes, status: bytes
) -> None:
    """Malformed, oversized or refused requests get one 4xx answer and a close; the proxy
    then serves an allowed request as before."""
    running, port = proxy
    assert running.socket_path is not None
    assert exchange(running.socket_path, request_bytes).split(b" ", 2)[1] == status
    good = f"GET http://127.0.0.1:{port}/greeting.txt HTTP/1.1\r\nHost: x\r\n\r\n".encode()
    assert exchange(running.socket_path, good).endswith(GREETING.encode())


def test_the_proxy_drops_slow_clients_and_refuses_past_its_connection_cap(
    monkeypatch: pytest.MonkeyPatch, serve: Callable[[dict[str, str]], int]
) -> None:
    """Clients that never finish their request head hold a slot only until the head
    timeout; past the cap a client is answered 503; then the proxy serves again."""
    monkeypatch.setattr(egress, "HEAD_TIMEOUT_S", 1.0)
    monkeypatch.setattr(egress, "MAX_CONNECTIONS", 2)
    port = serve({"greeting.txt": GREETING})
    running = EgressProxy((HostRule.parse(f"127.0.0.1:{port}"),), lambda h, p: "no")
    path = running.start()
    slow = [socket.socket(socket.AF_UNIX) for _ in range(2)]
    try:
        for client in slow:
            client.connect(str(path))
            client.sendall(b"GET http://127.0.0.1/ HTT")
        assert exchange(path, b"GET http://127.0.0.1/ HTTP/1.1\r\n\r\n").startswith(b"HTTP/1.1 503")
        for client in slow:
            client.settimeout(20)
            assert client.recv(100) == b""  # closed by the proxy, unanswered
        good = f"GET http://127.0.0.1:{port}/greeting.txt HTTP/1.1\r\nHost: x\r\n\r\n".encode()
        assert exchange(path, good).endswith(GREETING.encode())
    finally:
        for client in slow:
            client.close()
        running.stop()


def test_the_proxy_answers_502_for_an_allowed_host_it_cannot_reach() -> None:
    """An allowed host with nothing listening: one 502 line naming it."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # bound, never listening: connections are refused
        running = EgressProxy((HostRule.parse(f"127.0.0.1:{port}"),), lambda h, p: "no")
        path = running.start()
        try:
            answer = exchange(path, f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
        finally:
            running.stop()
    assert answer.startswith(b"HTTP/1.1 502") and f"127.0.0.1:{port}".encode() in answer


def test_the_proxy_names_a_bounded_number_of_refused_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past MAX_REFUSALS distinct hosts, further refusals are only counted; a host refused
    twice is named once."""
    monkeypatch.setattr(egress, "MAX_REFUSALS", 2)
    running = EgressProxy((), lambda h, p: f"no {h}")
    path = running.start()
    try:
        for name in ("a.example", "a.example", "b.example", "c.example", "d.example"):
            exchange(path, f"CONNECT {name}:443 HTTP/1.1\r\n\r\n".encode())
    finally:
        running.stop()
    assert [refusal.line for refusal in running.refused] == ["no a.example", "no b.example"]
    assert running.more_refused == 2


def test_stopping_the_proxy_closes_the_tunnels_it_holds() -> None:
    """A tunnel to a host that never answers is closed when the step ends (`stop`): the
    client sees its end, the thread is gone."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        running = EgressProxy((HostRule.parse(f"127.0.0.1:{port}"),), lambda h, p: "no")
        path = running.start()
        with socket.socket(socket.AF_UNIX) as client:
            client.settimeout(20)
            client.connect(str(path))
            client.sendall(f"CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n".encode())
            assert client.recv(100).startswith(b"HTTP/1.1 200")
            running.stop()
            assert client.recv(100) == b""
    assert not any(t.name == "egress-proxy" and t.is_alive() for t in threading.enumerate())


# ---- what a task declares, and what `task check` says ------------------------------------


def test_prepare_hosts_are_checked_when_the_task_loads(tmp_path: Path) -> None:
    """A prepare_hosts entry that is not a host is refused naming the field."""
    folder = fetch_task(tmp_path, 1, 2, 'prepare_hosts = ["https://huggingface.co/x"]')
    with pytest.raises(TaskError, match=r"run\.prepare_hosts.*not a host"):
        load_task(folder)
    (folder / "task.toml").write_text(
        FETCH_TOML.format(hosts='prepare_hosts = ["*.HF.co", "a.b:8080"]')
    )
    assert load_task(folder).run.prepare_hosts == ("*.hf.co", "a.b:8080")


def test_a_host_rule_matches_its_name_and_ports_only() -> None:
    """`name`: ports 80 and 443; `name:port`: that port; `*.suffix`: names below it only;
    an http(s) URL gives its `host:port`, anything else none."""
    assert HostRule.parse("pypi.org").allows("pypi.org", 443)
    assert not HostRule.parse("pypi.org").allows("pypi.org", 8080)
    assert not HostRule.parse("pypi.org").allows("evilpypi.org", 443)
    assert HostRule.parse("a.b:8080").allows("a.b", 8080)
    assert HostRule.parse("*.hf.co").allows("cas-bridge.xethub.hf.co", 443)
    assert not HostRule.parse("*.hf.co").allows("hf.co", 443)
    assert not HostRule.parse("*.hf.co").allows("evilhf.co", 443)
    assert url_host("https://Files.PythonHosted.org./x") == "files.pythonhosted.org:443"
    assert [url_host(u) for u in ("file:///wheels", "http://h:0/", "http://h:99999/")] == [None] * 3


def test_the_build_may_reach_the_workers_index_and_the_hosts_the_lock_names() -> None:
    """PyPI when no index is set, the worker's index instead when one is, and the hosts a
    uv.lock's registries and wheels name (AR's torch on download.pytorch.org)."""
    assert set(PYPI_HOSTS) <= set(index_hosts({}))
    mirrored = index_hosts({"UV_INDEX_URL": "https://mirror.example:8443/simple"})
    assert "mirror.example:8443" in mirrored and "pypi.org" not in mirrored
    lock = (
        b'[[package]]\nname = "torch"\n'
        b'source = { registry = "https://download.pytorch.org/whl/cu128" }\n'
        b'wheels = [{ url = "https://download-r2.pytorch.org/whl/torch.whl" }]\n'
    )
    assert environment_hosts({"uv.lock": lock}) == (
        "download.pytorch.org:443",
        "download-r2.pytorch.org:443",
    )


def test_task_check_says_what_prepare_can_reach(tmp_path: Path) -> None:
    """An AR checkout: prepare reaches the hub (its shards); a task that declares nothing:
    none."""
    fixture = make_ar_fixture(tmp_path, port=1, heldout_glob="/nonexistent")
    answer = invoke("task", "check", str(fixture.folder))
    assert answer.exit_code == 0, answer.output
    assert "prepare hosts: huggingface.co, *.huggingface.co, *.hf.co" in answer.stdout
    assert "build hosts:" in answer.stdout
    folder = fetch_task(tmp_path / "plain", 1, 2, "")
    rows = {
        name: value
        for name, value, _ in explain_task(folder, load_task(folder), has_cuda=lambda: False).rows
    }
    assert rows["prepare hosts"] == "none" and "build hosts" not in rows
