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

-- The price of `p_model` in effect at `p_at` for the service tier `p_tier`
-- ('' standard, 'flex', 'priority', 'batch'): the newest row with
-- effective_from <= p_at, preferring the caller's provider and then the
-- tier's own row over the standard one (a model without rows of that tier
-- bills it at its standard prices), of the first key the name resolves to
-- (above); the row's `model` is that key. A set-returning SQL function, so
-- the planner inlines it into LATERAL joins (ingest prices a whole batch in
-- one statement). The exact name comes first in a UNION ALL under LIMIT 1:
-- Append runs its branches in order and LIMIT stops it at the first row, so
-- a name that is a key (nearly every event) costs one index probe as before,
-- and only a miss computes the candidates (a few more probes of the same
-- index, and of the aliases').
CREATE OR REPLACE FUNCTION tollgate_price_at(
    p_org bigint, p_model text, p_provider text, p_at timestamptz, p_tier text)
RETURNS SETOF tracking_price LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT * FROM (
        (SELECT * FROM tracking_price p
         WHERE p.model = p_model AND p.effective_from <= p_at
           AND p.service_tier IN ('', coalesce(p_tier, ''))
         ORDER BY p.provider = coalesce(p_provider, '') DESC,
                  p.service_tier = coalesce(p_tier, '') DESC, p.effective_from DESC
         LIMIT 1)
        UNION ALL
        (SELECT p.* FROM tollgate_model_keys(p_org, p_model) k
         CROSS JOIN LATERAL (
             SELECT * FROM tracking_price p
             WHERE p.model = k.key AND p.effective_from <= p_at
               AND p.service_tier IN ('', coalesce(p_tier, ''))
             ORDER BY p.provider = coalesce(p_provider, '') DESC,
                      p.service_tier = coalesce(p_tier, '') DESC, p.effective_from DESC
             LIMIT 1) p
         ORDER BY k.rank
         LIMIT 1)
    ) resolved
    LIMIT 1
$$;

-- Whether usage falls in the price's long-context tier: its prompt (every
-- input token: uncached, cache read and cache write, as Anthropic, Google
-- and OpenAI count it) is above the threshold. Providers that bill the tier
-- from the threshold itself (xAI) are loaded with threshold - 1.
CREATE OR REPLACE FUNCTION tollgate_above_tier(p tracking_price, p_prompt bigint)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(p_prompt > (p).tier_threshold_tokens, false)
$$;

-- The per-token rates of one price row for usage in or below its tier.
-- Each missing rate falls back as the providers bill (and LiteLLM's
-- cost_per_token resolves it): cache reads and writes to the input rate,
-- 1-hour writes to the write rate, reasoning, audio and image output to the
-- output rate, audio and image input to the input rate; in the tier, each
-- to the tier's rate first. Plain expressions, inlined.
CREATE OR REPLACE FUNCTION tollgate_input_rate(p tracking_price, p_above boolean)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_above THEN coalesce((p).input_above_threshold_per_token,
                                            (p).input_per_token)
                ELSE (p).input_per_token END
$$;

CREATE OR REPLACE FUNCTION tollgate_output_rate(p tracking_price, p_above boolean)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_above THEN coalesce((p).output_above_threshold_per_token,
                                            (p).output_per_token)
                ELSE (p).output_per_token END
$$;

CREATE OR REPLACE FUNCTION tollgate_cache_write_rate(p tracking_price, p_above boolean)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_above THEN coalesce((p).cache_write_above_threshold_per_token,
                                            (p).cache_write_per_token,
                                            tollgate_input_rate(p, true))
                ELSE coalesce((p).cache_write_per_token, (p).input_per_token) END
$$;

