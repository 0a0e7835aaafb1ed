#!/usr/bin/env node
// idp.mjs: an Entra-ID-shaped OpenID Connect provider for loopback tests, built on the npm
// package `oidc-provider` (9.x). One node:http server on 127.0.0.1 hosts one oidc-provider
// instance per tenant, mounted at /{tid}/v2.0, so every issuer has Entra's shape
// `{authority}/{tid}/v2.0`. All tenants sign with ONE shared RS256 key (generated at start),
// as Entra's keys are shared across tenants.
//
//   node interop/idp.mjs [--port N] [--tenant TID]... [--client-id ID] [--client-secret S]
//        [--redirect-uri URI]... [--users JSON] [--app-roles JSON|a,b] [--app-oid GUID]
//        [--require-consent] [--rotate-refresh-tokens] [--access-token-ttl S]
//        [--id-token-ttl S] [--refresh-token-ttl S] [--verbose]
//
// Once listening it prints exactly one line on stdout, then runs until SIGTERM/SIGINT (exit 0):
//   {"authority":"http://127.0.0.1:PORT","tenants":["TID",...],"port":PORT}
// Everything else goes to stderr.
//
// Routes (A = authority http://127.0.0.1:PORT, T = a tenant id):
//   A/T/v2.0/.well-known/openid-configuration   discovery (issuer A/T/v2.0)
//   A/T/v2.0/auth   /token   /me (userinfo)   /jwks   /session/end   /token/introspection
//   A/T/v2.0/interaction/:uid                   devInteractions login / consent pages
//   A/organizations/v2.0/.well-known/openid-configuration  (and /common/...): static,
//        issuer "A/{tenantid}/v2.0" (literal placeholder), endpoints of the FIRST tenant
//   GET  A/v1.0/me                  Microsoft Graph stand-in (Bearer = access token from us)
//   POST A/_test/sign               sign arbitrary claims (negative tests)
//   GET  A/_test/jwks_hits          {"hits":N}: fetches of any tenant's jwks_uri
//   POST A/_test/rotate             add a new key to the published JWKS, returns {"kid"}
//   POST A/_test/next_token         change the next successful token response of one grant type
//                                   (any tenant): {"grant_type": "refresh_token",
//                                   "drop": ["refresh_token", "id_token", ...],
//                                   "id_token": {claims merged into the ID token; null removes},
//                                   "key": "primary"|"rogue"}; the ID token is signed again
//
// Login: any password; the login must be a known user (key of --users, or its email) of
// THAT tenant, else the IdP answers 401 with an HTML page without a form.
//
// App-only ("client credentials") token for this app, Entra v2 style (scope=RESOURCE/.default):
//   curl -s -X POST "$A/$T/v2.0/token" -d grant_type=client_credentials \
//        -d client_id=$CID -d client_secret=$SECRET --data-urlencode "scope=api://$CID/.default"
// or RFC 8707 style (same result):
//   curl -s -X POST "$A/$T/v2.0/token" -d grant_type=client_credentials \
//        -d client_id=$CID -d client_secret=$SECRET --data-urlencode "resource=api://$CID"
// -> {"access_token":"<JWT>","expires_in":3600,"token_type":"Bearer"}; the JWT (RS256, shared kid)
// has aud=api://$CID, iss=$A/$T/v2.0, tid, azp=appid=$CID, roles (--app-roles), idtyp "app",
// oid=sub=--app-oid, ver "2.0". `resource=$CID` (a bare GUID, not a URI) gives aud=$CID.
//
// Delegated JWT for this app: put api://$CID/access_as_user in the authorize scope (idp.mjs then
// adds resource=api://$CID itself), then either redeem the code with resource=api://$CID, or
// refresh with scope=api://$CID/access_as_user. The JWT has aud=api://$CID, the user's oid/roles/
// name/preferred_username, scp "access_as_user", idtyp "user". Without `resource` the code flow
// gives an opaque access token (usable at /me and at the Graph stand-in /v1.0/me).
//
// Test-token signing:
//   curl -s -X POST $A/_test/sign -H 'content-type: application/json' \
//        -d '{"iss":"...","aud":"...","exp":1,"header":{"kid":"nope"}}'
//   -> {"token":"<JWT>"}. See handleSign() for the {"claims":..,"header":..,"key":..} form.

import * as http from 'node:http';
import * as crypto from 'node:crypto';
import { parseArgs } from 'node:util';

// oidc-provider prints notices with console.info (stdout): keep stdout for the ready line only.
console.info = (...a) => console.error(...a);
console.log = (...a) => console.error(...a);

const { default: Provider, interactionPolicy } = await import('oidc-provider');

