#!/usr/bin/env node
// CLI MCP client built on the official TypeScript SDK
// (@modelcontextprotocol/sdk 1.x): Client + StreamableHTTPClientTransport.
//
// Usage:
//   node interop/client.mjs --url URL [options] <command>
// Commands:
//   tools                   -> {"tools":[names...],"descriptions":{name:text},"protocolVersion","sessionId"}
//   call NAME JSON_ARGS     (or @FILE holding them)
//                           -> CallToolResult + protocolVersion, sessionId (+ progress/logs seen)
//   read URI                -> ReadResourceResult + protocolVersion, sessionId
//   bench NAME JSON_ARGS [--calls N] [--warmup W]
//                           -> {"calls","p50_ms","p99_ms","mean_ms","samples_ms"}: one session,
//                              W unmeasured then N measured sequential tools/call over one
//                              keep-alive connection (same shape as interop/python/client.py bench)
//   rounds NAME JSON_ARGS --targets JSON [--calls N] [--warmup W]
//                           -> {"rounds": N, "targets": {label: bench figures, or {"error"}}}: one
//                              session per target (a JSON list, or @FILE holding it, of
//                              {"label","url","headers"}; --url is not used), then W + N rounds of
//                              one call to each, in an order rotated each round, so every target
//                              is measured under the same conditions (as client.py rounds); a
//                              target that fails is left out of later rounds
// Options:
//   --header "Name: value"      extra HTTP header on every request (repeatable)
//   --protocol-version V        protocolVersion to put in the initialize request
//   --no-progress               `call` without a progressToken (server falls back to logging)
//   --timeout MS                per-request timeout (default 60000)
//   --trace                     log each HTTP exchange (method, status, content-type) to stderr
//
// Success: one JSON line on stdout, exit 0.
// Failure: one JSON line {"error": message, "code": ...} on stdout, exit 1.

