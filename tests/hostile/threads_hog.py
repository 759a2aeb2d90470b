"""Attack: take every thread the process cap allows and keep them, to starve other runs."""

import threading
import time

threading.stack_size(256 << 10)  # small stacks: the memory cap is not what stops it

HOLD_S = 8  # long enough for the run started before it to need its threads

stop = threading.Event()
count = 0
while True:
    try:
        threading.Thread(target=stop.wait, daemon=True).start()
    except RuntimeError as exc:
        print(f"holding {count} threads, the next refused: {exc}", flush=True)
        break
    count += 1
time.sleep(HOLD_S)
print("---")
print("val_bpb: 1.0")
