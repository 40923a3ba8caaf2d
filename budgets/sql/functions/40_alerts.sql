-- Alerts: a record for each crossing of a window's soft or hard limit.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- Judge these windows against their thresholds and record an alert for each
-- crossing. What counts is the window's settled spend, plus its open holds
-- when the org counts holds (alerts_count_holds). A window remembers whether
-- it was at or over each threshold when last judged (soft_alerted,
-- hard_alerted): an alert fires when that turns true; it turns false when the
-- window is judged below again, which re-arms the threshold. So a threshold
-- fires once per crossing, and again after spend fell back below it (a
-- release, an expiry, a reset, a reprice, a raised limit) and crossed anew.
--
-- Callers hold the windows' row locks (FOR UPDATE, in id order), so the
-- read-then-write of the flags is exact across processes: two writers of one
-- window judge it one after the other and only the first sees the crossing.
-- Every writer that can lower what counts calls this too, or a dip below
-- would go unseen and the next crossing would be silent. The alert commits
-- with the change that caused it; delivery happens later, from the row
-- (manage.py deliver_alerts), never on the hot path.
CREATE OR REPLACE FUNCTION tollgate_raise_alerts(p_window_ids bigint[])
RETURNS void LANGUAGE sql AS $$
    WITH judged AS (
        SELECT w.id, b.org_id, b.id AS budget_id, b.limit_usd, j.used,
               w.soft_alerted, w.hard_alerted, o.webhook_url,
               b.limit_usd > 0 AND j.used * 100 >= b.limit_usd * b.soft_limit_pct AS soft_now,
               b.limit_usd > 0 AND j.used >= b.limit_usd AS hard_now
        FROM budgets_budgetwindow w
        JOIN budgets_budget b ON b.id = w.budget_id
        JOIN budgets_organization o ON o.id = b.org_id
        CROSS JOIN LATERAL (SELECT w.spent + CASE WHEN o.alerts_count_holds THEN w.reserved
                                                  ELSE 0 END AS used) j
        WHERE w.id = ANY(p_window_ids)
    ), flagged AS (
        UPDATE budgets_budgetwindow w
        SET soft_alerted = j.soft_now, hard_alerted = j.hard_now
        FROM judged j
        WHERE w.id = j.id AND (j.soft_alerted <> j.soft_now OR j.hard_alerted <> j.hard_now)
    )
    INSERT INTO budgets_alert (org_id, budget_id, window_id, kind, limit_usd, used_usd,
                               created_at, delivery_status, attempts, next_attempt_at,
                               last_error)
    SELECT j.org_id, j.budget_id, j.id, k.kind, j.limit_usd, j.used, now(),
           CASE WHEN j.webhook_url = '' THEN 'skipped' ELSE 'pending' END, 0, now(), ''
    FROM judged j
    CROSS JOIN (VALUES ('soft'), ('hard')) AS k(kind)
    WHERE CASE k.kind WHEN 'soft' THEN j.soft_now AND NOT j.soft_alerted
                      ELSE j.hard_now AND NOT j.hard_alerted END
    ORDER BY j.id, k.kind DESC
$$;