import { readFileSync } from 'node:fs';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { LoggingMessageNotificationSchema, isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

class UsageError extends Error {
  constructor(message) {
    super(message);
    this.code = 'usage';
  }
}

function parseArgs(argv) {
  const opts = { url: undefined, headers: {}, protocolVersion: undefined, progress: true, timeout: 60000, trace: false, rest: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new UsageError(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--url') opts.url = next();
    else if (a === '--header' || a === '-H') {
      const h = next();
      const idx = h.indexOf(':');
      if (idx <= 0) throw new UsageError(`bad --header (want "Name: value"): ${h}`);
      opts.headers[h.slice(0, idx).trim()] = h.slice(idx + 1).trim();
    } else if (a === '--protocol-version') opts.protocolVersion = next();
    else if (a === '--no-progress') opts.progress = false;
    else if (a === '--timeout') opts.timeout = Number(next());
    else if (a === '--trace') opts.trace = true;
    else if (a === '--') {
      opts.rest.push(...argv.slice(i + 1));
      break;
    }
    else if (a.startsWith('--') && opts.rest.length === 0) throw new UsageError(`unknown option: ${a}`);
    else opts.rest.push(a);
  }
  if (!opts.url && opts.rest[0] !== 'rounds') throw new UsageError('--url is required');
  if (!Number.isFinite(opts.timeout) || opts.timeout <= 0) throw new UsageError('bad --timeout');
  const [command, ...args] = opts.rest;
  if (command === 'tools') {
    if (args.length !== 0) throw new UsageError('usage: tools');
  } else if (command === 'call') {
    if (args.length < 1 || args.length > 2) throw new UsageError('usage: call NAME [JSON_ARGS]');
  } else if (command === 'read') {
    if (args.length !== 1) throw new UsageError('usage: read URI');
  } else if (command === 'bench' || command === 'rounds') {
    opts.calls = 100;
    opts.warmup = 10;
    const positional = [];
    for (let i = 0; i < args.length; i++) {
      const flag = args[i];
      if (flag === '--targets' && command === 'rounds') {
        opts.targets = parseTargets(args[++i]);
        continue;
      }
      if (flag !== '--calls' && flag !== '--warmup') {
        positional.push(flag);
        continue;
      }
      const value = Number(args[++i]);
      if (!Number.isInteger(value) || value < (flag === '--calls' ? 1 : 0)) {
        throw new UsageError(`bad ${flag}: ${args[i]}`);
      }
      opts[flag.slice(2)] = value;
    }
    if (positional.length < 1 || positional.length > 2) {
      throw new UsageError(`usage: ${command} NAME [JSON_ARGS]${command === 'rounds' ? ' --targets JSON' : ''} [--calls N] [--warmup W]`);
    }
    if (command === 'rounds' && opts.targets === undefined) throw new UsageError('rounds needs --targets');
    args.splice(0, args.length, ...positional);
  } else {
    throw new UsageError(`unknown command: ${command ?? '(none)'} (want tools | call | read | bench | rounds)`);
  }
  opts.command = command;
  opts.args = args;
  return opts;
}

// The targets of `rounds`: a JSON list (or @FILE holding it) of {label, url, headers}.
function parseTargets(text) {
  let targets;
  try {
    targets = JSON.parse(text?.startsWith('@') ? readFileSync(text.slice(1), 'utf8') : text);
  } catch (e) {
    throw new UsageError(`--targets is not valid JSON: ${e.message}`);
  }
  const valid = Array.isArray(targets) && targets.length > 0 &&
    targets.every(t => t && typeof t.label === 'string' && typeof t.url === 'string');
  if (!valid) throw new UsageError('--targets wants a non-empty JSON list of {"label", "url", "headers"}');
  if (new Set(targets.map(t => t.label)).size !== targets.length) throw new UsageError('--targets: each label once');
  return targets;
}

// The SDK 1.x Client always sends LATEST_PROTOCOL_VERSION in `initialize` and has no option to
// change it. This subclass of the SDK transport rewrites only `params.protocolVersion` of the
// outgoing initialize request; negotiation, the MCP-Protocol-Version header on later requests
// (set from the server's answer via transport.setProtocolVersion), sessions and SSE handling
// all remain the SDK's own code.
class VersionPinnedTransport extends StreamableHTTPClientTransport {
  constructor(url, opts, requestedVersion) {
    super(url, opts);
    this._requestedVersion = requestedVersion;
  }
  async send(message, options) {
    if (this._requestedVersion !== undefined && isInitializeRequest(message)) {
      message = { ...message, params: { ...message.params, protocolVersion: this._requestedVersion } };
    }
    return super.send(message, options);
  }
}

class StreamClosedError extends Error {
  constructor(message) {
    super(message);
    this.code = 'sse_closed';
  }
}

// Operation currently in flight (the CLI runs one MCP request at a time). The SDK only
// rejects a pending request on timeout, so if a POST's SSE response stream ends (or breaks)
// before the JSON-RPC response arrived, the request would otherwise hang until --timeout.
// We watch the body of each POST SSE response and abort the operation's AbortSignal
// (a public RequestOptions field) shortly after the stream ends without completing it.
let currentOp = { ctrl: new AbortController(), done: false };
async function runOp(fn) {
  const op = { ctrl: new AbortController(), done: false };
  currentOp = op;
  try {
    return await fn(op.ctrl.signal);
  } catch (err) {
    // The SDK wraps abort reasons in McpError(-32001, String(reason)); report ours as-is.
    if (op.ctrl.signal.reason instanceof StreamClosedError) throw op.ctrl.signal.reason;
    throw err;
  } finally {
    op.done = true;
  }
}

function makeFetch(trace) {
  return async (url, init) => {
    const op = currentOp;
    const method = init?.method ?? 'GET';
    const res = await fetch(url, init);
    if (trace) {
      const sent = new Headers(init?.headers);
      process.stderr.write(
        `[client] HTTP ${method} ${url} (mcp-protocol-version=${sent.get('mcp-protocol-version') ?? '-'}) -> ${res.status} ` +
          `content-type=${res.headers.get('content-type') ?? '-'} ` +
          `mcp-session-id=${res.headers.get('mcp-session-id') ?? '-'}\n`
      );
    }
    let requestId;
    if (method === 'POST' && typeof init?.body === 'string') {
      try {
        const msg = JSON.parse(init.body);
        if (msg && !Array.isArray(msg) && msg.method && msg.id !== undefined) requestId = msg.id;
      } catch {
        /* not ours to judge */
      }
    }
    const isSse = (res.headers.get('content-type') ?? '').toLowerCase().startsWith('text/event-stream');
    if (requestId === undefined || !res.ok || !isSse || !res.body) return res;

    const onEnd = why => {
      // Give the SDK's SSE parser time to dispatch the final event before judging.
      setTimeout(() => {
        if (!op.done) {
          op.ctrl.abort(new StreamClosedError(`SSE response stream for request ${requestId} ${why} before the JSON-RPC response arrived`));
        }
      }, 200).unref();
    };
    const reader = res.body.getReader();
    const body = new ReadableStream({
      async pull(controller) {
        try {
          const { value, done } = await reader.read();
          if (done) {
            controller.close();
            onEnd('ended');
          } else {
            controller.enqueue(value);
          }
        } catch (err) {
          controller.error(err);
          onEnd(`broke (${err?.message ?? err})`);
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      }
    });
    return new Response(body, { status: res.status, statusText: res.statusText, headers: res.headers });
  };
}

function errorCode(err) {
  // StreamableHTTPError: .code is the HTTP status (or -1 for an unexpected content-type);
  // McpError: .code is the JSON-RPC error code; UsageError: "usage";
  // network failures ("fetch failed"): the errno code of the cause, e.g. "ECONNREFUSED".
  for (let e = err, depth = 0; e && depth < 5; e = e.cause, depth++) {
    if (e.code !== undefined) return e.code;
    if (Array.isArray(e.errors) && e.errors[0]?.code !== undefined) return e.errors[0].code;
  }
  return null;
}

function errorMessage(err) {
  let msg = err?.message ?? String(err);
  const cause = err?.cause;
  if (cause && msg === 'fetch failed') {
    const inner = cause.message || (Array.isArray(cause.errors) ? cause.errors.map(e => e.message).join('; ') : '');
    if (inner) msg += `: ${inner}`;
  }
  return msg;
}

// Nearest-rank percentile of an ascending array (as interop/python/client.py computes it).
function percentile(ordered, p) {
  return ordered[Math.max(0, Math.ceil((p / 100) * ordered.length) - 1)];
}

const round3 = x => Math.round(x * 1000) / 1000;

// `warmup` unmeasured, then `calls` measured tools/call, one after another in this session.
async function bench(client, name, args, calls, warmup, reqOpts) {
  const samples = [];
  for (let i = 0; i < warmup + calls; i++) {
    const start = performance.now();
    const result = await runOp(signal => client.callTool({ name, arguments: args }, undefined, { ...reqOpts, signal }));
    const elapsed = performance.now() - start;
    if (result.isError) throw new Error(`tool error: ${JSON.stringify(result.content)}`);
    if (i >= warmup) samples.push(elapsed);
  }
  return figures(samples);
}

function figures(samples) {
  const ordered = [...samples].sort((a, b) => a - b);
  return {
    calls: samples.length,
    p50_ms: round3(percentile(ordered, 50)),
    p99_ms: round3(percentile(ordered, 99)),
    mean_ms: round3(samples.reduce((a, b) => a + b, 0) / samples.length),
    samples_ms: samples.map(round3)
  };
}

// `rounds`: a session per target, then rounds of one call to each (see the usage above).
async function rounds(opts) {
  const reqOpts = { timeout: opts.timeout };
  const sessions = new Map();
  const failed = new Map();
  const samples = new Map(opts.targets.map(t => [t.label, []]));
  const [name, rawArgs] = opts.args;
  const args = rawArgs === undefined ? {} : JSON.parse(rawArgs.startsWith('@') ? readFileSync(rawArgs.slice(1), 'utf8') : rawArgs);
  try {
    for (const target of opts.targets) {
      const transport = new StreamableHTTPClientTransport(new URL(target.url), {
        requestInit: { headers: target.headers ?? {} },
        fetch: makeFetch(opts.trace),
        reconnectionOptions: { initialReconnectionDelay: 200, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 0 }
      });
      const client = new Client({ name: 'interop-client', version: '1.0.0' }, { capabilities: {} });
      try {
        await runOp(signal => client.connect(transport, { ...reqOpts, signal }));
        sessions.set(target.label, { client, transport });
      } catch (err) {
        failed.set(target.label, { error: errorMessage(err), code: errorCode(err) });
      }
    }
    for (let i = 0; i < opts.warmup + opts.calls; i++) {
      const live = opts.targets.map(t => t.label).filter(l => sessions.has(l) && !failed.has(l));
      if (live.length === 0) break;
      const shift = i % live.length;
      for (const label of [...live.slice(shift), ...live.slice(0, shift)]) {
        const { client } = sessions.get(label);
        const start = performance.now();
        try {
          const result = await runOp(signal => client.callTool({ name, arguments: args }, undefined, { ...reqOpts, signal }));
          const elapsed = performance.now() - start;
          if (result.isError) failed.set(label, { error: `tool error: ${JSON.stringify(result.content)}` });
          else if (i >= opts.warmup) samples.get(label).push(elapsed);
        } catch (err) {
          failed.set(label, { error: errorMessage(err), code: errorCode(err) });
        }
      }
    }
  } finally {
    for (const { client, transport } of sessions.values()) {
      if (transport.sessionId !== undefined) await transport.terminateSession().catch(() => {});
      await client.close().catch(() => {});
    }
  }
  const out = {};
  for (const { label } of opts.targets) out[label] = failed.get(label) ?? figures(samples.get(label));
  return { rounds: opts.calls, targets: out };
}

function printJson(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    printJson({ error: errorMessage(err), code: errorCode(err) });
    return 1;
  }
  if (opts.command === 'rounds') {
    try {
      printJson(await rounds(opts));
      return 0;
    } catch (err) {
      printJson({ error: errorMessage(err), code: errorCode(err) });
      return 1;
    }
  }

  const transport = new VersionPinnedTransport(
    new URL(opts.url),
    {
      requestInit: { headers: opts.headers },
      fetch: makeFetch(opts.trace),
      // Only affects the optional standalone GET SSE stream; keep retries short for a CLI.
      reconnectionOptions: { initialReconnectionDelay: 200, maxReconnectionDelay: 1000, reconnectionDelayGrowFactor: 1.5, maxRetries: 0 }
    },
    opts.protocolVersion
  );
  transport.onerror = err => {
    if (opts.trace) process.stderr.write(`[client] transport error: ${err?.message ?? err}\n`);
  };

  const client = new Client({ name: 'interop-client', version: '1.0.0' }, { capabilities: {} });
  const logs = [];
  client.setNotificationHandler(LoggingMessageNotificationSchema, n => {
    logs.push(n.params);
  });

  const reqOpts = { timeout: opts.timeout };
  let exitCode = 0;
  try {
    await runOp(signal => client.connect(transport, { ...reqOpts, signal }));
    const meta = () => ({
      protocolVersion: transport.protocolVersion ?? null,
      sessionId: transport.sessionId ?? null,
      ...(opts.protocolVersion !== undefined ? { requestedProtocolVersion: opts.protocolVersion } : {})
    });

    if (opts.command === 'tools') {
      const { tools } = await runOp(signal => client.listTools(undefined, { ...reqOpts, signal }));
      const descriptions = Object.fromEntries(tools.map(t => [t.name, t.description]));
      printJson({ tools: tools.map(t => t.name), descriptions, ...meta() });
    } else if (opts.command === 'call' || opts.command === 'bench') {
      const [name, rawArgs] = opts.args;
      let args = {};
      if (rawArgs !== undefined) {
        try {
          // `@PATH` reads the arguments from a file (too large for a command line).
          args = JSON.parse(rawArgs.startsWith('@') ? readFileSync(rawArgs.slice(1), 'utf8') : rawArgs);
        } catch (e) {
          throw new UsageError(`JSON_ARGS is not valid JSON: ${e.message}`);
        }
      }
      if (opts.command === 'bench') {
        printJson(await bench(client, name, args, opts.calls, opts.warmup, reqOpts));
      } else {
        const progress = [];
        const callOpts = { ...reqOpts };
        if (opts.progress) {
          callOpts.onprogress = p => progress.push(p);
          callOpts.resetTimeoutOnProgress = true;
        }
        const result = await runOp(signal => client.callTool({ name, arguments: args }, undefined, { ...callOpts, signal }));
        printJson({
          ...result,
          ...meta(),
          ...(progress.length ? { progress } : {}),
          ...(logs.length ? { logs } : {})
        });
      }
    } else if (opts.command === 'read') {
      const result = await runOp(signal => client.readResource({ uri: opts.args[0] }, { ...reqOpts, signal }));
      printJson({ ...result, ...meta() });
    }
  } catch (err) {
    printJson({ error: errorMessage(err), code: errorCode(err) });
    exitCode = 1;
  } finally {
    // Terminate the session (HTTP DELETE) when the server issued one; 405 is accepted by the SDK.
    if (transport.sessionId !== undefined) {
      try {
        await transport.terminateSession();
      } catch (err) {
        process.stderr.write(`[client] terminateSession failed: ${err?.message ?? err}\n`);
      }
    }
    await client.close().catch(() => {});
  }
  return exitCode;
}

process.exitCode = await main();
// Writes to a pipe are asynchronous: let the answer reach it (a large one is cut otherwise), then
// do not wait for anything left over (e.g. a standalone SSE reconnect timer).
await new Promise(resolve => process.stdout.write('', resolve));
process.exit(process.exitCode);
