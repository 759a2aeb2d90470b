"""Attack: inside out/, links to the worker's token and the volunteer's home, a FIFO that
blocks its reader and a unix socket, beside one honest file. Only that file may reach the
evaluator."""

import os
import socket
from pathlib import Path

HOME = os.environ.get("HOSTILE_HOME", "/root")
up = Path.cwd().parents
state = up[3] if up[2].name == "work" else up[2]

with open("out/model.txt", "w") as f:
    f.write("honest weights\n")
os.symlink(state / "token", "out/token")
os.symlink(HOME, "out/home")
os.makedirs("out/deeper")
os.symlink(os.path.join(HOME, ".ssh", "id_rsa"), "out/deeper/id_rsa")
os.mkfifo("out/fifo")
sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
sock.bind("out/socket")
print("planted links, a FIFO and a socket in out/")
print("---")
print("val_bpb: 1.0")
