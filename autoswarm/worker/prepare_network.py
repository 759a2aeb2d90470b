"""What the trusted prepare phase can reach on the network, and how a step of it is wrapped.

Under the bubblewrap sandbox each step of the prepare phase (a task environment's build,
the kernels fetch, the prepare command) runs in an empty network namespace of its own
(`autoswarm.worker.bwrap.network_only_argv`); its one way out is the worker's allow-list proxy
(`autoswarm.worker.egress`), reached through 127.0.0.1:`RELAY_PORT`
(`autoswarm/worker/egress_relay.py`) and named in `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY`
(both cases). What passes:
- an environment's build: the package index the worker's uv settings name (`index_hosts`:
  PyPI when none does, and uv's Python downloads), and the hosts its lock, pyproject.toml
  or requirements.txt name (`autoswarm.shared.environment.environment_hosts`);
- the kernels fetch: the hub (`autoswarm.shared.hosts.HUB_HOSTS`);
- the prepare command: `[run] prepare_hosts`, the hub too when `[run] kernels` is set.
Nothing else passes; a task that declares no host reaches nothing. Each refusal is one line
at the end of the step's log, naming the host and where to declare it.
Does not: narrow files (the phase is trusted: it sees this machine's files, socket files
included, as the worker does), nor the network under `trust = "trusted-code"` (`Unsandboxed`:
runs have the machine's network there too). The proxy connects directly: a worker that
reaches the internet only through a proxy of its own cannot prepare under the sandbox.
"""

from __future__ import annotations

import contextlib
import re
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from autoswarm.shared.hosts import DEFAULT_PORTS, HUB_HOSTS, HostRule, url_host
from autoswarm.worker.bwrap import BwrapSandbox, network_only_argv
from autoswarm.worker.egress import EgressProxy, Refusal
from autoswarm.worker.process import Limits, Outcome, supervise
from autoswarm.worker.runfiles import OnTick
from autoswarm.worker.sandbox import Sandbox

RELAY = Path(__file__).with_name("egress_relay.py")
RELAY_PORT = 3128  # inside an empty network namespace: always free
PROXY_NAMES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")
_DROPPED = {*PROXY_NAMES, "NO_PROXY"}
# The worker's uv and pip settings that name where packages come from.
_INDEX_SETTINGS = (
    "UV_INDEX_URL",
    "UV_DEFAULT_INDEX",
    "UV_INDEX",
    "UV_EXTRA_INDEX_URL",
    "UV_FIND_LINKS",
    "PIP_INDEX_URL",
    "PIP_EXTRA_INDEX_URL",
    "PIP_FIND_LINKS",
)
_DEFAULT_INDEX = ("UV_INDEX_URL", "UV_DEFAULT_INDEX", "PIP_INDEX_URL", "UV_NO_INDEX")
PYPI_HOSTS = ("pypi.org", "files.pythonhosted.org")
# Where uv downloads a Python the machine lacks (AR's .python-version): python-build-standalone
# releases on GitHub, which redirect to its asset hosts.
PYTHON_DOWNLOAD_HOSTS = (
    "github.com",
    "objects.githubusercontent.com",
    "release-assets.githubusercontent.com",
)
_URL = re.compile(r"https?://[^\s,'\"]+")


def index_hosts(env: Mapping[str, str]) -> tuple[str, ...]:
    """The hosts the worker's uv settings in `env` fetch packages and Pythons from."""
    hosts: list[str] = []
    for name in _INDEX_SETTINGS:
        hosts += [h for url in _URL.findall(env.get(name, "")) if (h := url_host(url))]
    if not any(env.get(name) for name in _DEFAULT_INDEX):
        hosts += PYPI_HOSTS
    mirror = env.get("UV_PYTHON_INSTALL_MIRROR", "")
    if mirror:
        hosts += [h for h in [url_host(mirror)] if h]
    elif env.get("UV_PYTHON_DOWNLOADS", "").lower() not in ("never", "manual"):
        hosts += PYTHON_DOWNLOAD_HOSTS
    return tuple(dict.fromkeys(hosts))


