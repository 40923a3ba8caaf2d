-- Prices and costs: the price in effect at a time, the cost of usage in
-- disjoint token buckets, of an event and of an estimate.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- The price of `p_model` in effect at `p_at`: the newest row with
-- effective_from <= p_at, preferring the caller's provider. A set-returning
-- SQL function, so the planner inlines it into LATERAL joins (ingest prices
-- a whole batch in one statement).
CREATE OR REPLACE FUNCTION tollgate_price_at(p_model text, p_provider text, p_at timestamptz)
RETURNS SETOF tracking_price LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT * FROM tracking_price p
    WHERE p.model = p_model AND p.effective_from <= p_at
    ORDER BY p.provider = coalesce(p_provider, '') DESC, p.effective_from DESC
    LIMIT 1
$$;

-- Cost of usage in disjoint token buckets at one price row. Cache reads and
-- writes fall back to the input price, reasoning to the output price. Above
-- the tier threshold (all input tokens counted) input and output use the
-- tier's prices. NULL when p is NULL (no price). A plain expression, inlined.
CREATE OR REPLACE FUNCTION tollgate_cost(
    p tracking_price, p_input bigint, p_cache_read bigint, p_cache_write bigint,
    p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT round(
        CASE WHEN (p).tier_threshold_tokens IS NOT NULL
                  AND p_input + p_cache_read + p_cache_write > (p).tier_threshold_tokens
             THEN p_input * coalesce((p).input_above_threshold_per_token, (p).input_per_token)
                + p_output * coalesce((p).output_above_threshold_per_token, (p).output_per_token)
                + p_reasoning * coalesce((p).reasoning_per_token,
                                         (p).output_above_threshold_per_token, (p).output_per_token)
             ELSE p_input * (p).input_per_token + p_output * (p).output_per_token
                + p_reasoning * coalesce((p).reasoning_per_token, (p).output_per_token) END
        + p_cache_read * coalesce((p).cache_read_per_token, (p).input_per_token)
        + p_cache_write * coalesce((p).cache_write_per_token, (p).input_per_token), 10)
$$;

-- Cost of one event's usage; NULL when the model has no price.
CREATE OR REPLACE FUNCTION tollgate_event_cost(
    p_model text, p_provider text, p_at timestamptz, p_input bigint, p_cache_read bigint,
    p_cache_write bigint, p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_cost(pr, p_input, p_cache_read, p_cache_write, p_output, p_reasoning)
    FROM tollgate_price_at(p_model, p_provider, p_at) pr
$$;

-- Price of an estimate (input tokens + at most max_output tokens).
CREATE OR REPLACE FUNCTION tollgate_estimate_cost(
    p_model text, p_input bigint, p_max_output bigint, p_at timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_event_cost(p_model, NULL, p_at, p_input, 0, 0, p_max_output, 0)
$$;
