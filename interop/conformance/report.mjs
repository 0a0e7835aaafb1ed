#!/usr/bin/env node
// Reads the official MCP conformance suite's results for three targets and prints
// one table, scenario x (direct, proxied, own), then decides the gate.
//
// Usage: node report.mjs --scenarios FILE --direct DIR --proxied DIR --own DIR --own-url URL
//   FILE      output of `conformance list --server` (the scenario names, in the suite's order)
//   DIR       the suite's --output-dir for that target (server-<scenario>-<timestamp>/checks.json)
//   URL       the gateway's own MCP endpoint; an initialize there tells which optional
//             capabilities (logging, completions, resources, prompts) it declares
//
// Gate (exit 1 when broken):
//   proxied  every scenario that passes against the reference server directly must pass
//            through the gateway (/servers/{name}/mcp).
//   own      every scenario that applies to the gateway's own server (/mcp) must pass; see
//            ownApplicability() below for which do and why.
// A scenario passes when none of its checks has status FAILURE (the suite's own rule);
// WARNING checks are shown, and warnings the gateway adds over direct, and recorded answers
// (details.result) that differ from direct, are listed, but do not fail the gate.

import fs from 'node:fs';
import path from 'node:path';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i];
    if (!k.startsWith('--') || argv[i + 1] === undefined) {
      process.stderr.write(`report.mjs: bad argument ${k}\n`);
      process.exit(2);
    }
    out[k.slice(2)] = argv[i + 1];
  }
  for (const k of ['scenarios', 'direct', 'proxied', 'own', 'own-url']) {
    if (!out[k]) {
      process.stderr.write(`report.mjs: --${k} is required\n`);
      process.exit(2);
    }
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));

// `  - server-initialize [2025-06-18,2025-11-25]` -> server-initialize
const scenarios = fs
  .readFileSync(args.scenarios, 'utf8')
  .split('\n')
  .map(l => l.match(/^\s*-\s+(\S+)/)?.[1])
  .filter(Boolean);
if (scenarios.length === 0) {
  process.stderr.write('report.mjs: the suite listed no server scenarios\n');
  process.exit(2);
}

// dir/server-<scenario>-<ISO timestamp with : and . replaced by ->/checks.json
function loadResults(dir) {
  const results = new Map();
  if (!fs.existsSync(dir)) return results;
  for (const entry of fs.readdirSync(dir)) {
    const m = entry.match(/^server-(.+)-\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d+Z$/);
    if (!m) continue;
    const file = path.join(dir, entry, 'checks.json');
    if (!fs.existsSync(file)) continue;
    const checks = JSON.parse(fs.readFileSync(file, 'utf8'));
    const failures = checks.filter(c => c.status === 'FAILURE');
    const warnings = checks.filter(c => c.status === 'WARNING');
    const passed = checks.filter(c => c.status === 'SUCCESS').length;
    results.set(m[1], { checks, failures, warnings, passed, pass: failures.length === 0 });
  }
  return results;
}

const direct = loadResults(args.direct);
const proxied = loadResults(args.proxied);
const own = loadResults(args.own);

// --- which scenarios apply to the gateway's own server ---------------------------------
//
// The gateway's own MCP server is a registry front end: its tools are list_servers,
// get_server, search_tools, ... It does not (and should not) carry the suite's test fixtures
// (test_* tools, test://* resources, test_* prompts), so every scenario that calls one of
// those cannot apply. What does apply is what any MCP server must get right at the protocol
// and transport level, plus each optional feature it declares:
//   always      server-initialize, ping, tools-list (it declares tools),
//               server-sse-multiple-streams, server-sse-polling (priming event and retry
//               field; its "tool answer after reconnect" check needs test_reconnection and is
//               only a WARNING), dns-rebinding-protection (loopback, no auth: it MUST check
//               Host/Origin)
//   declared    logging-set-level (capabilities.logging), completion-complete
//               (capabilities.completions), resources-list (capabilities.resources),
//               prompts-list (capabilities.prompts)
const ALWAYS = new Map([
  ['server-initialize', 'lifecycle'],
  ['ping', 'lifecycle'],
  ['tools-list', 'declares tools'],
  ['server-sse-multiple-streams', 'transport'],
  ['server-sse-polling', 'transport'],
  ['dns-rebinding-protection', 'loopback, no auth']
]);
const BY_CAPABILITY = new Map([
  ['logging-set-level', 'logging'],
  ['completion-complete', 'completions'],
  ['resources-list', 'resources'],
  ['prompts-list', 'prompts']
]);