-- An alert for each model name of these newly recorded events (p_inserted:
-- their event_id, priced and cost_usd as stored; p_events: the recorded
-- events, with their model) that has no price and no alert of its org yet:
-- "the first unpriced model an org sends", so that usage charged at a
-- fallback rate, a hold or nothing is noticed and priced. used_usd is what
-- the name's events of this recording were charged.
--
-- Once per org and name ever, also across processes: the unique index
-- alert_unpriced_model_once, where ON CONFLICT waits for a concurrent first
-- use of the name to commit or roll back. Names are inserted in order, so
-- two recordings that both bring new names wait for each other in one
-- order and cannot deadlock; the last lock of the global order (step 6,
-- 50_holds.sql), after the windows. An acknowledged alert stays: the name
-- does not alert again.
CREATE OR REPLACE FUNCTION tollgate_alert_unpriced_models(
    p_org bigint, p_events jsonb, p_inserted jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO budgets_alert (org_id, kind, model, used_usd, created_at, delivery_status,
                               attempts, next_attempt_at, last_error)
    SELECT p_org, 'unpriced_model', e.model, sum(n.cost_usd), now(),
           CASE WHEN (SELECT webhook_url FROM budgets_organization WHERE id = p_org) = ''
                THEN 'skipped' ELSE 'pending' END, 0, now(), ''
    FROM jsonb_to_recordset(p_inserted) AS n(event_id text, priced boolean, cost_usd numeric)
    JOIN jsonb_to_recordset(p_events) AS e(event_id text, model text)
      ON e.event_id = n.event_id
    WHERE NOT n.priced
    GROUP BY e.model
    ORDER BY e.model
    ON CONFLICT (org_id, model) WHERE kind = 'unpriced_model' DO NOTHING
$$;

-- Lock these windows (in id order, the lock order of 50_holds.sql) and judge
-- them: for writers that change what a threshold is judged on without
-- holding the windows' locks already (a changed limit or soft limit, a reset
-- in admin, an org that starts or stops counting holds).
CREATE OR REPLACE FUNCTION tollgate_judge_alerts(p_window_ids bigint[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM budgets_budgetwindow WHERE id = ANY(p_window_ids) ORDER BY id FOR UPDATE;
    PERFORM tollgate_raise_alerts(p_window_ids);
END $$;

-- The windows of an org's budgets whose period contains p_at (for
-- tollgate_judge_alerts).
CREATE OR REPLACE FUNCTION tollgate_current_windows(p_org bigint, p_budget bigint, p_at timestamptz)
RETURNS bigint[] LANGUAGE sql STABLE AS $$
    SELECT coalesce(array_agg(w.id ORDER BY w.id), '{}')
    FROM budgets_budgetwindow w
    JOIN budgets_budget b ON b.id = w.budget_id
    WHERE b.org_id = p_org AND (p_budget IS NULL OR b.id = p_budget)
      AND w.period_start <= p_at AND w.period_end > p_at
$$;

-- Money as people read it, as usd_for_people (config/hotpath/inputs.py) writes
-- it: '$1,234.50', '$1.27'; an amount under a cent keeps two significant
-- digits ('$0.00041') so that it never reads as $0.00. For alert texts.
CREATE OR REPLACE FUNCTION tollgate_usd_for_people(p_amount numeric)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN p_amount < 0 THEN '-$' ELSE '$' END
           || CASE WHEN a.small < 0.01 THEN trim_scale(a.small)::text
                   ELSE to_char(round(abs(p_amount), 2), 'FM999,999,999,999,999,990.00') END
    FROM (SELECT CASE WHEN abs(p_amount) > 0 AND abs(p_amount) < 0.01
                      THEN round(abs(p_amount), 1 - floor(log(abs(p_amount)))::int) END AS small) a
$$;

-- The windows whose forecast (tollgate_forecast, 25_forecasts.sql) says
-- they run out before they end (a `total` budget: within 7 days), while
-- what they count (spent + held, as the forecast counts) is still under the
-- limit, and that have not had their "projected to exceed" alert: current
-- windows of budgets with a profile, all of them or those of p_ids.
CREATE OR REPLACE FUNCTION tollgate_projected_windows(p_at timestamptz, p_ids bigint[])
RETURNS TABLE (window_id bigint, org_id bigint, budget_id bigint, limit_usd numeric,
               used_usd numeric, projected_usd numeric, runs_out_at timestamptz,
               webhook_url text)
LANGUAGE sql STABLE AS $$
    SELECT w.id, b.org_id, b.id, b.limit_usd, w.spent + w.reserved, fc.projected_usd,
           fc.runs_out_at, o.webhook_url
    FROM budgets_budget b
    JOIN budgets_organization o ON o.id = b.org_id
    JOIN budgets_budgetforecast f ON f.budget_id = b.id
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, o.time_zone, p_at) pb
    JOIN budgets_budgetwindow w ON w.budget_id = b.id AND w.period_start = pb.period_start
    CROSS JOIN LATERAL tollgate_forecast(
        f.cumulative_usd, o.time_zone, p_at,
        CASE WHEN b.period = 'total' THEN 'infinity' ELSE w.period_end END,
        w.spent + w.reserved, b.limit_usd) fc
    WHERE (p_ids IS NULL OR w.id = ANY(p_ids))
      AND NOT w.projected_alerted AND b.limit_usd > 0 AND w.spent + w.reserved < b.limit_usd
      AND fc.runs_out_at IS NOT NULL
      AND (b.period <> 'total' OR fc.runs_out_at <= p_at + interval '7 days')
$$;

-- Record a "projected to exceed" alert for each window tollgate_projected_windows
-- finds: once per window (projected_alerted is never re-armed: a forecast
-- moves every hour, and an alert that came and went with it would be noise;
-- the soft and hard alerts follow the spend itself). Judged by the worker
-- (budgets/jobs.py), never on the hot path. The windows are locked in id
-- order (the lock order of 50_holds.sql) and judged again under the lock, so
-- two workers raise one alert. Returns how many it raised.
CREATE OR REPLACE FUNCTION tollgate_raise_projected_alerts(p_at timestamptz)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_ids bigint[];
    v_count integer;
BEGIN
    SELECT array_agg(window_id ORDER BY window_id) INTO v_ids
    FROM tollgate_projected_windows(p_at, NULL);
    IF v_ids IS NULL THEN
        RETURN 0;
    END IF;
    PERFORM 1 FROM budgets_budgetwindow WHERE id = ANY(v_ids) ORDER BY id FOR UPDATE;
    WITH judged AS MATERIALIZED (
        SELECT * FROM tollgate_projected_windows(p_at, v_ids)
    ), flagged AS (
        UPDATE budgets_budgetwindow w SET projected_alerted = true
        FROM judged j WHERE w.id = j.window_id
    )
    INSERT INTO budgets_alert (org_id, budget_id, window_id, kind, limit_usd, used_usd,
                               projected_usd, runs_out_at, created_at, delivery_status,
                               attempts, next_attempt_at, last_error)
    SELECT j.org_id, j.budget_id, j.window_id, 'projected', j.limit_usd, j.used_usd,
           j.projected_usd, j.runs_out_at, now(),
           CASE WHEN j.webhook_url = '' THEN 'skipped' ELSE 'pending' END, 0, now(), ''
    FROM judged j
    ORDER BY j.window_id;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;
