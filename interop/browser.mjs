#!/usr/bin/env node
// browser.mjs: a headless "browser" that walks OAuth redirect chains: it follows redirects,
// keeps cookies, fills in login forms and clicks consent buttons, and stops (without fetching)
// at the first URL that starts with a given prefix, typically a client's redirect URI.
// No dependencies; HTML is read with regular expressions.
//
// Library:
//   import { walk, CookieJar } from './browser.mjs';
//   const r = await walk(url, { user: 'alice', stopAt: 'http://127.0.0.1:9/callback' });
//   // r = {ok:true, final, steps}  or  {ok:false, error, status?, body?, url?, steps}
//   walk() never throws for HTTP or network failures; it returns ok:false.
//   Options: user, password ('password'), stopAt, decision ('allow'|'deny'), maxSteps (30),
//            jar (a CookieJar, to share cookies between walks), log (fn(string)),
//            headers ({} extra request headers), timeoutMs (15000 per request).
//   Without stopAt, the walk also ends (ok:true) on the first 2xx response that has no form;
//   the result then carries status and body.
//   When the stop URL is the target of a form (e.g. response_mode=form_post), the result also
//   has finalMethod and finalForm ({name: value}); the URL is not fetched.
//
// CLI:
//   node interop/browser.mjs START_URL --user alice --stop-at PREFIX [--deny] [--password P]
//        [--max-steps N] [--jar FILE] [--verbose]
//   -> one JSON line: {"ok":true,"final":"...","steps":[{"method","url","status"},...]}
//      or {"ok":false,"error":"...","status":N,"body":"<first 2000 chars>","steps":[...]} (exit 1)
//   --jar FILE loads cookies from FILE (if it exists) and saves them back afterwards.
//   --verbose logs each step to stderr.
//
// Behaviour on a 200 HTML page: pick the <form> containing a submit button that matches the
// decision (allow: allow/continue/authorize/yes/approve/accept/grant/consent; deny:
// deny/cancel/abort/no/reject/decline), else the first form. Hidden/text/... inputs are
// sent as they are, `login` (also `username`) gets `user`, `password` (any password input)
// gets `password`, checked checkboxes/radios are sent, and the chosen submit button's
// name=value is added. With decision 'deny' and no deny button on the page, a link whose text
// is a deny word (oidc-provider's "[ Cancel ]") is followed instead, unless the form is a
// login form. Redirects 301/302/303 become GET; 307/308 repeat the method and body.

import * as fs from 'node:fs';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

// ---------------------------------------------------------------- cookies
export class CookieJar {
  constructor() {
    this.hosts = new Map(); // "host:port" -> Map("name;path" -> {name,value,path,expires})
  }

  static hostKey(url) {
    const u = new URL(url);
    const port = u.port || (u.protocol === 'https:' ? '443' : '80');
    return `${u.hostname.toLowerCase()}:${port}`;
  }

  static defaultPath(url) {
    const p = new URL(url).pathname;
    if (!p.startsWith('/') || p.lastIndexOf('/') === 0) return '/';
    return p.slice(0, p.lastIndexOf('/'));
  }

  static pathMatches(requestPath, cookiePath) {
    if (requestPath === cookiePath) return true;
    if (!requestPath.startsWith(cookiePath)) return false;
    return cookiePath.endsWith('/') || requestPath[cookiePath.length] === '/';
  }

  // One Set-Cookie header value. Secure is ignored (everything is http on loopback); Domain is
  // ignored (cookies are host-only, keyed by host:port).
  set(url, header) {
    const parts = header.split(';');
    const first = parts.shift();
    const eq = first.indexOf('=');
    if (eq <= 0) return;
    const name = first.slice(0, eq).trim();
    let value = first.slice(eq + 1).trim();
    if (value.length >= 2 && value.startsWith('"') && value.endsWith('"')) value = value.slice(1, -1);
    let path;
    let expires;
    let maxAge;
    for (const attr of parts) {
      const i = attr.indexOf('=');
      const k = (i === -1 ? attr : attr.slice(0, i)).trim().toLowerCase();
      const v = i === -1 ? '' : attr.slice(i + 1).trim();
      if (k === 'path' && v.startsWith('/')) path = v;
      else if (k === 'expires') {
        const t = Date.parse(v);
        if (!Number.isNaN(t)) expires = t;
      } else if (k === 'max-age' && /^-?\d+$/.test(v)) maxAge = Number(v);
    }
    if (maxAge !== undefined) expires = maxAge <= 0 ? 0 : Date.now() + maxAge * 1000;
    path ??= CookieJar.defaultPath(url);
    const hk = CookieJar.hostKey(url);
    if (!this.hosts.has(hk)) this.hosts.set(hk, new Map());
    const cookies = this.hosts.get(hk);
    const key = `${name};${path}`;
    if (expires !== undefined && expires <= Date.now()) {
      cookies.delete(key);
      return;
    }
    cookies.set(key, { name, value, path, expires });
  }

