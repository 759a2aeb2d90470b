"""Daemonises a sleeper (double fork, setsid), prints a good summary and exits at once."""

import os
import pathlib
import signal
import time

PID_DIR = pathlib.Path(os.environ["PAYLOAD_PID_DIR"])

read_end, write_end = os.pipe()
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (PID_DIR / "daemon").write_text(str(os.getpid()))
        os.write(write_end, b"x")
        while True:
            time.sleep(1)
    os._exit(0)
os.read(read_end, 1)  # the daemon is up and its pid written
os.wait()
print("---")
print("val_bpb: 1.5")
