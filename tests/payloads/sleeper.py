"""Sleeps far past any test budget."""

import os
import pathlib
import time

pathlib.Path(os.environ["PAYLOAD_PID_DIR"], "sleeper").write_text(str(os.getpid()))
print("started", flush=True)
time.sleep(60)