-- Cost of usage in disjoint token buckets at one price row (the parts,
-- tracking/provider_usage.py: 1-hour cache writes of the cache writes, audio
-- of the cache reads, audio and image tokens of input and of output, each
-- billed at its own rate and the rest of its bucket at the bucket's; audio
-- input in the tier at the tier's audio rate, else the audio rate below it,
-- as LiteLLM's cost_per_token; cached audio at one rate in and out of the
-- tier, as LiteLLM's), times the price's multiplier for
-- the region that served it (`p_geo`, none when NULL or unknown), plus paid
-- web searches (not multiplied; free when the price names no rate) at the
-- rate of the request's search context size (`p_search_size` 'low' or
-- 'high'; anything else, and a size the price has no rate for, the medium
-- rate), one per search, or one per request that searched when the price
-- bills per request (Gemini 2.x grounding). NULL when p is NULL (no price).
-- A plain expression, inlined.
CREATE OR REPLACE FUNCTION tollgate_cost(
    p tracking_price, p_input bigint, p_cache_read bigint, p_cache_write bigint,
    p_output bigint, p_reasoning bigint, p_cache_write_1h bigint, p_input_audio bigint,
    p_input_image bigint, p_output_audio bigint, p_output_image bigint,
    p_web_search_calls bigint, p_geo text, p_search_size text, p_cache_read_audio bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT round(
        ((p_input - p_input_audio - p_input_image)
            * tollgate_input_rate(p, tollgate_above_tier(p, p_input + p_cache_read + p_cache_write))
         + p_input_audio * coalesce(CASE
               WHEN tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)
               THEN coalesce((p).input_audio_above_threshold_per_token,
                             (p).input_audio_per_token)
               ELSE (p).input_audio_per_token END,
               tollgate_input_rate(p,
                   tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)))
         + p_input_image * coalesce((p).input_image_per_token, tollgate_input_rate(p,
               tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)))
         + (p_cache_read - p_cache_read_audio) * CASE
               WHEN tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)
               THEN coalesce((p).cache_read_above_threshold_per_token, (p).cache_read_per_token,
                             tollgate_input_rate(p, true))
               ELSE coalesce((p).cache_read_per_token, (p).input_per_token) END
         + p_cache_read_audio * coalesce((p).cache_read_audio_per_token, CASE
               WHEN tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)
               THEN coalesce((p).cache_read_above_threshold_per_token, (p).cache_read_per_token,
                             tollgate_input_rate(p, true))
               ELSE coalesce((p).cache_read_per_token, (p).input_per_token) END)
         + (p_cache_write - p_cache_write_1h) * tollgate_cache_write_rate(p,
               tollgate_above_tier(p, p_input + p_cache_read + p_cache_write))
         + p_cache_write_1h * CASE
               WHEN tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)
               THEN coalesce((p).cache_write_1h_above_threshold_per_token,
                             (p).cache_write_1h_per_token, tollgate_cache_write_rate(p, true))
               ELSE coalesce((p).cache_write_1h_per_token, tollgate_cache_write_rate(p, false)) END
         + (p_output - p_output_audio - p_output_image)
            * tollgate_output_rate(p, tollgate_above_tier(p, p_input + p_cache_read + p_cache_write))
         + p_output_audio * coalesce((p).output_audio_per_token, tollgate_output_rate(p,
               tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)))
         + p_output_image * coalesce((p).output_image_per_token, tollgate_output_rate(p,
               tollgate_above_tier(p, p_input + p_cache_read + p_cache_write)))
         + p_reasoning * coalesce((p).reasoning_per_token, tollgate_output_rate(p,
               tollgate_above_tier(p, p_input + p_cache_read + p_cache_write))))
        * coalesce(((p).region_multipliers ->> lower(p_geo))::numeric, 1)
        + CASE WHEN (p).web_search_per_request THEN least(p_web_search_calls, 1)
               ELSE p_web_search_calls END
          * coalesce(CASE p_search_size WHEN 'low' THEN (p).web_search_low_per_call
                                        WHEN 'high' THEN (p).web_search_high_per_call END,
                     (p).web_search_per_call, 0), 10)
$$;

-- Cost of one event's usage (the five buckets only, standard tier); NULL
-- when the model has no price.
CREATE OR REPLACE FUNCTION tollgate_event_cost(
    p_org bigint, p_model text, p_provider text, p_at timestamptz, p_input bigint,
    p_cache_read bigint, p_cache_write bigint, p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_cost(pr, p_input, p_cache_read, p_cache_write, p_output, p_reasoning,
                         0, 0, 0, 0, 0, 0, NULL, NULL, 0)
    FROM tollgate_price_at(p_org, p_model, p_provider, p_at, '') pr
$$;

-- Price of an estimate (input tokens + at most max_output tokens) in a
-- service tier, the model's name resolved as for events (with the org's
-- aliases). A prompt above the price's threshold is held at the tier's
-- rates, as the event will be billed.
CREATE OR REPLACE FUNCTION tollgate_estimate_cost(
    p_org bigint, p_model text, p_input bigint, p_max_output bigint, p_at timestamptz,
    p_tier text)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_cost(pr, p_input, 0, 0, p_max_output, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 0)
    FROM tollgate_price_at(p_org, p_model, NULL, p_at, p_tier) pr
