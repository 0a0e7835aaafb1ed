#!/usr/bin/env node
// oauth-client-selftest.mjs: checks oauth-client.mjs (and browser.mjs) without the gateway.
//   node interop/oauth-client-selftest.mjs [--verbose]
// It runs a stand-in for an OAuth-protected MCP server on 127.0.0.1, assembled from the SDK's
// own server pieces (mcpAuthRouter, requireBearerAuth, McpServer; express comes with the SDK):
// RFC 9728 metadata, RFC 8414 metadata, dynamic registration, PKCE, plus a login page and a
// gateway-like consent page (hidden txn/csrf, Allow/Deny buttons, `mreg_consent` cookie).
// Then it runs oauth-client.mjs against it, and against a server that answers 401 without any
// metadata. Ends with "N passed, M failed"; exit 0 only if all passed.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import express from 'express';
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { mcpAuthRouter } from '@modelcontextprotocol/sdk/server/auth/router.js';
import { requireBearerAuth } from '@modelcontextprotocol/sdk/server/auth/middleware/bearerAuth.js';
import { InvalidTokenError, InvalidGrantError } from '@modelcontextprotocol/sdk/server/auth/errors.js';
import { z } from 'zod';

const here = path.dirname(fileURLToPath(import.meta.url));
const verbose = process.argv.includes('--verbose');

let passed = 0;
let failed = 0;
function check(name, cond, detail) {
  if (cond) {
    passed += 1;
    process.stdout.write(`ok   - ${name}\n`);
  } else {
    failed += 1;
    process.stdout.write(`FAIL - ${name}${detail === undefined ? '' : `: ${typeof detail === 'string' ? detail : JSON.stringify(detail)}`}\n`);
  }
}

const listen = (app) => new Promise((resolve) => {
  const server = app.listen(0, '127.0.0.1', () => resolve(server));
});

