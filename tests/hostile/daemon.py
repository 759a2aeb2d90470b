"""Attack: a detached child (double fork, new session, SIGTERM ignored) meant to outlive the run."""

import os
import signal
import sys

# the run's folder name, unique per run: the test looks for it in every process's command line
MARKER = "hostile-survivor-" + os.path.basename(os.path.dirname(os.getcwd()))
SLEEPER = "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nwhile True: time.sleep(1)"

ready_r, ready_w = os.pipe()
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if os.fork() == 0:
        os.write(ready_w, b"x")
        os.execv(sys.executable, [sys.executable, "-c", SLEEPER, MARKER])
    os._exit(0)
os.read(ready_r, 1)  # the daemon is up
os.wait()
print(f"started a daemon marked {MARKER}")
print("---")
print("val_bpb: 1.0")