async function ownCapabilities(url) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({
      jsonrpc: '2.0',
      id: 1,
      method: 'initialize',
      params: {
        protocolVersion: '2025-11-25',
        capabilities: {},
        clientInfo: { name: 'mreg-conformance-report', version: '0.0.0' }
      }
    }),
    signal: AbortSignal.timeout(10000)
  });
  const text = await res.text();
  const sessionId = res.headers.get('mcp-session-id');
  if (sessionId) {
    await fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': sessionId } }).catch(() => {});
  }
  const bodies = (res.headers.get('content-type') || '').includes('text/event-stream')
    ? text
        .split('\n')
        .filter(l => l.startsWith('data:'))
        .map(l => l.slice(5).trim())
        .filter(Boolean)
    : [text];
  for (const b of bodies) {
    try {
      const msg = JSON.parse(b);
      if (msg.id === 1 && msg.result) return msg.result.capabilities || {};
    } catch {
      // not JSON
    }
  }
  throw new Error(`initialize at ${url} gave no result (HTTP ${res.status}): ${text.slice(0, 300)}`);
}

let caps;
try {
  caps = await ownCapabilities(args['own-url']);
} catch (e) {
  process.stderr.write(`report.mjs: ${e.message}\n`);
  caps = null;
}

function ownApplicability(name) {
  if (ALWAYS.has(name)) return { applies: true, why: ALWAYS.get(name) };
  if (BY_CAPABILITY.has(name)) {
    const cap = BY_CAPABILITY.get(name);
    if (caps === null) return { applies: true, why: `initialize failed` };
    return caps[cap] !== undefined
      ? { applies: true, why: `declares ${cap}` }
      : { applies: false, why: `no ${cap} capability` };
  }
  return { applies: false, why: 'needs test fixtures' };
}

// --- table ------------------------------------------------------------------------------

const cell = r => {
  if (!r) return 'NO RESULT';
  const w = r.warnings.length ? ` ${r.warnings.length}w` : '';
  return r.pass ? `pass${w}` : `FAIL${w}`;
};

const rows = [];
const problems = [];
const notes = [];
let gatedPass = 0;
let gatedFail = 0;

for (const name of scenarios) {
  const d = direct.get(name);
  const p = proxied.get(name);
  const o = own.get(name);
  const app = ownApplicability(name);

  let proxiedCell = cell(p);
  if (d?.pass) {
    if (p?.pass) gatedPass++;
    else {
      gatedFail++;
      problems.push({ target: 'proxied', name, result: p });
    }
    if (p?.pass) {
      const directIds = new Set(d.warnings.map(c => c.id));
      const added = p.warnings.filter(c => !directIds.has(c.id));
      for (const c of added) notes.push(`proxied ${name}: new WARNING ${c.id}: ${c.errorMessage || c.description}`);
      // Where a check records what the server answered (details.result: the tool's result,
      // e.g. the sampling or elicitation round trip), the gateway should not change it.
      for (const c of d.checks) {
        if (c.status !== 'SUCCESS' || c.details?.result === undefined) continue;
        const q = p.checks.find(x => x.id === c.id && x.status === 'SUCCESS');
        const a = JSON.stringify(c.details.result);
        const b = JSON.stringify(q?.details?.result);
        if (a !== b) notes.push(`proxied ${name}: ${c.id} answered ${b?.slice(0, 300)}; directly ${a.slice(0, 300)}`);
      }
    }
  } else {
    proxiedCell += ' (not gated)';
  }

  let ownCell;
  if (app.applies) {
    ownCell = cell(o);
    if (o?.pass) gatedPass++;
    else {
      gatedFail++;
      problems.push({ target: 'own', name, result: o });
    }
  } else {
    ownCell = `n/a (${cell(o).toLowerCase()})`;
  }
  rows.push([name, cell(d), proxiedCell, ownCell, app.applies ? `own: ${app.why}` : `own n/a: ${app.why}`]);
}

const header = ['scenario', 'direct', 'proxied', 'own (/mcp)', 'why'];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map(r => r[i].length)));
const line = r => r.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd();
console.log(line(header));
console.log(widths.map(w => '-'.repeat(w)).join('  '));
for (const r of rows) console.log(line(r));
console.log('');
console.log(
  'direct = the reference server itself; proxied = the same through /servers/ref/mcp; own = the ' +
    "gateway's /mcp.\npass/FAIL is the suite's verdict (no FAILURE check); Nw = N WARNING checks; " +
    'proxied is gated where direct passes, own where the scenario applies.'
);
if (caps) console.log(`gateway's own capabilities: ${JSON.stringify(caps)}`);

if (notes.length) {
  console.log('\nwhere the gateway differs from direct without failing a check (not gated):');
  for (const n of notes) console.log(`  ${n}`);
}

if (problems.length) {
  console.log('\n=== failures ===');
  for (const { target, name, result } of problems) {
    console.log(`\n[${target}] ${name}`);
    if (!result) {
      console.log('  no checks.json: the scenario threw before writing results; see the suite log');
      continue;
    }
    for (const c of result.failures) {
      console.log(`  FAILURE ${c.id}: ${c.description}`);
      if (c.errorMessage) console.log(`    error: ${c.errorMessage}`);
      if (c.details) console.log(`    details: ${JSON.stringify(c.details).slice(0, 1500)}`);
    }
  }
}

console.log('');
console.log(`conformance: ${gatedPass} passed, ${gatedFail} failed`);
process.exit(gatedFail > 0 ? 1 : 0);