def prepare_hosts(declared: Sequence[str], kernels: bool) -> tuple[str, ...]:
    """The hosts the prepare command may reach: the declared ones, the hub's with kernels."""
    return tuple(dict.fromkeys([*declared, *(HUB_HOSTS if kernels else ())]))


@dataclass
class Narrowed:
    """A step's argv and environment, wrapped; `refused` fills while it runs."""

    argv: list[str]
    env: dict[str, str]
    refused: list[Refusal] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class PrepareNetwork:
    """Wraps prepare-phase steps: with `bwrap`, in their own network namespace behind the
    allow-list proxy; without (trusted code), as they are, with this machine's network."""

    bwrap: str | None

    @classmethod
    def for_sandbox(cls, sandbox: Sandbox) -> PrepareNetwork:
        """Narrowed under the bubblewrap sandbox; not when the operator trusts the code."""
        return cls(sandbox.bwrap if isinstance(sandbox, BwrapSandbox) else None)

    @contextlib.contextmanager
    def narrowed(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        hosts: Sequence[str],
        declare: Callable[[str], str],
        log_path: Path,
    ) -> Iterator[Narrowed]:
        """`argv` and `env` to run one step with; while inside, the proxy allows `hosts`.
        `declare(host)` says where a refused host would be declared. On leaving, each refusal is
        appended to `log_path` as one line."""
        if self.bwrap is None:
            yield Narrowed(list(argv), dict(env))
            return
        rules = tuple(HostRule.parse(host) for host in hosts)

        def describe(host: str, port: int) -> str:
            entry = host if port in DEFAULT_PORTS else f"{host}:{port}"
            return f"autoswarm: prepare's network refused {host}:{port}: {declare(entry)}"

        proxy = EgressProxy(rules, describe)
        socket_path = proxy.start()
        try:
            url = f"http://127.0.0.1:{RELAY_PORT}"
            kept = {k: v for k, v in env.items() if k.upper() not in _DROPPED}
            proxies = {name: url for name in PROXY_NAMES} | {n.lower(): url for n in PROXY_NAMES}
            relay = [sys.executable, "-I", "-S", str(RELAY), str(RELAY_PORT), str(socket_path)]
            wrapped = network_only_argv(self.bwrap, [*relay, "--", *argv])
            yield Narrowed(wrapped, kept | proxies, proxy.refused)
        finally:
            proxy.stop()
            lines = [refusal.line for refusal in proxy.refused]
            if proxy.more_refused:
                lines.append(f"autoswarm: prepare's network refused {proxy.more_refused} more")
            if lines:
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write("".join(f"\n{line}" for line in lines) + "\n")

    def supervise(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        hosts: Sequence[str],
        declare: Callable[[str], str],
        log_path: Path,
        cwd: Path,
        marker: str,
        deadline_s: float,
        on_tick: OnTick | None,
    ) -> tuple[Outcome, list[Refusal]]:
        """One trusted step (a build or prepare command) run `narrowed` to completion, with no
        limit on its open files; how it ended and the hosts refused to it."""
        with self.narrowed(argv, env, hosts=hosts, declare=declare, log_path=log_path) as step:
            outcome = supervise(
                step.argv,
                cwd=cwd,
                env=step.env,
                log_path=log_path,
                marker=marker,
                deadline_s=deadline_s,
                limits=Limits(open_files=None),
                on_tick=on_tick,
            )
        return outcome, step.refused


HOST_NETWORK = PrepareNetwork(None)  # this machine's network, as it is


def declare_in_task(entry: str) -> str:
    """Where a host the prepare command needs is declared."""
    return f'not declared by the task; add it to task.toml: [run] prepare_hosts = ["{entry}"]'


def declare_in_lock(lock: str) -> Callable[[str], str]:
    """Where a host an environment's build needs is named."""

    def declare(entry: str) -> str:
        return (
            f"not the package index (the worker's UV_INDEX_URL, UV_FIND_LINKS...) nor a host "
            f"the task's {lock} names"
        )

    return declare