const DEFAULT_TENANT = '11111111-1111-1111-1111-111111111111';
const DEFAULT_CLIENT_ID = '22222222-2222-2222-2222-222222222222';
const DEFAULT_CLIENT_SECRET = 'mreg-test-secret';
const DEFAULT_REDIRECT_URI = 'http://127.0.0.1:53682/callback';
const DEFAULT_APP_OID = '33333333-3333-3333-3333-333333333333';
const AUD_URN = 'urn:mreg-idp:aud:'; // internal wrapper for non-URI resource values (bare GUIDs)

function usage(msg) {
  process.stderr.write(`idp.mjs: ${msg}\n`);
  process.exit(2);
}

let args;
try {
  ({ values: args } = parseArgs({
    options: {
      port: { type: 'string', default: '0' },
      tenant: { type: 'string', multiple: true },
      'client-id': { type: 'string', default: DEFAULT_CLIENT_ID },
      'client-secret': { type: 'string', default: DEFAULT_CLIENT_SECRET },
      'redirect-uri': { type: 'string', multiple: true },
      users: { type: 'string' },
      'app-roles': { type: 'string', default: '["admin"]' },
      'app-oid': { type: 'string', default: DEFAULT_APP_OID },
      'require-consent': { type: 'boolean', default: false },
      'rotate-refresh-tokens': { type: 'boolean', default: false },
      'access-token-ttl': { type: 'string', default: '3600' },
      'id-token-ttl': { type: 'string', default: '3600' },
      'refresh-token-ttl': { type: 'string', default: String(14 * 24 * 3600) },
      verbose: { type: 'boolean', default: false },
    },
    strict: true,
    allowPositionals: false,
  }));
} catch (err) {
  usage(err.message);
}

const tenants = args.tenant?.length ? [...new Set(args.tenant)] : [DEFAULT_TENANT];
for (const t of tenants) {
  if (!/^[A-Za-z0-9._-]+$/.test(t) || t === 'organizations' || t === 'common' || t === '_test') {
    usage(`invalid --tenant ${JSON.stringify(t)}`);
  }
}
const clientId = args['client-id'];
const clientSecret = args['client-secret'];
const redirectUris = args['redirect-uri']?.length ? args['redirect-uri'] : [DEFAULT_REDIRECT_URI];
const appOid = args['app-oid'];
const ttlOf = (name) => {
  const n = Number(args[name]);
  if (!Number.isSafeInteger(n) || n <= 0) usage(`--${name} must be a positive integer`);
  return n;
};
const accessTokenTtl = ttlOf('access-token-ttl');
const idTokenTtl = ttlOf('id-token-ttl');
const refreshTokenTtl = ttlOf('refresh-token-ttl');
const verbose = args.verbose;

let appRoles;
{
  const raw = args['app-roles'].trim();
  if (raw.startsWith('[')) {
    try { appRoles = JSON.parse(raw); } catch (err) { usage(`--app-roles: ${err.message}`); }
  } else {
    appRoles = raw ? raw.split(',').map((s) => s.trim()).filter(Boolean) : [];
  }
  if (!Array.isArray(appRoles) || !appRoles.every((r) => typeof r === 'string')) {
    usage('--app-roles must be a JSON array of strings or a comma-separated list');
  }
}

// ---------------------------------------------------------------- users
// sub: Entra's `sub` is an opaque pairwise value that differs from `oid`. Here it is
// base64url(sha256("mreg-idp-sub:" + tid + ":" + oid)) (43 chars) unless the user JSON sets "sub".
// It is also the oidc-provider accountId, so it is the `sub` of ID tokens, userinfo and
// delegated JWT access tokens.
const DEFAULT_USERS = {
  alice: {
    oid: 'aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa',
    email: 'alice@contoso.test',
    name: 'Alice',
    roles: ['admin'],
  },
  bob: {
    oid: 'bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb',
    email: 'bob@contoso.test',
    name: 'Bob',
    roles: ['user'],
  },
};

const users = new Map(); // login (lower-case) -> user
const usersBySub = new Map();
{
  let input = DEFAULT_USERS;
  if (args.users !== undefined) {
    try { input = JSON.parse(args.users); } catch (err) { usage(`--users: ${err.message}`); }
    if (!input || typeof input !== 'object' || Array.isArray(input)) usage('--users must be a JSON object');
  }
  for (const [login, u] of Object.entries(input)) {
    if (!u || typeof u !== 'object') usage(`--users: user ${login} must be an object`);
    const tenant = u.tenant ?? tenants[0];
    if (!tenants.includes(tenant)) usage(`--users: user ${login} has tenant ${tenant}, not one of --tenant`);
    const oid = u.oid ?? crypto.randomUUID();
    const user = {
      login,
      oid,
      tenant,
      email: u.email ?? `${login}@contoso.test`,
      name: u.name ?? login,
      roles: Array.isArray(u.roles) ? u.roles : [],
      sub: u.sub ?? crypto.createHash('sha256').update(`mreg-idp-sub:${tenant}:${oid}`).digest('base64url'),
    };
    if (users.has(login.toLowerCase())) usage(`--users: duplicate login ${login}`);
    users.set(login.toLowerCase(), user);
    usersBySub.set(user.sub, user);
  }
}

