-- wrk script: one JSON-RPC `tools/call` per request, in an MCP session opened beforehand.
--
--   MCP_TOOL=echo MCP_ARGS='{"text":"ping"}' wrk -t2 -c16 -d10s --timeout 10s \
--     -s interop/wrk-tools-call.lua \
--     -H 'Accept: application/json, text/event-stream' -H 'Content-Type: application/json' \
--     -H 'Mcp-Session-Id: SID' -H 'Mcp-Protocol-Version: 2025-11-25' [-H 'Authorization: Bearer T'] \
--     http://127.0.0.1:PORT/mcp
--
-- The session (initialize, then notifications/initialized) is the caller's job, done with curl
-- by scripts/bench-peers; a stateless upstream needs no Mcp-Session-Id. A client of the
-- stateless 2026-07-28 protocol has no session either: MCP_META (a JSON object) is then sent as
-- the call's `params._meta` (protocol version and client capabilities), with the
-- Mcp-Protocol-Version, Mcp-Method and Mcp-Name headers given to wrk. Every request gets its
-- own JSON-RPC id (thread number * 1e9 + counter): stateful servers route answers by id, so
-- concurrent requests sharing one id in one session would get each other's answers.
--
-- A response counts as bad unless it is HTTP 200 with a JSON-RPC "result" (JSON or SSE body)
-- that is not a tool error ("isError": true). At the end one line goes to stdout:
--   WRK_RESULT {"requests":..,"duration_s":..,"rps":..,"bad":..,"errors":{...},"latency_ms":{...}}

local tool = os.getenv("MCP_TOOL") or "echo"
local arguments = os.getenv("MCP_ARGS") or '{"text":"ping"}'
local meta = os.getenv("MCP_META")
local meta_field = (meta and meta ~= "") and (',"_meta":' .. meta) or ""
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  sent = 0
  bad = 0
end

function request()
  sent = sent + 1
  local body = string.format(
    '{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s%s}}',
    thread_number * 1000000000 + sent, tool, arguments, meta_field)
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  if status ~= 200 or not string.find(body, '"result"', 1, true)
      or string.find(body, '"isError"%s*:%s*true') then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local total_bad = 0
  for _, thread in ipairs(threads) do
    total_bad = total_bad + (thread:get("bad") or 0)
  end
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_s":%.3f,"rps":%.1f,"bad":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_ms":{"p50":%.3f,"p90":%.3f,"p99":%.3f,"max":%.3f}}\n',
    summary.requests, seconds, summary.requests / seconds, total_bad,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000))
end
