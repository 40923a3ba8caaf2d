-- Named queries of the hot path, registered by budgets/apps.py with config/hotpath/db.py.
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
          o.strict, o.fail_mode,
          (SELECT slug FROM budgets_team WHERE id = k.team_id) AS team_slug

-- decide --
SELECT tollgate_decide(%(org_id)s, %(strict)s, %(team)s, %(user)s, %(amount)s,
                       %(model)s, %(input_tokens)s, %(max_output_tokens)s, %(hold)s,
                       %(ttl_seconds)s, %(at)s, %(key_id)s, %(service_tier)s, %(tags)s)

-- release --
SELECT tollgate_release(%(org_id)s, %(reservation_id)s, %(retention)s)

-- extend --
SELECT tollgate_extend(%(org_id)s, %(reservation_id)s, %(ttl_seconds)s, %(retention)s)

-- expire_reservations --
SELECT tollgate_expire_reservations(%(limit)s)

-- list_budgets --
SELECT tollgate_list_budgets(%(org_id)s, %(at)s)

-- list_budgets_where --
-- GET /v1/budgets with its filters (NULL: not filtered).
SELECT tollgate_list_budgets(%(org_id)s, %(at)s, %(scope)s, %(team)s, %(tag)s, %(model)s)

-- put_budget --
SELECT tollgate_put_budget(%(org_id)s, %(strict)s, %(scope)s, %(subject)s, %(period)s,
                           %(limit_usd)s, %(soft_limit_pct)s, %(enforce)s, %(at)s,
                           %(key_id)s, %(request_id)s, %(client_addr)s, %(model)s)

-- delete_budget --
SELECT tollgate_delete_budget(%(org_id)s, %(scope)s, %(subject)s, %(period)s,
                              %(key_id)s, %(request_id)s, %(client_addr)s, %(model)s)

-- ping --
SELECT 1

-- decide_many --
-- Several holds in one transaction (see DecisionBatcher in budgets/api.py).
SELECT tollgate_decide_many(%(items)s)

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

-- change_time_zone --
-- An org moves to another time zone, its current windows with it.
SELECT tollgate_change_time_zone(%(org_id)s, %(tz)s, now())

-- seed_window --
-- A budget created in Django admin (or moved to another period) starts with
-- its scope's spend and open holds in the current window (tollgate_seed_window).
SELECT tollgate_seed_window(%(budget_id)s, now())

-- judge_alerts --
-- Admin changed what a threshold is judged on (a reset, a limit, whether the
-- org counts holds): judge the current windows of the org (or of one budget)
-- again, locked in id order (tollgate_judge_alerts).
SELECT tollgate_judge_alerts(tollgate_current_windows(%(org_id)s, %(budget_id)s, now()))

-- stale_forecast_orgs --
-- Orgs with a budget whose profile is missing or older than this hour
-- (the worker's forecast job refreshes them, one org a transaction).
SELECT DISTINCT b.org_id
FROM budgets_budget b
LEFT JOIN budgets_budgetforecast f ON f.budget_id = b.id
WHERE f.budget_id IS NULL OR f.as_of < date_trunc('hour', %(at)s::timestamptz, 'UTC')
ORDER BY b.org_id

-- refresh_forecasts --
SELECT tollgate_forecast_refresh(%(org_id)s, %(at)s)

-- raise_projected_alerts --
SELECT tollgate_raise_projected_alerts(%(at)s)