function findLogin(login, tenant) {
  if (typeof login !== 'string') return undefined;
  const key = login.trim().toLowerCase();
  let user = users.get(key);
  if (!user) user = [...users.values()].find((u) => u.email.toLowerCase() === key);
  return user && user.tenant === tenant ? user : undefined;
}

// ---------------------------------------------------------------- keys
function makeKey() {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pub = publicKey.export({ format: 'jwk' });
  // RFC 7638 thumbprint, shortened like Entra's 27-char kids.
  const kid = crypto.createHash('sha256')
    .update(JSON.stringify({ e: pub.e, kty: pub.kty, n: pub.n }))
    .digest('base64url').slice(0, 27);
  return {
    kid,
    privateKey,
    publicKey,
    privateJwk: { ...privateKey.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' },
    publicJwk: { kty: pub.kty, use: 'sig', alg: 'RS256', kid, n: pub.n, e: pub.e },
  };
}

const primaryKey = makeKey();
const rogueKey = makeKey(); // never published: for bad-signature tests
const publishedKeys = [primaryKey]; // /_test/rotate appends
let jwksHits = 0;
const nextToken = new Map(); // grant_type -> change of the next token response (/_test/next_token)

const b64json = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');

function signJwt(header, payload, key, hmacSecret) {
  const input = `${b64json(header)}.${b64json(payload)}`;
  let sig = '';
  if (header.alg === 'none') {
    sig = '';
  } else if (header.alg === 'HS256') {
    sig = crypto.createHmac('sha256', hmacSecret).update(input).digest('base64url');
  } else {
    sig = crypto.sign('sha256', Buffer.from(input), key.privateKey).toString('base64url');
  }
  return `${input}.${sig}`;
}

function verifyJwt(token) {
  const parts = token.split('.');
  if (parts.length !== 3) return undefined;
  let header;
  let payload;
  try {
    header = JSON.parse(Buffer.from(parts[0], 'base64url').toString());
    payload = JSON.parse(Buffer.from(parts[1], 'base64url').toString());
  } catch {
    return undefined;
  }
  if (header.alg !== 'RS256') return undefined;
  const key = publishedKeys.find((k) => k.kid === header.kid);
  if (!key) return undefined;
  const ok = crypto.verify('sha256', Buffer.from(`${parts[0]}.${parts[1]}`), key.publicKey,
    Buffer.from(parts[2], 'base64url'));
  return ok ? payload : undefined;
}

// ---------------------------------------------------------------- storage
// A per-tenant in-memory adapter (oidc-provider's bundled MemoryAdapter shares one global
// store between all provider instances and evicts after 1000 entries).
function makeAdapterClass() {
  const store = new Map(); // `${model}:${id}` -> { payload, expiresAt }
  const grants = new Map(); // grantId -> Set of keys
  const sessionUids = new Map();
  const userCodes = new Map();
  const now = () => Date.now();
  const live = (key) => {
    const e = store.get(key);
    if (!e) return undefined;
    if (e.expiresAt !== undefined && e.expiresAt < now()) {
      store.delete(key);
      return undefined;
    }
    return e;
  };
  return class TenantAdapter {
    constructor(model) { this.model = model; }

    key(id) { return `${this.model}:${id}`; }

    async upsert(id, payload, expiresIn) {
      const key = this.key(id);
      // keep artifacts 60s past their expiry; oidc-provider checks exp itself
      const expiresAt = expiresIn ? now() + (expiresIn + 60) * 1000 : undefined;
      store.set(key, { payload: structuredClone(payload), expiresAt });
      if (this.model === 'Session' && payload.uid) sessionUids.set(payload.uid, id);
      if (payload.userCode) userCodes.set(payload.userCode, id);
      if (payload.grantId) {
        if (!grants.has(payload.grantId)) grants.set(payload.grantId, new Set());
        grants.get(payload.grantId).add(key);
      }
    }

    async find(id) {
      if (id === undefined) return undefined;
      const e = live(this.key(id));
      return e ? structuredClone(e.payload) : undefined;
    }

    async findByUid(uid) { return this.find(sessionUids.get(uid)); }

    async findByUserCode(userCode) { return this.find(userCodes.get(userCode)); }

    async consume(id) {
      const e = live(this.key(id));
      if (e) e.payload.consumed = Math.floor(now() / 1000);
    }

    async destroy(id) { store.delete(this.key(id)); }

    async revokeByGrantId(grantId) {
      for (const key of grants.get(grantId) ?? []) store.delete(key);
      grants.delete(grantId);
    }
  };
}

// ---------------------------------------------------------------- providers
const CLAIMS = {
  // Everything Entra puts in its ID tokens rides on the openid scope, so it lands in the ID
  // token whatever else is requested (conformIdTokenClaims: false).
  openid: ['sub', 'oid', 'tid', 'roles', 'preferred_username', 'name', 'email', 'ver'],
  profile: ['name', 'preferred_username', 'oid'],
  email: ['email'],
  acr: null,
  sid: null,
  auth_time: null,
  iss: null,
};

function resourceAudience(indicator) {
  return indicator.startsWith(AUD_URN) ? decodeURIComponent(indicator.slice(AUD_URN.length)) : indicator;
}

function scpFor(indicator, scope) {
  if (!scope) return undefined;
  const aud = resourceAudience(indicator);
  const out = scope.split(' ').map((s) => {
    for (const prefix of [`${indicator}/`, `${aud}/`]) {
      if (s.startsWith(prefix)) return s.slice(prefix.length);
    }
    return s;
  }).filter((s) => s && s !== '.default');
  return out.length ? [...new Set(out)].join(' ') : undefined;
}

// oidc-provider (per OIDC Core) drops offline_access from a front-channel request unless it
// carries prompt=consent; Entra does not. So /auth adds prompt=consent itself and marks that
// with mreg_auto_consent=1, and this policy then ignores the injected consent prompt (a
// consent page still appears when the relying party sent prompt=consent, or with
// --require-consent when something is not granted yet).
function makePolicy() {
  const policy = interactionPolicy.base();
  const consent = policy.get('consent');
  const orig = consent.checks.get('consent_prompt');
  consent.checks.remove('consent_prompt');
  consent.checks.add(new interactionPolicy.Check(
    'consent_prompt',
    orig.description,
    orig.error,
    (ctx) => (ctx.oidc.params.mreg_auto_consent === '1' ? false : orig.check(ctx)),
    orig.details,
  ), 0);
  return policy;
}

function makeProvider(authority, tid) {
  const issuer = `${authority}/${tid}/v2.0`;
  const Adapter = makeAdapterClass();
  const cookiePath = `/${tid}/v2.0`;
  const cookieSuffix = crypto.createHash('sha256').update(tid).digest('hex').slice(0, 8);

  async function autoGrant(ctx) {
    // Entra with admin consent: no consent page; everything requested is granted.
    const { oidc } = ctx;
    const grantId = oidc.result?.consent?.grantId || oidc.session.grantIdFor(oidc.client.clientId);
    let grant = grantId ? await oidc.provider.Grant.find(grantId) : undefined;
    if (!grant || grant.accountId !== oidc.session.accountId) {
      grant = new oidc.provider.Grant({ accountId: oidc.session.accountId, clientId: oidc.client.clientId });
    }
    const oidcScopes = [...oidc.requestParamOIDCScopes];
    if (oidcScopes.length) grant.addOIDCScope(oidcScopes.join(' '));
    const claims = [...oidc.requestParamClaims];
    if (claims.length) grant.addOIDCClaims(claims);
    for (const [indicator, rs] of Object.entries(oidc.resourceServers ?? {})) {
      const s = [...oidc.requestParamScopes].filter((x) => rs.scopes.has(x));
      if (s.length) grant.addResourceScope(indicator, s.join(' '));
    }
    await grant.save();
    return grant;
  }

  const configuration = {
    adapter: Adapter,
    clients: [{
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: redirectUris,
      grant_types: ['authorization_code', 'refresh_token', 'client_credentials'],
      response_types: ['code'],
      // oidc-provider accepts client_secret_basic too for a client registered with _post
      token_endpoint_auth_method: 'client_secret_post',
      id_token_signed_response_alg: 'RS256',
    }],
    jwks: { keys: [structuredClone(primaryKey.privateJwk)] },
    claims: CLAIMS,
    scopes: ['openid', 'offline_access', 'profile', 'email'],
    conformIdTokenClaims: false,
    extraParams: ['mreg_auto_consent'],
    interactions: { policy: makePolicy() },
    findAccount: async (ctx, sub) => {
      const user = usersBySub.get(sub);
      if (!user || user.tenant !== tid) return undefined;
      return {
        accountId: sub,
        claims: async () => ({
          sub,
          oid: user.oid,
          tid,
          roles: user.roles,
          preferred_username: user.email,
          email: user.email,
          name: user.name,
          ver: '2.0',
        }),
      };
    },
    ...(args['require-consent'] ? {} : { loadExistingGrant: autoGrant }),
    issueRefreshToken: async (ctx, client, code) => (
      client.grantTypeAllowed('refresh_token') && code.scopes.has('offline_access')
    ),
    rotateRefreshToken: args['rotate-refresh-tokens'],
    pkce: { required: () => false }, // optional for this confidential client; only S256 exists
    clientBasedCORS: () => true,
    cookies: {
      names: {
        session: `_session_${cookieSuffix}`,
        interaction: `_interaction_${cookieSuffix}`,
        resume: `_interaction_resume_${cookieSuffix}`,
      },
      long: { httpOnly: true, sameSite: 'lax', path: cookiePath },
      short: { httpOnly: true, sameSite: 'lax', path: cookiePath },
    },
    features: {
      devInteractions: { enabled: true },
      clientCredentials: { enabled: true },
      introspection: { enabled: true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (ctx, client, oneOf) => oneOf ?? undefined,
        useGrantedResource: async () => false,
        getResourceServerInfo: async (ctx, indicator) => ({
          scope: [`${indicator}/.default`, `${indicator}/access_as_user`, 'access_as_user',
            `${resourceAudience(indicator)}/.default`, `${resourceAudience(indicator)}/access_as_user`].join(' '),
          audience: resourceAudience(indicator),
          accessTokenFormat: 'jwt',
          accessTokenTTL: accessTokenTtl,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    formats: {
      customizers: {
        jwt: async (ctx, token, jwt) => {
          jwt.header = { typ: 'JWT' };
          const p = jwt.payload;
          p.nbf = p.iat;
          p.tid = tid;
          p.ver = '2.0';
          p.azp = token.clientId;
          p.appid = token.clientId;
          const indicator = token.resourceServer?.identifier();
          if (token.kind === 'ClientCredentials') {
            p.sub = appOid;
            p.oid = appOid;
            p.roles = appRoles;
            p.idtyp = 'app';
            delete p.scope;
          } else {
            const user = usersBySub.get(token.accountId);
            if (user) {
              p.oid = user.oid;
              p.roles = user.roles;
              p.name = user.name;
              p.preferred_username = user.email;
            }
            p.idtyp = 'user';
            const scp = indicator ? scpFor(indicator, p.scope) : p.scope;
            if (scp) p.scp = scp;
          }
        },
      },
    },
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      AuthorizationCode: 300,
      IdToken: idTokenTtl,
      RefreshToken: refreshTokenTtl,
      Grant: refreshTokenTtl,
      Interaction: 3600,
      Session: 24 * 3600,
      DeviceCode: 600,
      BackchannelAuthenticationRequest: 600,
    },
    renderError: async (ctx, out) => {
      ctx.type = 'html';
      const esc = (s) => String(s).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
      ctx.body = `<!DOCTYPE html><html><head><title>oops! something went wrong</title></head><body>`
        + `<h1>oops! something went wrong</h1>${Object.entries(out).map(([k, v]) => `<pre><strong>${esc(k)}</strong>: ${esc(v)}</pre>`).join('')}</body></html>`;
    },
  };

  const provider = new Provider(issuer, configuration);
  provider.proxy = false;
  for (const ev of ['server_error', 'authorization.error', 'grant.error', 'userinfo.error', 'introspection.error']) {
    provider.on(ev, (ctx, err) => {
      if (ev === 'server_error' || verbose) {
        process.stderr.write(`idp[${tid}] ${ev}: ${err?.stack ?? err} ${err?.error_description ?? ''}\n`);
      }
    });
  }
  return { tid, issuer, provider, callback: provider.callback(), Adapter };
}

// ---------------------------------------------------------------- http helpers
async function readBody(req, limit = 1 << 20) {
  const chunks = [];
  let n = 0;
  for await (const c of req) {
    n += c.length;
    if (n > limit) throw new Error('request body too large');
    chunks.push(c);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function sendJson(res, status, obj, headers = {}) {
  const body = JSON.stringify(obj);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'cache-control': 'no-store',
    'content-length': Buffer.byteLength(body),
    ...headers,
  });
  res.end(body);
}

function sendHtml(res, status, html) {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(html) });
  res.end(html);
}

const isFormPost = (req) => req.method === 'POST'
  && (req.headers['content-type'] ?? '').toLowerCase().startsWith('application/x-www-form-urlencoded');

const hasScheme = (s) => /^[A-Za-z][A-Za-z0-9+.-]*:/.test(s);
// "api://X/access_as_user" -> "api://X"
const apiResourceOf = (scope) => (/^(api:\/\/.+)\/[^/]+$/.exec(scope) ?? [])[1];

// ---------------------------------------------------------------- app
let tenantsById = new Map();
let authority;

function organizationsDocument() {
  const first = tenantsById.get(tenants[0]).provider;
  return {
    issuer: `${authority}/{tenantid}/v2.0`,
    authorization_endpoint: first.urlFor('authorization'),
    token_endpoint: first.urlFor('token'),
    jwks_uri: first.urlFor('jwks'),
    userinfo_endpoint: first.urlFor('userinfo'),
    end_session_endpoint: first.urlFor('end_session'),
    response_types_supported: ['code', 'id_token', 'code id_token'],
    response_modes_supported: ['query', 'fragment', 'form_post'],
    scopes_supported: ['openid', 'profile', 'email', 'offline_access'],
    subject_types_supported: ['pairwise'],
    id_token_signing_alg_values_supported: ['RS256'],
    code_challenge_methods_supported: ['S256'],
    token_endpoint_auth_methods_supported: ['client_secret_post', 'client_secret_basic'],
    claims_supported: ['sub', 'iss', 'aud', 'exp', 'iat', 'auth_time', 'nonce', 'oid', 'tid', 'roles',
      'preferred_username', 'name', 'email', 'ver'],
    tenant_region_scope: null,
    cloud_instance_name: '127.0.0.1',
    msgraph_host: authority.replace(/^https?:\/\//, ''),
  };
}

async function handleSign(req, res) {
  // Body forms:
  //   {...claims, "header": {...}}                 claims = everything but "header"
  //   {"claims": {...}, "header": {...}, "key": K, "hmac_secret": S}
  // header defaults to {"alg":"RS256","typ":"JWT","kid":<published primary kid>} merged with the
  // override. key: "primary" (default), "rogue" (an unpublished key, kid defaults to its own), or
  // a kid returned by /_test/rotate. Signature: RS256 with that key, except header.alg "none"
  // (empty signature) and "HS256" (HMAC with hmac_secret, default: the primary public key PEM).
  let body;
  try {
    body = JSON.parse(await readBody(req) || '{}');
  } catch (err) {
    return sendJson(res, 400, { error: 'invalid_request', error_description: `body must be JSON: ${err.message}` });
  }
  if (!body || typeof body !== 'object' || Array.isArray(body)) {
    return sendJson(res, 400, { error: 'invalid_request', error_description: 'body must be a JSON object' });
  }
  let claims;
  let headerOverride;
  let keyName = 'primary';
  let hmacSecret;
  if (body.claims && typeof body.claims === 'object' && !Array.isArray(body.claims)) {
    claims = body.claims;
    headerOverride = body.header;
    keyName = body.key ?? 'primary';
    hmacSecret = body.hmac_secret;
  } else {
    ({ header: headerOverride, ...claims } = body);
  }
  let key;
  if (keyName === 'primary') key = primaryKey;
  else if (keyName === 'rogue') key = rogueKey;
  else key = publishedKeys.find((k) => k.kid === keyName);
  if (!key) return sendJson(res, 400, { error: 'invalid_request', error_description: `unknown key ${keyName}` });
  const header = { alg: 'RS256', typ: 'JWT', kid: key.kid, ...(headerOverride ?? {}) };
  const token = signJwt(header, claims, key,
    hmacSecret ?? primaryKey.publicKey.export({ type: 'spki', format: 'pem' }));
  return sendJson(res, 200, { token });
}

// Rewrites the JSON token response oidc-provider is about to send (koa ends with the whole
// body, its headers not yet sent): drops fields, re-signs the ID token with changed claims.
function changeTokenResponse(res, change) {
  const end = res.end.bind(res);
  res.end = (chunk, ...rest) => {
    if (res.statusCode !== 200 || chunk === undefined || res.headersSent) return end(chunk, ...rest);
    let body;
    try {
      body = JSON.parse(Buffer.isBuffer(chunk) ? chunk.toString('utf8') : String(chunk));
    } catch {
      return end(chunk, ...rest);
    }
    if (change.id_token && body.id_token) {
      const [h, p] = body.id_token.split('.');
      const header = JSON.parse(Buffer.from(h, 'base64url').toString());
      const payload = JSON.parse(Buffer.from(p, 'base64url').toString());
      for (const [k, v] of Object.entries(change.id_token)) {
        if (v === null) delete payload[k];
        else payload[k] = v;
      }
      const key = change.key === 'rogue' ? rogueKey : primaryKey;
      body.id_token = signJwt({ ...header, kid: key.kid }, payload, key);
    }
    for (const field of change.drop ?? []) delete body[field];
    const out = JSON.stringify(body);
    res.setHeader('content-length', Buffer.byteLength(out));
    return end(out, ...rest);
  };
}

async function handleGraphMe(req, res) {
  const unauthorized = (message) => sendJson(res, 401, {
    error: { code: 'InvalidAuthenticationToken', message },
  }, { 'www-authenticate': 'Bearer realm="graph", error="invalid_token"' });
  const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
  if (!m) return unauthorized('Access token is empty.');
  const token = m[1];
  let sub;
  let tid;
  const nowS = Math.floor(Date.now() / 1000);
  if (token.split('.').length === 3) {
    const p = verifyJwt(token);
    const t = p && [...tenantsById.values()].find((x) => x.issuer === p.iss);
    if (!p || !t) return unauthorized('Access token validation failure.');
    if (typeof p.exp !== 'number' || p.exp < nowS) return unauthorized('Lifetime validation failed, the token is expired.');
    if (p.idtyp === 'app') return unauthorized('/me request is only valid with delegated authentication flow.');
    ({ sub } = p);
    tid = t.tid;
  } else {
    for (const t of tenantsById.values()) {
      // eslint-disable-next-line no-await-in-loop
      const at = await t.provider.AccessToken.find(token).catch(() => undefined);
      if (at) {
        if (at.isExpired) return unauthorized('Lifetime validation failed, the token is expired.');
        sub = at.accountId;
        tid = t.tid;
        break;
      }
    }
    if (!sub) return unauthorized('Access token validation failure. Invalid audience.');
  }
  const user = usersBySub.get(sub);
  if (!user || user.tenant !== tid) return unauthorized('User not found.');
  return sendJson(res, 200, {
    '@odata.context': `${authority}/v1.0/$metadata#users/$entity`,
    id: user.oid,
    displayName: user.name,
    mail: user.email,
    userPrincipalName: user.email,
  });
}

async function handleTenant(t, rest, req, res) {
  const qIndex = rest.indexOf('?');
  const path = qIndex === -1 ? rest : rest.slice(0, qIndex);
  let query = qIndex === -1 ? '' : rest.slice(qIndex + 1);

  if (path === '/jwks' && req.method === 'GET') {
    jwksHits += 1;
    return sendJson(res, 200, { keys: publishedKeys.map((k) => k.publicJwk) }, { 'cache-control': 'public, max-age=0' });
  }

  if (path === '/auth' && req.method === 'GET') {
    const q = new URLSearchParams(query);
    // Entra's prompt=select_account has no oidc-provider counterpart: treat it as login.
    if (q.has('prompt')) {
      const prompts = q.get('prompt').split(' ').filter(Boolean)
        .map((p) => (p === 'select_account' ? 'login' : p));
      if (prompts.length) q.set('prompt', [...new Set(prompts)].join(' '));
      else q.delete('prompt');
    }
    // Keep offline_access without a consent page (see makePolicy).
    const scopes = (q.get('scope') ?? '').split(' ');
    const prompts = (q.get('prompt') ?? '').split(' ').filter(Boolean);
    if (scopes.includes('offline_access') && !prompts.includes('consent') && !prompts.includes('none')) {
      q.set('prompt', [...prompts, 'consent'].join(' '));
      q.set('mreg_auto_consent', '1');
    } else {
      q.delete('mreg_auto_consent');
    }
    // Entra derives the resource from the scope: "api://X/access_as_user" means resource api://X.
    if (!q.has('resource') && q.has('scope')) {
      const resources = [...new Set(q.get('scope').split(' ').map(apiResourceOf).filter(Boolean))];
      for (const r of resources) q.append('resource', r);
    }
    for (const r of q.getAll('resource')) {
      if (!hasScheme(r)) {
        const all = q.getAll('resource').map((x) => (hasScheme(x) ? x : AUD_URN + encodeURIComponent(x)));
        q.delete('resource');
        for (const x of all) q.append('resource', x);
        break;
      }
    }
    query = q.toString();
  }

  if (isFormPost(req)) {
    const form = new URLSearchParams(await readBody(req, 56 * 1024));
    if (/^\/interaction\/[^/]+$/.test(path) && form.get('prompt') === 'login') {
      const user = findLogin(form.get('login'), t.tid);
      if (!user) {
        return sendHtml(res, 401, '<!DOCTYPE html><html><head><title>Sign-in failed</title></head><body>'
          + '<h1>Sign-in failed</h1><p>AADSTS50034: The user account does not exist in this directory.</p></body></html>');
      }
      form.set('login', user.sub);
    }
    if (path === '/token') {
      const grantType = form.get('grant_type');
      const change = nextToken.get(grantType);
      if (change) {
        nextToken.delete(grantType);
        changeTokenResponse(res, change);
      }
      const scope = form.get('scope');
      if (!form.has('resource') && scope) {
        const tokens = scope.split(' ').filter(Boolean);
        if (grantType === 'client_credentials') {
          // Entra v2: scope=RESOURCE/.default
          const def = tokens.find((s) => s.endsWith('/.default'));
          if (def) {
            form.set('resource', def.slice(0, -'/.default'.length));
            form.delete('scope');
          }
        } else if (grantType === 'refresh_token') {
          // Entra-style "refresh for another resource": scope=api://X/... -> resource=api://X
          const api = tokens.map(apiResourceOf).find(Boolean);
          if (api) form.set('resource', api);
          // Drop scopes the refresh token cannot carry (User.Read etc.), as Entra ignores them.
          const rt = await t.provider.RefreshToken.find(form.get('refresh_token') ?? '').catch(() => undefined);
          if (rt) {
            const have = rt.scopes;
            const kept = tokens.filter((s) => have.has(s));
            if (kept.length) form.set('scope', kept.join(' '));
            else form.delete('scope');
          }
        }
      }
      const resources = form.getAll('resource');
      if (resources.some((r) => !hasScheme(r))) {
        form.delete('resource');
        for (const r of resources) form.append('resource', hasScheme(r) ? r : AUD_URN + encodeURIComponent(r));
      }
    }
    req.body = form.toString(); // oidc-provider reads req.body when the stream was consumed
  }

  req.originalUrl = `/${t.tid}/v2.0${path}${query ? `?${query}` : ''}`;
  req.url = `${path || '/'}${query ? `?${query}` : ''}`;
  return t.callback(req, res);
}

async function route(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const { pathname } = url;

  if (pathname === '/_test/sign' && req.method === 'POST') return handleSign(req, res);
  if (pathname === '/_test/jwks_hits' && req.method === 'GET') return sendJson(res, 200, { hits: jwksHits });
  if (pathname === '/_test/rotate' && req.method === 'POST') {
    const k = makeKey();
    publishedKeys.push(k);
    return sendJson(res, 200, { kid: k.kid, kids: publishedKeys.map((x) => x.kid) });
  }
  if (pathname === '/_test/next_token' && req.method === 'POST') {
    let change;
    try {
      change = JSON.parse(await readBody(req) || '{}');
    } catch (err) {
      return sendJson(res, 400, { error: 'invalid_request', error_description: err.message });
    }
    if (!change || typeof change.grant_type !== 'string') {
      return sendJson(res, 400, { error: 'invalid_request', error_description: 'grant_type is required' });
    }
    nextToken.set(change.grant_type, change);
    return sendJson(res, 200, { ok: true });
  }
  if (pathname === '/v1.0/me' && req.method === 'GET') return handleGraphMe(req, res);

  const alias = /^\/(organizations|common)\/v2\.0\/\.well-known\/openid-configuration$/.exec(pathname);
  if (alias && req.method === 'GET') return sendJson(res, 200, organizationsDocument(), { 'cache-control': 'public, max-age=0' });

  const m = /^\/([^/]+)\/v2\.0(\/.*)?$/.exec(pathname);
  if (m && tenantsById.has(m[1])) {
    const rest = req.url.slice(`/${m[1]}/v2.0`.length);
    return handleTenant(tenantsById.get(m[1]), rest, req, res);
  }
  return sendJson(res, 404, { error: 'not_found', error_description: `no route for ${req.method} ${pathname}` });
}

const server = http.createServer((req, res) => {
  const started = Date.now();
  if (verbose) {
    res.on('finish', () => {
      process.stderr.write(`idp: ${req.method} ${req.originalUrl ?? req.url} -> ${res.statusCode} (${Date.now() - started}ms)\n`);
    });
  }
  if (!authority) {
    sendJson(res, 503, { error: 'temporarily_unavailable' });
    return;
  }
  Promise.resolve(route(req, res)).catch((err) => {
    process.stderr.write(`idp: ${req.method} ${req.url}: ${err?.stack ?? err}\n`);
    if (!res.headersSent) sendJson(res, 500, { error: 'server_error', error_description: String(err?.message ?? err) });
    else res.destroy();
  });
});

const portArg = Number(args.port);
if (!Number.isInteger(portArg) || portArg < 0 || portArg > 65535) usage('--port must be 0..65535');

server.listen(portArg, '127.0.0.1', () => {
  const { port } = server.address();
  const base = `http://127.0.0.1:${port}`;
  tenantsById = new Map(tenants.map((tid) => [tid, makeProvider(base, tid)]));
  authority = base;
  process.stdout.write(`${JSON.stringify({ authority: base, tenants, port })}\n`);
  if (verbose) {
    process.stderr.write(`idp: client_id=${clientId} redirect_uris=${redirectUris.join(',')} users=${[...users.keys()].join(',')}\n`);
  }
});
server.on('error', (err) => {
  process.stderr.write(`idp: ${err.stack ?? err}\n`);
  process.exit(1);
});

for (const sig of ['SIGTERM', 'SIGINT']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
