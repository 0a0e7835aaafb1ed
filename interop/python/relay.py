"""A TCP relay: copies bytes both ways between each client connection and one upstream, and does
nothing else. The floor of any extra hop on loopback, for bench_peers.py's `relay` target: what a
client pays for a gateway that parses nothing, beside what it pays for mreg, in the same run.

    python relay.py --upstream http://127.0.0.1:PORT/mcp [--port N]

Prints `LISTENING <port>` once it accepts connections (the relay's URL is the upstream's with
that port); SIGTERM or SIGINT stops it with exit status 0.
"""

import argparse
import asyncio
import signal
import socket
import sys
from urllib.parse import urlsplit

HOST = "127.0.0.1"


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def serve(upstream_port: int, port: int) -> None:
    async def handle(client_reader, client_writer):
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(HOST, upstream_port)
        except OSError:
            client_writer.close()
            return
        for writer in (client_writer, upstream_writer):
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        await asyncio.gather(pipe(client_reader, upstream_writer),
                             pipe(upstream_reader, client_writer))

    server = await asyncio.start_server(handle, HOST, port)
    print(f"LISTENING {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the upstream's URL (http://127.0.0.1:PORT/...)")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    args = parser.parse_args()
    target = urlsplit(args.upstream)
    if target.hostname not in (HOST, "localhost") or not target.port:
        parser.error("--upstream must be http://127.0.0.1:PORT/... (loopback only)")
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    asyncio.run(serve(target.port, args.port))


if __name__ == "__main__":
    main()
