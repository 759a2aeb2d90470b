"""The hosts the prepare phase may reach: how a task names them, and how one is matched.

A host entry is `name` (ports 80 and 443), `name:port`, or `*.suffix[:port]` (any name
below `suffix`, not `suffix` itself), e.g. `huggingface.co`, `*.hf.co`, `10.0.0.5:8080`.
Names are compared lowercased, without a trailing dot. IPv6 literals are not supported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

_LABEL = r"[a-z0-9](?:[a-z0-9_-]{0,61}[a-z0-9])?"
HOST_NAME = rf"{_LABEL}(?:\.{_LABEL})*"
HOST_ENTRY = rf"^(?:\*\.)?{HOST_NAME}(?::[0-9]{{1,5}})?$"
_HOST_NAME = re.compile(rf"^{HOST_NAME}$")
_HOST_ENTRY = re.compile(HOST_ENTRY)
DEFAULT_PORTS = (80, 443)
# The hub `kernels.get_kernel` and AR's prepare.py download from: its API and the CDNs its
# files redirect to (cas-bridge.xethub.hf.co, cdn-lfs.huggingface.co, ...).
HUB_HOSTS = ("huggingface.co", "*.huggingface.co", "*.hf.co")
_SCHEME_PORTS = {"http": 80, "https": 443}


def normal_host(name: str) -> str | None:
    """`name` lowercased without its trailing dot, if it is a host name; else None."""
    host = name.lower().removesuffix(".")
    return host if 0 < len(host) <= 253 and _HOST_NAME.match(host) else None


@dataclass(frozen=True, slots=True)
class HostRule:
    """One allowed host (or every name below a suffix) and its port (None: 80 and 443)."""

    name: str
    port: int | None
    below: bool  # `*.name`: the names below `name`

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        """The rule an entry states; ValueError naming the entry when it is not one."""
        text = entry.strip().lower()
        if not _HOST_ENTRY.match(text):
            raise ValueError(f"{entry!r} is not a host: name, name:port or *.suffix")
        below = text.startswith("*.")
        name, _, port = text.removeprefix("*.").partition(":")
        number = int(port) if port else None
        if number is not None and not 0 < number < 65536:
            raise ValueError(f"{entry!r}: port {number} is out of range")
        return cls(name, number, below)

    def allows(self, host: str, port: int) -> bool:
        """Whether `host` (as from `normal_host`) on `port` is this rule's."""
        if port not in ((self.port,) if self.port is not None else DEFAULT_PORTS):
            return False
        return host.endswith("." + self.name) if self.below else host == self.name

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"{'*.' if self.below else ''}{self.name}{port}"


def url_host(url: str) -> str | None:
    """The `host:port` entry of an http(s) URL (`https://pypi.org/simple` -> pypi.org:443);
    None for a path or another scheme."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _SCHEME_PORTS or not parts.hostname or port == 0:
        return None
    host = normal_host(parts.hostname)
    return f"{host}:{port or _SCHEME_PORTS[parts.scheme]}" if host else None
