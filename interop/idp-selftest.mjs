#!/usr/bin/env node
// idp-selftest.mjs: end-to-end check of idp.mjs + browser.mjs (no network beyond 127.0.0.1).
//   node interop/idp-selftest.mjs [--verbose]
// Starts idp.mjs with two tenants, walks real authorization-code flows with browser.mjs,
// redeems codes, refreshes, gets app tokens, calls the Graph stand-in and the test
// endpoints, and checks every Entra-shaped claim. Prints one line per check and ends with
// "N passed, M failed"; exit status 0 only if everything passed.

import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

import { walk, CookieJar, parseForms } from './browser.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const verbose = process.argv.includes('--verbose');

const T1 = '11111111-1111-1111-1111-111111111111';
const T2 = '44444444-4444-4444-4444-444444444444';
const CID = '55555555-5555-5555-5555-555555555555';
const SECRET = 's3cret-for-selftest';
const REDIRECT = 'http://127.0.0.1:47999/callback';
const REDIRECT2 = 'http://127.0.0.1:47999/other';
const APP_OID = '66666666-6666-6666-6666-666666666666';
const USERS = {
  alice: { oid: 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa', email: 'alice@contoso.test', name: 'Alice', roles: ['admin'], tenant: T1 },
  bob: { oid: 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb', email: 'bob@contoso.test', name: 'Bob', roles: ['user'], tenant: T1 },
  carol: { oid: 'cccccccc-cccc-4ccc-8ccc-cccccccccccc', email: 'carol@fabrikam.test', name: 'Carol', roles: ['reader', 'writer'], tenant: T2 },
};

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
  return cond;
}
const eq = (name, actual, expected) => check(name, JSON.stringify(actual) === JSON.stringify(expected),
  `got ${JSON.stringify(actual)}, want ${JSON.stringify(expected)}`);

const log = verbose ? (s) => process.stderr.write(`  ${s}\n`) : undefined;

// ---------------------------------------------------------------- helpers
function startIdp(extraArgs) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(here, 'idp.mjs'), ...extraArgs], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => reject(new Error(`idp.mjs not ready after 30s; stderr: ${err}`)), 30000);
    child.stdout.on('data', (d) => {
      out += d;
      const nl = out.indexOf('\n');
      if (nl !== -1) {
        clearTimeout(timer);
        try {
          resolve({ child, ready: JSON.parse(out.slice(0, nl)), rawLine: out.slice(0, nl), stdoutRest: () => out.slice(nl + 1) });
        } catch (e) {
          reject(new Error(`bad ready line ${JSON.stringify(out)}: ${e.message}`));
        }
      }
    });
    child.stderr.on('data', (d) => {
      err += d;
      if (verbose) process.stderr.write(`[idp] ${d}`);
    });
    child.on('exit', (code) => reject(new Error(`idp.mjs exited ${code}; stderr: ${err}`)));
  });
}

const b64urlJson = (s) => JSON.parse(Buffer.from(s, 'base64url').toString('utf8'));
function decodeJwt(t) {
  const [h, p] = t.split('.');
  return { header: b64urlJson(h), payload: b64urlJson(p) };
}
function verifyJwt(token, jwks) {
  const [h, p, s] = token.split('.');
  const header = b64urlJson(h);
  const jwk = jwks.keys.find((k) => k.kid === header.kid);
  if (!jwk || header.alg !== 'RS256') return false;
  const key = crypto.createPublicKey({ key: jwk, format: 'jwk' });
  return crypto.verify('sha256', Buffer.from(`${h}.${p}`), key, Buffer.from(s, 'base64url'));
}

async function getJson(url, init) {
  const r = await fetch(url, init);
  const text = await r.text();
  let json;
  try { json = JSON.parse(text); } catch { json = undefined; }
  return { status: r.status, json, text, headers: r.headers };
}
const postForm = (url, form, headers = {}) => getJson(url, {
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
  body: new URLSearchParams(form).toString(),
});

function pkce() {
  const verifier = crypto.randomBytes(32).toString('base64url');
  const challenge = crypto.createHash('sha256').update(verifier).digest('base64url');
  return { verifier, challenge };
}

