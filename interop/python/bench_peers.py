"""Benchmark mreg in front of real MCP peers, every combination in one run.

What it measures, for the same `tools/call echo {"text": "ping"}`:

* Upstreams (real peers, each on 127.0.0.1, port 0):
    fastmcp   interop/python/server.py: FastMCP, stateful sessions, SSE answers
    ts-sse    interop/server.mjs: TypeScript SDK, stateful sessions, SSE answers
    ts-json   interop/server.mjs --stateless: TypeScript SDK, no sessions, JSON answers
    rmcp-json crates/mreg/examples/rmcp_upstream.rs: rmcp (Rust SDK), no sessions, JSON answers
    rmcp-sse  the same with --stateful: sessions, SSE answers
  (`--upstream-cmd` adds any other server that prints `LISTENING <port>` and serves `echo` at
  /mcp.)
* Targets, for each upstream:
    direct    the upstream itself
    mreg-off  mreg's /servers/{name}/mcp with the policy chain off (MREG_AUTH=none, MREG_AUDIT=false)
    mreg-on   the same with the chain on: an Entra-style app token (roles ["admin"], client
              credentials from interop/idp.mjs) validated per request, roles from a policy file
              (server and tool rules), GCRA rate limits at 1,000,000 a minute (on, never hit),
              and the audit log; both mreg instances store in a scratch PostgreSQL database
              each (--database URL, or sqlite), whose server processes' CPU is reported too
    mreg-noaudit  (only when asked for in --targets) mreg-on without the audit log
              (MREG_AUDIT=false): with mreg-off and mreg-on, it splits the chain's CPU per call
              into the audit log's share and the rest (token, roles, rate limit)
    relay     (only when asked for in --targets) interop/python/relay.py: a TCP relay that copies
              bytes and parses nothing, the floor of any extra hop; "over relay" is mreg's p50
              minus the relay's, with the same client
    fastmcp-proxy  FastMCP's own proxy (interop/python/proxy.py --upstream URL), behind its
              JWTVerifier checking the same token (unless --no-proxy-auth)
  Every mreg instance runs the same binary ($MREG_BIN) with health checks off.
* Clients:
    Python SDK  interop/python/client.py rounds (a keep-alive session to each target, sequential
                calls; `bench`, one target per process, with --sdk turns)
    TS SDK      interop/client.mjs rounds (the same)
    wrk         an out-of-process load generator, at 16 and 64 connections, POSTing tools/call
                in one session opened with curl (interop/wrk-tools-call.lua)
  The SDK clients give p50/p99 after a warm-up and the p50 mreg adds over going direct; wrk
  gives requests per second and the ratios mreg/direct and mreg/FastMCP proxy.
* Own tools (--own yes|no|only): mreg's own /mcp `tools/call list_servers` (a third mreg, chain
  on, embedded SQLite, five registered servers) against server.py's `echo` behind FastMCP's
  JWTVerifier checking the same token, with a sessionful client and a stateless 2026-07-28 one
  (no session: protocol metadata in each request's `_meta`), wrk with one thread at each of
  --own-connections; the ratio mreg/FastMCP and each process's CPU per call.
* Pinning (--pin ROLE=CPUS, repeatable): runs a role's processes on those CPUs only (taskset;
  PostgreSQL's server processes by sched_setaffinity, restored at the end). Roles: gateway (the
  mreg instances, FastMCP's proxy and the FastMCP server of the own-tools part), upstream, load
  (wrk and the SDK clients), postgres, other (the identity provider). So a measurement can give
  the upstream a core of its own, making it the bottleneck for direct and proxied calls alike,
  or keep PostgreSQL off the gateway's core, when judging the gateway's own CPU per call.

The SDK clients measure in rounds (--sdk rounds, the default): one client process per upstream
holds a session to each target and calls them one after another, round after round (the order
rotated each round), so that a drift of the machine or of the upstream over the run touches every
target alike; what a target adds is the median of its per-round difference to direct. With --sdk
turns each target gets a client process of its own, one after another.

The targets take turns: each measurement (Python, TS, wrk warm-up, wrk per connection count)
runs on every target of an upstream before the next, in alternating order; after each wrk run
the next waits until the target answers a call again, so a backlog left in a slow target does
not load the one measured after it. All clients speak
MCP 2025-11-25 (the Python client with --mode legacy by default), so every target is measured
with the same protocol. Everything listens on and talks to loopback, every step has a time
bound, and every process this starts is stopped at the end, on error and on SIGINT/SIGTERM.

Run it through scripts/bench-peers, which prepares the venv, node_modules and wrk:

    scripts/bench-peers [--quick] [--calls N] [--warmup N] [--seconds S] [--json PATH] ...
"""

import argparse
import base64
import json
import os
import platform
import re
import select
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import bench_instructions

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO / "interop"
PYTHON_PEERS = INTEROP / "python"
WRK_SCRIPT = INTEROP / "wrk-tools-call.lua"

TENANT = "11111111-1111-1111-1111-111111111111"
CLIENT_ID = "22222222-2222-2222-2222-222222222222"
CLIENT_SECRET = "mreg-test-secret"
AUDIENCE = f"api://{CLIENT_ID}"
PROTOCOL = "2025-11-25"
TOOL = "echo"
TOOL_ARGS = json.dumps({"text": "ping"}, separators=(",", ":"))
ACCEPT = "Accept: application/json, text/event-stream"
CONTENT_TYPE = "Content-Type: application/json"

UPSTREAMS = {
    "fastmcp": ("FastMCP (Python), stateful, SSE", [sys.executable, str(PYTHON_PEERS / "server.py")]),
    "ts-sse": ("TypeScript SDK, stateful, SSE", ["node", str(INTEROP / "server.mjs")]),
    "ts-json": ("TypeScript SDK, stateless, JSON", ["node", str(INTEROP / "server.mjs"), "--stateless"]),
}
# The rmcp (Rust SDK) server of crates/mreg/examples/rmcp_upstream.rs, built by scripts/bench-peers.
RMCP_BIN = os.environ.get("RMCP_UPSTREAM_BIN", str(REPO / "target/release/examples/rmcp_upstream"))
if os.access(RMCP_BIN, os.X_OK):
    UPSTREAMS["rmcp-json"] = ("rmcp (Rust SDK), stateless, JSON", [RMCP_BIN])
    UPSTREAMS["rmcp-sse"] = ("rmcp (Rust SDK), stateful, SSE", [RMCP_BIN, "--stateful"])
# What --pin can place: see the module's docstring.
PIN_ROLES = ("gateway", "upstream", "load", "postgres", "other")
TARGETS = ["direct", "relay", "mreg-off", "mreg-noaudit", "mreg-on", "fastmcp-proxy"]
# What runs when --targets is not given.
DEFAULT_TARGETS = ["direct", "mreg-off", "mreg-on", "fastmcp-proxy"]
SKIPPED = [] if "rmcp-json" in UPSTREAMS else [
    {"what": "rmcp upstreams", "why": f"no binary at {RMCP_BIN} (scripts/bench-peers builds it: "
                                      "cargo build --release --example rmcp_upstream)"}]


