#!/usr/bin/env node
// oauth-client.mjs: the official TypeScript SDK client (@modelcontextprotocol/sdk 1.32.2) doing
// the whole MCP OAuth flow against a protected MCP server: 401 -> protected resource metadata
// (RFC 9728) -> authorization server metadata -> dynamic client registration (RFC 7591) ->
// authorization code + PKCE through a headless browser walk (browser.mjs) -> token -> MCP.
//
// Usage:
//   node interop/oauth-client.mjs --url MCP_URL --user alice [options] <command>
// Commands:
//   tools                  -> {"tools":[names...]}
//   call NAME [JSON_ARGS]  -> the CallToolResult
// Options:
//   --user U               login for the authorization server's login form (if one is shown)
//   --password P           password for that form (default "password")
//   --scope "S"            the authorization request's scope, replacing the SDK's choice
//                          (SEP-835: WWW-Authenticate scope, else PRM scopes_supported, else
//                          clientMetadata.scope); also set as clientMetadata.scope (registration
//                          still sends the SDK's choice when it has one)
//   --redirect-uri URI     default http://127.0.0.1:53683/callback (nothing listens there)
//   --deny                 press "deny" on consent pages (the flow then fails)
//   --application-type T   also send application_type=T at registration (not in the SDK's type)
//   --print-token          add "access_token", "token_response" and "client_id" to the output
//   --timeout MS           per-request MCP timeout (default 60000)
//   --trace                log every HTTP exchange and browser step to stderr
// Output: one JSON line on stdout, exit 0; on failure {"error": "...", ...} and exit 1
// (with "status" for HTTP errors and "walk" when the browser walk failed).
//
// Flow (SDK 1.32.2, read from dist/esm/client/auth.js and streamableHttp.js):
//   1. client.connect(transport) -> POST initialize -> 401 -> the transport runs auth():
//      discovery, registration (saveClientInformation), startAuthorization (PKCE S256, our
//      state(), resource from the PRM, prompt=consent when the scope has offline_access),
//      saveCodeVerifier, then redirectToAuthorization(url) -> we walk it to the redirect URI,
//      check state / iss / error and keep the code; auth() returns 'REDIRECT' and connect()
//      rejects with UnauthorizedError.
//   2. transport.finishAuth(code) on the SAME transport (it holds resource_metadata / scope
//      from WWW-Authenticate) -> auth() with authorizationCode -> token request -> saveTokens.
//   3. a NEW transport with the same provider + a new Client -> connect() sends the bearer.
//   The SDK does not look at the redirect's `state` or `iss`; the application must. Here:
//   state must equal what state() returned; iss (RFC 9207), when present, must equal the
//   authorization server metadata's issuer, and is required when the metadata says
//   authorization_response_iss_parameter_supported.

import * as crypto from 'node:crypto';

import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js';

import { walk, CookieJar } from './browser.mjs';

class UsageError extends Error {}

function parseCli(argv) {
  const o = {
    url: undefined,
    user: undefined,
    password: 'password',
    scope: undefined,
    redirectUri: 'http://127.0.0.1:53683/callback',
    deny: false,
    applicationType: undefined,
    printToken: false,
    timeout: 60000,
    trace: false,
    rest: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => {
      if (i + 1 >= argv.length) throw new UsageError(`missing value for ${a}`);
      return argv[++i];
    };
    if (a === '--url') o.url = next();
    else if (a === '--user') o.user = next();
    else if (a === '--password') o.password = next();
    else if (a === '--scope') o.scope = next();
    else if (a === '--redirect-uri') o.redirectUri = next();
    else if (a === '--deny') o.deny = true;
    else if (a === '--application-type') o.applicationType = next();
    else if (a === '--print-token') o.printToken = true;
    else if (a === '--timeout') o.timeout = Number(next());
    else if (a === '--trace') o.trace = true;
    else if (a === '--') {
      o.rest.push(...argv.slice(i + 1));
      break;
    } else if (a.startsWith('--') && o.rest.length === 0) throw new UsageError(`unknown option: ${a}`);
    else o.rest.push(a);
  }
  if (!o.url) throw new UsageError('--url is required');
  try { new URL(o.url); } catch { throw new UsageError(`bad --url: ${o.url}`); }
  try { new URL(o.redirectUri); } catch { throw new UsageError(`bad --redirect-uri: ${o.redirectUri}`); }
  if (!Number.isFinite(o.timeout) || o.timeout <= 0) throw new UsageError('bad --timeout');
  const [command, ...args] = o.rest;
  if (command === 'tools') {
    if (args.length) throw new UsageError('usage: tools');
  } else if (command === 'call') {
    if (args.length < 1 || args.length > 2) throw new UsageError('usage: call NAME [JSON_ARGS]');
    try {
      o.callArgs = args[1] === undefined ? {} : JSON.parse(args[1]);
    } catch (err) {
      throw new UsageError(`JSON_ARGS is not JSON: ${err.message}`);
    }
  } else {
    throw new UsageError(`unknown command: ${command ?? '(none)'} (want tools | call)`);
  }
  o.command = command;
  o.args = args;
  return o;
}