function authorizeUrl(disco, { scope, state, nonce, challenge, prompt, redirectUri = REDIRECT }) {
  const u = new URL(disco.authorization_endpoint);
  u.search = new URLSearchParams({
    client_id: CID,
    response_type: 'code',
    redirect_uri: redirectUri,
    scope,
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    ...(prompt ? { prompt } : {}),
  }).toString();
  return u.href;
}

// full login: returns {code, params, walk}
async function login(disco, user, { scope = 'openid profile email offline_access User.Read', prompt, decision = 'allow', jar } = {}) {
  const state = crypto.randomBytes(8).toString('hex');
  const nonce = crypto.randomBytes(8).toString('hex');
  const { verifier, challenge } = pkce();
  const url = authorizeUrl(disco, { scope, state, nonce, challenge, prompt });
  const w = await walk(url, { user, stopAt: REDIRECT, decision, log, jar });
  const params = w.ok ? new URL(w.final).searchParams : new URLSearchParams();
  return { w, params, state, nonce, verifier, code: params.get('code') };
}

// a stand-in for the gateway's own consent page, to exercise browser.mjs on it
function startFakeConsentServer() {
  const server = http.createServer((req, res) => {
    const u = new URL(req.url, 'http://x');
    if (req.method === 'GET' && u.pathname === '/authorize') {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'set-cookie': 'mreg_consent=c00kie; Path=/; HttpOnly; SameSite=Lax',
      });
      res.end(`<!doctype html><html><body><h1>Allow &quot;app&quot;?</h1>
<form method="post" action="/consent"><input type="hidden" name="txn" value="t&amp;1"><input type='hidden' value='csrf-&#39;x&#39;' name='csrf'>
<button type="submit" name="decision" value="allow">Allow</button><button type="submit" name="decision" value="deny">Deny</button></form></body></html>`);
      return;
    }
    if (req.method === 'POST' && u.pathname === '/consent') {
      let body = '';
      req.on('data', (d) => { body += d; });
      req.on('end', () => {
        const f = new URLSearchParams(body);
        const ok = req.headers.cookie === 'mreg_consent=c00kie' && f.get('txn') === 't&1' && f.get('csrf') === "csrf-'x'";
        const loc = !ok ? `${REDIRECT}?error=bad_form&got=${encodeURIComponent(`${req.headers.cookie}|${body}`)}`
          : `${REDIRECT}?decision=${f.get('decision')}`;
        res.writeHead(302, { location: loc, 'set-cookie': 'mreg_consent=; Path=/; Max-Age=0' });
        res.end();
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

// ---------------------------------------------------------------- main
async function main() {
  const { child, ready, rawLine } = await startIdp([
    '--tenant', T1, '--tenant', T2,
    '--client-id', CID, '--client-secret', SECRET,
    '--redirect-uri', REDIRECT, '--redirect-uri', REDIRECT2,
    '--users', JSON.stringify(USERS),
    '--app-roles', '["admin","Tasks.Write"]',
    '--app-oid', APP_OID,
  ]);
  try {
    await run(ready, rawLine);
  } finally {
    child.kill('SIGTERM');
  }
  const second = await startIdp(['--require-consent', '--rotate-refresh-tokens']);
  try {
    await runDefaults(second.ready);
  } finally {
    second.child.kill('SIGTERM');
  }
}

// defaults (one tenant, default client/users) with --require-consent --rotate-refresh-tokens
async function runDefaults(ready) {
  const A = ready.authority;
  const DT = '11111111-1111-1111-1111-111111111111';
  const DCID = '22222222-2222-2222-2222-222222222222';
  const DSECRET = 'mreg-test-secret';
  const DREDIRECT = 'http://127.0.0.1:53682/callback';
  eq('defaults: one tenant', ready.tenants, [DT]);
  const d = (await getJson(`${A}/${DT}/v2.0/.well-known/openid-configuration`)).json;
  const { verifier, challenge } = pkce();
  const u = new URL(d.authorization_endpoint);
  u.search = new URLSearchParams({
    client_id: DCID, response_type: 'code', redirect_uri: DREDIRECT, scope: 'openid offline_access', state: 'st', code_challenge: challenge, code_challenge_method: 'S256',
  }).toString();
  const w = await walk(u.href, { user: 'bob', stopAt: DREDIRECT, log });
  check('--require-consent: login then consent page (2 form posts)', w.ok && w.steps.filter((s) => s.method === 'POST').length === 2, w);
  const code = w.ok && new URL(w.final).searchParams.get('code');
  const tok = await postForm(d.token_endpoint, {
    grant_type: 'authorization_code', code, redirect_uri: DREDIRECT, code_verifier: verifier, client_id: DCID, client_secret: DSECRET,
  });
  const c = tok.json?.id_token && decodeJwt(tok.json.id_token).payload;
  check('defaults: bob has the default oid and roles', c && c.oid === 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb'
    && JSON.stringify(c.roles) === '["user"]' && c.email === 'bob@contoso.test' && c.tid === DT, tok.text);
  const rt1 = tok.json?.refresh_token;
  const r1 = await postForm(d.token_endpoint, { grant_type: 'refresh_token', refresh_token: rt1, client_id: DCID, client_secret: DSECRET });
  check('--rotate-refresh-tokens: refresh returns a new refresh token', r1.status === 200 && r1.json.refresh_token && r1.json.refresh_token !== rt1, r1.text);
  const r2 = await postForm(d.token_endpoint, { grant_type: 'refresh_token', refresh_token: rt1, client_id: DCID, client_secret: DSECRET });
  eq('--rotate-refresh-tokens: reusing the old refresh token fails', [r2.status, r2.json?.error], [400, 'invalid_grant']);
  const cc = await postForm(d.token_endpoint, {
    grant_type: 'client_credentials', client_id: DCID, client_secret: DSECRET, scope: `api://${DCID}/.default`,
  });
  const cp = cc.json?.access_token && decodeJwt(cc.json.access_token).payload;
  check('defaults: app token roles ["admin"], oid 33333333-...', cp && JSON.stringify(cp.roles) === '["admin"]'
    && cp.oid === '33333333-3333-3333-3333-333333333333', cc.text);
}

async function run(ready, rawLine) {
  const A = ready.authority;
  check('ready line is one JSON line with authority/tenants/port',
    rawLine === JSON.stringify({ authority: `http://127.0.0.1:${ready.port}`, tenants: [T1, T2], port: ready.port }), rawLine);

  // discovery
  const d1 = (await getJson(`${A}/${T1}/v2.0/.well-known/openid-configuration`)).json;
  const d2 = (await getJson(`${A}/${T2}/v2.0/.well-known/openid-configuration`)).json;
  eq('tenant 1 issuer has Entra shape', d1.issuer, `${A}/${T1}/v2.0`);
  eq('tenant 2 issuer has Entra shape', d2.issuer, `${A}/${T2}/v2.0`);
  check('discovery advertises S256 and RS256', d1.code_challenge_methods_supported?.includes('S256')
    && d1.id_token_signing_alg_values_supported?.includes('RS256'));
  for (const alias of ['organizations', 'common']) {
    const o = (await getJson(`${A}/${alias}/v2.0/.well-known/openid-configuration`)).json;
    eq(`${alias} issuer is the literal {tenantid} template`, o.issuer, `${A}/{tenantid}/v2.0`);
    check(`${alias} endpoints are tenant 1's`, o.authorization_endpoint === d1.authorization_endpoint
      && o.token_endpoint === d1.token_endpoint && o.jwks_uri === d1.jwks_uri
      && o.userinfo_endpoint === d1.userinfo_endpoint, o);
    check(`${alias} has RS256/S256/response/scopes/subject types`, o.id_token_signing_alg_values_supported?.[0] === 'RS256'
      && o.code_challenge_methods_supported?.[0] === 'S256' && o.response_types_supported?.includes('code')
      && o.scopes_supported?.includes('openid') && Array.isArray(o.subject_types_supported), o);
  }

  // JWKS + hit counter
  const hits0 = (await getJson(`${A}/_test/jwks_hits`)).json.hits;
  const jwks = (await getJson(d1.jwks_uri)).json;
  const jwks2 = (await getJson(d2.jwks_uri)).json;
  const hits1 = (await getJson(`${A}/_test/jwks_hits`)).json.hits;
  eq('jwks_hits counts fetches of every tenant jwks_uri', hits1 - hits0, 2);
  check('tenants share one RS256 key with a kid', jwks.keys.length === 1 && jwks.keys[0].kid
    && jwks.keys[0].alg === 'RS256' && JSON.stringify(jwks) === JSON.stringify(jwks2) && !('d' in jwks.keys[0]), jwks);

  // ---- authorization code flow, tenant 1, alice
  const jar = new CookieJar();
  const l1 = await login(d1, 'alice', { jar });
  check('walk as alice reaches the redirect URI', l1.w.ok && !!l1.code, l1.w);
  eq('state is echoed', l1.params.get('state'), l1.state);
  eq('iss is in the authorization response (RFC 9207)', l1.params.get('iss'), d1.issuer);
  check('walk: one login form, no consent page (auto-granted)', l1.w.steps.filter((s) => s.method === 'POST').length === 1, l1.w.steps);

  const tok = await postForm(d1.token_endpoint, {
    grant_type: 'authorization_code', code: l1.code, redirect_uri: REDIRECT, code_verifier: l1.verifier,
    client_id: CID, client_secret: SECRET,
  });
  check('code redemption with client_secret_post + code_verifier', tok.status === 200 && tok.json.id_token, tok.text);
  const { id_token: idToken, access_token: at, refresh_token: rt } = tok.json;
  check('refresh token issued for offline_access', typeof rt === 'string' && rt.length > 20, tok.json);
  check('delegated access token from the code flow is opaque', typeof at === 'string' && at.split('.').length === 1, at);
  eq('token_type Bearer', tok.json.token_type, 'Bearer');

  const { header: ih, payload: ic } = decodeJwt(idToken);
  check('ID token is RS256 with the shared kid and verifies', ih.alg === 'RS256' && ih.kid === jwks.keys[0].kid && verifyJwt(idToken, jwks), ih);
  eq('id_token iss', ic.iss, d1.issuer);
  eq('id_token aud = client id', ic.aud, CID);
  eq('id_token nonce echoed', ic.nonce, l1.nonce);
  eq('id_token oid', ic.oid, USERS.alice.oid);
  eq('id_token tid', ic.tid, T1);
  eq('id_token roles', ic.roles, ['admin']);
  eq('id_token preferred_username = email', ic.preferred_username, 'alice@contoso.test');
  eq('id_token email', ic.email, 'alice@contoso.test');
  eq('id_token name', ic.name, 'Alice');
  check('id_token sub is stable, distinct from oid', typeof ic.sub === 'string' && ic.sub.length === 43 && ic.sub !== ic.oid, ic.sub);
  check('id_token exp/iat sane', ic.exp > ic.iat && ic.iat <= Math.floor(Date.now() / 1000) + 5, ic);
  if (verbose) process.stderr.write(`  id_token claims: ${JSON.stringify(ic)}\n`);

  // second login in the same jar: SSO session, no form at all
  const l1b = await login(d1, 'alice', { jar });
  check('second walk with the same jar reuses the IdP session (no POST)', l1b.w.ok && l1b.code
    && l1b.w.steps.every((s) => s.method === 'GET'), l1b.w.steps);

  // (fresh sessions, so that a revoked grant does not take the tokens above with it)
  const lp = await login(d1, 'alice');
  const badPkce = await postForm(d1.token_endpoint, {
    grant_type: 'authorization_code', code: lp.code, redirect_uri: REDIRECT, code_verifier: pkce().verifier,
    client_id: CID, client_secret: SECRET,
  });
  eq('wrong code_verifier is rejected', [badPkce.status, badPkce.json?.error], [400, 'invalid_grant']);
  const lr = await login(d1, 'alice');
  const redeem = () => postForm(d1.token_endpoint, {
    grant_type: 'authorization_code', code: lr.code, redirect_uri: REDIRECT, code_verifier: lr.verifier,
    client_id: CID, client_secret: SECRET,
  });
  const first = await redeem();
  const reuse = await redeem();
  eq('code cannot be redeemed twice', [reuse.status, reuse.json?.error], [400, 'invalid_grant']);
  const afterReuse = await getJson(`${A}/v1.0/me`, { headers: { authorization: `Bearer ${first.json?.access_token}` } });
  eq('code replay revokes the tokens already issued for that grant', afterReuse.status, 401);

  // userinfo + Graph stand-in
  const ui = await getJson(d1.userinfo_endpoint, { headers: { authorization: `Bearer ${at}` } });
  check('userinfo works with the delegated token', ui.status === 200 && ui.json.oid === USERS.alice.oid && ui.json.sub === ic.sub, ui.text);
  const me = await getJson(`${A}/v1.0/me`, { headers: { authorization: `Bearer ${at}` } });
  check('Graph /v1.0/me with the delegated token', me.status === 200 && me.json.id === USERS.alice.oid
    && me.json.displayName === 'Alice' && me.json.mail === 'alice@contoso.test'
    && me.json.userPrincipalName === 'alice@contoso.test', me.text);
  const meBad = await getJson(`${A}/v1.0/me`, { headers: { authorization: 'Bearer not-a-token' } });
  check('Graph /v1.0/me rejects an unknown token with 401 JSON', meBad.status === 401 && meBad.json?.error?.code, meBad.text);
  const meNone = await getJson(`${A}/v1.0/me`);
  eq('Graph /v1.0/me without token -> 401', meNone.status, 401);

  // refresh (scope with a scope the RT cannot carry, as MSAL-style RPs send)
  const ref = await postForm(d1.token_endpoint, {
    grant_type: 'refresh_token', refresh_token: rt, client_id: CID, client_secret: SECRET,
    scope: 'openid profile email offline_access User.Read',
  });
  check('refresh_token grant works (scope incl. User.Read tolerated)', ref.status === 200 && ref.json.access_token, ref.text);
  const refId = ref.json.id_token && decodeJwt(ref.json.id_token).payload;
  check('refresh returns an ID token with the same Entra claims', refId && refId.oid === USERS.alice.oid && refId.tid === T1
    && JSON.stringify(refId.roles) === '["admin"]' && refId.sub === ic.sub, refId);
  eq('refresh token is not rotated by default (same value returned)', ref.json.refresh_token, rt);
  const me2 = await getJson(`${A}/v1.0/me`, { headers: { authorization: `Bearer ${ref.json.access_token}` } });
  eq('Graph /v1.0/me with the refreshed access token', me2.json?.id, USERS.alice.oid);
  const refBasic = await postForm(d1.token_endpoint, { grant_type: 'refresh_token', refresh_token: rt }, {
    authorization: `Basic ${Buffer.from(`${encodeURIComponent(CID)}:${encodeURIComponent(SECRET)}`).toString('base64')}`,
  });
  eq('client_secret_basic is accepted too', refBasic.status, 200);
  const refBadSecret = await postForm(d1.token_endpoint, {
    grant_type: 'refresh_token', refresh_token: rt, client_id: CID, client_secret: 'wrong',
  });
  eq('wrong client secret -> invalid_client', [refBadSecret.status, refBadSecret.json?.error], [401, 'invalid_client']);

  // ---- app-only tokens
  const jwtChecks = (label, token, aud) => {
    const { header, payload: c } = decodeJwt(token);
    check(`${label}: JWT RS256 with the shared kid, verifies`, header.alg === 'RS256' && header.kid === jwks.keys[0].kid && verifyJwt(token, jwks), header);
    eq(`${label}: aud`, c.aud, aud);
    eq(`${label}: iss`, c.iss, d1.issuer);
    eq(`${label}: tid`, c.tid, T1);
    eq(`${label}: azp/appid`, [c.azp, c.appid], [CID, CID]);
    eq(`${label}: roles from --app-roles`, c.roles, ['admin', 'Tasks.Write']);
    eq(`${label}: idtyp`, c.idtyp, 'app');
    eq(`${label}: oid = sub = --app-oid`, [c.oid, c.sub], [APP_OID, APP_OID]);
    check(`${label}: exp in the future`, c.exp > Date.now() / 1000, c);
    if (verbose) process.stderr.write(`  ${label} claims: ${JSON.stringify(c)}\n`);
    return c;
  };
  const cc1 = await postForm(d1.token_endpoint, {
    grant_type: 'client_credentials', client_id: CID, client_secret: SECRET, resource: `api://${CID}`,
  });
  check('client_credentials with resource=api://CID', cc1.status === 200 && cc1.json.access_token, cc1.text);
  if (cc1.status === 200) jwtChecks('app token (resource)', cc1.json.access_token, `api://${CID}`);
  const cc2 = await postForm(d1.token_endpoint, {
    grant_type: 'client_credentials', client_id: CID, client_secret: SECRET, scope: `api://${CID}/.default`,
  });
  check('client_credentials with scope=api://CID/.default', cc2.status === 200 && cc2.json.access_token, cc2.text);
  if (cc2.status === 200) jwtChecks('app token (.default)', cc2.json.access_token, `api://${CID}`);
  const cc3 = await postForm(d1.token_endpoint, {
    grant_type: 'client_credentials', client_id: CID, client_secret: SECRET, resource: CID,
  });
  check('client_credentials with resource=CID (bare GUID)', cc3.status === 200 && cc3.json.access_token, cc3.text);
  if (cc3.status === 200) jwtChecks('app token (GUID)', cc3.json.access_token, CID);
  const meApp = await getJson(`${A}/v1.0/me`, { headers: { authorization: `Bearer ${cc1.json.access_token}` } });
  eq('Graph /v1.0/me refuses an app-only token', meApp.status, 401);

  // ---- delegated JWT for this app: api:// scope at authorize, then refresh for that resource
  const l2 = await login(d1, 'bob', { scope: `openid profile offline_access api://${CID}/access_as_user` });
  check('walk as bob with an api:// scope', l2.w.ok && l2.code, l2.w);
  const tok2 = await postForm(d1.token_endpoint, {
    grant_type: 'authorization_code', code: l2.code, redirect_uri: REDIRECT, code_verifier: l2.verifier,
    client_id: CID, client_secret: SECRET, scope: `openid profile offline_access api://${CID}/access_as_user`,
  });
  check('code redemption with a scope parameter is accepted', tok2.status === 200 && tok2.json.refresh_token, tok2.text);
  const del = await postForm(d1.token_endpoint, {
    grant_type: 'refresh_token', refresh_token: tok2.json.refresh_token, client_id: CID, client_secret: SECRET,
    scope: `api://${CID}/access_as_user`,
  });
  check('refresh with scope=api://CID/access_as_user', del.status === 200 && del.json.access_token, del.text);
  if (del.status === 200) {
    const { payload: c } = decodeJwt(del.json.access_token);
    check('delegated JWT verifies', verifyJwt(del.json.access_token, jwks));
    eq('delegated JWT aud/iss/tid', [c.aud, c.iss, c.tid], [`api://${CID}`, d1.issuer, T1]);
    eq('delegated JWT oid/roles/scp/idtyp/azp', [c.oid, c.roles, c.scp, c.idtyp, c.azp],
      [USERS.bob.oid, ['user'], 'access_as_user', 'user', CID]);
    const meDel = await getJson(`${A}/v1.0/me`, { headers: { authorization: `Bearer ${del.json.access_token}` } });
    eq('Graph /v1.0/me also accepts our delegated JWTs', meDel.json?.id, USERS.bob.oid);
    if (verbose) process.stderr.write(`  delegated claims: ${JSON.stringify(c)}\n`);
  }

  // ---- consent page (prompt=consent forces it) and deny
  const l3 = await login(d1, 'alice', { prompt: 'consent' });
  check('prompt=consent: walker submits the consent form', l3.w.ok && l3.code
    && l3.w.steps.filter((s) => s.method === 'POST').length === 2, l3.w.steps);
  const l4 = await login(d1, 'alice', { prompt: 'consent', decision: 'deny' });
  check('deny on the IdP consent page -> error=access_denied', l4.w.ok && l4.params.get('error') === 'access_denied', l4.w);
  const l5 = await login(d1, 'alice', { prompt: 'select_account' });
  check('prompt=select_account is tolerated (treated as login)', l5.w.ok && l5.code, l5.w);

  // ---- failures
  const l6 = await login(d1, 'mallory');
  check('unknown login fails with 401 and no form', !l6.w.ok && l6.w.status === 401 && parseForms(l6.w.body).length === 0, l6.w);
  const l7 = await login(d2, 'alice');
  check('a user cannot sign in to another tenant', !l7.w.ok && l7.w.status === 401, l7.w);
  const l8 = await login(d1, 'alice@contoso.test');
  check('login by email works', l8.w.ok && l8.code, l8.w);
  const badRedirect = await walk(authorizeUrl(d1, { scope: 'openid', state: 's', nonce: 'n', challenge: pkce().challenge, redirectUri: 'http://127.0.0.1:1/evil' }),
    { user: 'alice', stopAt: 'http://127.0.0.1:1/evil' });
  check('unregistered redirect_uri -> error page (400), not a redirect', !badRedirect.ok && badRedirect.status === 400, badRedirect);

  // ---- tenant 2
  const l9 = await login(d2, 'carol', { scope: 'openid profile email' });
  const tok9 = l9.code && await postForm(d2.token_endpoint, {
    grant_type: 'authorization_code', code: l9.code, redirect_uri: REDIRECT, code_verifier: l9.verifier,
    client_id: CID, client_secret: SECRET,
  });
  const c9 = tok9?.json?.id_token && decodeJwt(tok9.json.id_token).payload;
  check('tenant 2 login: iss/tid of tenant 2, same signing key', c9 && c9.iss === d2.issuer && c9.tid === T2
    && c9.oid === USERS.carol.oid && JSON.stringify(c9.roles) === '["reader","writer"]'
    && verifyJwt(tok9.json.id_token, jwks), c9 ?? l9.w);
  check('no refresh token without offline_access', tok9?.json && !tok9.json.refresh_token, tok9?.json);

  // ---- /_test/sign
  const now = Math.floor(Date.now() / 1000);
  const s1 = await getJson(`${A}/_test/sign`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ iss: d1.issuer, aud: 'someone-else', exp: now - 3600, foo: [1, 2] }),
  });
  check('/_test/sign signs arbitrary claims with the shared key', s1.status === 200 && verifyJwt(s1.json.token, jwks)
    && decodeJwt(s1.json.token).payload.aud === 'someone-else' && decodeJwt(s1.json.token).payload.exp === now - 3600, s1.text);
  const s2 = await getJson(`${A}/_test/sign`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ sub: 'x', header: { kid: 'unknown-kid' } }),
  });
  const h2 = s2.json && decodeJwt(s2.json.token);
  check('/_test/sign header override (kid)', h2 && h2.header.kid === 'unknown-kid' && h2.header.alg === 'RS256'
    && !('header' in h2.payload), h2);
  const s3 = await getJson(`${A}/_test/sign`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ claims: { sub: 'y' }, key: 'rogue' }),
  });
  check('/_test/sign with the unpublished rogue key does not verify', s3.status === 200 && !verifyJwt(s3.json.token, jwks), s3.text);
  const rot = await getJson(`${A}/_test/rotate`, { method: 'POST' });
  const jwksAfter = (await getJson(d1.jwks_uri)).json;
  const s4 = await getJson(`${A}/_test/sign`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ claims: { sub: 'z' }, key: rot.json?.kid }),
  });
  check('/_test/rotate publishes a second key usable by /_test/sign', jwksAfter.keys.length === 2
    && s4.status === 200 && verifyJwt(s4.json.token, jwksAfter) && !verifyJwt(s4.json.token, jwks), { rot: rot.json, s4: s4.text });
  const hits2 = (await getJson(`${A}/_test/jwks_hits`)).json.hits;
  eq('jwks_hits went up by exactly the fetches made', hits2 - hits1, 1);

  // ---- browser.mjs against a gateway-like consent page
  const fake = await startFakeConsentServer();
  const F = `http://127.0.0.1:${fake.address().port}`;
  const fjar = new CookieJar();
  const fa = await walk(`${F}/authorize`, { stopAt: REDIRECT, jar: fjar, log });
  eq('gateway-style consent page: Allow sends txn/csrf/decision + cookie', fa.final, `${REDIRECT}?decision=allow`);
  check('Max-Age=0 deletes the cookie', fjar.list().length === 0, fjar.list());
  const fd = await walk(`${F}/authorize`, { stopAt: REDIRECT, decision: 'deny' });
  eq('gateway-style consent page: Deny', fd.final, `${REDIRECT}?decision=deny`);
  fake.close();
}

try {
  await main();
} catch (err) {
  failed += 1;
  process.stdout.write(`FAIL - selftest crashed: ${err?.stack ?? err}\n`);
}
process.stdout.write(`${passed} passed, ${failed} failed\n`);
process.exitCode = failed ? 1 : 0;