  setFromResponse(url, response) {
    const list = typeof response.headers.getSetCookie === 'function'
      ? response.headers.getSetCookie()
      : (response.headers.get('set-cookie') ? [response.headers.get('set-cookie')] : []);
    for (const h of list) this.set(url, h);
  }

  header(url) {
    const cookies = this.hosts.get(CookieJar.hostKey(url));
    if (!cookies) return undefined;
    const path = new URL(url).pathname || '/';
    const now = Date.now();
    const out = [];
    for (const [key, c] of cookies) {
      if (c.expires !== undefined && c.expires <= now) {
        cookies.delete(key);
      } else if (CookieJar.pathMatches(path, c.path)) {
        out.push(c);
      }
    }
    out.sort((a, b) => b.path.length - a.path.length); // RFC 6265: longer paths first
    return out.length ? out.map((c) => `${c.name}=${c.value}`).join('; ') : undefined;
  }

  // cookies for a host:port (or all), e.g. to check that a consent cookie was set
  list(hostKey) {
    const pick = hostKey ? [[hostKey, this.hosts.get(hostKey) ?? new Map()]] : [...this.hosts];
    return pick.flatMap(([h, m]) => [...m.values()].map((c) => ({ host: h, ...c })));
  }

  toJSON() {
    return Object.fromEntries([...this.hosts].map(([h, m]) => [h, [...m.values()]]));
  }

  static fromJSON(obj) {
    const jar = new CookieJar();
    for (const [h, list] of Object.entries(obj ?? {})) {
      jar.hosts.set(h, new Map(list.map((c) => [`${c.name};${c.path}`, c])));
    }
    return jar;
  }
}

// ---------------------------------------------------------------- HTML
export function decodeEntities(s) {
  if (!s) return s ?? '';
  return s.replace(/&(#x[0-9a-f]+|#\d+|amp|quot|apos|lt|gt|nbsp);/gi, (m, e) => {
    const k = e.toLowerCase();
    if (k === 'amp') return '&';
    if (k === 'quot') return '"';
    if (k === 'apos') return "'";
    if (k === 'lt') return '<';
    if (k === 'gt') return '>';
    if (k === 'nbsp') return '\u00a0';
    const code = k.startsWith('#x') ? parseInt(k.slice(2), 16) : parseInt(k.slice(1), 10);
    try { return String.fromCodePoint(code); } catch { return m; }
  });
}

