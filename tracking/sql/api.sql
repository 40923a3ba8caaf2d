-- Named queries of tracking's hot-path handlers (tracking/api.py), registered
-- by tracking/apps.py with config/hotpath/db.py; parameters are %(name)s.

-- record_events --
SELECT tollgate_record_events(%(org_id)s, %(strict)s, %(events)s)

-- price_catalog --
-- GET /v1/prices: the price of every model and service tier in effect now
-- (money as text).
SELECT coalesce(jsonb_agg(tollgate_price_json(p) ORDER BY p.provider, p.model, p.service_tier),
                '[]')
FROM (SELECT DISTINCT ON (provider, model, service_tier) *
      FROM tracking_price
      WHERE effective_from <= now()
      ORDER BY provider, model, service_tier, effective_from DESC) p

-- price_of_model --
-- GET /v1/prices?model=: the entry the name resolves to now, as events are
-- priced (budgets/sql/functions/20_pricing.sql), with the aliases of the
-- caller's org when it sent a key (org_id NULL: none), for a service tier
-- ('' standard). NULL: no price.
SELECT tollgate_price_json(p)
FROM tollgate_price_at(%(org_id)s, %(model)s, NULL, now(), %(service_tier)s) p
