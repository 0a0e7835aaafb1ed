#!/usr/bin/env node
// The reference MCP server that scripts/conformance runs the official conformance suite
// (@modelcontextprotocol/conformance) against, directly and behind mreg's /servers/{name}/mcp.
//
// Written for mreg from the suite's own server scenarios and checks (the tool, resource and
// prompt names, arguments, content types and behaviours they ask for), the MCP specification
// and the TypeScript SDK's public API. It is built on the SDK: McpServer for the protocol,
// StreamableHTTPServerTransport for Streamable HTTP (stateful sessions, answers streamed as
// SSE, an in-memory event store so a stream closed mid-call can be resumed with Last-Event-ID).
//
//   node reference-server.mjs [--port N]     (N = 0, the default, picks a free port)
//
// It listens on 127.0.0.1, prints exactly one line `LISTENING <port>` on stdout once it accepts
// connections, and writes its diagnostics to stderr.

import http from 'node:http';
import { randomUUID } from 'node:crypto';
import { deflateSync, crc32 } from 'node:zlib';

import * as z from 'zod';
import { McpServer, ResourceTemplate } from '@modelcontextprotocol/sdk/server/mcp.js';
import { completable } from '@modelcontextprotocol/sdk/server/completable.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import {
  CreateMessageResultSchema,
  ElicitResultSchema,
  LoggingLevelSchema,
  SetLevelRequestSchema,
  SubscribeRequestSchema,
  UnsubscribeRequestSchema,
  isInitializeRequest
} from '@modelcontextprotocol/sdk/types.js';

const MAX_BODY_BYTES = 4 * 1024 * 1024;
const SSE_RETRY_MS = 500; // the `retry:` the priming event of each SSE stream advises
const EVENTS_KEPT_PER_SESSION = 2000;
const WATCHED_URI = 'test://watched-resource';
const WATCH_INTERVAL_MS = 2000;

const log = (...parts) => process.stderr.write(`reference-server: ${parts.join(' ')}\n`);
const sleep = ms => new Promise(resolve => setTimeout(resolve, ms));
const text = t => ({ type: 'text', text: t });

function parsePort(argv) {
  const i = argv.indexOf('--port');
  if (i === -1) return 0;
  const port = Number(argv[i + 1]);
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    log(`--port wants an integer 0..65535, not ${argv[i + 1]}`);
    process.exit(2);
  }
  return port;
}

// --- media fixtures, generated here rather than pasted in ------------------------------------

// A PNG of width x height pixels, all one RGB colour: signature, IHDR, one IDAT, IEND.
function solidPng(width, height, [r, g, b]) {
  const chunk = (type, data) => {
    const head = Buffer.alloc(8);
    head.writeUInt32BE(data.length, 0);
    head.write(type, 4, 'ascii');
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])), 0);
    return Buffer.concat([head, data, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: truecolour
  // compression, filter and interlace methods stay 0
  const row = Buffer.alloc(1 + width * 3); // filter byte 0, then the pixels
  for (let x = 0; x < width; x++) row.set([r, g, b], 1 + x * 3);
  const pixels = Buffer.concat(Array.from({ length: height }, () => row));
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(pixels)),
    chunk('IEND', Buffer.alloc(0))
  ]);
}

// A mono 8-bit PCM WAV file: `seconds` of a sine tone.
function toneWav(hz, seconds, sampleRate = 8000) {
  const n = Math.round(seconds * sampleRate);
  const wav = Buffer.alloc(44 + n);
  wav.write('RIFF', 0, 'ascii');
  wav.writeUInt32LE(36 + n, 4);
  wav.write('WAVE', 8, 'ascii');
  wav.write('fmt ', 12, 'ascii');
  wav.writeUInt32LE(16, 16); // size of the fmt chunk
  wav.writeUInt16LE(1, 20); // PCM
  wav.writeUInt16LE(1, 22); // channels
  wav.writeUInt32LE(sampleRate, 24);
  wav.writeUInt32LE(sampleRate, 28); // bytes per second
  wav.writeUInt16LE(1, 32); // block align
  wav.writeUInt16LE(8, 34); // bits per sample
  wav.write('data', 36, 'ascii');
  wav.writeUInt32LE(n, 40);
  for (let i = 0; i < n; i++) wav[44 + i] = 128 + Math.round(100 * Math.sin((2 * Math.PI * hz * i) / sampleRate));
  return wav;
}