class AuthorizationFlowError extends Error {
  constructor(message, extra = {}) {
    super(message);
    Object.assign(this, extra);
  }
}

// In-memory OAuthClientProvider. Everything the SDK hands to save*() is stored unchanged
// (SDK 1.32 stamps `issuer` on client information and tokens and checks it on reuse).
export class InMemoryOAuthClientProvider {
  constructor({ redirectUrl, clientMetadata, user, password, decision = 'allow', forceScope, log }) {
    this.forceScope = forceScope;
    this._redirectUrl = redirectUrl;
    this._clientMetadata = clientMetadata;
    this.user = user;
    this.password = password;
    this.decision = decision;
    this.log = log;
    this.jar = new CookieJar();
    this._clientInformation = undefined;
    this._tokens = undefined;
    this._codeVerifier = undefined;
    this._discovery = undefined;
    this._state = undefined;
    this.authorizationCode = undefined;
    this.lastWalk = undefined;
  }

  get redirectUrl() { return this._redirectUrl; }

  get clientMetadata() { return this._clientMetadata; }

  state() {
    this._state = crypto.randomBytes(16).toString('base64url');
    return this._state;
  }

  clientInformation() { return this._clientInformation; }

  saveClientInformation(info) { this._clientInformation = info; }

  tokens() { return this._tokens; }

  saveTokens(tokens) { this._tokens = tokens; }

  saveCodeVerifier(v) { this._codeVerifier = v; }

  codeVerifier() {
    if (!this._codeVerifier) throw new Error('no PKCE code verifier saved');
    return this._codeVerifier;
  }

  saveDiscoveryState(s) { this._discovery = s; }

  discoveryState() { return this._discovery; }

  invalidateCredentials(scope) {
    this.log?.(`invalidateCredentials(${scope})`);
    if (scope === 'all' || scope === 'client') this._clientInformation = undefined;
    if (scope === 'all' || scope === 'tokens') this._tokens = undefined;
    if (scope === 'all' || scope === 'verifier') this._codeVerifier = undefined;
    if (scope === 'all' || scope === 'discovery') this._discovery = undefined;
  }

  async redirectToAuthorization(authorizationUrl) {
    this.authorizationCode = undefined;
    if (this.forceScope !== undefined) authorizationUrl.searchParams.set('scope', this.forceScope);
    this.log?.(`authorization URL: ${authorizationUrl.href}`);
    const stopAt = String(this._redirectUrl);
    const result = await walk(authorizationUrl.href, {
      user: this.user,
      password: this.password,
      stopAt,
      decision: this.decision,
      jar: this.jar,
      log: this.log ? (s) => this.log(`browser: ${s}`) : undefined,
    });
    const { jar: _jar, ...walkInfo } = result;
    this.lastWalk = walkInfo;
    if (!result.ok) {
      throw new AuthorizationFlowError(`authorization walk failed: ${result.error}`, { walk: walkInfo, status: result.status });
    }
    const final = new URL(result.final);
    const p = final.searchParams;
    if (p.has('error')) {
      const desc = p.get('error_description');
      throw new AuthorizationFlowError(`authorization error: ${p.get('error')}${desc ? ` (${desc})` : ''}`, { walk: walkInfo });
    }
    if (p.get('state') !== this._state) {
      throw new AuthorizationFlowError(`state mismatch: sent ${this._state}, got ${p.get('state')}`, { walk: walkInfo });
    }
    const md = this._discovery?.authorizationServerMetadata;
    if (p.has('iss')) {
      if (md?.issuer && p.get('iss') !== md.issuer) {
        throw new AuthorizationFlowError(`iss mismatch: metadata issuer ${md.issuer}, redirect iss ${p.get('iss')}`, { walk: walkInfo });
      }
    } else if (md?.authorization_response_iss_parameter_supported === true) {
      throw new AuthorizationFlowError('iss missing from the authorization response although the metadata says authorization_response_iss_parameter_supported', { walk: walkInfo });
    }
    const code = p.get('code');
    if (!code) throw new AuthorizationFlowError(`no code in redirect ${final.href}`, { walk: walkInfo });
    this.authorizationCode = code;
  }
}

