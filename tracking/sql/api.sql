-- Named queries of tracking's hot-path handlers (tracking/api.py), registered
-- by tracking/apps.py with config/hotpath/db.py; parameters are %(name)s.

-- record_events --
SELECT tollgate_record_events(%(org_id)s, %(tz)s, %(strict)s, %(events)s)

-- price_catalog --
-- GET /v1/prices: the price of every model in effect now (money as text).
SELECT coalesce(jsonb_agg(jsonb_build_object(
           'provider', p.provider, 'model', p.model,
           'effective_from', to_char(p.effective_from AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
           'input_per_token', trim_scale(p.input_per_token)::text,
           'output_per_token', trim_scale(p.output_per_token)::text,
           'cache_read_per_token', trim_scale(p.cache_read_per_token)::text,
           'cache_write_per_token', trim_scale(p.cache_write_per_token)::text,
           'reasoning_per_token', trim_scale(p.reasoning_per_token)::text,
           'tier_threshold_tokens', p.tier_threshold_tokens,
           'input_above_threshold_per_token', trim_scale(p.input_above_threshold_per_token)::text,
           'output_above_threshold_per_token', trim_scale(p.output_above_threshold_per_token)::text)
       ORDER BY p.provider, p.model), '[]')
FROM (SELECT DISTINCT ON (provider, model) *
      FROM tracking_price
      WHERE effective_from <= now()
      ORDER BY provider, model, effective_from DESC) p
