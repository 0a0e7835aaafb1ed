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
    rounds NAME JSON_ARGS --targets JSON --calls N --warmup W
                                       one session per target (a JSON list, or @FILE holding
                                       it, of {"label", "url", "headers"}; --url is not used),
                                       then N rounds (after W) of one call to each, in an order
                                       rotated each round, so that every target is measured
                                       under the same conditions: {"rounds": N, "targets":
                                       {label: the bench figures, or {"error"} if it failed}};
                                       a target that fails is left out of later rounds

Prints exactly one JSON line on stdout. On failure it prints
{"error": message, "code": JSON-RPC code or null, "type": exception class} and exits 1, where
message is what the SDK surfaced (for an MCPError, `e.error.message` and `e.error.code`).
Diagnostics and SDK log warnings go to stderr.
"""

import argparse
import asyncio
import contextlib
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
    parser.add_argument("--url", help="the server (every command but rounds)")
    parser.add_argument("--header", action="append", default=[], help="'Name: value' (repeatable)")
    parser.add_argument("--bearer", help="sends Authorization: Bearer TOKEN")
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per request")
    parser.add_argument("--mode", default="auto", help="auto (SDK default), legacy, or 2026-07-28")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tools")
    for name in ("call", "bench", "rounds"):
        command = commands.add_parser(name)
        command.add_argument("name")
        command.add_argument("arguments", type=json_arguments, help="JSON object, or @FILE holding it")
    for name in ("bench", "rounds"):
        commands.choices[name].add_argument("--calls", type=int, default=100)
        commands.choices[name].add_argument("--warmup", type=int, default=10)
    commands.choices["rounds"].add_argument(
        "--targets", type=json_arguments, required=True,
        help='JSON list (or @FILE) of {"label", "url", "headers": {name: value}}')
    args = parser.parse_args()
    if args.command != "rounds" and not args.url:
        parser.error("--url is required")
    if args.command == "rounds":
        targets = args.targets
        if (not isinstance(targets, list) or not targets
                or not all(isinstance(t, dict) and isinstance(t.get("label"), str)
                           and isinstance(t.get("url"), str) for t in targets)):
            parser.error('--targets wants a non-empty JSON list of {"label", "url", "headers"}')
        if len({t["label"] for t in targets}) != len(targets):
            parser.error("--targets: each label once")
    if getattr(args, "calls", 1) < 1 or getattr(args, "warmup", 0) < 0:
        parser.error("--calls must be at least 1 and --warmup at least 0")
    return args


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


def figures(samples: list[float]) -> dict:
    ordered = sorted(samples)
    return {
        "calls": len(samples),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "samples_ms": [round(s, 3) for s in samples],
    }


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
    return figures(samples)


async def rounds(args: argparse.Namespace) -> dict:
    """One session per target, then rounds of one call to each (see the module's docstring)."""
    timeout = httpx2.Timeout(args.timeout, read=max(args.timeout, 300.0))
    labels = [t["label"] for t in args.targets]
    samples: dict[str, list[float]] = {label: [] for label in labels}
    failed: dict[str, dict] = {}
    async with contextlib.AsyncExitStack() as stack:
        clients = {}
        for target in args.targets:
            headers = {str(k): str(v) for k, v in (target.get("headers") or {}).items()}
            try:
                http = await stack.enter_async_context(
                    httpx2.AsyncClient(headers=headers, timeout=timeout))
                transport = streamable_http_client(target["url"], http_client=http)
                clients[target["label"]] = await stack.enter_async_context(
                    Client(transport, mode=args.mode, read_timeout_seconds=args.timeout))
            except Exception as exc:  # also ExceptionGroup
                failed[target["label"]] = error_json(exc)
        for i in range(args.warmup + args.calls):
            live = [label for label in labels if label in clients and label not in failed]
            if not live:
                break
            shift = i % len(live)
            for label in live[shift:] + live[:shift]:
                start = time.perf_counter()
                try:
                    result = await clients[label].call_tool(args.name, args.arguments)
                except Exception as exc:
                    failed[label] = error_json(exc)
                    continue
                elapsed_ms = (time.perf_counter() - start) * 1000
                if result.is_error:
                    failed[label] = {"error": json.dumps(tool_result_json(result)["content"])}
                elif i >= args.warmup:
                    samples[label].append(elapsed_ms)
    return {"rounds": args.calls,
            "targets": {label: failed.get(label) or figures(samples[label]) for label in labels}}


async def run(args: argparse.Namespace) -> dict:
    if args.command == "rounds":
        return await rounds(args)
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