def log(message: str) -> None:
    print(f"bench-peers: {message}", file=sys.stderr, flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="smoke test: --calls 50 --warmup 5 --seconds 2 --wrk-warmup 1 unless given")
    parser.add_argument("--calls", type=int, help="measured SDK calls per target (default 200)")
    parser.add_argument("--warmup", type=int, help="SDK warm-up calls per target (default 20)")
    parser.add_argument("--seconds", type=int, help="wrk seconds per point (default 10)")
    parser.add_argument("--wrk-warmup", type=int, help="wrk warm-up seconds per target (default 2)")
    parser.add_argument("--connections", default="16,64", help="wrk connection counts (default 16,64)")
    parser.add_argument("--threads", type=int, default=2, help="wrk threads (default 2)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON here")
    parser.add_argument("--upstreams", default=",".join(UPSTREAMS),
                        help=f"comma-separated subset of {','.join(UPSTREAMS)}")
    parser.add_argument("--targets", default=",".join(DEFAULT_TARGETS),
                        help=f"comma-separated subset of {','.join(TARGETS)} (direct is always run)")
    parser.add_argument("--upstream-cmd", action="append", default=[], metavar="NAME=COMMAND",
                        help="one more upstream: a command printing 'LISTENING <port>' and serving "
                             "the echo tool at /mcp (repeatable)")
    parser.add_argument("--no-proxy-auth", action="store_true",
                        help="run the FastMCP proxy without its JWTVerifier")
    parser.add_argument("--py-mode", default="legacy",
                        help="client.py --mode (default legacy: the 2025-11-25 handshake, as the others)")
    parser.add_argument("--keep-logs", action="store_true", help="keep the directory of process logs")
    parser.add_argument("--database", default=os.environ.get(
                            "MREG_BENCH_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"),
                        help="PostgreSQL both mreg instances store in (a scratch database each is "
                             "created there and dropped); 'sqlite' for the embedded default")
    parser.add_argument("--own", choices=["yes", "no", "only"], default="yes",
                        help="also (yes), not (no) or only (only) measure mreg's own /mcp tools "
                             "against a FastMCP server behind its JWTVerifier (default yes)")
    parser.add_argument("--instructions", type=int, default=0, metavar="N",
                        help="instead of timing: count the instructions each mreg target executes "
                             "per call under callgrind (valgrind), N sequential calls on the first "
                             "upstream after --warmup calls (see bench_instructions.py)")
    parser.add_argument("--pin", action="append", default=[], metavar="ROLE=CPUS",
                        help=f"run a role's processes on these CPUs only (taskset list syntax, "
                             f"e.g. 0 or 0,1); roles {', '.join(PIN_ROLES)}; repeatable")
    parser.add_argument("--sdk", choices=["rounds", "turns"], default="rounds",
                        help="how an SDK client meets an upstream's targets: one process with a "
                             "session to each, calling them in rounds (default; added p50 is the "
                             "median of each round's difference to direct), or one process per "
                             "target, one after another (turns; added p50 is the difference of "
                             "the p50s)")
    parser.add_argument("--own-connections", default="16,64",
                        help="wrk connection counts of the own-tools measurement (default 16,64)")
    args = parser.parse_args()
    quick = args.quick
    for name, full, short in (("calls", 200, 50), ("warmup", 20, 5), ("seconds", 10, 2), ("wrk_warmup", 2, 1)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.calls < 1 or args.warmup < 0 or args.seconds < 1 or args.wrk_warmup < 0:
        parser.error("--calls and --seconds must be at least 1, warm-ups at least 0")
    args.connections = [int(c) for c in args.connections.split(",") if c]
    args.own_connections = [int(c) for c in args.own_connections.split(",") if c]
    args.upstreams = [u for u in args.upstreams.split(",") if u] if args.own != "only" else []
    for name in args.upstreams:
        if name not in UPSTREAMS:
            parser.error(f"unknown upstream {name!r}")
    for spec in args.upstream_cmd:
        name, sep, command = spec.partition("=")
        if not sep or not re.fullmatch(r"[a-z0-9][a-z0-9-]*", name) or name in UPSTREAMS:
            parser.error(f"--upstream-cmd wants NAME=COMMAND with a new lowercase name, got {spec!r}")
        UPSTREAMS[name] = (f"custom: {command}", shlex.split(command))
        args.upstreams.append(name)
    targets = [t for t in args.targets.split(",") if t]
    for name in targets:
        if name not in TARGETS:
            parser.error(f"unknown target {name!r}")
    args.targets = [t for t in TARGETS if t == "direct" or t in targets]
    args.pin = parse_pins(parser, args.pin)
    if "postgres" in args.pin and args.database == "sqlite":
        parser.error("--pin postgres=... needs PostgreSQL (--database is sqlite)")
    return args


def parse_pins(parser: argparse.ArgumentParser, specs: list[str]) -> dict[str, set[int]]:
    """--pin ROLE=CPUS options as {role: cpus}, each CPU one this process may run on."""
    allowed, pins = os.sched_getaffinity(0), {}
    for spec in specs:
        role, sep, cpus = spec.partition("=")
        if not sep or role not in PIN_ROLES:
            parser.error(f"--pin wants ROLE=CPUS with ROLE one of {', '.join(PIN_ROLES)}, got {spec!r}")
        if role in pins:
            parser.error(f"--pin {role} given twice")
        chosen = set()
        for part in cpus.split(","):
            low, dash, high = part.partition("-")
            if not low.isdigit() or (dash and not high.isdigit()):
                parser.error(f"--pin {role}: {cpus!r} is not a CPU list such as 0 or 0,1 or 0-3")
            chosen |= set(range(int(low), int(high if dash else low) + 1))
        if not chosen or not chosen <= allowed:
            parser.error(f"--pin {role}: CPUs {sorted(chosen)} are not all among those this "
                         f"process may use ({sorted(allowed)})")
        pins[role] = chosen
    return pins


class Processes:
    """Starts the long-running peers, each in a session of its own, and stops them all."""

    def __init__(self, logs: Path, pins: dict[str, set[int]]):
        self.logs, self.pins = logs, pins
        self.running: list[tuple[str, subprocess.Popen]] = []

    def pinned(self, role: str, argv: list[str]) -> list[str]:
        """`argv`, run on the CPUs --pin gave `role` (through taskset), if it gave any."""
        cpus = self.pins.get(role)
        return ["taskset", "-c", ",".join(map(str, sorted(cpus))), *argv] if cpus else argv

    def start(self, name: str, argv: list[str], *, role: str, env=None, cwd=None) -> subprocess.Popen:
        stderr = open(self.logs / f"{name}.log", "wb")
        proc = subprocess.Popen(self.pinned(role, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=stderr, env=env, cwd=cwd or REPO, start_new_session=True)
        stderr.close()
        self.running.append((name, proc))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.logs / f"{name}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def first_line(self, name: str, proc: subprocess.Popen, timeout: float = 60) -> str:
        """The first stdout line of `proc` (its LISTENING or ready line)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], 0.2)
            if ready:
                line = proc.stdout.readline().decode().strip()
                if line:
                    return line
            if proc.poll() is not None:
                break
        raise RuntimeError(f"{name} did not start (exit status {proc.poll()}); its log ends:\n"
                           f"{self.log_tail(name)}")

    def wait_for_log(self, name: str, proc: subprocess.Popen, messages: list[str],
                     timeout: float = 60) -> dict[str, dict]:
        """mreg's JSON log records with these messages (it logs its listening addresses)."""
        deadline, found = time.monotonic() + timeout, {}
        while time.monotonic() < deadline and len(found) < len(messages):
            for line in (self.logs / f"{name}.log").read_text(errors="replace").splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if record.get("message") in messages:
                    found[record["message"]] = record
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        if len(found) < len(messages):
            raise RuntimeError(f"{name} did not start (exit status {proc.poll()}); its log ends:\n"
                               f"{self.log_tail(name)}")
        return found

    def stop_all(self) -> None:
        for _, proc in self.running:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + 10
        for _, proc in self.running:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
            if proc.stdout:
                proc.stdout.close()
        self.running.clear()


class Http:
    """HTTP requests made with curl: registration, tokens, MCP sessions for wrk."""

    def __init__(self, scratch: Path):
        self.head = scratch / "curl-head"
        self.body = scratch / "curl-body"

    def request(self, method: str, url: str, headers=(), data: str | None = None,
                timeout: float = 15) -> tuple[int, dict[str, str], str]:
        cmd = ["curl", "-sS", "--max-time", str(timeout), "-X", method, "-D", str(self.head),
               "-o", str(self.body), "-w", "%{http_code}", url]
        for header in headers:
            cmd += ["-H", header]
        if data is not None:
            cmd += ["--data-binary", data]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout + 5)
        if done.returncode != 0:
            raise RuntimeError(f"curl {method} {url}: {done.stderr.strip()}")
        response_headers = {}
        for line in self.head.read_text(errors="replace").splitlines():
            name, sep, value = line.partition(":")
            if sep:
                response_headers[name.strip().lower()] = value.strip()
        return int(done.stdout), response_headers, self.body.read_text(errors="replace")


STATELESS = "2026-07-28"


class Session:
    """An MCP session (or, for a stateless server, just the headers) opened with curl, for wrk.

    With `stateless`, no session at all: the client speaks the stateless 2026-07-28 protocol,
    whose every request carries the protocol version and client capabilities in `params._meta`
    and the Mcp-Protocol-Version, Mcp-Method and Mcp-Name headers."""

    def __init__(self, http: Http, url: str, auth: list[str], tool: str = TOOL,
                 arguments: str = TOOL_ARGS, stateless: bool = False):
        self.http, self.url, self.tool, self.arguments = http, url, tool, arguments
        base = [ACCEPT, CONTENT_TYPE, *auth]
        self.id, self.meta = None, None
        if stateless:
            self.protocol = STATELESS
            self.meta = json.dumps({"io.modelcontextprotocol/protocolVersion": STATELESS,
                                    "io.modelcontextprotocol/clientCapabilities": {},
                                    "io.modelcontextprotocol/clientInfo":
                                        {"name": "bench-peers", "version": "1"}},
                                   separators=(",", ":"))
            self.headers = base + [f"Mcp-Protocol-Version: {STATELESS}",
                                   "Mcp-Method: tools/call", f"Mcp-Name: {tool}"]
            self.call()
            return
        initialize = json.dumps({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
            "protocolVersion": PROTOCOL, "capabilities": {},
            "clientInfo": {"name": "bench-peers", "version": "1"}}})
        status, head, body = http.request("POST", url, base, initialize)
        if status != 200 or '"result"' not in body:
            raise RuntimeError(f"initialize at {url}: HTTP {status} {body[:300]}")
        match = re.search(r'"protocolVersion"\s*:\s*"([^"]+)"', body)
        self.protocol = match.group(1) if match else PROTOCOL
        self.id = head.get("mcp-session-id")
        self.headers = base + ([f"Mcp-Session-Id: {self.id}"] if self.id else [])
        self.headers.append(f"Mcp-Protocol-Version: {self.protocol}")
        status, _, body = http.request(
            "POST", url, self.headers, '{"jsonrpc":"2.0","method":"notifications/initialized"}')
        if status not in (200, 202, 204):
            raise RuntimeError(f"notifications/initialized at {url}: HTTP {status} {body[:300]}")
        self.call()

    def wrk_env(self) -> dict[str, str]:
        """What interop/wrk-tools-call.lua reads: the tool, its arguments, the `_meta`."""
        return {"MCP_TOOL": self.tool, "MCP_ARGS": self.arguments, "MCP_META": self.meta or ""}

    def call(self, timeout: float = 15) -> float:
        """One tools/call in this session; returns its seconds."""
        started = time.monotonic()
        params = {"name": self.tool, "arguments": json.loads(self.arguments)}
        if self.meta:
            params["_meta"] = json.loads(self.meta)
        call = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params})
        status, _, body = self.http.request("POST", self.url, self.headers, call, timeout)
        if status != 200 or '"result"' not in body or re.search(r'"isError"\s*:\s*true', body):
            raise RuntimeError(f"tools/call at {self.url}: HTTP {status} {body[:300]}")
        return time.monotonic() - started

    def close(self) -> None:
        if self.id:
            try:
                self.http.request("DELETE", self.url, self.headers, timeout=5)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass


def process_cpu_seconds(pid: int | None) -> float | None:
    """User plus system CPU seconds of process `pid` so far, from /proc/PID/stat."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # Fields after the command name: state is [0], utime [11], stime [12] (clock ticks).
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def clean_environment() -> dict[str, str]:
    """This environment without any mreg, Entra or FastMCP settings of the caller's."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("MREG_", "AZURE_", "FASTMCP_"))}


class Bench:
    def __init__(self, args: argparse.Namespace, scratch: Path):
        self.args, self.scratch = args, scratch
        self.procs = Processes(scratch, args.pin)
        self.postgres_affinity: dict[int, set[int]] = {}
        self.http = Http(scratch)
        self.mreg_bin = os.environ.get("MREG_BIN") or str(REPO / "target/release/mreg")
        self.log = log
        self.token: str | None = None
        self.authority: str | None = None
        self.mreg: dict[str, dict] = {}
        self.errors: list[str] = []
        self.notes: list[str] = []
        self.databases: list[str] = []

    # ---- the processes --------------------------------------------------------------------

    def start_upstream(self, name: str) -> str:
        proc = self.procs.start(f"upstream-{name}", UPSTREAMS[name][1], role="upstream")
        line = self.procs.first_line(f"upstream-{name}", proc)
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"upstream {name} printed {line!r}, not LISTENING <port>")
        return f"http://127.0.0.1:{int(line.split()[1])}/mcp"

    def start_identity_provider(self) -> None:
        proc = self.procs.start("idp", [
            "node", str(INTEROP / "idp.mjs"), "--tenant", TENANT, "--client-id", CLIENT_ID,
            "--client-secret", CLIENT_SECRET, "--users", "{}", "--app-roles", '["admin"]',
            "--access-token-ttl", "86400"], role="other")
        self.authority = json.loads(self.procs.first_line("idp", proc))["authority"]
        # An Entra-style app token (client credentials), as a daemon calling mreg would have.
        status, _, body = self.http.request(
            "POST", f"{self.authority}/{TENANT}/v2.0/token",
            ["Content-Type: application/x-www-form-urlencoded"],
            f"grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
            f"&scope=api%3A%2F%2F{CLIENT_ID}%2F.default")
        if status != 200:
            raise RuntimeError(f"client-credentials token from idp.mjs: HTTP {status} {body[:300]}")
        self.token = json.loads(body)["access_token"]

    def scratch_database(self, label: str) -> str | None:
        """A fresh PostgreSQL database for `label` (dropped at the end), or None for SQLite."""
        if self.args.database == "sqlite":
            return None
        name = f"mreg_bench_{label.replace('-', '_')}_{os.urandom(4).hex()}"
        done = subprocess.run(["psql", self.args.database, "-qAtc", f"CREATE DATABASE {name}"],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"cannot create database {name}: {done.stderr.strip()}")
        self.databases.append(name)
        base = self.args.database.rsplit("/", 1)[0]
        return f"{base}/{name}"

    def drop_databases(self) -> None:
        for name in self.databases:
            subprocess.run(["psql", self.args.database, "-qAtc",
                            f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"],
                           capture_output=True, text=True, timeout=60)

    def postgres_pids(self) -> list[int]:
        """The PostgreSQL postmaster and its children (--database's server on this machine)."""
        done = subprocess.run(["psql", self.args.database, "-qAtc", "SHOW data_directory"],
                              capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"--pin postgres: cannot ask for the data directory: {done.stderr.strip()}")
        try:
            postmaster = int((Path(done.stdout.strip()) / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise RuntimeError(f"--pin postgres: no postmaster.pid to read ({exc}); the server "
                               "must run on this machine") from exc
        pids = [postmaster]
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                    pids.append(int(stat.parent.name))
            except (OSError, ValueError, IndexError):
                continue
        return pids

    def pin_postgres(self) -> None:
        """Moves the PostgreSQL server to --pin postgres's CPUs; backends it forks later follow
        the postmaster. `unpin_postgres` puts back what each process had."""
        cpus = self.args.pin["postgres"]
        for pid in self.postgres_pids():
            try:
                self.postgres_affinity[pid] = os.sched_getaffinity(pid)
                os.sched_setaffinity(pid, cpus)
            except ProcessLookupError:
                continue
        log(f"PostgreSQL's {len(self.postgres_affinity)} processes pinned to CPUs {sorted(cpus)}")

    def unpin_postgres(self) -> None:
        if not self.postgres_affinity:
            return
        postmaster = next(iter(self.postgres_affinity))
        before = self.postgres_affinity[postmaster]
        for pid in self.postgres_pids():
            try:
                os.sched_setaffinity(pid, self.postgres_affinity.get(pid, before))
            except ProcessLookupError:
                continue
        self.postgres_affinity.clear()

    def backend_pids(self, label: str) -> list[int]:
        """The PostgreSQL server processes serving `label`'s connections."""
        url = self.mreg.get(label, {}).get("database")
        if not url:
            return []
        name = url.rsplit("/", 1)[1]
        done = subprocess.run(["psql", self.args.database, "-qAtc",
                               f"SELECT pid FROM pg_stat_activity WHERE datname = '{name}'"],
                              capture_output=True, text=True, timeout=30)
        return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []

    def start_mreg(self, label: str, chain: bool, upstreams: list[str], embedded: bool = False,
                   audit: bool = True) -> None:
        """mreg `serve` as `label`; `embedded` keeps its store in the embedded SQLite default;
        with the chain on, `audit` says whether the audit log is on."""
        data = self.scratch / label
        data.mkdir()
        env = clean_environment() | {
            "MREG_API_PORT": "0", "FASTMCP_SERVER_PORT": "0", "MREG_LOG": "warn,mreg::app=info",
            "MREG_LOG_FORMAT": "json", "MREG_HEALTH_ENABLED": "false", "MREG_DATA_DIR": str(data),
        }
        database = None if embedded else self.scratch_database(label)
        if database:
            env["MREG_DATABASE_URL"] = database
        if chain:
            policy = data / "policy.toml"
            rules = ['[servers."*"]', 'roles = ["admin"]']
            for name in upstreams:
                rules += [f'[servers."{name}"]', 'roles = ["admin"]', f'tools = {{ {TOOL} = ["admin"] }}']
            policy.write_text("\n".join(rules) + "\n")
            env |= {
                "MREG_AUTH": "oauth", "AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": CLIENT_ID,
                # Authentication on requires an external encryption key (32 bytes, base64).
                "MREG_ENCRYPTION_KEY": base64.b64encode(os.urandom(32)).decode(),
                "AZURE_CLIENT_SECRET": CLIENT_SECRET, "AZURE_AUTHORITY_HOST": self.authority,
                "AZURE_GRAPH_URL": self.authority, "MREG_UPSTREAM_ALLOW": "127.0.0.0/8",
                "MREG_POLICY_FILE": str(policy), "MREG_RATE_LIMIT_PER_MINUTE": "1000000",
                "MREG_AUDIT": "true" if audit else "false",
                # Its issuer and public URL derive from the MCP port (benches/policy.rs does the same).
                "FASTMCP_SERVER_PORT": str(free_port()),
            }
        else:
            env |= {"MREG_AUTH": "none", "MREG_AUDIT": "false"}
        argv, callgrind_dir = [self.mreg_bin, "serve"], None
        if self.args.instructions:
            callgrind_dir = data / "callgrind"
            callgrind_dir.mkdir()
            argv = bench_instructions.wrapper(callgrind_dir) + argv
        proc = self.procs.start(label, argv, role="gateway", env=env, cwd=data)
        found = self.procs.wait_for_log(label, proc, ["REST API listening", "MCP listener listening"],
                                        timeout=300 if callgrind_dir else 60)
        self.mreg[label] = {"api": found["REST API listening"]["addr"],
                            "mcp": found["MCP listener listening"]["addr"], "chain": chain,
                            "pid": proc.pid, "database": database,
                            "callgrind_dir": str(callgrind_dir) if callgrind_dir else None}

    def register(self, label: str, name: str, url: str) -> str:
        instance = self.mreg[label]
        status, _, body = self.http.request(
            "POST", f"http://{instance['api']}/api/v1/servers", [CONTENT_TYPE, *self.auth(label)],
            json.dumps({"name": name, "url": url}))
        if status not in (200, 201):
            raise RuntimeError(f"registering {name} in {label}: HTTP {status} {body[:300]}")
        return f"http://{instance['mcp']}/servers/{name}/mcp"

    def start_proxy(self, name: str, upstream_url: str) -> str:
        argv = [sys.executable, str(PYTHON_PEERS / "proxy.py"), "--upstream", upstream_url]
        if self.proxy_auth:
            argv += ["--jwt-public-key-file", str(self.public_key_file()), "--audience", AUDIENCE,
                     "--issuer", f"{self.authority}/{TENANT}/v2.0"]
        proc = self.procs.start(f"proxy-{name}", argv, role="gateway")
        line = self.procs.first_line(f"proxy-{name}", proc)
        return f"http://127.0.0.1:{int(line.split()[1])}/mcp"

    def start_relay(self, name: str, upstream_url: str) -> str:
        argv = [sys.executable, str(PYTHON_PEERS / "relay.py"), "--upstream", upstream_url]
        proc = self.procs.start(f"relay-{name}", argv, role="gateway")
        line = self.procs.first_line(f"relay-{name}", proc)
        if not line.startswith("LISTENING "):
            raise RuntimeError(f"relay for {name} printed {line!r}, not LISTENING <port>")
        path = upstream_url.split("/", 3)[3]
        return f"http://127.0.0.1:{int(line.split()[1])}/{path}"

    def public_key_file(self) -> Path:
        """idp.mjs's signing key as PEM, for FastMCP's JWTVerifier (it takes no JWKS URI here)."""
        path = self.scratch / "idp-public.pem"
        if not path.exists():
            import jwt  # PyJWT and cryptography, both pinned in requirements.txt
            from cryptography.hazmat.primitives import serialization

            status, _, body = self.http.request("GET", f"{self.authority}/{TENANT}/v2.0/jwks")
            if status != 200:
                raise RuntimeError(f"jwks from idp.mjs: HTTP {status}")
            key = jwt.algorithms.RSAAlgorithm.from_jwk(json.dumps(json.loads(body)["keys"][0]))
            path.write_bytes(key.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo))
        return path

    @property
    def proxy_auth(self) -> bool:
        return not self.args.no_proxy_auth

    def auth(self, label: str) -> list[str]:
        """The Authorization header a target needs."""
        needs = label in ("mreg-on", "mreg-noaudit", "mreg-own", "fastmcp-jwt") or (
            label == "fastmcp-proxy" and self.proxy_auth)
        return [f"Authorization: Bearer {self.token}"] if needs else []

    # ---- the measurements -----------------------------------------------------------------

    def run_sdk_client(self, client: str, options: list[str], command: list[str],
                       bound: int) -> dict:
        """Runs an SDK client (`python`: client.py, `ts`: client.mjs) within `bound` seconds and
        returns the JSON line it printed last, or {"error"}."""
        if client == "python":
            cmd = [sys.executable, str(PYTHON_PEERS / "client.py"), "--mode", self.args.py_mode,
                   "--timeout", "30"]
        else:
            cmd = ["node", str(INTEROP / "client.mjs"), "--timeout", "30000"]
        try:
            done = subprocess.run(self.procs.pinned("load", cmd + options + command),
                                  capture_output=True, text=True, timeout=bound, cwd=REPO)
        except subprocess.TimeoutExpired:
            return {"error": f"no answer within {bound} s"}
        lines = done.stdout.strip().splitlines()
        try:
            result = json.loads(lines[-1])
        except (IndexError, ValueError):
            result = {"error": f"exit {done.returncode}: {done.stderr.strip()[-300:]}"}
        if done.returncode != 0 and "error" not in result:
            result = {"error": f"exit {done.returncode}"}
        return result

    def sdk_rounds(self, client: str, targets: dict[str, str]) -> dict[str, dict]:
        """One client process with a session to every target, calling them in rounds."""
        args = self.args
        spec = [{"label": target, "url": url,
                 "headers": dict(h.split(": ", 1) for h in self.auth(target))}
                for target, url in targets.items()]
        spec_file = self.scratch / f"rounds-{client}.json"
        spec_file.write_text(json.dumps(spec))
        command = ["rounds", TOOL, TOOL_ARGS, "--targets", f"@{spec_file}",
                   "--calls", str(args.calls), "--warmup", str(args.warmup)]
        bound = 60 + 2 * (args.calls + args.warmup) * len(targets)
        measured = self.run_sdk_client(client, [], command, bound)
        if "targets" not in measured:
            return {t: {"error": measured.get("error", "no figures")} for t in targets}
        return {t: {**measured["targets"].get(t, {"error": "not measured"}), "rounds": True}
                for t in targets}

    def sdk_bench(self, client: str, url: str, target: str) -> dict:
        args, token = self.args, self.token if self.auth(target) else None
        options = ["--url", url]
        if token:
            options += (["--bearer", token] if client == "python"
                        else ["--header", f"Authorization: Bearer {token}"])
        command = ["bench", TOOL, TOOL_ARGS, "--calls", str(args.calls), "--warmup", str(args.warmup)]
        bound = 60 + 2 * (args.calls + args.warmup)  # a call slower than 2 s on average is broken
        return self.run_sdk_client(client, options, command, bound)

    def wrk(self, session: Session, connections: int, seconds: int, pid: int | None = None,
            label: str | None = None, threads: int | None = None) -> dict:
        threads = threads or self.args.threads
        cmd = ["wrk", "-t", str(max(1, min(threads, connections))), "-c", str(connections),
               "-d", f"{seconds}s", "--timeout", "10s", "-s", str(WRK_SCRIPT)]
        for header in session.headers:
            cmd += ["-H", header]
        cmd.append(session.url)
        env = os.environ | session.wrk_env()
        backends = self.backend_pids(label) if label else []
        pg_before = [process_cpu_seconds(p) for p in backends]
        cpu_before = process_cpu_seconds(pid)
        try:
            done = subprocess.run(self.procs.pinned("load", cmd), capture_output=True, text=True,
                                  timeout=seconds + 60, env=env)
        except subprocess.TimeoutExpired:
            return {"error": "wrk did not finish"}
        cpu_after = process_cpu_seconds(pid)
        pg_after = [process_cpu_seconds(p) for p in backends]
        result = {"error": f"wrk exit {done.returncode}: {(done.stderr or done.stdout).strip()[-300:]}"}
        for line in done.stdout.splitlines():
            if line.startswith("WRK_RESULT "):
                result = json.loads(line.removeprefix("WRK_RESULT "))
                # Only answered calls count: wrk's `requests` includes refusals and errors,
                # which a gateway refusing everything would answer fastest of all.
                result["answered"] = max(0, result["requests"] - result["bad"])
                result["rps"] = round(result["answered"] / max(result["duration_s"], 1e-9), 1)
                failed = result["bad"] + sum(result["errors"].values())
                if failed:
                    result["warning"] = f"{failed} failed responses or socket errors"
                elif result["requests"] == 0:  # a slow target, not a failure: say so in the notes
                    result["note"] = (f"no call answered within the {seconds} s run "
                                      f"(at {connections} connections; try a longer --seconds)")
                if cpu_before is not None and cpu_after is not None and result["answered"]:
                    # The gateway process's own CPU (user + system) per answered call.
                    result["process_cpu_ms_per_call"] = round(
                        (cpu_after - cpu_before) * 1000 / result["answered"], 4)
                # PostgreSQL's own CPU for this instance (its backends), per answered call: with
                # the chain on, the cost of one audit row in the database.
                pg = [a - b for a, b in zip(pg_after, pg_before) if a is not None and b is not None]
                if backends and result["answered"]:
                    result["postgres_cpu_ms_per_call"] = round(sum(pg) * 1000 / result["answered"], 4)
        # Requests still queued when wrk stopped would load the next target: wait until this
        # one answers a call again (its backlog drained) before going on.
        try:
            result["settle_s"] = round(session.call(timeout=120), 3)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            result.setdefault("warning", f"no answer after the run: {exc}")
        return result

    def measure_own(self) -> list[dict]:
        """mreg's own MCP server against a FastMCP server doing the same job, both authenticated.

        mreg: `/mcp` `tools/call list_servers` (five registered servers) with the chain on (the
        idp.mjs app token checked per request, roles, rate limit, one audit row per call in the
        embedded SQLite). FastMCP: server.py's `echo` behind its JWTVerifier checking the same
        token. Each with a client in a session (2025-11-25 handshake) and a stateless 2026-07-28
        client (no session; protocol metadata in every request), wrk with one thread at each of
        --own-connections, the targets taking turns."""
        self.start_mreg("mreg-own", True, [], embedded=True)
        instance = self.mreg["mreg-own"]
        log(f"mreg-own: REST {instance['api']}, MCP {instance['mcp']} (embedded SQLite)")
        server = [sys.executable, str(PYTHON_PEERS / "server.py"),
                  "--jwt-public-key-file", str(self.public_key_file()), "--audience", AUDIENCE,
                  "--issuer", f"{self.authority}/{TENANT}/v2.0"]
        proc = self.procs.start("fastmcp-jwt", server, role="gateway")
        line = self.procs.first_line("fastmcp-jwt", proc)
        fastmcp = f"http://127.0.0.1:{int(line.split()[1])}/mcp"
        log(f"fastmcp-jwt: {fastmcp}")
        for number in range(1, 6):
            self.register("mreg-own", f"own-{number}", fastmcp)
        targets = {"mreg-own": (f"http://{instance['mcp']}/mcp", "list_servers", "{}"),
                   "fastmcp-jwt": (fastmcp, TOOL, TOOL_ARGS)}
        rows = []
        for kind in ("session", "stateless"):
            results = {t: {"target": t, "client": kind, "tool": tool, "wrk": {}}
                       for t, (_, tool, _) in targets.items()}
            sessions = {}
            for target, (url, tool, arguments) in targets.items():
                try:
                    sessions[target] = Session(self.http, url, self.auth(target), tool, arguments,
                                               stateless=kind == "stateless")
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    results[target]["wrk_error"] = str(exc)
                    self.fail(f"own tools: {target} ({kind}): {exc}")
            steps = ([("warmup", max(self.args.own_connections))] if self.args.wrk_warmup else [])
            steps += [("wrk", c) for c in self.args.own_connections]
            for number, (step, connections) in enumerate(steps):
                order = list(sessions) if number % 2 == 0 else list(reversed(sessions))
                for target in order:
                    if step == "warmup":
                        self.wrk(sessions[target], connections, self.args.wrk_warmup, threads=1)
                        continue
                    pid = self.mreg.get(target, {}).get("pid")
                    if target == "fastmcp-jwt":
                        pid = proc.pid
                    result = self.wrk(sessions[target], connections, self.args.seconds, pid,
                                      threads=1)
                    results[target]["wrk"][str(connections)] = result
                    self.report(f"own tools: {target} ({kind})", f"wrk c={connections}", result)
            for session in sessions.values():
                session.close()
            mine, theirs = results["mreg-own"], results["fastmcp-jwt"]
            mine["vs_fastmcp"] = {}
            for c in self.args.own_connections:
                a_point, b_point = mine["wrk"].get(str(c), {}), theirs["wrk"].get(str(c), {})
                if "warning" in a_point or "warning" in b_point:
                    continue  # failed calls: no ratio
                a, b = a_point.get("rps"), b_point.get("rps")
                if a and b:
                    mine["vs_fastmcp"][str(c)] = round(a / b, 2)
            rows += [mine, theirs]
        return rows

    def measure(self, upstream: str, targets: dict[str, str]) -> dict[str, dict]:
        """Every measurement on every target of one upstream, the targets taking turns."""
        args = self.args
        results = {t: {"url": url, "wrk": {}} for t, url in targets.items()}
        sessions: dict[str, Session] = {}
        steps = [("python", None), ("ts", None)]
        if args.wrk_warmup:
            steps.append(("wrk-warmup", max(args.connections)))
        steps += [("wrk", c) for c in args.connections]
        try:
            for number, (step, connections) in enumerate(steps):
                order = list(targets) if number % 2 == 0 else list(reversed(targets))
                if step in ("python", "ts") and args.sdk == "rounds":
                    for target, result in self.sdk_rounds(step, targets).items():
                        results[target][step] = result
                        self.report(f"{upstream} -> {target}", f"{step} (rounds)", result)
                    continue
                for target in order:
                    url, where = targets[target], f"{upstream} -> {target}"
                    if step in ("python", "ts"):
                        result = self.sdk_bench(step, url, target)
                        results[target][step] = result
                        self.report(where, step, result)
                        continue
                    if target not in sessions:
                        try:
                            sessions[target] = Session(self.http, url, self.auth(target))
                        except (RuntimeError, subprocess.TimeoutExpired) as exc:
                            sessions[target] = None
                            results[target]["wrk_error"] = str(exc)
                            self.fail(f"{where}: cannot open a session for wrk: {exc}")
                    if sessions[target] is None:
                        continue
                    if step == "wrk-warmup":
                        self.wrk(sessions[target], connections, args.wrk_warmup)
                        continue
                    pid = self.mreg.get(target, {}).get("pid")
                    result = self.wrk(sessions[target], connections, args.seconds, pid,
                                      target if target in self.mreg else None)
                    results[target]["wrk"][str(connections)] = result
                    self.report(where, f"wrk c={connections}", result)
        finally:
            for session in sessions.values():
                if session:
                    session.close()
        return results

    def report(self, where: str, what: str, result: dict) -> None:
        if "error" in result:
            self.fail(f"{where}: {what}: {result['error']}")
        elif "rps" in result:
            log(f"{where}: {what}: {result['rps']:.0f} req/s, p50 {result['latency_ms']['p50']} ms, "
                f"answering again {result.get('settle_s', '-')} s after"
                + (f" ({result['warning']})" if "warning" in result else "")
                + (f" ({result['note']})" if "note" in result else ""))
            if "warning" in result:
                self.errors.append(f"{where}: {what}: {result['warning']}")
            if "note" in result:
                self.notes.append(f"{where}: {what}: {result['note']}")
        else:
            log(f"{where}: {what}: p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms")

    def fail(self, message: str) -> None:
        log(f"FAILED {message}")
        self.errors.append(message)

    def audit_figures(self) -> dict[str, float]:
        instance = self.mreg.get("mreg-on")
        if not instance:
            return {}
        try:
            status, _, body = self.http.request("GET", f"http://{instance['api']}/metrics",
                                                self.auth("mreg-on"))
        except RuntimeError:
            return {}
        figures = {}
        for line in body.splitlines() if status == 200 else []:
            if line.startswith("mreg_audit_"):
                name, _, value = line.rpartition(" ")
                figures[name] = float(value)
        return figures

    def run(self) -> dict:
        args = self.args
        wants = set(args.targets)
        if not os.access(self.mreg_bin, os.X_OK) and wants & {"mreg-off", "mreg-noaudit", "mreg-on"}:
            raise RuntimeError(f"no mreg binary at {self.mreg_bin} (set MREG_BIN, or cargo build --release)")
        started = time.monotonic()
        load_before = os.getloadavg()
        if "postgres" in args.pin:
            self.pin_postgres()
        upstream_urls = {}
        for name in args.upstreams:
            upstream_urls[name] = self.start_upstream(name)
            log(f"upstream {name}: {upstream_urls[name]}")
        own = args.own != "no"
        if wants & {"mreg-on", "mreg-noaudit"} or own or ("fastmcp-proxy" in wants and self.proxy_auth):
            self.start_identity_provider()
            log(f"identity provider: {self.authority}")
        for label, chain, audit in (("mreg-off", False, False), ("mreg-noaudit", True, False),
                                    ("mreg-on", True, True)):
            if label in wants and args.upstreams:
                self.start_mreg(label, chain, args.upstreams, audit=audit)
                log(f"{label}: REST {self.mreg[label]['api']}, MCP {self.mreg[label]['mcp']}")
        if args.instructions:
            name = args.upstreams[0]
            targets = {label: self.register(label, name, upstream_urls[name])
                       for label in ("mreg-off", "mreg-noaudit", "mreg-on") if label in wants}
            return {"instructions": bench_instructions.measure(
                        self, Session, name, targets, args.instructions, args.warmup),
                    "upstream": name, "environment": environment(self.mreg_bin, load_before),
                    "elapsed_s": round(time.monotonic() - started, 1), "errors": self.errors}
        own_rows = self.measure_own() if own else []
        rows = []
        for name in args.upstreams:
            targets = {"direct": upstream_urls[name]}
            if "relay" in wants:
                targets["relay"] = self.start_relay(name, upstream_urls[name])
            for label in ("mreg-off", "mreg-noaudit", "mreg-on"):
                if label in wants:
                    targets[label] = self.register(label, name, upstream_urls[name])
            if "fastmcp-proxy" in wants:
                targets["fastmcp-proxy"] = self.start_proxy(name, upstream_urls[name])
            for target, result in self.measure(name, targets).items():
                rows.append({"upstream": name, "target": target, **result})
        derive(rows, args.connections)
        audit = self.audit_figures()
        return {
            "settings": {
                "calls": args.calls, "warmup": args.warmup, "sdk": args.sdk,
                "wrk_seconds": args.seconds,
                "wrk_warmup_seconds": args.wrk_warmup, "connections": args.connections,
                "wrk_threads": args.threads, "tool": TOOL, "arguments": json.loads(TOOL_ARGS),
                "protocol": PROTOCOL, "python_client_mode": args.py_mode,
                "fastmcp_proxy_auth": self.proxy_auth and "fastmcp-proxy" in wants,
                "mreg_on": "MREG_AUTH=oauth (idp.mjs app token, roles [admin]), policy file with "
                           "server and tool roles, MREG_RATE_LIMIT_PER_MINUTE=1000000, audit log on"
                           + (" (SQLite)" if args.database == "sqlite" else " (PostgreSQL)"),
                "mreg_off": "MREG_AUTH=none, MREG_AUDIT=false",
                "mreg_noaudit": "as mreg-on, with MREG_AUDIT=false",
                "pins": {role: sorted(cpus) for role, cpus in args.pin.items()},
            },
            "environment": environment(self.mreg_bin, load_before),
            "upstreams": {n: UPSTREAMS[n][0] for n in args.upstreams},
            "results": rows,
            "own_tools": own_rows,
            "audit": audit,
            "skipped": SKIPPED,
            "errors": self.errors,
            "notes": self.notes,
            "elapsed_s": round(time.monotonic() - started, 1),
        }


def share(figures: dict) -> float:
    """The audit log's share of the chain's CPU per call: (on - no-audit) / (on - off)."""
    chain = figures["mreg-on"] - figures["mreg-off"]
    return (figures["mreg-on"] - figures["mreg-noaudit"]) / chain if chain > 0 else float("nan")


def added_p50(mine: dict, base: dict) -> float | None:
    """What a target adds to a client's p50 over `base` (direct, or the relay): measured in
    rounds, the median of each round's difference (the two calls a few milliseconds apart, under
    the same conditions); otherwise the difference of the two p50s."""
    if mine.get("p50_ms") is None or base.get("p50_ms") is None:
        return None
    ours, theirs = mine.get("samples_ms") or [], base.get("samples_ms") or []
    if mine.get("rounds") and base.get("rounds") and ours and len(ours) == len(theirs):
        return round(statistics.median(a - b for a, b in zip(ours, theirs)), 3)
    return round(mine["p50_ms"] - base["p50_ms"], 3)


def derive(rows: list[dict], connections: list[int]) -> None:
    """Added p50 over direct (and, for mreg, over the relay), and throughput ratios to direct
    and to the FastMCP proxy."""
    by_key = {(r["upstream"], r["target"]): r for r in rows}

    def rps(row, c):
        point = (row or {}).get("wrk", {}).get(str(c), {})
        return point.get("rps")

    for row in rows:
        direct = by_key.get((row["upstream"], "direct"))
        proxy = by_key.get((row["upstream"], "fastmcp-proxy"))
        relay = by_key.get((row["upstream"], "relay"))
        row["added_p50_ms"], row["over_relay_p50_ms"] = {}, {}
        for client in ("python", "ts"):
            mine = row.get(client, {})
            added = added_p50(mine, (direct or {}).get(client, {}))
            if added is not None:
                row["added_p50_ms"][client] = added
            over = added_p50(mine, (relay or {}).get(client, {}))
            if over is not None and row["target"].startswith("mreg"):
                row["over_relay_p50_ms"][client] = over
        row["throughput_vs_direct"], row["throughput_vs_proxy"] = {}, {}
        for c in connections:
            mine = rps(row, c)
            if mine is not None and rps(direct, c):
                row["throughput_vs_direct"][str(c)] = round(mine / rps(direct, c), 3)
            if mine is not None and rps(proxy, c) and row["target"].startswith("mreg"):
                row["throughput_vs_proxy"][str(c)] = round(mine / rps(proxy, c), 3)


def environment(mreg_bin: str, load_before) -> dict:
    def output(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return None

    dirty = output(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    return {
        "cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(), "node": output(["node", "--version"]),
        "wrk": (output(["wrk", "-v"]) or "").split("\n")[0],
        "mreg_bin": mreg_bin, "mreg_version": output([mreg_bin, "--version"]),
        "git_commit": output(["git", "-C", str(REPO), "rev-parse", "HEAD"]),
        "git_dirty": bool(dirty),
    }


def table(report: dict) -> str:
    """One line per upstream and target; columns in groups with a heading each."""
    conns = [str(c) for c in report["settings"]["connections"]]

    def num(value, digits):
        return "-" if value is None else f"{value:.{digits}f}"

    groups = [("Python SDK", ["p50", "p99"], 6), ("TS SDK", ["p50", "p99"], 6),
              ("added p50", ["Py", "TS"], 6), ("wrk req/s", [f"c{c}" for c in conns], 7),
              ("x direct", [f"c{c}" for c in conns], 6), ("mreg/proxy", [f"c{c}" for c in conns], 6)]
    widths = [max(len(label), len(cols) * (w + 1) - 1) for label, cols, w in groups]

    def line(first: str, cells_per_group: list[list[str]]) -> str:
        parts = [first]
        for (_, _, w), width, cells in zip(groups, widths, cells_per_group):
            parts.append(" ".join(f"{c:>{w}}" for c in cells).rjust(width))
        return "  ".join(parts)

    lines = ["  ".join([f"{'upstream':<9} {'target':<14}"]
                       + [label.center(width) for (label, _, _), width in zip(groups, widths)])]
    lines.append(line(" " * 24, [cols for _, cols, _ in groups]))
    for row in report["results"]:
        cells = []
        for client in ("python", "ts"):
            result = row.get(client, {})
            cells.append(["err", "err"] if "error" in result or not result else
                         [num(result.get("p50_ms"), 2), num(result.get("p99_ms"), 2)])
        cells.append(["", ""] if row["target"] == "direct" else
                     [num(row["added_p50_ms"].get(c), 2) for c in ("python", "ts")])
        rates = []
        for c in conns:
            point = row["wrk"].get(c, {})
            mark = "!" if "warning" in point else "*" if "note" in point else ""
            bad = "error" in point or "wrk_error" in row
            rates.append("err" if bad else num(point.get("rps"), 0) + mark)
        cells.append(rates)
        for key in ("throughput_vs_direct", "throughput_vs_proxy"):
            cells.append([num(row[key][c], 2) if c in row[key] else "" for c in conns])
        lines.append(line(f"{row['upstream']:<9} {row['target']:<14}", cells))
    return "\n".join(line.rstrip() for line in lines)


def main() -> int:
    args = parse_args()
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the finally below stops every process.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda number, _: sys.exit(128 + number))
    scratch = Path(tempfile.mkdtemp(prefix="mreg-bench-peers-"))
    bench = Bench(args, scratch)
    keep = args.keep_logs
    try:
        report = bench.run()
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        log(f"FAILED: {exc}")
        keep = True
        return 1
    finally:
        bench.procs.stop_all()
        bench.unpin_postgres()
        bench.drop_databases()
        if keep:
            log(f"process logs kept in {scratch}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    report["command"] = ["scripts/bench-peers", *sys.argv[1:]]
    if "instructions" in report:
        print(f"\nmreg process instructions per tools/call {TOOL} {TOOL_ARGS} through "
              f"/servers/{{name}}/mcp to {report['upstream']} (callgrind, {args.instructions} "
              f"sequential calls after {args.warmup} warm-up, one keep-alive session):")
        print("\n".join(bench_instructions.report(report["instructions"])))
        print(f"took {report['elapsed_s']} s")
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        return 1 if report["errors"] else 0
    settings = report["settings"]
    print(f"\nmreg with real MCP peers: tools/call {TOOL} {TOOL_ARGS}, MCP {PROTOCOL}, loopback, "
          f"{report['environment']['cpus']} CPUs, load {report['environment']['loadavg_before'][0]}"
          f" before / {report['environment']['loadavg_after'][0]} after")
    sdk = (f"a session to each target, keep-alive, {settings['calls']} rounds of one call to each "
           f"(order rotated) after {settings['warmup']}" if settings["sdk"] == "rounds" else
           f"one session, keep-alive, {settings['calls']} sequential calls after "
           f"{settings['warmup']}")
    print(f"SDK clients: {sdk} warm-up (ms); wrk: {settings['wrk_seconds']} s per point "
          f"after {settings['wrk_warmup_seconds']} s warm-up, {settings['wrk_threads']} threads, "
          f"one session per target")
    if settings["pins"]:
        print("pinned (--pin): " + ", ".join(f"{role} on CPU {','.join(map(str, cpus))}"
                                              for role, cpus in settings["pins"].items())
              + "; the rest on any CPU")
    print()
    print(table(report))
    print("\nadded p50: " + ("the median over rounds of the call's time minus the same round's "
                            "call going direct, same client. " if settings["sdk"] == "rounds" else
                            "minus the same client's p50 going direct. ")
          + "x direct: req/s over direct's. "
          "mreg/proxy: mreg's req/s over the FastMCP proxy's (same upstream, same connections).")
    measured = {row["target"] for row in report["results"]}
    if "relay" in measured:
        print("relay: a TCP relay that copies bytes (interop/python/relay.py), the floor of any "
              "extra hop. What mreg adds over the relay, as added p50 (Python / TS SDK, ms):")
        for row in report["results"]:
            over = row.get("over_relay_p50_ms") or {}
            if over:
                print(f"  {row['upstream']:<9} {row['target']:<14} "
                      + " / ".join("-" if over.get(c) is None else f"{over[c]:.2f}"
                                   for c in ("python", "ts")))
    for target in ("mreg-on", "mreg-noaudit", "mreg-off"):
        if target in measured:
            print(f"{target}: {settings[target.replace('-', '_')]}.")
    if "fastmcp-proxy" in measured:
        print("fastmcp-proxy: " + ("behind its JWTVerifier, checking the same token as mreg-on."
                                   if settings["fastmcp_proxy_auth"] else "without auth."))
    if report["audit"]:
        print("mreg-on audit log: " + ", ".join(f"{k} {v:.0f}" for k, v in report["audit"].items()))
    cpu = {}
    for row in report["results"]:
        for connections, point in row.get("wrk", {}).items():
            if "process_cpu_ms_per_call" in point:
                cpu.setdefault((row["upstream"], connections), {})[row["target"]] = point["process_cpu_ms_per_call"]
    pg = {}
    for row in report["results"]:
        for connections, point in row.get("wrk", {}).items():
            if "postgres_cpu_ms_per_call" in point:
                pg.setdefault((row["upstream"], connections), {})[row["target"]] = point["postgres_cpu_ms_per_call"]
    for (upstream, connections), figures in sorted(cpu.items()):
        if "mreg-on" in figures and "mreg-off" in figures and figures["mreg-off"] > 0:
            extra = ""
            if "mreg-on" in pg.get((upstream, connections), {}):
                on_pg = pg[(upstream, connections)]["mreg-on"]
                off_pg = pg[(upstream, connections)].get("mreg-off", 0.0)
                extra = (f"; PostgreSQL CPU per call (one audit row) {on_pg:.3f} ms, "
                         f"chain off {off_pg:.3f} ms")
            if "mreg-noaudit" in figures:
                extra += (f"; chain without the audit log {figures['mreg-noaudit']:.3f} ms "
                          f"(no-audit/off {figures['mreg-noaudit'] / figures['mreg-off']:.2f}, "
                          f"the audit log's share of the chain's cost "
                          f"{share(figures):.0%})")
            print(f"mreg process CPU per call, {upstream} c={connections}: chain on "
                  f"{figures['mreg-on']:.3f} ms, off {figures['mreg-off']:.3f} ms, "
                  f"on/off {figures['mreg-on'] / figures['mreg-off']:.2f}{extra}")
    if report["own_tools"]:
        print("\nmreg's own /mcp (tools/call list_servers, chain on, audit to the embedded SQLite) "
              "against a FastMCP server (echo behind its JWTVerifier), same token; wrk, 1 thread, "
              f"{settings['wrk_seconds']} s per point:")
        for row in report["own_tools"]:
            points = []
            for c, point in row["wrk"].items():
                text = ("err" if "error" in point else f"{point.get('rps', 0):.0f} req/s"
                        + (f" ({point['warning']})" if "warning" in point else ""))
                if "process_cpu_ms_per_call" in point:
                    text += f" ({point['process_cpu_ms_per_call']:.3f} ms CPU/call)"
                points.append(f"c{c} {text}")
            ratio = ", ".join(f"c{c} {r:.1f}x" for c, r in row.get("vs_fastmcp", {}).items())
            print(f"  {row['target']:<12} {row['client']:<10} " + "; ".join(points)
                  + (f"  -> {ratio} FastMCP's" if ratio else ""))
    for skipped in report["skipped"]:
        print(f"not measured: {skipped['what']} ({skipped['why']})")
    for note in report["notes"]:
        print(f"* {note}")
    print(f"took {report['elapsed_s']} s")
    if report["errors"]:
        print("\nFAILURES (marked err or ! above):\n  " + "\n  ".join(report["errors"]))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"results written to {args.json}")
    return 1 if report["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