const PNG_BASE64 = solidPng(1, 1, [255, 0, 0]).toString('base64');
const WAV_BASE64 = toneWav(440, 0.05).toString('base64');
const image = () => ({ type: 'image', data: PNG_BASE64, mimeType: 'image/png' });
// An embedded resource (tool results, prompt messages) and resource contents (resources/read).
const embedded = (uri, mimeType, body) => ({ type: 'resource', resource: { uri, mimeType, text: body } });
const contents = (uri, mimeType, body) => ({ contents: [{ uri: uri.href, mimeType, text: body }] });

// --- resumability: an in-memory event store, one per session ---------------------------------
//
// The transport stores every message it sends on an SSE stream (and an empty priming event when
// a stream opens) and hands the client the event id. A client whose stream was closed comes
// back with GET + Last-Event-ID; replayEventsAfter sends what that stream has had since.
class SessionEventStore {
  #events = new Map(); // event id -> { streamId, message }, in insertion (= sending) order
  #seq = 0;

  async storeEvent(streamId, message) {
    const id = `${++this.#seq}`;
    this.#events.set(id, { streamId, message });
    if (this.#events.size > EVENTS_KEPT_PER_SESSION) this.#events.delete(this.#events.keys().next().value);
    return id;
  }

  async getStreamIdForEventId(eventId) {
    return this.#events.get(eventId)?.streamId;
  }

  async replayEventsAfter(lastEventId, { send }) {
    const from = this.#events.get(lastEventId);
    if (!from) throw new Error(`unknown event id ${lastEventId}`);
    let after = false;
    for (const [id, { streamId, message }] of this.#events) {
      if (id === lastEventId) after = true;
      else if (after && streamId === from.streamId && Object.keys(message).length > 0) await send(id, message);
    }
    return from.streamId;
  }
}

// --- sessions --------------------------------------------------------------------------------
//
// Each session is one McpServer connected to its own transport, plus what the fixtures need to
// know about the session: the log level the client chose and the resources it subscribed to.
const sessions = new Map(); // Mcp-Session-Id -> session

const LEVELS = LoggingLevelSchema.options; // debug ... emergency, least severe first

function createSession() {
  const session = { logLevel: undefined, subscriptions: new Set(), transport: null, mcp: null };
  session.transport = new StreamableHTTPServerTransport({
    sessionIdGenerator: () => randomUUID(),
    eventStore: new SessionEventStore(),
    retryInterval: SSE_RETRY_MS,
    onsessioninitialized: id => {
      sessions.set(id, session);
      log(`session ${id} opened (${sessions.size} open)`);
    },
    onsessionclosed: id => log(`session ${id} closed by the client`)
  });
  session.transport.onclose = () => {
    const id = session.transport.sessionId;
    if (id && sessions.delete(id)) log(`session ${id} ended (${sessions.size} open)`);
  };
  session.mcp = buildServer(session);
  return session;
}

// A notifications/message on the stream of the request being handled, unless the client asked
// for a higher minimum level. Returns whether it was sent.
async function logToClient(session, extra, level, data) {
  if (session.logLevel && LEVELS.indexOf(level) < LEVELS.indexOf(session.logLevel)) return false;
  const params = { level, logger: 'reference-server', data };
  await extra.sendNotification({ method: 'notifications/message', params });
  return true;
}

// --- the MCP server: every fixture the suite's server scenarios use --------------------------

function buildServer(session) {
  const server = new McpServer(
    { name: 'mreg-conformance-reference', version: '1.0.0' },
    {
      capabilities: {
        logging: {},
        completions: {},
        tools: { listChanged: true },
        prompts: { listChanged: true },
        resources: { subscribe: true, listChanged: true }
      },
      instructions: 'Test fixtures for the MCP conformance suite (mreg interop/conformance).'
    }
  );
  const clientCan = capability => server.server.getClientCapabilities()?.[capability] !== undefined;

  // Logging: remember the client's minimum level for this session (logging/setLevel).
  server.server.setRequestHandler(SetLevelRequestSchema, request => {
    session.logLevel = request.params.level;
    return {};
  });

  // Tools that return fixed content of each kind. (McpServer calls a tool handler with
  // (args, extra) when the tool has an inputSchema, and with (extra) alone when it has none.)
  server.registerTool(
    'test_simple_text',
    { description: 'Returns one text content item.' },
    () => ({ content: [text('This is a simple text response for testing.')] })
  );
  server.registerTool(
    'test_image_content',
    { description: 'Returns one image content item (a 1x1 red PNG).' },
    () => ({ content: [image()] })
  );
  server.registerTool(
    'test_audio_content',
    { description: 'Returns one audio content item (a short WAV tone).' },
    () => ({ content: [{ type: 'audio', data: WAV_BASE64, mimeType: 'audio/wav' }] })
  );
  server.registerTool(
    'test_embedded_resource',
    { description: 'Returns one embedded text resource.' },
    () => ({
      content: [embedded('test://embedded-resource', 'text/plain', 'This is an embedded resource content.')]
    })
  );
  server.registerTool(
    'test_multiple_content_types',
    { description: 'Returns text, an image and an embedded JSON resource together.' },
    () => ({
      content: [
        text('Multiple content types test:'),
        image(),
        embedded('test://mixed-content-resource', 'application/json', JSON.stringify({ test: 'data', value: 123 }))
      ]
    })
  );

  // A tool whose failure is a result (isError: true), not a JSON-RPC error: McpServer turns
  // what the handler throws into such a result.
  server.registerTool('test_error_handling', { description: 'Always fails, as a tool result with isError.' }, () => {
    throw new Error('This tool intentionally returns an error for testing');
  });

  // Tools that send notifications while they run, on the call's own SSE stream.
  server.registerTool(
    'test_tool_with_logging',
    { description: 'Sends three info log messages, 50 ms apart, while it runs.' },
    async extra => {
      await logToClient(session, extra, 'info', 'Tool execution started');
      await sleep(50);
      await logToClient(session, extra, 'info', 'Tool processing data');
      await sleep(50);
      await logToClient(session, extra, 'info', 'Tool execution completed');
      return { content: [text('Logging tool finished after three log messages.')] };
    }
  );
  server.registerTool(
    'test_tool_with_progress',
    { description: 'Reports progress 0, 50 and 100 of 100 when the call carries a progress token.' },
    async extra => {
      const progressToken = extra._meta?.progressToken;
      for (const progress of [0, 50, 100]) {
        if (progress > 0) await sleep(50);
        if (progressToken !== undefined) {
          const params = { progressToken, progress, total: 100 };
          await extra.sendNotification({ method: 'notifications/progress', params });
        }
      }
      const how = progressToken === undefined ? 'no progress token' : 'reported 3 steps';
      return { content: [text(`Progress tool finished (${how}).`)] };
    }
  );

  // Tools that ask the client something (sampling, elicitation) before they answer. The request
  // goes out with extra.sendRequest, i.e. related to the tools/call and so on that call's own
  // POST SSE stream: it does not depend on the client's standalone GET stream being open yet.
  server.registerTool(
    'test_sampling',
    {
      description: 'Asks the client for an LLM completion of the prompt (sampling/createMessage).',
      inputSchema: { prompt: z.string().describe('The prompt to send to the LLM') }
    },
    async ({ prompt }, extra) => {
      if (!clientCan('sampling')) throw new Error('The client does not support sampling');
      const params = { messages: [{ role: 'user', content: text(prompt) }], maxTokens: 100 };
      const reply = await extra.sendRequest({ method: 'sampling/createMessage', params }, CreateMessageResultSchema);
      const answer = reply.content?.type === 'text' ? reply.content.text : JSON.stringify(reply.content);
      return { content: [text(`LLM response: ${answer}`)] };
    }
  );

  async function elicit(extra, message, requestedSchema) {
    if (!clientCan('elicitation')) throw new Error('The client does not support elicitation');
    const params = { message, requestedSchema };
    return extra.sendRequest({ method: 'elicitation/create', params }, ElicitResultSchema);
  }
  const describeElicitation = r => `action=${r.action}, content=${JSON.stringify(r.content ?? {})}`;

  server.registerTool(
    'test_elicitation',
    {
      description: 'Asks the user for a username and an email (elicitation/create).',
      inputSchema: { message: z.string().describe('The message to show the user') }
    },
    async ({ message }, extra) => {
      const reply = await elicit(extra, message, {
        type: 'object',
        properties: {
          username: { type: 'string', description: "User's response" },
          email: { type: 'string', description: "User's email address" }
        },
        required: ['username', 'email']
      });
      return { content: [text(`User response: ${describeElicitation(reply)}`)] };
    }
  );
  server.registerTool(
    'test_elicitation_sep1034_defaults',
    { description: 'Elicits a form whose fields of every primitive type carry a default (SEP-1034).' },
    async extra => {
      const reply = await elicit(extra, 'Please review these details; each field has a default.', {
        type: 'object',
        properties: {
          name: { type: 'string', title: 'Name', default: 'John Doe' },
          age: { type: 'integer', title: 'Age', default: 30 },
          score: { type: 'number', title: 'Score', default: 95.5 },
          status: { type: 'string', title: 'Status', enum: ['active', 'inactive', 'pending'], default: 'active' },
          verified: { type: 'boolean', title: 'Verified', default: true }
        }
      });
      return { content: [text(`Elicitation completed: ${describeElicitation(reply)}`)] };
    }
  );
  server.registerTool(
    'test_elicitation_sep1330_enums',
    { description: 'Elicits a form with each enum style: untitled, titled, legacy enumNames, multi-select (SEP-1330)' },
    async extra => {
      const reply = await elicit(extra, 'Please pick from each list.', {
        type: 'object',
        properties: {
          untitledSingle: { type: 'string', title: 'Untitled single', enum: ['option1', 'option2', 'option3'] },
          titledSingle: {
            type: 'string',
            title: 'Titled single',
            oneOf: [
              { const: 'value1', title: 'First Option' },
              { const: 'value2', title: 'Second Option' },
              { const: 'value3', title: 'Third Option' }
            ]
          },
          legacyEnum: {
            type: 'string',
            title: 'Legacy titled',
            enum: ['opt1', 'opt2', 'opt3'],
            enumNames: ['Option One', 'Option Two', 'Option Three']
          },
          untitledMulti: {
            type: 'array',
            title: 'Untitled multi',
            items: { type: 'string', enum: ['option1', 'option2', 'option3'] }
          },
          titledMulti: {
            type: 'array',
            title: 'Titled multi',
            items: {
              anyOf: [
                { const: 'value1', title: 'First Choice' },
                { const: 'value2', title: 'Second Choice' },
                { const: 'value3', title: 'Third Choice' }
              ]
            }
          }
        }
      });
      return { content: [text(`Elicitation completed: ${describeElicitation(reply)}`)] };
    }
  );

  // A tool whose input schema is JSON Schema 2020-12 with $schema, $defs and
  // additionalProperties: false (SEP-1613). McpServer derives inputSchema from zod; .meta()
  // adds the 2020-12 keywords to what it derives, strictObject gives additionalProperties: false.
  // (The address property keeps its derived schema next to the $ref, which 2020-12 allows.)
  const address = z.object({ street: z.string().optional(), city: z.string().optional() });
  server.registerTool(
    'json_schema_2020_12_tool',
    {
      description: 'Tool with JSON Schema 2020-12 features',
      inputSchema: z
        .strictObject({ name: z.string().optional(), address: address.optional().meta({ $ref: '#/$defs/address' }) })
        .meta({
          $schema: 'https://json-schema.org/draft/2020-12/schema',
          $defs: { address: { type: 'object', properties: { street: { type: 'string' }, city: { type: 'string' } } } }
        })
    },
    args => ({ content: [text(`Received: ${JSON.stringify(args)}`)] })
  );

  // SSE polling (SEP-1699): the tool closes its own POST stream before it answers; the client
  // reconnects with GET + Last-Event-ID and gets the answer from the event store. The client
  // needs an event id to resume from: the priming event gives one when the request's protocol
  // version is 2025-11-25 or later (extra.closeSSEStream is then set); otherwise a log message
  // goes out first, and the stream is closed only if that message was sent.
  server.registerTool(
    'test_reconnection',
    { description: 'Closes its SSE stream mid-call and answers after the client reconnects (SSE polling).' },
    async extra => {
      let close = extra.closeSSEStream;
      if (!close) {
        const note = 'test_reconnection: closing this stream; the result follows on reconnection';
        const noted = await logToClient(session, extra, 'info', note);
        if (noted) close = () => session.transport.closeSSEStream(extra.requestId);
      }
      if (close) {
        await sleep(50);
        close();
      }
      await sleep(200);
      return { content: [text(`Reconnection test finished (stream ${close ? 'closed mid-call' : 'left open'}).`)] };
    }
  );

  // Resources: static text and binary, one that changes (and can be subscribed to), a template.
  server.registerResource(
    'static-text',
    'test://static-text',
    { description: 'A fixed text resource.', mimeType: 'text/plain' },
    uri => contents(uri, 'text/plain', 'This is the content of the static text resource.')
  );
  server.registerResource(
    'static-binary',
    'test://static-binary',
    { description: 'A fixed binary resource (a 1x1 red PNG).', mimeType: 'image/png' },
    uri => ({ contents: [{ uri: uri.href, mimeType: 'image/png', blob: PNG_BASE64 }] })
  );
  server.registerResource(
    'watched-resource',
    WATCHED_URI,
    { description: `Changes every ${WATCH_INTERVAL_MS / 1000} s; subscribers are notified.`, mimeType: 'text/plain' },
    uri => contents(uri, 'text/plain', `Revision ${watched.revision} at ${watched.changedAt}`)
  );
  server.registerResource(
    'template-data',
    new ResourceTemplate('test://template/{id}/data', {
      list: undefined,
      complete: { id: value => ['1', '2', '3', '42', '123'].filter(id => id.startsWith(value)) }
    }),
    { description: 'JSON data for any id, substituted into the content.', mimeType: 'application/json' },
    (uri, { id }) => {
      const data = { id, templateTest: true, data: `Data for ID: ${id}` };
      return contents(uri, 'application/json', JSON.stringify(data));
    }
  );

  // Subscriptions: McpServer leaves resources/subscribe and /unsubscribe to the application.
  server.server.setRequestHandler(SubscribeRequestSchema, request => {
    session.subscriptions.add(request.params.uri);
    return {};
  });
  server.server.setRequestHandler(UnsubscribeRequestSchema, request => {
    session.subscriptions.delete(request.params.uri);
    return {};
  });

  // Prompts, and completion of prompt arguments.
  // (completable() must wrap the finished schema: a later .describe() would copy it without
  // the completer.)
  const suggest = (description, words) =>
    completable(z.string().describe(description), value => words.filter(w => w.startsWith(value ?? '')));
  server.registerPrompt(
    'test_simple_prompt',
    { description: 'A prompt without arguments.' },
    () => ({ messages: [{ role: 'user', content: text('This is a simple prompt for testing.') }] })
  );
  server.registerPrompt(
    'test_prompt_with_arguments',
    {
      description: 'A prompt that puts its two arguments into the message.',
      argsSchema: {
        arg1: suggest('First test argument', ['test', 'testing', 'tested', 'hello']),
        arg2: suggest('Second test argument', ['value', 'world', 'other'])
      }
    },
    ({ arg1, arg2 }) => ({
      messages: [{ role: 'user', content: text(`Prompt with arguments: arg1='${arg1}', arg2='${arg2}'`) }]
    })
  );
  server.registerPrompt(
    'test_prompt_with_embedded_resource',
    {
      description: 'A prompt that embeds the resource named by its argument.',
      argsSchema: { resourceUri: z.string().describe('URI of the resource to embed') }
    },
    ({ resourceUri }) => ({
      messages: [
        { role: 'user', content: embedded(resourceUri, 'text/plain', 'Embedded resource content for testing.') },
        { role: 'user', content: text('Please process the embedded resource above.') }
      ]
    })
  );
  server.registerPrompt(
    'test_prompt_with_image',
    { description: 'A prompt that carries an image.' },
    () => ({
      messages: [
        { role: 'user', content: image() },
        { role: 'user', content: text('Please analyze the image above.') }
      ]
    })
  );

  return server;
}

// The watched resource changes on a timer; each session subscribed to it gets
// notifications/resources/updated (on its standalone GET stream, as nothing relates it to a request).
const watched = { revision: 1, changedAt: new Date().toISOString() };
setInterval(() => {
  watched.revision++;
  watched.changedAt = new Date().toISOString();
  for (const session of sessions.values()) {
    if (!session.subscriptions.has(WATCHED_URI)) continue;
    session.mcp.server.sendResourceUpdated({ uri: WATCHED_URI }).catch(e => log(`resource update: ${e.message}`));
  }
}, WATCH_INTERVAL_MS).unref();

// --- HTTP: DNS-rebinding protection, then /mcp to the session's transport --------------------

const LOOPBACK_HOSTS = new Set(['localhost', '127.0.0.1', '[::1]']);

// Host, and Origin when a browser sends one, must name this machine: a page on another site
// whose name resolves to 127.0.0.1 must not reach the server (DNS rebinding). Refused: 403.
function isLoopbackAuthority(value) {
  try {
    return LOOPBACK_HOSTS.has(new URL(`http://${value}`).hostname);
  } catch {
    return false;
  }
}
function rebindingRefusal(req) {
  const host = req.headers.host;
  if (!isLoopbackAuthority(host ?? '')) return `Host header ${JSON.stringify(host ?? null)} is not a loopback name`;
  const origin = req.headers.origin;
  if (origin !== undefined) {
    let ok = false;
    try {
      const u = new URL(origin);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && LOOPBACK_HOSTS.has(u.hostname);
    } catch {
      ok = false;
    }
    if (!ok) return `Origin header ${JSON.stringify(origin)} is not a loopback origin`;
  }
  return undefined;
}

function sendJsonRpcError(res, status, code, message) {
  if (res.headersSent) return res.end();
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }));
}

function readJsonBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', chunk => {
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
      } else chunks.push(chunk);
    });
    req.on('end', () => {
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      } catch {
        reject(Object.assign(new Error('request body is not JSON'), { status: 400, code: -32700 }));
      }
    });
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const refusal = rebindingRefusal(req);
  if (refusal) {
    log(`refused ${req.method} ${req.url}: ${refusal}`);
    return sendJsonRpcError(res, 403, -32000, `Forbidden: ${refusal}`);
  }
  if (new URL(req.url, 'http://localhost').pathname !== '/mcp') {
    return sendJsonRpcError(res, 404, -32000, 'Not found: the MCP endpoint is /mcp');
  }

  const sessionId = req.headers['mcp-session-id'];
  let body;
  if (req.method === 'POST') {
    try {
      body = await readJsonBody(req);
    } catch (e) {
      return sendJsonRpcError(res, e.status ?? 400, e.code ?? -32000, e.message);
    }
  }

  if (sessionId !== undefined) {
    const session = sessions.get(sessionId);
    if (!session) return sendJsonRpcError(res, 404, -32001, 'Session not found');
    return session.transport.handleRequest(req, res, body);
  }
  // Without a session id, only an initialize (POST) is accepted: it opens a session.
  const initializes = req.method === 'POST' && [body].flat().some(isInitializeRequest);
  if (!initializes) {
    return sendJsonRpcError(res, 400, -32000, 'Bad Request: no Mcp-Session-Id, and not an initialize request');
  }
  const session = createSession();
  await session.mcp.connect(session.transport);
  await session.transport.handleRequest(req, res, body);
}

const httpServer = http.createServer((req, res) => {
  handle(req, res).catch(e => {
    log(`${req.method} ${req.url}: ${e.stack ?? e}`);
    sendJsonRpcError(res, 500, -32603, 'Internal error');
  });
});

httpServer.listen(parsePort(process.argv.slice(2)), '127.0.0.1', () => {
  process.stdout.write(`LISTENING ${httpServer.address().port}\n`);
});

async function shutdown(signal) {
  log(`${signal}: closing ${sessions.size} session(s)`);
  await Promise.allSettled([...sessions.values()].map(s => s.mcp.close()));
  httpServer.closeAllConnections();
  httpServer.close(() => process.exit(0));
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
