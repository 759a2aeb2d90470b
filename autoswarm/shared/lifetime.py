"""Child processes that end with their parent (Linux's PR_SET_PDEATHSIG).

`die_with_parent()` makes a `preexec_fn` for `subprocess.Popen`: the child gets a signal
(SIGTERM unless told) as soon as its parent dies, however it dies, `kill -9` included, so a
crashed `autoswarm up` or benchmark leaves no worker, coordinator or Redis running. libc is
looked up in the parent; the child makes one call before `exec`, then checks that its parent
did not die before the call (a signal asked for after that death never comes). Linux sends
the signal when the *thread* that started the child ends: start children from a thread
that lives as long as they should. Elsewhere it is `None` (no such call).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A `preexec_fn` that gives the child `sig` when its parent dies; None off Linux."""
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def arm() -> None:  # pragma: no cover - runs in the child, between fork and exec
        prctl(_PR_SET_PDEATHSIG, int(sig), 0, 0, 0)
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return arm