// attribute text of a start tag -> {name: value} (names lower-cased, values decoded)
export function parseAttributes(text) {
  const attrs = {};
  const re = /([^\s"'<>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?/g;
  let m;
  while ((m = re.exec(text ?? '')) !== null) {
    const name = m[1].toLowerCase();
    if (name in attrs) continue; // first occurrence wins, as in HTML
    attrs[name] = decodeEntities(m[2] ?? m[3] ?? m[4] ?? '');
  }
  return attrs;
}

const ATTRS = String.raw`((?:[^>"']|"[^"]*"|'[^']*')*)`;
const stripTags = (s) => decodeEntities(s.replace(/<[^>]*>/g, ' ')).replace(/\s+/g, ' ').trim();

function cleanHtml(html) {
  return html
    .replace(/<!--[\s\S]*?-->/g, '')
    .replace(/<script\b[\s\S]*?<\/script\s*>/gi, '')
    .replace(/<style\b[\s\S]*?<\/style\s*>/gi, '');
}

export function parseForms(html) {
  const forms = [];
  const formRe = new RegExp(String.raw`<form\b${ATTRS}>([\s\S]*?)(?:<\/form\s*>|$)`, 'gi');
  let fm;
  while ((fm = formRe.exec(html)) !== null) {
    const attrs = parseAttributes(fm[1]);
    const inner = fm[2];
    const fields = []; // {name, value, type, tag}
    const submits = []; // {name, value, text}
    // inputs, buttons, textareas and selects in document order
    const ctrlRe = new RegExp(
      String.raw`<input\b${ATTRS}>|<button\b${ATTRS}>([\s\S]*?)<\/button\s*>|<textarea\b${ATTRS}>([\s\S]*?)<\/textarea\s*>|<select\b${ATTRS}>([\s\S]*?)<\/select\s*>`,
      'gi',
    );
    let cm;
    while ((cm = ctrlRe.exec(inner)) !== null) {
      if (cm[1] !== undefined) {
        const a = parseAttributes(cm[1]);
        const type = (a.type ?? 'text').toLowerCase();
        if ('disabled' in a) continue;
        if (type === 'submit' || type === 'image') {
          submits.push({ name: a.name, value: a.value ?? '', text: a.value ?? '' });
        } else if (type === 'checkbox' || type === 'radio') {
          if ('checked' in a && a.name) fields.push({ name: a.name, value: a.value ?? 'on', type });
        } else if (!['button', 'reset', 'file'].includes(type) && a.name) {
          fields.push({ name: a.name, value: a.value ?? '', type });
        }
      } else if (cm[2] !== undefined) {
        const a = parseAttributes(cm[2]);
        const type = (a.type ?? 'submit').toLowerCase();
        if (type === 'submit' && !('disabled' in a)) {
          submits.push({ name: a.name, value: a.value ?? '', text: stripTags(cm[3]) });
        }
      } else if (cm[4] !== undefined) {
        const a = parseAttributes(cm[4]);
        if (a.name && !('disabled' in a)) fields.push({ name: a.name, value: decodeEntities(cm[5]), type: 'textarea' });
      } else if (cm[6] !== undefined) {
        const a = parseAttributes(cm[6]);
        if (!a.name || 'disabled' in a) continue;
        const opts = [...cm[7].matchAll(new RegExp(String.raw`<option\b${ATTRS}>([^<]*)`, 'gi'))]
          .map((o) => ({ a: parseAttributes(o[1]), text: decodeEntities(o[2]).trim() }));
        const sel = opts.find((o) => 'selected' in o.a) ?? opts[0];
        if (sel) fields.push({ name: a.name, value: sel.a.value ?? sel.text, type: 'select' });
      }
    }
    forms.push({
      action: attrs.action,
      method: (attrs.method ?? 'get').toLowerCase(),
      fields,
      submits,
    });
  }
  return forms;
}

export function parseLinks(html) {
  const out = [];
  const re = new RegExp(String.raw`<a\b${ATTRS}>([\s\S]*?)<\/a\s*>`, 'gi');
  let m;
  while ((m = re.exec(html)) !== null) {
    const a = parseAttributes(m[1]);
    if (a.href) out.push({ href: a.href, text: stripTags(m[2]) });
  }
  return out;
}

const WORDS = {
  allow: /\b(allow|continue|authori[sz]e|yes|approve|accept|grant|consent)\b/i,
  deny: /\b(deny|cancel|abort|no|reject|decline)\b/i,
};
const buttonLabel = (b) => `${b.value ?? ''} ${b.text ?? ''}`;

// ---------------------------------------------------------------- walk
export async function walk(startUrl, {
  user,
  password = 'password',
  stopAt,
  decision = 'allow',
  maxSteps = 30,
  jar = new CookieJar(),
  log,
  headers: extraHeaders = {},
  timeoutMs = 15000,
} = {}) {
  const steps = [];
  const want = decision === 'deny' ? WORDS.deny : WORDS.allow;
  const avoid = decision === 'deny' ? WORDS.allow : WORDS.deny;
  const fail = (error, extra = {}) => ({ ok: false, error, ...extra, steps, jar });
  const stopsHere = (u) => stopAt !== undefined && u.startsWith(stopAt);

  let url;
  try {
    url = new URL(startUrl).href;
  } catch {
    return fail(`invalid start URL: ${startUrl}`);
  }
  let method = 'GET';
  let body;

  for (;;) {
    if (stopsHere(url)) {
      const result = { ok: true, final: url, steps, jar };
      if (method !== 'GET' && body !== undefined) {
        result.finalMethod = method;
        result.finalForm = Object.fromEntries(new URLSearchParams(body));
      }
      return result;
    }
    if (steps.length >= maxSteps) return fail(`gave up after ${maxSteps} steps`, { url });

    const headers = {
      accept: 'text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8',
      'user-agent': 'mreg-interop-browser/1.0',
      ...extraHeaders,
    };
    const cookie = jar.header(url);
    if (cookie) headers.cookie = cookie;
    if (body !== undefined) headers['content-type'] = 'application/x-www-form-urlencoded';

    let response;
    try {
      response = await fetch(url, {
        method, headers, body, redirect: 'manual', signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      const cause = err?.cause?.code ?? err?.cause?.message ?? '';
      steps.push({ method, url, status: 0 });
      return fail(`${method} ${url}: ${err?.message ?? err}${cause ? ` (${cause})` : ''}`, { url });
    }
    const { status } = response;
    steps.push({ method, url, status });
    log?.(`${method} ${url} -> ${status}`);
    jar.setFromResponse(url, response);

    if ([301, 302, 303, 307, 308].includes(status)) {
      await response.body?.cancel();
      const location = response.headers.get('location');
      if (!location) return fail(`${status} without Location`, { status, url });
      url = new URL(location, url).href;
      if (status !== 307 && status !== 308) {
        method = 'GET';
        body = undefined;
      }
      continue;
    }

    const text = await response.text().catch(() => '');
    const ctype = (response.headers.get('content-type') ?? '').toLowerCase();
    const isHtml = ctype.includes('html') || /^\s*<(!doctype|html)/i.test(text);
    const page = { status, url, body: text.slice(0, 2000) };
    if (status < 200 || status >= 300) return fail(`HTTP ${status} at ${url}`, page);
    if (!isHtml) {
      if (stopAt === undefined) return { ok: true, final: url, status, body: text, steps, jar };
      return fail(`unexpected ${ctype || 'non-HTML'} response at ${url}`, page);
    }

    const html = cleanHtml(text);
    const forms = parseForms(html);
    if (!forms.length) {
      if (stopAt === undefined) return { ok: true, final: url, status, body: text, steps, jar };
      return fail(`HTML page without a form at ${url}`, page);
    }

    let form = forms.find((f) => f.submits.some((b) => want.test(buttonLabel(b)))) ?? forms[0];
    const isLogin = form.fields.some((f) => f.type === 'password' || ['login', 'username', 'password'].includes(f.name));

    if (decision === 'deny' && !form.submits.some((b) => want.test(buttonLabel(b))) && !isLogin) {
      const link = parseLinks(html).find((l) => WORDS.deny.test(l.text));
      if (link) {
        url = new URL(link.href, url).href;
        method = 'GET';
        body = undefined;
        continue;
      }
    }

    const params = new URLSearchParams();
    for (const f of form.fields) {
      let { value } = f;
      if (f.name === 'login' || f.name === 'username') {
        if (user === undefined) return fail(`login form at ${url} but no user given`, page);
        value = user;
      } else if (f.name === 'password' || f.type === 'password') {
        value = password;
      }
      params.append(f.name, value);
    }
    const button = form.submits.find((b) => want.test(buttonLabel(b)))
      ?? form.submits.find((b) => !avoid.test(buttonLabel(b)))
      ?? form.submits[0];
    if (button?.name) params.append(button.name, button.value ?? '');
    log?.(`  submit form ${form.method.toUpperCase()} ${form.action ?? '(same URL)'}${button ? ` via "${buttonLabel(button).trim()}"` : ''}`);

    const action = new URL(form.action ? form.action : url, url);
    if (form.method === 'post') {
      method = 'POST';
      body = params.toString();
      url = action.href;
    } else {
      action.search = params.toString();
      action.hash = '';
      method = 'GET';
      body = undefined;
      url = action.href;
    }
  }
}

// ---------------------------------------------------------------- CLI
async function main(argv) {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        user: { type: 'string' },
        password: { type: 'string', default: 'password' },
        'stop-at': { type: 'string' },
        deny: { type: 'boolean', default: false },
        'max-steps': { type: 'string', default: '30' },
        jar: { type: 'string' },
        verbose: { type: 'boolean', default: false },
      },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: `usage: ${err.message}`, steps: [] })}\n`);
    return 1;
  }
  const { values: o, positionals } = parsed;
  if (positionals.length !== 1 || !o['stop-at']) {
    process.stdout.write(`${JSON.stringify({ ok: false, error: 'usage: browser.mjs START_URL --user U --stop-at PREFIX [--deny] [--password P] [--max-steps N] [--jar FILE] [--verbose]', steps: [] })}\n`);
    return 1;
  }
  let jar = new CookieJar();
  if (o.jar && fs.existsSync(o.jar)) {
    try {
      jar = CookieJar.fromJSON(JSON.parse(fs.readFileSync(o.jar, 'utf8')));
    } catch (err) {
      process.stderr.write(`browser.mjs: ignoring unreadable jar ${o.jar}: ${err.message}\n`);
    }
  }
  const result = await walk(positionals[0], {
    user: o.user,
    password: o.password,
    stopAt: o['stop-at'],
    decision: o.deny ? 'deny' : 'allow',
    maxSteps: Number(o['max-steps']) || 30,
    jar,
    log: o.verbose ? (s) => process.stderr.write(`browser: ${s}\n`) : undefined,
  });
  if (o.jar) fs.writeFileSync(o.jar, JSON.stringify(jar));
  const { jar: _omit, ...printable } = result;
  process.stdout.write(`${JSON.stringify(printable)}\n`);
  return result.ok ? 0 : 1;
}

const invokedDirectly = (() => {
  try {
    return process.argv[1] && import.meta.url === pathToFileURL(fs.realpathSync(process.argv[1])).href;
  } catch {
    return false;
  }
})();
if (invokedDirectly) {
  process.exitCode = await main(process.argv.slice(2));
}