// ---------------------------------------------------------------- mock protected MCP server
async function startMock({ issParam = 'good' } = {}) {
  const app = express();
  const server = await listen(app);
  const base = `http://127.0.0.1:${server.address().port}`;
  const clients = new Map();
  const txns = new Map();
  const codes = new Map();
  const tokens = new Map();
  const seen = { registrations: [], authorizeParams: [] };

  const provider = {
    clientsStore: {
      getClient: async (id) => clients.get(id),
      registerClient: async (c) => {
        clients.set(c.client_id, c);
        seen.registrations.push(c);
        return c;
      },
    },
    async authorize(client, params, res) {
      seen.authorizeParams.push(params);
      const txn = crypto.randomBytes(8).toString('hex');
      txns.set(txn, { client, params, user: undefined, csrf: crypto.randomBytes(8).toString('hex') });
      res.redirect(302, `/login?txn=${txn}`);
    },
    async challengeForAuthorizationCode(client, code) {
      const c = codes.get(code);
      if (!c) throw new InvalidGrantError('unknown code');
      return c.params.codeChallenge;
    },
    async exchangeAuthorizationCode(client, code) {
      const c = codes.get(code);
      if (!c || c.client.client_id !== client.client_id) throw new InvalidGrantError('bad code');
      codes.delete(code);
      const at = crypto.randomBytes(16).toString('hex');
      tokens.set(at, { clientId: client.client_id, scopes: c.params.scopes ?? [], user: c.user, resource: c.params.resource });
      return { access_token: at, token_type: 'Bearer', expires_in: 3600, refresh_token: `rt-${at}`, scope: (c.params.scopes ?? []).join(' ') };
    },
    async exchangeRefreshToken() { throw new InvalidGrantError('no refresh in this mock'); },
    async verifyAccessToken(token) {
      const t = tokens.get(token);
      if (!t) throw new InvalidTokenError('unknown token');
      return { token, clientId: t.clientId, scopes: t.scopes, expiresAt: Math.floor(Date.now() / 1000) + 3600, resource: t.resource, extra: { user: t.user } };
    },
  };

  app.use(mcpAuthRouter({
    provider,
    issuerUrl: new URL(base),
    resourceServerUrl: new URL(`${base}/mcp`),
    scopesSupported: ['mcp:tools'],
  }));
  app.use(express.urlencoded({ extended: false }));

  app.get('/login', (req, res) => {
    res.type('html').send(`<html><body><form method="post" action="/login?txn=${req.query.txn}">
<input type="text" name="login"><input type="password" name="password"><button>Sign in</button></form></body></html>`);
  });
  app.post('/login', (req, res) => {
    const t = txns.get(String(req.query.txn));
    if (!t) return res.status(400).send('no txn');
    if (!['alice', 'bob'].includes(req.body.login)) return res.status(401).type('html').send('<p>unknown user</p>');
    t.user = req.body.login;
    return res.redirect(303, `/consent?txn=${req.query.txn}`);
  });
  app.get('/consent', (req, res) => {
    const txn = String(req.query.txn);
    const t = txns.get(txn);
    if (!t?.user) return res.status(400).send('not logged in');
    res.cookie('mreg_consent', t.csrf, { httpOnly: true, sameSite: 'lax', path: '/' });
    return res.type('html').send(`<!doctype html><html><body><p>Allow ${t.client.client_name}?</p>
<form method="post" action="/consent"><input type="hidden" name="txn" value="${txn}"><input type="hidden" name="csrf" value="${t.csrf}">
<button type="submit" name="decision" value="allow">Allow</button><button type="submit" name="decision" value="deny">Deny</button></form></body></html>`);
  });
  app.post('/consent', (req, res) => {
    const t = txns.get(req.body.txn);
    const cookie = /(?:^|;\s*)mreg_consent=([^;]+)/.exec(req.headers.cookie ?? '')?.[1];
    if (!t || req.body.csrf !== t.csrf || cookie !== t.csrf) return res.status(403).send('csrf');
    txns.delete(req.body.txn);
    const u = new URL(t.params.redirectUri);
    if (t.params.state !== undefined) u.searchParams.set('state', t.params.state);
    if (issParam === 'good') u.searchParams.set('iss', `${base}/`); // = metadata issuer (URL.href)
    if (issParam === 'bad') u.searchParams.set('iss', 'http://evil.example');
    if (req.body.decision !== 'allow') {
      u.searchParams.set('error', 'access_denied');
      return res.redirect(302, u.href);
    }
    const code = crypto.randomBytes(12).toString('hex');
    codes.set(code, { client: t.client, params: t.params, user: t.user });
    u.searchParams.set('code', code);
    return res.redirect(302, u.href);
  });

  const bearer = requireBearerAuth({ verifier: provider, resourceMetadataUrl: `${base}/.well-known/oauth-protected-resource/mcp` });
  app.post('/mcp', express.json(), bearer, async (req, res) => {
    const mcp = new McpServer({ name: 'mock-protected', version: '1.0.0' });
    mcp.registerTool('whoami', { description: 'who', inputSchema: {} }, async (_args, extra) => ({
      content: [{ type: 'text', text: String(extra.authInfo?.extra?.user) }],
      structuredContent: { user: extra.authInfo?.extra?.user, clientId: extra.authInfo?.clientId },
    }));
    mcp.registerTool('echo', { description: 'echo', inputSchema: { text: z.string() } }, async ({ text }) => ({
      content: [{ type: 'text', text }],
    }));
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => { transport.close(); mcp.close(); });
    await mcp.connect(transport);
    await transport.handleRequest(req, res, req.body);
  });
  app.all('/mcp', (req, res) => res.status(405).end());
  return { server, base, seen };
}

async function start401NoMetadata() {
  const app = express();
  app.use((req, res) => res.status(401).set('www-authenticate', 'Bearer').json({ error: 'unauthorized' }));
  const server = await listen(app);
  return { server, base: `http://127.0.0.1:${server.address().port}` };
}

function runClient(args) {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [path.join(here, 'oauth-client.mjs'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('exit', (code) => {
      if (verbose && err) process.stderr.write(err);
      let json;
      try { json = JSON.parse(out.trim()); } catch { json = undefined; }
      resolve({ code, out, err, json, lines: out.trim().split('\n').length });
    });
  });
}

