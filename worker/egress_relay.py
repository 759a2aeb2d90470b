"""Inside the prepare sandbox: 127.0.0.1:PORT to the worker's proxy socket, then the command.

Run as `python -I -S egress_relay.py PORT SOCKET -- ARGV...` inside an empty network
namespace (bwrap --unshare-net: only loopback). It binds 127.0.0.1:PORT, forks a child that
relays every connection made there to the unix socket SOCKET (`worker.egress`, which
decides what may pass), and replaces itself with ARGV, so ARGV's exit status is bwrap's and
the relay ends with the namespace. Standard library only: it runs with any interpreter.
"""

import asyncio
import os
import socket
import sys

CHUNK_BYTES = 256 * 1024


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while chunk := await reader.read(CHUNK_BYTES):
            writer.write(chunk)
            await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
    except OSError:
        writer.close()


async def relay(
    client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter, proxy_socket: str
) -> None:
    try:
        reader, writer = await asyncio.open_unix_connection(proxy_socket)
    except OSError:
        client_writer.close()
        return
    try:
        await asyncio.gather(pipe(client_reader, writer), pipe(reader, client_writer))
    finally:
        writer.close()
        client_writer.close()


async def serve(listener: socket.socket, proxy_socket: str) -> None:
    server = await asyncio.start_server(
        lambda r, w: relay(r, w, proxy_socket), sock=listener, limit=CHUNK_BYTES
    )
    async with server:
        await server.serve_forever()


def main(argv: list[str]) -> None:
    split = argv.index("--")
    port, proxy_socket = int(argv[1]), argv[2]
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    if os.fork() == 0:
        os.close(0)
        asyncio.run(serve(listener, proxy_socket))
        os._exit(0)
    listener.close()
    command = argv[split + 1 :]
    os.execvp(command[0], command)


if __name__ == "__main__":
    main(sys.argv)
