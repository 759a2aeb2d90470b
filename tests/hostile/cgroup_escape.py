"""Attack: lift the run's own caps, or leave its control group for the host's root group."""

import glob
import os


def attempt(what, path, value):
    try:
        with open(path, "w") as f:
            f.write(value)
        print(f"LEAK {what}: wrote {value!r} to {path}")
    except OSError as exc:
        print(f"blocked {what}: {exc}")


groups = glob.glob("/sys/fs/cgroup/**/autoswarm-run-*", recursive=True)
print(f"run groups visible: {len(groups)}")
for group in groups:
    for name in ("pids.max", "memory.max", "memory.limit_in_bytes"):
        if os.path.exists(os.path.join(group, name)):
            attempt(f"raise {name}", os.path.join(group, name), "max")
for procs in glob.glob("/sys/fs/cgroup/*/cgroup.procs") + ["/sys/fs/cgroup/cgroup.procs"]:
    if os.path.exists(procs):
        attempt("leave the group", procs, str(os.getpid()))
print("---")
print("val_bpb: 1.0")