async function main() {
  const mock = await startMock();
  const MCP = `${mock.base}/mcp`;
  try {
    const t = await runClient(['--url', MCP, '--user', 'alice', 'tools']);
    check('tools: one JSON line, exit 0', t.code === 0 && t.lines === 1 && Array.isArray(t.json?.tools), t.out + t.err);
    check('tools: lists the tool names', JSON.stringify(t.json?.tools?.sort()) === '["echo","whoami"]', t.json);
    const reg = mock.seen.registrations[0];
    check('registration: client_name, redirect_uris, grant/response types, auth method none', reg
      && reg.client_name === 'mreg interop client' && reg.redirect_uris?.[0] === 'http://127.0.0.1:53683/callback'
      && JSON.stringify(reg.grant_types) === '["authorization_code","refresh_token"]'
      && JSON.stringify(reg.response_types) === '["code"]' && reg.token_endpoint_auth_method === 'none', reg);
    const ap = mock.seen.authorizeParams[0];
    check('authorization request: state, S256 challenge, resource = the MCP URL, scope from PRM', ap
      && ap.state && ap.codeChallenge && String(ap.resource) === MCP && JSON.stringify(ap.scopes) === '["mcp:tools"]', ap);

    const c = await runClient(['--url', MCP, '--user', 'bob', '--print-token', 'call', 'whoami', '{}']);
    check('call: CallToolResult, user from the login form', c.code === 0 && c.json?.structuredContent?.user === 'bob', c.out + c.err);
    check('--print-token: access_token + token_response + client_id', typeof c.json?.access_token === 'string'
      && c.json?.token_response?.access_token === c.json?.access_token && c.json?.token_response?.refresh_token
      && typeof c.json?.client_id === 'string', c.json);
    const e = await runClient(['--url', MCP, '--user', 'alice', 'call', 'echo', '{"text":"hi"}']);
    check('call echo', e.code === 0 && e.json?.content?.[0]?.text === 'hi', e.out);

    const s = await runClient(['--url', MCP, '--user', 'alice', '--scope', 'custom:scope other', 'tools']);
    check('--scope overrides the authorization request scope', s.code === 0
      && JSON.stringify(mock.seen.authorizeParams.at(-1)?.scopes) === '["custom:scope","other"]', mock.seen.authorizeParams.at(-1));

    const d = await runClient(['--url', MCP, '--user', 'alice', '--deny', 'tools']);
    check('--deny: error mentions access_denied, exit 1', d.code === 1 && /access_denied/.test(d.json?.error ?? ''), d.out);
    const u = await runClient(['--url', MCP, '--user', 'mallory', 'tools']);
    check('unknown user: walk failure with status 401, exit 1', u.code === 1 && u.json?.walk?.status === 401
      && /authorization walk failed/.test(u.json?.error ?? ''), u.out);
    const n = await runClient(['--url', MCP, 'tools']);
    check('no --user on a login form: clear error', n.code === 1 && /no user given/.test(n.json?.error ?? ''), n.out);
  } finally {
    mock.server.close();
  }

  const bad = await startMock({ issParam: 'bad' });
  try {
    const r = await runClient(['--url', `${bad.base}/mcp`, '--user', 'alice', 'tools']);
    check('iss mismatch in the redirect is refused', r.code === 1 && /iss mismatch/.test(r.json?.error ?? ''), r.out);
  } finally {
    bad.server.close();
  }

  const plain = await start401NoMetadata();
  try {
    const r = await runClient(['--url', `${plain.base}/mcp`, '--user', 'alice', 'tools']);
    check('401 without any metadata: one JSON error line naming the failed registration, exit 1', r.code === 1 && r.lines === 1
      && /dynamic client registration/.test(r.json?.error ?? '') && r.json?.last_http_failure?.status === 401, r.out + r.err);
    process.stdout.write(`     (error was: ${r.json?.error})\n`);
  } finally {
    plain.server.close();
  }

  const usage = await runClient(['tools']);
  check('usage error without --url', usage.code === 1 && usage.json?.code === 'usage', usage.out);
  const closed = await listen(express());
  const closedPort = closed.address().port;
  await new Promise((r) => closed.close(r));
  const refused = await runClient(['--url', `http://127.0.0.1:${closedPort}/mcp`, '--user', 'alice', 'tools']);
  check('connection refused: JSON error with ECONNREFUSED, exit 1', refused.code === 1 && refused.json?.code === 'ECONNREFUSED', refused.out);
}

try {
  await main();
} catch (err) {
  failed += 1;
  process.stdout.write(`FAIL - selftest crashed: ${err?.stack ?? err}\n`);
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exit(failed ? 1 : 0);
