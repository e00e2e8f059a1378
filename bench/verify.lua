-- wrk script: POSTs /verify bodies read from BODIES (one JSON per line), each thread cycling
-- from its own offset; counts answers with "isValid":true; prints one JSON summary line.
local threads = {}
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("id", counter)
  table.insert(threads, thread)
end

function init(args)
  bodies = {}
  for line in io.lines(os.getenv("BODIES")) do
    if #line > 0 then table.insert(bodies, line) end
  end
  i = (id * 997) % #bodies
  valid = 0
  invalid = 0
  sample = ""
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/verify", { ["Content-Type"] = "application/json" }, bodies[i])
end

function response(status, headers, body)
  if status == 200 and body:find('"isValid":true', 1, true) then
    valid = valid + 1
  else
    invalid = invalid + 1
    if sample == "" then sample = tostring(status) .. " " .. string.sub(body, 1, 200) end
  end
end

function done(summary, latency, requests)
  local v, iv, s = 0, 0, ""
  for _, t in ipairs(threads) do
    v = v + t:get("valid")
    iv = iv + t:get("invalid")
    if s == "" then s = t:get("sample") end
  end
  s = string.gsub(s, "[%c\"\\]", " ")
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"valid":%d,"invalid":%d,"socket_errors":%d,"sample":"%s"}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), v, iv, errors, s))
end
