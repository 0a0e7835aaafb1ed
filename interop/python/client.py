"""Command-line MCP client built on the official MCP Python SDK (package `mcp`).

It connects with the SDK's streamable HTTP transport (`mcp.client.streamable_http.
streamable_http_client`, one keep-alive HTTP client for the whole run) and the SDK's `Client`,
which drives a `ClientSession` and negotiates the protocol the SDK's default way (`--mode auto`:
probe `server/discover` at 2026-07-28, fall back to the `initialize` handshake);
`--mode legacy` forces the handshake, a version string (2026-07-28) pins the modern era.

    python client.py --url URL [--header 'Name: value']... [--bearer TOKEN] [--timeout S] COMMAND

Commands:
    tools                              {"protocolVersion": ..., "tools": [names], "descriptions": {name: text}}
    call NAME JSON_ARGS                {"content": [...], "structuredContent": ..., "isError": ...}
    bench NAME JSON_ARGS --calls N --warmup W
                                       {"calls", "p50_ms", "p99_ms", "mean_ms", "samples_ms"}

Prints exactly one JSON line on stdout. On failure it prints
{"error": message, "code": JSON-RPC code or null, "type": exception class} and exits 1, where
message is what the SDK surfaced (for an MCPError, `e.error.message` and `e.error.code`).
Diagnostics and SDK log warnings go to stderr.
"""

import argparse
import asyncio
import json
import logging
import math
import statistics
import sys
import time
import traceback

import httpx2
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError


def json_arguments(text: str) -> dict:
    """The tool arguments: JSON text, or `@PATH` of a file holding it (too large for argv)."""
    if text.startswith("@"):
        with open(text[1:], encoding="utf-8") as file:
            text = file.read()
    return json.loads(text)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--bearer", help="sends Authorization: Bearer TOKEN")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    parser.add_argument("--mode", default="auto", help="auto (SDK default), legacy, or 2026-07-28")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tools")
    for name in ("call", "bench"):
        command = commands.add_parser(name)
        command.add_argument("name")
        command.add_argument("arguments", type=json_arguments, help="JSON object, or @FILE holding it")
    bench = commands.choices["bench"]
    bench.add_argument("--calls", type=int, default=100)
    bench.add_argument("--warmup", type=int, default=10)
    return parser.parse_args()


def request_headers(args: argparse.Namespace) -> dict[str, str]:
    headers = {}
    for header in args.header:
        name, sep, value = header.partition(":")
        if not sep:
            raise SystemExit(f"--header wants 'Name: value', got {header!r}")
        headers[name.strip()] = value.strip()
    if args.bearer:
        headers["Authorization"] = f"Bearer {args.bearer}"
    return headers


def tool_result_json(result) -> dict:
    return {
        "content": [block.model_dump(by_alias=True, mode="json", exclude_none=True)
                    for block in result.content],
        "structuredContent": result.structured_content,
        "isError": result.is_error,
    }


def percentile(ordered: list[float], p: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


async def bench(client: Client, name: str, arguments: dict, calls: int, warmup: int) -> dict:
    samples = []
    for i in range(warmup + calls):
        start = time.perf_counter()
        result = await client.call_tool(name, arguments)
        elapsed_ms = (time.perf_counter() - start) * 1000
        if result.is_error:
            raise RuntimeError(json.dumps(tool_result_json(result)["content"]))
        if i >= warmup:
            samples.append(elapsed_ms)
    ordered = sorted(samples)
    return {
        "calls": calls,
        "p50_ms": round(percentile(ordered, 50), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "samples_ms": [round(s, 3) for s in samples],
    }


async def run(args: argparse.Namespace) -> dict:
    # connect/write/pool time out after --timeout; reads are bounded per request by the session's
    # read timeout instead, so the long-lived GET stream is not cut (the SDK's own default: 300 s).
    timeout = httpx2.Timeout(args.timeout, read=max(args.timeout, 300.0))
    async with httpx2.AsyncClient(headers=request_headers(args), timeout=timeout) as http:
        transport = streamable_http_client(args.url, http_client=http)
        async with Client(transport, mode=args.mode, read_timeout_seconds=args.timeout) as client:
            if args.command == "tools":
                listed = await client.list_tools()
                return {"protocolVersion": client.protocol_version,
                        "tools": [tool.name for tool in listed.tools],
                        "descriptions": {tool.name: tool.description for tool in listed.tools}}
            if args.command == "call":
                return tool_result_json(await client.call_tool(args.name, args.arguments))
            return await bench(client, args.name, args.arguments, args.calls, args.warmup)


def innermost(exc: BaseException) -> BaseException:
    """The exception an SDK user would look at: exception groups unwrapped, MCPError first."""
    while isinstance(exc, BaseExceptionGroup):
        leaves = [innermost(e) for e in exc.exceptions]
        mcp_errors = [e for e in leaves if isinstance(e, MCPError)]
        exc = (mcp_errors or leaves)[0]
    return exc


def error_json(exc: BaseException) -> dict:
    exc = innermost(exc)
    if isinstance(exc, MCPError):
        return {"error": exc.error.message, "code": exc.error.code, "type": type(exc).__name__}
    return {"error": str(exc) or repr(exc), "code": None, "type": type(exc).__name__}


def main() -> None:
    logging.basicConfig(stream=sys.stderr, level=logging.WARNING)
    args = parse_args()
    try:
        output, status = asyncio.run(run(args)), 0
    except Exception as exc:  # also ExceptionGroup, a subclass of Exception
        traceback.print_exception(exc, file=sys.stderr)
        output, status = error_json(exc), 1
    print(json.dumps(output), flush=True)
    sys.exit(status)


if __name__ == "__main__":
    main()
