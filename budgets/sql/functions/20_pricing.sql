-- Prices and costs: the price in effect at a time, the cost of usage in
-- disjoint token buckets, of an event and of an estimate.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- Model names. Gateways send names the catalog may not hold as such
-- ("openai/gpt-4o", "GPT-4o", "claude-sonnet-4-5-20250929",
-- "bedrock/us.anthropic.claude-sonnet-4-5-20250929-v1:0", an Azure
-- deployment name). A name resolves to a price entry's model key by trying,
-- in order, the candidates below; each is tried first as a key of the price
-- table (the price map's own key wins whenever it has one) and then as an
-- org alias (tracking_modelalias, name -> key). Every step starts from the
-- previous one's result:
--   1. the name as sent;
--   2. lower-cased;
--   3. without a known provider prefix (openai/, anthropic/, gemini/,
--      google/, vertex_ai/, azure/, azure_ai/, bedrock/, also bedrock's
--      converse/, invoke/ and region paths: "bedrock/us-east-1/");
--   4. without a Bedrock cross-region inference prefix ("us.", "eu.",
--      "apac.", "global.", ...) before a Bedrock vendor;
--   5. without the Bedrock vendor ("anthropic.") and version ("-v1:0");
--   6. without a date suffix (-YYYY-MM-DD, -YYYYMMDD, Vertex's @YYYYMMDD),
--      only a real date (20YY, month 01-12, day 01-31): "gpt-4-0613" keeps
--      its "-0613".
-- The keys to try, in that order (an alias target right after its name).
-- Reached only when the exact name is not a key (tollgate_price_at), so the
-- common case pays nothing for it. IMMUTABLE candidates, STABLE aliases.
CREATE OR REPLACE FUNCTION tollgate_model_candidates(p_model text)
RETURNS text[] LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    v_vendors constant text := '(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek|openai|qwen|writer)';
    v_name text := lower(p_model);
    v_out text[] := ARRAY[p_model];
BEGIN
    v_out := v_out || v_name;
    v_name := regexp_replace(v_name,
        '^(?:openai|anthropic|gemini|google|vertex_ai(?:_beta)?|azure|azure_ai'
        '|bedrock(?:/(?:converse|invoke))?(?:/[a-z]{2}(?:-gov)?-[a-z]+-[0-9])?)/', '');
    v_out := v_out || v_name;
    v_name := regexp_replace(v_name, '^(?:us|eu|apac|au|jp|ca|global|us-gov)\.(?=' || v_vendors || '\.)', '');
    v_out := v_out || v_name;
    IF v_name ~ ('^' || v_vendors || '\.') THEN
        v_name := regexp_replace(regexp_replace(v_name, '^' || v_vendors || '\.', ''),
                                 '-v[0-9]+(?::[0-9]+)?$', '');
    END IF;
    v_out := v_out || v_name;
    v_name := regexp_replace(v_name,
        '(?:-20[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])'
        '|[-@]20[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01]))$', '');
    RETURN v_out || v_name;
END $$;

-- The price entry's keys to try for p_model, in order: each candidate, then
-- the org's alias of it (none when p_org is NULL: GET /v1/prices without a key).
CREATE OR REPLACE FUNCTION tollgate_model_keys(p_org bigint, p_model text)
RETURNS TABLE (rank bigint, key text) LANGUAGE sql STABLE AS $$
    SELECT c.n * 2 + k.alias, k.key
    FROM unnest(tollgate_model_candidates(p_model)) WITH ORDINALITY AS c(name, n)
    CROSS JOIN LATERAL (
        SELECT 0 AS alias, c.name AS key
        UNION ALL
        SELECT 1, a.model FROM tracking_modelalias a
        WHERE a.org_id = p_org AND a.name = c.name) k
$$;

-- The price of `p_model` in effect at `p_at`: the newest row with
-- effective_from <= p_at, preferring the caller's provider, of the first key
-- the name resolves to (above); the row's `model` is that key. A
-- set-returning SQL function, so the planner inlines it into LATERAL joins
-- (ingest prices a whole batch in one statement). The exact name comes
-- first in a UNION ALL under LIMIT 1: Append runs its branches in order and
-- LIMIT stops it at the first row, so a name that is a key (nearly every
-- event) costs one index probe as before, and only a miss computes the
-- candidates (a few more probes of the same index, and of the aliases').
CREATE OR REPLACE FUNCTION tollgate_price_at(
    p_org bigint, p_model text, p_provider text, p_at timestamptz)
RETURNS SETOF tracking_price LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT * FROM (
        (SELECT * FROM tracking_price p
         WHERE p.model = p_model AND p.effective_from <= p_at
         ORDER BY p.provider = coalesce(p_provider, '') DESC, p.effective_from DESC
         LIMIT 1)
        UNION ALL
        (SELECT p.* FROM tollgate_model_keys(p_org, p_model) k
         CROSS JOIN LATERAL (
             SELECT * FROM tracking_price p
             WHERE p.model = k.key AND p.effective_from <= p_at
             ORDER BY p.provider = coalesce(p_provider, '') DESC, p.effective_from DESC
             LIMIT 1) p
         ORDER BY k.rank
         LIMIT 1)
    ) resolved
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
    p_org bigint, p_model text, p_provider text, p_at timestamptz, p_input bigint,
    p_cache_read bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_cost(pr, p_input, p_cache_read, p_cache_write, p_output, p_reasoning)
    FROM tollgate_price_at(p_org, p_model, p_provider, p_at) pr
$$;

-- Price of an estimate (input tokens + at most max_output tokens), the
-- model's name resolved as for events (with the org's aliases).
CREATE OR REPLACE FUNCTION tollgate_estimate_cost(
    p_org bigint, p_model text, p_input bigint, p_max_output bigint, p_at timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_event_cost(p_org, p_model, NULL, p_at, p_input, 0, 0, p_max_output, 0)
$$;
