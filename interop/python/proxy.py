"""FastMCP's own MCP proxy in front of an upstream URL, served over streamable HTTP on 127.0.0.1.

`fastmcp.server.create_proxy(upstream)` builds a FastMCPProxy whose backend client connects to
the upstream per request and, by default, speaks the same protocol era as the front connection.
The front is FastMCP's default HTTP mode, like server.py (stateful, SSE answers, `/mcp`).

    python proxy.py --upstream URL [--port N] [--jwt-public-key-file PEM --audience AUD --issuer ISS]

Same protocol as server.py: one `LISTENING <port>` line on stdout once it accepts connections,
logs on stderr, optional JWTVerifier on the front (the upstream gets no credentials).
"""

import argparse

from fastmcp.server import create_proxy

from server import add_common_args, auth_from_args, serve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="upstream MCP endpoint URL")
    add_common_args(parser)
    args = parser.parse_args()
    proxy = create_proxy(args.upstream, name="mreg-python-interop-proxy", auth=auth_from_args(args))
    serve(proxy, args.port)


if __name__ == "__main__":
    main()
