-- wrk script for the splitway bench: POST a small JSON body with an x-user-id header,
-- cycling through a fixed set of users so the hash split sees many keys, and print one
-- parseable result line in the `done` callback (latencies in microseconds):
--
--   BENCH {"requests":N,"duration_us":N,"errors":N,"non2xx":N,"p50_us":N,"p99_us":N,...}

local USERS = 1000
local requests_ = {}
local n = 0

function init(args)
  wrk.method = "POST"
  wrk.body = '{"inputs": [[0.1, 0.2, 0.3, 0.4]], "parameters": {"top_k": 1}}'
  wrk.headers["Content-Type"] = "application/json"
  for i = 1, USERS do
    wrk.headers["x-user-id"] = "user-" .. i
    requests_[i] = wrk.format()
  end
end

function request()
  n = n % USERS + 1
  return requests_[n]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"errors":%d,"non2xx":%d,'
      .. '"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
