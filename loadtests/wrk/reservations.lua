-- wrk script for POST /v1/budget/reservations, used by loadtests/compare.py.
--
-- Environment: TOLLGATE_API_KEY (required), BENCH_TEAMS and BENCH_USERS_PER_TEAM
-- (the subjects the requests are spread over; compare.py seeds the same ones),
-- BENCH_BUDGETS (org or six: the budget scenario, loadtests/harness/seed.py).
-- Every response status is counted, so a design that answers errors is
-- reported instead of looking fast. done() prints one line
-- `BENCH_RESULT {json}` with latency percentiles in microseconds.

local bodies = {}
local counter = 0
local threads = {}
-- Global, not local: done() reads it from each thread with thread:get().
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
    local teams = tonumber(os.getenv("BENCH_TEAMS") or "20")
    local users = tonumber(os.getenv("BENCH_USERS_PER_TEAM") or "10")
    wrk.method = "POST"
    wrk.headers["Authorization"] = "Bearer " .. key
    wrk.headers["Content-Type"] = "application/json"
    -- Bodies are built once: building them per request would cost wrk CPU
    -- that the server under test then lacks on a small machine.
    -- BENCH_BUDGETS=six: the model and two tags of loadtests/harness/seed.py's
    -- six-budget scenario (its request_body builds the same bodies).
    local six = os.getenv("BENCH_BUDGETS") == "six"
    for t = 1, teams do
        for u = 1, users do
            local extra = ""
            if six then
                extra = string.format(
                    ',"model":"claude-opus-4","tags":{"feature":"f-%d","customer":"c-%02d"}',
                    t % 4 + 1, t)
            end
            table.insert(bodies, string.format(
                '{"team":"team-%02d","user":"user-%02d-%02d","estimated_cost_usd":"0.001"%s}',
                t, t, u, extra))
        end
    end
    -- Threads start at different subjects so they do not move in lockstep.
    counter = thread_index * 37
end

function request()
    counter = counter + 1
    return wrk.format(nil, nil, nil, bodies[(counter % #bodies) + 1])
end

function response(status, headers, body)
    statuses[status] = (statuses[status] or 0) + 1
end

local function merged_statuses()
    local total = {}
    for _, thread in ipairs(threads) do
        for status, count in pairs(thread:get("statuses")) do
            total[status] = (total[status] or 0) + count
        end
    end
    local parts = {}
    for status, count in pairs(total) do
        table.insert(parts, string.format('"%d":%d', status, count))
    end
    return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
    local e = summary.errors
    io.write(string.format(
        'BENCH_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p95_us":%d,'
        .. '"p99_us":%d,"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},'
        .. '"statuses":%s}\n',
        summary.requests, summary.duration,
        latency:percentile(50), latency:percentile(90), latency:percentile(95),
        latency:percentile(99), latency.max,
        e.connect, e.read, e.write, e.timeout, merged_statuses()))
end
