"""Attack: reach the network (internet, DNS, a loopback listener and an abstract socket)."""

import os
import socket

PORT = int(os.environ.get("HOSTILE_PORT", "9"))  # a listener the test opened on the host
UNIX_NAME = os.environ.get("HOSTILE_UNIX", "autoswarm-hostile")  # abstract unix socket on the host


def attempt(what, action):
    try:
        action()
        print(f"LEAK {what}: it worked")
    except OSError as exc:
        print(f"blocked {what}: {exc}")


def tcp(host, port):
    socket.create_connection((host, port), timeout=2).close()


def udp(host, port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"x", (host, port))
    s.close()


def abstract_unix(name):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect("\0" + name)
    s.close()


attempt("tcp 1.1.1.1:53", lambda: tcp("1.1.1.1", 53))
attempt("tcp [2606:4700:4700::1111]:53", lambda: tcp("2606:4700:4700::1111", 53))
attempt(f"tcp 127.0.0.1:{PORT}", lambda: tcp("127.0.0.1", PORT))
attempt("udp 8.8.8.8:53", lambda: udp("8.8.8.8", 53))
attempt("dns example.com", lambda: socket.getaddrinfo("example.com", 80))
attempt(f"abstract unix socket {UNIX_NAME}", lambda: abstract_unix(UNIX_NAME))
print("---")
print("val_bpb: 1.0")
