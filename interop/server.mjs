#!/usr/bin/env node
// Upstream MCP test server built on the official TypeScript SDK
// (@modelcontextprotocol/sdk 1.x): McpServer + StreamableHTTPServerTransport on node:http.
//
// Usage: node interop/server.mjs [--port N] [--stateless]
//   --port N       TCP port on 127.0.0.1 (default 0 = pick a free port)
//   --stateless    no sessions: fresh server+transport per POST, JSON (non-SSE) responses
//
// stdout carries exactly one line, `LISTENING <port>`; all diagnostics go to stderr.

import { randomUUID } from 'node:crypto';
import http from 'node:http';
import * as z from 'zod/v4';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js';

const MCP_PATH = '/mcp';
const MAX_BODY_BYTES = 4 * 1024 * 1024;

function parseArgs(argv) {
  const opts = { port: 0, stateless: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--stateless') opts.stateless = true;
    else if (a === '--port') opts.port = Number(argv[++i]);
    else if (a.startsWith('--port=')) opts.port = Number(a.slice('--port='.length));
    else if (a === '-h' || a === '--help') {
      process.stderr.write('usage: node server.mjs [--port N] [--stateless]\n');
      process.exit(0);
    } else {
      process.stderr.write(`unknown argument: ${a}\n`);
      process.exit(2);
    }
  }
  if (!Number.isInteger(opts.port) || opts.port < 0 || opts.port > 65535) {
    process.stderr.write('invalid --port\n');
    process.exit(2);
  }
  return opts;
}

const log = (...args) => process.stderr.write(`[server] ${args.join(' ')}\n`);
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));

function headerValue(headers, name) {
  const v = headers?.[name];
  if (v === undefined || v === null) return undefined;
  return Array.isArray(v) ? v.join(', ') : String(v);
}

function buildServer() {
  const server = new McpServer(
    { name: 'interop-upstream', version: '1.0.0' },
    { capabilities: { logging: {} } }
  );

  server.registerTool(
    'echo',
    {
      description: 'Echo the input text',
      inputSchema: { text: z.string() },
      outputSchema: { text: z.string() }
    },
    async ({ text }) => ({
      content: [{ type: 'text', text }],
      structuredContent: { text }
    })
  );

  server.registerTool(
    'add',
    {
      description: 'Add two numbers',
      inputSchema: { a: z.number(), b: z.number() },
      outputSchema: { sum: z.number() }
    },
    async ({ a, b }) => {
      const sum = a + b;
      return {
        content: [{ type: 'text', text: String(sum) }],
        structuredContent: { sum }
      };
    }
  );

  server.registerTool(
    'whoami',
    {
      description: 'Report the mcp-session-id and x-api-key request headers this server saw',
      inputSchema: {},
      outputSchema: { session: z.string(), apiKey: z.string() }
    },
    async (_args, extra) => {
      const headers = extra.requestInfo?.headers ?? {};
      const result = {
        session: headerValue(headers, 'mcp-session-id') ?? 'none',
        apiKey: headerValue(headers, 'x-api-key') ?? 'none'
      };
      return {
        content: [{ type: 'text', text: JSON.stringify(result) }],
        structuredContent: result
      };
    }
  );

  server.registerTool(
    'slow_count',
    {
      description:
        'Send n notifications spaced by delayMs (notifications/progress if the request has a ' +
        'progressToken, else notifications/message), then return "counted n"',
      inputSchema: {
        n: z.number().int().min(0).max(10000),
        delayMs: z.number().int().min(0).max(600000)
      }
    },
    async ({ n, delayMs }, extra) => {
      const progressToken = extra._meta?.progressToken;
      for (let i = 1; i <= n; i++) {
        if (i > 1 && delayMs > 0) await sleep(delayMs);
        if (extra.signal.aborted) break;
        // extra.sendNotification ties the notification to this request, so in stateful
        // (SSE) mode it is written on this POST's response stream.
        if (progressToken !== undefined) {
          await extra.sendNotification({
            method: 'notifications/progress',
            params: { progressToken, progress: i, total: n, message: `count ${i}/${n}` }
          });
        } else {
          await extra.sendNotification({
            method: 'notifications/message',
            params: { level: 'info', logger: 'slow_count', data: `count ${i}/${n}` }
          });
        }
      }
      return { content: [{ type: 'text', text: `counted ${n}` }] };
    }
  );

  server.registerResource(
    'hello',
    'demo://hello',
    { description: 'A static greeting', mimeType: 'text/plain' },
    async uri => ({ contents: [{ uri: uri.href, mimeType: 'text/plain', text: 'hello' }] })
  );

  return server;
}

function sendJsonRpcError(res, status, code, message) {
  if (res.headersSent) {
    res.end();
    return;
  }
  const body = JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null });
  res.writeHead(status, { 'Content-Type': 'application/json' });
  res.end(body);
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', chunk => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

