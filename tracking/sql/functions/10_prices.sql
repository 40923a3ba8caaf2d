-- The price catalog as GET /v1/prices answers it.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction).

-- One price row as the API shows it (money as text). A plain expression,
-- inlined.
CREATE OR REPLACE FUNCTION tollgate_price_json(p tracking_price)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object(
        'provider', (p).provider, 'model', (p).model,
        'effective_from', to_char((p).effective_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
        'input_per_token', trim_scale((p).input_per_token)::text,
        'output_per_token', trim_scale((p).output_per_token)::text,
        'cache_read_per_token', trim_scale((p).cache_read_per_token)::text,
        'cache_write_per_token', trim_scale((p).cache_write_per_token)::text,
        'reasoning_per_token', trim_scale((p).reasoning_per_token)::text,
        'tier_threshold_tokens', (p).tier_threshold_tokens,
        'input_above_threshold_per_token', trim_scale((p).input_above_threshold_per_token)::text,
        'output_above_threshold_per_token', trim_scale((p).output_above_threshold_per_token)::text,
        'cache_read_above_threshold_per_token',
            trim_scale((p).cache_read_above_threshold_per_token)::text,
        'cache_write_above_threshold_per_token',
            trim_scale((p).cache_write_above_threshold_per_token)::text,
        'cache_write_1h_above_threshold_per_token',
            trim_scale((p).cache_write_1h_above_threshold_per_token)::text,
        'cache_write_1h_per_token', trim_scale((p).cache_write_1h_per_token)::text,
        'cache_read_audio_per_token', trim_scale((p).cache_read_audio_per_token)::text,
        'input_audio_above_threshold_per_token',
            trim_scale((p).input_audio_above_threshold_per_token)::text,
        'input_audio_per_token', trim_scale((p).input_audio_per_token)::text,
        'input_image_per_token', trim_scale((p).input_image_per_token)::text,
        'output_audio_per_token', trim_scale((p).output_audio_per_token)::text,
        'output_image_per_token', trim_scale((p).output_image_per_token)::text,
        'web_search_per_call', trim_scale((p).web_search_per_call)::text,
        'web_search_low_per_call', trim_scale((p).web_search_low_per_call)::text,
        'web_search_high_per_call', trim_scale((p).web_search_high_per_call)::text,
        'web_search_per_request', (p).web_search_per_request,
        'region_multipliers', (p).region_multipliers,
        'service_tier', (p).service_tier)
$$;
