"""Inside the prepare sandbox: 127.0.0.1:PORT to the worker's proxy socket, then the command.

Run as `python -I -S egress_relay.py PORT SOCKET -- ARGV...` inside an empty network
namespace (bwrap --unshare-net: only loopback). It binds 127.0.0.1:PORT, forks a child that
relays every connection made there to the unix socket SOCKET (`autoswarm.worker.egress`, which
decides what may pass), and replaces itself with ARGV, so ARGV's exit status is bwrap's and
the relay ends with the namespace. Standard library only, and threads rather than asyncio,
whose import (~0.2 s on 2 busy cores) every prepare step would wait for.
"""

import contextlib
import os
import socket
import sys
import threading

CHUNK_BYTES = 256 * 1024


def pump(source: socket.socket, target: socket.socket) -> None:
    """Copy until end of stream, then half-close; on an error, end both directions."""
    try:
        while chunk := source.recv(CHUNK_BYTES):
            target.sendall(chunk)
        target.shutdown(socket.SHUT_WR)
    except OSError:
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)


def relay(client: socket.socket, proxy_socket: str) -> None:
    with client, socket.socket(socket.AF_UNIX) as upstream:
        try:
            upstream.connect(proxy_socket)
        except OSError:
            return
        back = threading.Thread(target=pump, args=(upstream, client), daemon=True)
        back.start()
        pump(client, upstream)
        back.join()


def serve(listener: socket.socket, proxy_socket: str) -> None:
    while True:
        client, _ = listener.accept()
        threading.Thread(target=relay, args=(client, proxy_socket), daemon=True).start()


def main(argv: list[str]) -> None:
    split = argv.index("--")
    port, proxy_socket = int(argv[1]), argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)  # connections queue here until the child accepts them
    if os.fork() == 0:
        os.close(0)
        serve(listener, proxy_socket)
    listener.close()
    command = argv[split + 1 :]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
