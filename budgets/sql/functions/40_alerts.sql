-- Alerts: a record for each window that reached its soft or hard limit.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- Record an alert for each of these windows that reached its soft limit
-- (spent + reserved >= soft_limit_pct of the limit) or its hard limit, once
-- per window and kind: the unique index makes a repeat a no-op, also under
-- concurrency. Called by the writers while they hold the windows' locks, so
-- the alert commits with the change that caused it; delivery happens later,
-- from the row (manage.py deliver_alerts), never on the hot path.
CREATE OR REPLACE FUNCTION tollgate_raise_alerts(p_window_ids bigint[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO budgets_alert (org_id, budget_id, window_id, kind, limit_usd, used_usd,
                               created_at, delivery_status, attempts, next_attempt_at,
                               last_error)
    SELECT b.org_id, b.id, w.id, k.kind, b.limit_usd, w.spent + w.reserved, now(),
           CASE WHEN o.webhook_url = '' THEN 'skipped' ELSE 'pending' END, 0, now(), ''
    FROM budgets_budgetwindow w
    JOIN budgets_budget b ON b.id = w.budget_id
    JOIN budgets_organization o ON o.id = b.org_id
    CROSS JOIN (VALUES ('soft'), ('hard')) AS k(kind)
    WHERE w.id = ANY(p_window_ids) AND b.limit_usd > 0
      AND w.spent + w.reserved >= CASE k.kind WHEN 'hard' THEN b.limit_usd
                                             ELSE b.limit_usd * b.soft_limit_pct / 100 END
    ON CONFLICT (window_id, kind) DO NOTHING
$$;
