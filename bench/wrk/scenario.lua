-- One wrk script for every scenario of `make bench`; BENCH_SCENARIO picks the requests.
-- The service and the floor app answer the same paths, so A and B get the same load.
-- Each wrk thread numbers its own requests from its own offset: no two threads book
-- the same window or complete the same task.

local scenario = os.getenv("BENCH_SCENARIO")
local admin = "Bearer " .. (os.getenv("BENCH_ADMIN_TOKEN") or "")
local agent = "Bearer " .. (os.getenv("BENCH_AGENT_TOKEN") or "")
local bench = os.getenv("BENCH_BENCH_ID") or "b-0000"
local benches = tonumber(os.getenv("BENCH_BENCHES") or "1")
local etag = os.getenv("BENCH_ETAG") or ""
local capability = os.getenv("BENCH_CAPABILITY") or "can"
local window_from = os.getenv("BENCH_FROM") or ""
local window_to = os.getenv("BENCH_TO") or ""
local base_epoch = tonumber(os.getenv("BENCH_BASE_EPOCH") or "0")
local claim_benches = tonumber(os.getenv("BENCH_CLAIM_BENCHES") or "1")
local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
local threads_total = tonumber(os.getenv("BENCH_THREADS") or "1")

local thread_list = {}
local thread_index = 0

function setup(thread)
   thread:set("index", thread_index)
   thread_index = thread_index + 1
   table.insert(thread_list, thread)
end

local counter = 0
local my_index = 0
local pending = {}   -- tasks this thread claimed and has yet to complete
local answered = 0

function init(args)
   my_index = index or 0
   counter = my_index
end

local function iso(epoch)
   return os.date("!%Y-%m-%dT%H:%M:%SZ", epoch)
end

local function bench_name(n)
   return string.format("b-%04d", n)
end

local function claim_bench(n)
   return string.format("c-%04d", n)
end

local function next_number()
   local n = counter
   counter = counter + threads_total
   return n
end

local json_headers = { ["Content-Type"] = "application/json", ["Authorization"] = admin }

request = function()
   if scenario == "heartbeat" then
      return wrk.format("POST", "/v1/benches/" .. bench .. "/heartbeats",
         { ["Content-Type"] = "application/json", ["Authorization"] = agent },
         '{"agent_version":"bench-1.0"}')
   elseif scenario == "get" then
      return wrk.format("GET", "/v1/benches/" .. bench, { ["Authorization"] = admin })
   elseif scenario == "get_not_modified" then
      return wrk.format("GET", "/v1/benches/" .. bench,
         { ["Authorization"] = admin, ["If-None-Match"] = etag })
   elseif scenario == "book_distinct" or scenario == "book_one_bench" then
      local n = next_number()
      local target, slot
      if scenario == "book_distinct" then
         target = bench_name(n % benches)
         slot = math.floor(n / benches)
      else
         -- Every client wants the same bench, and most of them the same few hours:
         -- a decision per request, a booking for some and a 409 for the others.
         target = bench
         slot = math.random(0, 2000)
      end
      local start = base_epoch + slot * 3600
      local body = string.format('{"bench_id":"%s","start":"%s","end":"%s"}',
         target, iso(start), iso(start + 3600))
      return wrk.format("POST", "/v1/reservations", json_headers, body)
   elseif scenario == "capability_list" then
      return wrk.format("GET", "/v1/benches?capability=" .. capability .. "&limit=20",
         { ["Authorization"] = admin })
   elseif scenario == "calendar" then
      return wrk.format("GET", "/v1/benches/" .. bench .. "/reservations?from=" .. window_from
         .. "&to=" .. window_to, { ["Authorization"] = admin })
   elseif scenario == "history" then
      return wrk.format("GET", "/v1/benches/" .. bench .. "/history?limit=20",
         { ["Authorization"] = admin })
   elseif scenario == "claim_complete" then
      local task = table.remove(pending)
      if task ~= nil then
         return wrk.format("POST", "/v1/tasks/" .. task.id .. "/complete",
            { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. task.token },
            '{"result":{}}')
      end
      local n = next_number() % claim_benches
      local name = claim_bench(n)
      return wrk.format("POST", "/v1/benches/" .. name .. "/tasks/claim",
         { ["Authorization"] = "Bearer agent-" .. name })
   elseif scenario == "mixed" then
      local n = next_number() % 4
      if n == 0 then
         return wrk.format("POST", "/v1/benches/" .. bench .. "/heartbeats",
            { ["Content-Type"] = "application/json", ["Authorization"] = agent },
            '{"agent_version":"bench-1.0"}')
      elseif n == 1 then
         return wrk.format("GET", "/v1/benches/" .. bench, { ["Authorization"] = admin })
      elseif n == 2 then
         return wrk.format("GET", "/v1/benches?capability=" .. capability .. "&limit=20",
            { ["Authorization"] = admin })
      end
      return wrk.format("GET", "/v1/benches/" .. bench .. "/history?limit=20",
         { ["Authorization"] = admin })
   end
   error("unknown BENCH_SCENARIO " .. tostring(scenario))
end

local function on_response(status, headers, body)
   answered = answered + 1
   -- Only a claim's answer shows a leased task; a completion's shows it succeeded (and
   -- must not be queued again: the loop would complete one task over and over).
   if scenario == "claim_complete" and status == 200
      and string.find(body, '"status"%s*:%s*"leased"') ~= nil then
      local id = string.match(body, '"task_id"%s*:%s*"([^"]+)"')
      local name = string.match(body, '"bench_id"%s*:%s*"([^"]+)"')
      if id ~= nil and name ~= nil then
         table.insert(pending, { id = id, token = "agent-" .. name })
      end
   end
   if stop_after > 0 and answered >= stop_after then
      wrk.thread:stop()
   end
end

-- wrk skips parsing bodies when no response() is defined: define it only where needed.
if scenario == "claim_complete" or stop_after > 0 then
   response = on_response
end

done = function(summary, latency, requests)
   local out = string.format(
      '{"requests":%d,"duration_us":%d,"status_errors":%d,"socket_errors":%d,'
         .. '"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}',
      summary.requests, summary.duration, summary.errors.status,
      summary.errors.connect + summary.errors.read + summary.errors.write,
      summary.errors.timeout, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max)
   io.write("BENCH-RESULT " .. out .. "\n")
end
