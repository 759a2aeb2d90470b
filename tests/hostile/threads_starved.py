"""The victim of threads_hog.py: started first, it waits, then starts a few threads."""

import threading
import time

threading.stack_size(256 << 10)  # small stacks: the memory cap is not what stops it

WAIT_S = 4  # threads_hog.py starts meanwhile and takes what it can
THREADS = 32

print("waiting", flush=True)
time.sleep(WAIT_S)
started = 0
try:
    for _ in range(THREADS):
        threading.Thread(target=time.sleep, args=(0.5,)).start()
        started += 1
except RuntimeError as exc:
    print(f"LEAK starved by another run after {started} threads: {exc}", flush=True)
print(f"started {started} threads")
print("---")
print("val_bpb: 1.0")