async function readJsonBody(req, res) {
  let text;
  try {
    text = await readBody(req);
  } catch (err) {
    sendJsonRpcError(res, err.status ?? 400, -32000, `Bad Request: ${err.message}`);
    return { ok: false };
  }
  try {
    return { ok: true, body: JSON.parse(text) };
  } catch {
    sendJsonRpcError(res, 400, -32700, 'Parse error: Invalid JSON');
    return { ok: false };
  }
}

// ---------------------------------------------------------------- stateful

const transports = new Map(); // session id -> StreamableHTTPServerTransport

async function handleStateful(req, res) {
  const sessionId = headerValue(req.headers, 'mcp-session-id');

  if (req.method === 'POST') {
    const parsed = await readJsonBody(req, res);
    if (!parsed.ok) return;
    const body = parsed.body;

    if (sessionId !== undefined) {
      const transport = transports.get(sessionId);
      if (!transport) {
        sendJsonRpcError(res, 404, -32001, 'Session not found');
        return;
      }
      await transport.handleRequest(req, res, body);
      return;
    }

    const isInit = Array.isArray(body) ? body.some(isInitializeRequest) : isInitializeRequest(body);
    if (!isInit) {
      sendJsonRpcError(res, 400, -32000, 'Bad Request: No valid session ID provided');
      return;
    }

    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: randomUUID,
      onsessioninitialized: sid => {
        transports.set(sid, transport);
        log(`session initialized ${sid}`);
      },
      onsessionclosed: sid => {
        log(`session closed (DELETE) ${sid}`);
      }
    });
    transport.onclose = () => {
      const sid = transport.sessionId;
      if (sid && transports.get(sid) === transport) {
        transports.delete(sid);
        log(`transport closed ${sid}`);
      }
    };
    const server = buildServer();
    await server.connect(transport);
    await transport.handleRequest(req, res, body);
    return;
  }

  if (req.method === 'GET' || req.method === 'DELETE') {
    if (sessionId === undefined) {
      sendJsonRpcError(res, 400, -32000, 'Bad Request: Mcp-Session-Id header is required');
      return;
    }
    const transport = transports.get(sessionId);
    if (!transport) {
      sendJsonRpcError(res, 404, -32001, 'Session not found');
      return;
    }
    await transport.handleRequest(req, res);
    return;
  }

  res.setHeader('Allow', 'GET, POST, DELETE');
  sendJsonRpcError(res, 405, -32000, 'Method not allowed.');
}

// ---------------------------------------------------------------- stateless

async function handleStateless(req, res) {
  if (req.method !== 'POST') {
    res.setHeader('Allow', 'POST');
    sendJsonRpcError(res, 405, -32000, 'Method not allowed.');
    return;
  }
  const parsed = await readJsonBody(req, res);
  if (!parsed.ok) return;

  const server = buildServer();
  const transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: undefined,
    enableJsonResponse: true
  });
  res.on('close', () => {
    transport.close().catch(() => {});
    server.close().catch(() => {});
  });
  await server.connect(transport);
  await transport.handleRequest(req, res, parsed.body);
}

// ---------------------------------------------------------------- main

const opts = parseArgs(process.argv.slice(2));
const handler = opts.stateless ? handleStateless : handleStateful;

const httpServer = http.createServer(async (req, res) => {
  const url = new URL(req.url ?? '/', 'http://127.0.0.1');
  log(`${req.method} ${url.pathname} session=${headerValue(req.headers, 'mcp-session-id') ?? '-'}`);
  if (url.pathname !== MCP_PATH) {
    sendJsonRpcError(res, 404, -32000, `Not Found: ${url.pathname}`);
    return;
  }
  try {
    await handler(req, res);
  } catch (err) {
    log(`error handling request: ${err?.stack ?? err}`);
    sendJsonRpcError(res, 500, -32603, 'Internal server error');
  }
});

httpServer.on('error', err => {
  log(`listen error: ${err.message}`);
  process.exit(1);
});

httpServer.listen(opts.port, '127.0.0.1', () => {
  const { port } = httpServer.address();
  log(`mode=${opts.stateless ? 'stateless' : 'stateful'} url=http://127.0.0.1:${port}${MCP_PATH}`);
  process.stdout.write(`LISTENING ${port}\n`);
});

let shuttingDown = false;
async function shutdown(signal) {
  if (shuttingDown) return;
  shuttingDown = true;
  log(`${signal} received, shutting down`);
  const force = setTimeout(() => process.exit(0), 2000);
  force.unref();
  for (const t of transports.values()) {
    await t.close().catch(() => {});
  }
  transports.clear();
  httpServer.close(() => process.exit(0));
  httpServer.closeAllConnections?.();
}
process.on('SIGTERM', () => void shutdown('SIGTERM'));
process.on('SIGINT', () => void shutdown('SIGINT'));
