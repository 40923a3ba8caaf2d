-- wrk script for POST /v1/events, used by loadtests/ingest.py.
--
-- Every request is a batch of BENCH_BATCH events with ids never sent before
-- (thread, run start and a counter), so each one is stored, priced and added
-- to the budget windows: the full ingest path. Statuses are counted and
-- done() prints `BENCH_RESULT {json}` like reservations.lua.

local threads = {}
local counter = 0
statuses = {}

function setup(thread)
    thread:set("thread_index", #threads)
    table.insert(threads, thread)
end

function init(args)
    local key = os.getenv("TOLLGATE_API_KEY")
    if key == nil or key == "" then
        error("set TOLLGATE_API_KEY")
    end
    batch = tonumber(os.getenv("BENCH_BATCH") or "100")
    prefix = string.format("b%d-%d-%d-", os.time(), thread_index, math.random(1, 1000000000))
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer " .. key
    wrk.headers["Content-Type"] = "application/json"
end

function request()
    counter = counter + 1
    local parts = {}
    for i = 1, batch do
        parts[i] = string.format(
            '{"id":"%s%d-%d","team":"team-%02d","user":"user-%02d-%02d","model":"gpt-4o",' ..
            '"provider":"openai","usage":{"prompt_tokens":1200,"completion_tokens":300,' ..
            '"prompt_tokens_details":{"cached_tokens":200}},"latency_ms":800}',
            prefix, counter, i, i % 20 + 1, i % 20 + 1, i % 10 + 1)
    end
    return wrk.format(nil, nil, nil, '{"events":[' .. table.concat(parts, ",") .. ']}')
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
    local all = {}
    for _, thread in ipairs(threads) do
        for status, n in pairs(thread:get("statuses")) do
            all[tostring(status)] = (all[tostring(status)] or 0) + n
        end
    end
    local parts = {}
    for status, n in pairs(all) do
        table.insert(parts, string.format('"%s":%d', status, n))
    end
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,' ..
        '"p99_us":%d,"statuses":{%s},"errors":{"connect":%d,"read":%d,"write":%d,' ..
        '"status":%d,"timeout":%d}}\n',
        summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
        latency:percentile(95), latency:percentile(99), table.concat(parts, ","),
        summary.errors.connect, summary.errors.read, summary.errors.write,
        summary.errors.status, summary.errors.timeout))
end