$$;

-- Usage of a model with no known price (the org's unpriced_policy,
-- budgets.Organization): 'zero' lets it cost nothing until repriced;
-- 'fallback' (the default) and 'deny' charge it. An event settling a hold is
-- charged the hold (tollgate_record_events); otherwise, and for an estimate
-- under 'fallback', usage is charged at the rates below. 'deny' refuses checks
-- and holds (tollgate_decide_amount) but still charges events: their usage is
-- spent already, and refusing to record it would make it free.
--
-- The fallback cost: the org's own per-token rates (input for input and cache
-- tokens, output for output and reasoning), each defaulting to the highest
-- rate of its bucket anywhere in the catalog (any model, provider, tier or
-- date): more, never less, than a real price would likely charge. The
-- catalog is read only for a rate the org did not set (coalesce stops at the
-- first non-null) and only for unpriced usage, which is rare: a few thousand
-- price rows, a fraction of a millisecond. NULL when the catalog is empty
-- and the org set no rates.
CREATE OR REPLACE FUNCTION tollgate_fallback_cost(
    p_org bigint, p_input bigint, p_cache_read bigint, p_cache_write bigint,
    p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT round(
        p_input * coalesce(o.fallback_input_per_token,
            (SELECT max(greatest(p.input_per_token, p.input_above_threshold_per_token))
             FROM tracking_price p))
        + p_cache_read * coalesce(o.fallback_input_per_token,
            (SELECT max(greatest(p.input_per_token, p.input_above_threshold_per_token,
                                 p.cache_read_per_token)) FROM tracking_price p))
        + p_cache_write * coalesce(o.fallback_input_per_token,
            (SELECT max(greatest(p.input_per_token, p.input_above_threshold_per_token,
                                 p.cache_write_per_token)) FROM tracking_price p))
        + p_output * coalesce(o.fallback_output_per_token,
            (SELECT max(greatest(p.output_per_token, p.output_above_threshold_per_token))
             FROM tracking_price p))
        + p_reasoning * coalesce(o.fallback_output_per_token,
            (SELECT max(greatest(p.output_per_token, p.output_above_threshold_per_token,
                                 p.reasoning_per_token)) FROM tracking_price p)), 10)
    FROM budgets_organization o
    WHERE o.id = p_org
$$;

-- The amount a check or hold decides on: the caller's, else its estimate
-- priced, and for a model with no price what the org's policy says.
-- `unpriced`: NULL (decide on `amount`), 'deny' (the org refuses checks and
-- holds of a model with no price: 422 unpriced_model, also when the caller
-- sent its own amount) or 'zero' (an estimate that cannot be priced: 422 on
-- `model`, as before policies existed). Under 'fallback' an estimate of an
-- unpriced model is held at the fallback rates: the event that settles the
-- hold is then charged the hold. The common case, a priced estimate or an
-- amount of an org that does not deny, reads the org's row at most once.
CREATE OR REPLACE FUNCTION tollgate_decide_amount(
    p_org bigint, p_amount numeric, p_model text, p_input bigint, p_max_output bigint,
    p_at timestamptz, p_tier text, OUT amount numeric, OUT unpriced text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    amount := p_amount;
    IF p_amount IS NULL AND p_input IS NOT NULL THEN
        amount := tollgate_estimate_cost(p_org, p_model, p_input, coalesce(p_max_output, 0), p_at,
                                         p_tier);
        IF amount IS NOT NULL THEN
            RETURN;
        END IF;
        CASE (SELECT o.unpriced_policy FROM budgets_organization o WHERE o.id = p_org)
            WHEN 'deny' THEN
                unpriced := 'deny';
            WHEN 'fallback' THEN
                amount := tollgate_fallback_cost(p_org, p_input, 0, 0,
                                                 coalesce(p_max_output, 0), 0);
                IF amount IS NULL THEN
                    unpriced := 'zero';
                END IF;
            ELSE
                unpriced := 'zero';
        END CASE;
    ELSIF p_model IS NOT NULL
          AND (SELECT o.unpriced_policy FROM budgets_organization o WHERE o.id = p_org) = 'deny'
          AND NOT EXISTS (SELECT 1 FROM tollgate_price_at(p_org, p_model, NULL, p_at, p_tier)) THEN
        amount := NULL;
        unpriced := 'deny';
    END IF;
END $$;