// Wraps fetch: remembers the last non-2xx answer (for error messages) and, with --trace, logs
// every exchange.
function makeRecordingFetch(log, record) {
  return async (url, init = {}) => {
    const method = init.method ?? 'GET';
    let res;
    try {
      res = await fetch(url, init);
    } catch (err) {
      log?.(`${method} ${url} -> ${err.message}`);
      throw err;
    }
    const www = res.headers.get('www-authenticate');
    log?.(`${method} ${url} -> ${res.status} ${res.headers.get('content-type') ?? ''}${www ? ` www-authenticate: ${www}` : ''}`);
    if (!res.ok && res.status !== 202) {
      const body = await res.clone().text().catch(() => '');
      record.lastFailure = { method, url: String(url), status: res.status, body: body.slice(0, 500) };
    }
    return res;
  };
}

const record = { lastFailure: undefined };

async function run(o) {
  const log = o.trace ? (s) => process.stderr.write(`oauth-client: ${s}\n`) : undefined;
  const clientMetadata = {
    client_name: 'mreg interop client',
    redirect_uris: [o.redirectUri],
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    token_endpoint_auth_method: 'none',
    ...(o.scope ? { scope: o.scope } : {}),
    ...(o.applicationType ? { application_type: o.applicationType } : {}),
  };
  const provider = new InMemoryOAuthClientProvider({
    redirectUrl: o.redirectUri,
    clientMetadata,
    user: o.user,
    password: o.password,
    decision: o.deny ? 'deny' : 'allow',
    forceScope: o.scope,
    log,
  });
  const transportOpts = { authProvider: provider, fetch: makeRecordingFetch(log, record) };
  const newClient = () => new Client({ name: 'mreg-interop-oauth-client', version: '1.0.0' });

  let transport = new StreamableHTTPClientTransport(new URL(o.url), transportOpts);
  let client = newClient();
  try {
    await client.connect(transport, { timeout: o.timeout });
    log?.('connected without an authorization flow');
  } catch (err) {
    if (!(err instanceof UnauthorizedError)) throw err;
    if (!provider.authorizationCode) {
      throw new AuthorizationFlowError(`unauthorized and no authorization code was obtained: ${err.message}`);
    }
    log?.('got an authorization code; finishAuth');
    await transport.finishAuth(provider.authorizationCode);
    await transport.close().catch(() => {});
    transport = new StreamableHTTPClientTransport(new URL(o.url), transportOpts);
    client = newClient();
    await client.connect(transport, { timeout: o.timeout });
  }

  let out;
  try {
    if (o.command === 'tools') {
      const r = await client.listTools(undefined, { timeout: o.timeout });
      out = { tools: r.tools.map((t) => t.name) };
    } else {
      out = await client.callTool({ name: o.args[0], arguments: o.callArgs }, undefined, { timeout: o.timeout });
    }
  } finally {
    if (transport.sessionId) await transport.terminateSession().catch(() => {});
    await client.close().catch(() => {});
  }
  if (o.printToken) {
    const tokens = provider.tokens();
    out = {
      ...out,
      access_token: tokens?.access_token,
      token_response: tokens,
      client_id: provider.clientInformation()?.client_id,
    };
  }
  return out;
}

function errorOutput(err) {
  let message = err?.message ?? String(err);
  if (err?.errorCode) {
    // OAuthError from the SDK (its message is the server's error_description, often empty)
    message = `OAuth error "${err.errorCode}"${message ? `: ${message}` : ''}`;
  }
  const lf = record.lastFailure;
  if (lf && !(err instanceof UsageError) && !err?.walk) {
    const step = /\/register$/.test(new URL(lf.url).pathname) ? ' (dynamic client registration)'
      : /\/token$/.test(new URL(lf.url).pathname) ? ' (token request)' : '';
    message += `; last failed HTTP exchange${step}: ${lf.method} ${lf.url} -> ${lf.status}${lf.body ? ` ${lf.body}` : ''}`;
  }
  const cause = err?.cause?.errors?.[0] ?? err?.cause;
  if (cause && (cause.code || cause.message)) message += ` (${cause.code ?? cause.message}${cause.code && cause.message ? `: ${cause.message}` : ''})`;
  const out = { error: message };
  if (err instanceof UsageError) out.code = 'usage';
  if (cause?.code) out.code = cause.code;
  if (typeof err?.code === 'number') out.status = err.code; // StreamableHTTPError
  if (typeof err?.status === 'number') out.status = err.status;
  if (err?.errorCode) out.oauth_error = err.errorCode; // OAuthError subclasses
  if (err?.walk) out.walk = err.walk;
  if (lf && !(err instanceof UsageError)) out.last_http_failure = lf;
  return out;
}

let exitCode = 0;
try {
  const o = parseCli(process.argv.slice(2));
  const out = await run(o);
  process.stdout.write(`${JSON.stringify(out)}\n`);
} catch (err) {
  if (process.argv.includes('--trace')) process.stderr.write(`oauth-client: ${err?.stack ?? err}\n`);
  process.stdout.write(`${JSON.stringify(errorOutput(err))}\n`);
  exitCode = 1;
}
process.exit(exitCode);
