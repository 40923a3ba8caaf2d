-- Named queries of the hot path, loaded once by budgets/db.py.
-- Each block starts with `-- name --`; parameters are %(name)s.

-- authenticate_key --
-- Warm keys come from the per-process cache; this runs on a miss (at most
-- once per key per API_KEY_CACHE_SECONDS) and records last use at the same time.
-- Only the right secret counts as a use: anyone who saw a key's public lookup
-- id could otherwise keep an abandoned key looking active.
UPDATE budgets_apikey k SET last_used_at = now()
FROM budgets_organization o
WHERE k.lookup_id = %(lookup_id)s AND k.key_hash = %(key_hash)s AND o.id = k.org_id
RETURNING k.id, k.key_hash, k.revoked_at, k.is_admin, k.org_id, o.slug AS org_slug,
          o.time_zone, o.strict, o.fail_mode,
          (SELECT slug FROM budgets_team WHERE id = k.team_id) AS team_slug

-- decide --
SELECT tollgate_decide(%(org_id)s, %(tz)s, %(strict)s, %(team)s, %(user)s, %(amount)s,
                       %(model)s, %(input_tokens)s, %(max_output_tokens)s, %(hold)s,
                       %(ttl_seconds)s, %(at)s)

-- release --
SELECT tollgate_release(%(org_id)s, %(reservation_id)s, %(retention)s)

-- expire_reservations --
SELECT tollgate_expire_reservations(%(limit)s)

-- list_budgets --
SELECT tollgate_list_budgets(%(org_id)s, %(tz)s, %(at)s)

-- put_budget --
SELECT tollgate_put_budget(%(org_id)s, %(tz)s, %(strict)s, %(scope)s, %(subject)s, %(period)s,
                           %(limit_usd)s, %(soft_limit_pct)s, %(enforce)s, %(at)s)

-- delete_budget --
SELECT tollgate_delete_budget(%(org_id)s, %(scope)s, %(subject)s, %(period)s)

-- ping --
SELECT 1

-- decide_many --
-- Several holds in one transaction (see DecisionBatcher in budgets/db.py).
SELECT tollgate_decide_many(%(items)s)

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

-- dashboard_session --
-- A dashboard login's session (django.contrib.sessions' database backend),
-- read on the event loop instead of through the ORM. Primary key lookup.
SELECT s.session_data FROM django_session s
WHERE s.session_key = %(session_key)s AND s.expire_date > now()

-- dashboard_user --
-- The signed-in user, their password hash (the session carries an HMAC of it,
-- so that a password change ends other sessions) and their organization.
SELECT u.id, u.password, u.is_active, u.is_staff, m.org_id, o.slug
FROM auth_user u
LEFT JOIN dashboard_membership m ON m.user_id = u.id
LEFT JOIN budgets_organization o ON o.id = m.org_id
WHERE u.id = %(user_id)s

-- dashboard_summary --
-- GET /v1/dashboard/summary, first half: KPIs, budgets, recent requests. The
-- org by id (an API key's, a member's) or by slug (staff switching); with
-- neither, the first org (staff without one). The org is chosen in a
-- subquery so that the summary runs for one org only.
SELECT o.slug, tollgate_dashboard_summary(o.id, o.time_zone, %(range)s, %(team)s, %(at)s)
FROM (SELECT id, slug, time_zone FROM budgets_organization
      WHERE (%(org_id)s::bigint IS NULL OR id = %(org_id)s)
        AND (%(org_slug)s::text IS NULL OR slug = %(org_slug)s)
      ORDER BY slug
      LIMIT 1) o

-- dashboard_org --
-- The org a summary is for when the caller named it by slug (staff) or not at
-- all, chosen like the two statements below: its live updates are heard from
-- before they run (dashboard/live.py, Keeper).
SELECT id FROM budgets_organization
WHERE (%(org_id)s::bigint IS NULL OR id = %(org_id)s)
  AND (%(org_slug)s::text IS NULL OR slug = %(org_slug)s)
ORDER BY slug
LIMIT 1

-- dashboard_breakdown --
-- Second half, run at the same time on another connection: chart and top lists.
SELECT o.slug, tollgate_dashboard_breakdown(o.id, o.time_zone, %(range)s, %(team)s, %(at)s)
FROM (SELECT id, slug, time_zone FROM budgets_organization
      WHERE (%(org_id)s::bigint IS NULL OR id = %(org_id)s)
        AND (%(org_slug)s::text IS NULL OR slug = %(org_slug)s)
      ORDER BY slug
      LIMIT 1) o

-- alert_counts --
-- GET /metrics: alerts by delivery status and the delivery attempts made,
-- read from the table because another process (run_worker) delivers them.
SELECT coalesce(
    jsonb_object_agg(delivery_status, jsonb_build_object('alerts', n, 'attempts', attempts)),
    '{}'::jsonb)
FROM (
    SELECT delivery_status, count(*) AS n, coalesce(sum(attempts), 0) AS attempts
    FROM budgets_alert
    GROUP BY delivery_status
) AS counts
