"""Forks a grandchild that ignores SIGTERM, then both sleep past the budget."""

import os
import pathlib
import signal
import time

PID_DIR = pathlib.Path(os.environ["PAYLOAD_PID_DIR"])

if os.fork() == 0:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    (PID_DIR / "grandchild").write_text(str(os.getpid()))
    while True:
        time.sleep(1)
(PID_DIR / "child").write_text(str(os.getpid()))
time.sleep(60)
