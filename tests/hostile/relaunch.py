"""Attack: a process that keeps re-launching itself (new session, new pid) to dodge a kill."""

import os
import signal
import sys
import time

MARKER = "hostile-survivor-" + os.path.basename(os.path.dirname(os.getcwd()))
HOP_S = 0.1  # each generation lives this long, then hands over to a fresh copy

if len(sys.argv) > 1:  # a generation: hop for ever
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    generation = int(sys.argv[1])
    while True:
        time.sleep(HOP_S)
        if os.fork() == 0:
            os.setsid()
            os.execv(sys.executable, [sys.executable, __file__, str(generation + 1), MARKER])
        os._exit(0)

if os.fork() == 0:
    os.setsid()
    os.execv(sys.executable, [sys.executable, __file__, "1", MARKER])
time.sleep(1.0)  # let it hop a few times
print(f"started a self-relaunching process marked {MARKER}")
print("---")
print("val_bpb: 1.0")
