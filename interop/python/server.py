"""Upstream MCP test server built with FastMCP, served over streamable HTTP on 127.0.0.1.

FastMCP's default HTTP mode is used as is: stateful sessions (Mcp-Session-Id) and SSE answers
to POSTs, endpoint `/mcp`. Tools: `echo`, `add` (structured output `{"result": n}`), `slow` and
`chatty` (logs a line to the caller before it answers, so its answer is a stream of two events);
`--unicode-tools N` adds N more, `glossary_1` ... `glossary_N`, each described in 3,000 characters
of several scripts (most of them 2 to 4 bytes in UTF-8): a large `tools/list` answer whose text
must arrive whole.

    python server.py [--port N] [--unicode-tools N] [--jwt-public-key-file PEM --audience AUD --issuer ISS]

`--port 0` (the default) lets the OS pick a free port. Once the server accepts connections it
prints exactly one line, `LISTENING <port>`, to stdout; all logs go to stderr. With the JWT
flags every request needs `Authorization: Bearer <RS256 JWT>` checked by FastMCP's JWTVerifier.
SIGTERM or SIGINT stops it with exit status 0.

`proxy.py` reuses `add_common_args`, `auth_from_args` and `serve` from this module.
"""

import argparse
import asyncio
import copy
import signal
import socket
import sys

import uvicorn.config
from fastmcp import Context, FastMCP

HOST = "127.0.0.1"


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Add `--port` and the optional JWT flags shared with proxy.py."""
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--jwt-public-key-file", help="RS256 public key (PEM); enables JWT auth")
    parser.add_argument("--audience", help="expected `aud` claim (with --jwt-public-key-file)")
    parser.add_argument("--issuer", help="expected `iss` claim (with --jwt-public-key-file)")


def auth_from_args(args: argparse.Namespace):
    """FastMCP's JWTVerifier for the JWT flags, or None when they are absent."""
    if not args.jwt_public_key_file:
        return None
    from fastmcp.server.auth import JWTVerifier

    with open(args.jwt_public_key_file, encoding="utf-8") as f:
        public_key = f.read()
    return JWTVerifier(
        public_key=public_key, audience=args.audience, issuer=args.issuer, algorithm="RS256"
    )


async def _announce_when_listening(port: int) -> None:
    """Print `LISTENING <port>` once a TCP connect to the port succeeds."""
    while True:
        try:
            _, writer = await asyncio.open_connection(HOST, port)
        except OSError:
            await asyncio.sleep(0.02)
            continue
        writer.close()
        await writer.wait_closed()
        print(f"LISTENING {port}", flush=True)
        return


async def _serve(server: FastMCP, port: int) -> None:
    # Bind first so port 0 works and the port can't be taken in between; uvicorn calls listen()
    # on the socket when it starts serving, so connects are refused until then.
    # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY on accepted sockets only when proto is TCP
    # (with proto 0, keep-alive answers stall ~40 ms on Nagle and delayed ACKs).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, port))
    port = sock.getsockname()[1]
    # uvicorn's access log goes to stdout by default; stdout is reserved for LISTENING.
    log_config = copy.deepcopy(uvicorn.config.LOGGING_CONFIG)
    log_config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    await asyncio.gather(
        server.run_http_async(
            transport="http", host=HOST, port=port, sockets=[sock], show_banner=False,
            uvicorn_config={"log_config": log_config},
        ),
        _announce_when_listening(port),
    )


def serve(server: FastMCP, port: int) -> None:
    """Serve `server` over FastMCP's default HTTP transport on 127.0.0.1:`port`."""
    # uvicorn re-raises the signal it caught after its graceful shutdown; exit 0 then.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(0))
    asyncio.run(_serve(server, port))


# One line of a glossary tool's description: Latin with accents, Greek, Cyrillic, CJK, an emoji.
GLOSSARY_LINE = "Ünïcödé naïve café — Ελληνικά κείμενο — кириллица текст — 日本語の説明文と中文说明 🚀\n"


def glossary_description(number: int) -> str:
    text = f"Glossary entry {number}.\n" + GLOSSARY_LINE * 60
    return text[:3000]


def build_server(auth=None, unicode_tools: int = 0) -> FastMCP:
    mcp = FastMCP("mreg-python-interop-server", auth=auth)

    @mcp.tool
    def echo(text: str) -> str:
        """Return `text` unchanged."""
        return text

    @mcp.tool
    def add(a: int, b: int) -> int:
        """Return a + b."""
        return a + b

    @mcp.tool
    async def slow(ms: int) -> str:
        """Sleep `ms` milliseconds, then answer."""
        await asyncio.sleep(ms / 1000)
        return f"slept {ms} ms"

    @mcp.tool
    async def chatty(text: str, ctx: Context) -> str:
        """Log a line to the caller, then return `text` unchanged."""
        await ctx.info(f"echoing {len(text)} characters")
        return text

    for number in range(1, unicode_tools + 1):
        def glossary(term: str, number: int = number) -> str:
            return f"entry {number}: {term}"

        mcp.tool(glossary, name=f"glossary_{number}", description=glossary_description(number))

    return mcp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_common_args(parser)
    parser.add_argument("--unicode-tools", type=int, default=0, metavar="N",
                        help="add N tools with long descriptions in several scripts (default 0)")
    args = parser.parse_args()
    if not 0 <= args.unicode_tools <= 1000:
        parser.error("--unicode-tools must be between 0 and 1000")
    serve(build_server(auth_from_args(args), args.unicode_tools), args.port)


if __name__ == "__main__":
    main()
