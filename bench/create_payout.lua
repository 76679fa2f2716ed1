-- wrk script: unique Idempotency-Key, ticket and recipient per request.
-- BENCH_REQUESTERS (default 64): how many requesters the payouts rotate over.
local counter = 0
local thread_tag = ""
local requesters = tonumber(os.getenv("BENCH_REQUESTERS") or "64")

function setup(thread)
  thread:set("tag", tostring(math.random(100000, 999999)))
end

function init(args)
  thread_tag = tag or tostring(math.random(100000, 999999))
  math.randomseed(os.time() + tonumber(thread_tag))
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "Bearer " .. (os.getenv("BENCH_API_KEY") or "")
end

function request()
  counter = counter + 1
  local unique = thread_tag .. "-" .. counter .. "-" .. math.random(1, 1000000000)
  local body = '{"ticket":{"system":"bench","id":"t-' .. unique .. '"},"reason":"refund",' ..
    '"amount":"12.50","currency":"CNY","recipient":{"type":"alipay","account":"u' .. unique ..
    '@example.com","name":"Bench User"},"requested_by":"bench-agent-' .. (counter % requesters) ..
    '","description":"benchmark","metadata":{"order_id":"' .. unique .. '"}}'
  wrk.headers["Idempotency-Key"] = "bench-" .. unique
  return wrk.format("POST", "/v1/payouts", nil, body)
end
