-- wrk script: POST /api/v1/votes, every request the next pre-registered voter of a file.
--
-- The file has fixed-width lines "<userId> <accessToken><spaces>\n", so a thread can seek to its
-- first line. Each request takes the next line; a voter is never sent twice unless wrap=1 (the
-- ceiling server, which stores nothing, may reuse lines; repeats are counted either way).
--
-- Quiesce: after activeMs (or when the voters run out), delay() parks every connection once its
-- current request is answered, so by the end of wrk's -d (activeMs + a drain) every request sent
-- has its answer: the 200s wrk saw are exactly the votes the server acknowledged. Throughput is
-- answered requests / active window, measured here with CLOCK_MONOTONIC through LuaJIT's ffi.
--
-- args: file lineWidth firstLine lineCount electionId candidateIds(comma) activeMs wrap(0|1) hostHeader [forwardedFor(0|1)]
-- forwardedFor=1: each request carries X-Forwarded-For with an address of that voter's own (line n:
-- network A.B.C.0/24 with A.B.C from n), as a crowd behind a trusted proxy would arrive, and the
-- User-Agent of a viewer's browser (one of three by line): without one, every vote would be a hit
-- of the fraud rules' empty_user_agent, which a show's viewers are not.
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } lv_timespec;
int clock_gettime(int clk_id, lv_timespec *tp);
]]
local ts = ffi.new("lv_timespec")
local function nowMs()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local parkMs = 3600 * 1000
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  file = assert(io.open(args[1], "rb"))
  width = tonumber(args[2])
  first = tonumber(args[3])
  count = tonumber(args[4])
  electionId = args[5]
  candidates = {}
  for id in string.gmatch(args[6], "[^,]+") do table.insert(candidates, id) end
  activeMs = tonumber(args[7])
  wrap = args[8] == "1"
  hostHeader = args[9]
  forwardedFor = args[10] == "1"
  file:seek("set", first * width)
  position = 0
  sent = 0
  granted = 0
  repeats = 0
  exhausted = 0
  t0 = 0
  tStop = 0
  stopped = false
  prefix = 'POST /api/v1/votes HTTP/1.1\r\nHost: ' .. hostHeader .. '\r\nContent-Type: application/json\r\nAuthorization: Bearer '
  browsers = {
    'Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
    'Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1',
    'Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0',
  }
end

function request()
  if position >= count then
    -- Only reached with wrap=1, or by a connection's very first request after the voters ran out.
    file:seek("set", first * width)
    position = 0
  end
  local line = file:read(width)
  local lineNumber = first + position
  position = position + 1
  sent = sent + 1
  if sent > count then repeats = repeats + 1 end
  local userId, token = string.match(line, "^(%S+) (%S+)")
  local candidate = candidates[(sent % #candidates) + 1]
  local body = '{"electionId":"' .. electionId .. '","candidateId":"' .. candidate .. '","userId":"' .. userId .. '"}'
  local forwarded = ''
  if forwardedFor then
    forwarded = string.format('\r\nX-Forwarded-For: %d.%d.%d.7\r\nUser-Agent: %s', 11 + math.floor(lineNumber / 65536), math.floor(lineNumber / 256) % 256, lineNumber % 256, browsers[(lineNumber % 3) + 1])
  end
  return prefix .. token .. forwarded .. '\r\nContent-Length: ' .. #body .. '\r\n\r\n' .. body
end

-- wrk asks delay() before every request it sends (the first on each connection too, as the script
-- has a delay function); a 0 grants one request(), which runs later, on a timer. Counting the
-- grants here, not the request() calls, is what keeps a voter from being sent twice when many
-- connections are granted at once near the end of the file. The +1 is the request() call wrk
-- makes once to check the script, which consumes a line and sends nothing.
function delay()
  if stopped then return parkMs end
  local now = nowMs()
  if t0 == 0 then t0 = now end
  local outOfVoters = (not wrap) and granted + 1 >= count
  if now - t0 >= activeMs or outOfVoters then
    stopped = true
    tStop = now
    if outOfVoters then exhausted = 1 end
    return parkMs
  end
  granted = granted + 1
  return 0
end

function done(summary, latency, requests)
  local sentTotal, repeatsTotal, exhaustedAny, activeMsMax = 0, 0, 0, 0
  for _, thread in ipairs(threads) do
    sentTotal = sentTotal + thread:get("sent")
    repeatsTotal = repeatsTotal + thread:get("repeats")
    exhaustedAny = math.max(exhaustedAny, thread:get("exhausted"))
    local started, stoppedAt = thread:get("t0"), thread:get("tStop")
    local active = (stoppedAt > 0 and started > 0) and (stoppedAt - started) or (summary.duration / 1000)
    activeMsMax = math.max(activeMsMax, active)
  end
  io.write(string.format(
    'BENCH_WRK_JSON {"requests":%d,"durationUs":%d,"bytes":%d,"non2xx":%d,"connectErrors":%d,"readErrors":%d,"writeErrors":%d,"timeouts":%d,' ..
    '"sent":%d,"repeats":%d,"exhausted":%d,"activeMs":%.3f,' ..
    '"latencyUs":{"min":%d,"mean":%.1f,"max":%d,"stdev":%.1f,"p50":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.requests, summary.duration, summary.bytes, summary.errors.status, summary.errors.connect, summary.errors.read,
    summary.errors.write, summary.errors.timeout, sentTotal, repeatsTotal, exhaustedAny, activeMsMax,
    latency.min, latency.mean, latency.max, latency.stdev,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
