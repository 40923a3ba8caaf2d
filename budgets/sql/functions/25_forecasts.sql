-- Forecasts: each budget's spend at the end of its current window, and when
-- it runs out at the current rate (docs/forecasts.md).
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped.
--
-- The rule, in two halves:
-- * The profile (tollgate_forecast_refresh, run by the worker once an hour
--   per org): the expected spend of each hour of the week (0 = Monday
--   00:00-01:00 in the org's zone), the mean of that hour over the trailing
--   weeks of hourly rollups (up to 4 whole weeks). With less than a week of
--   history, every hour gets the flat rate of the last 24 hours (or of all
--   the hours there are). Stored per budget (budgets_budgetforecast) with its
--   running sums, because scanning four weeks of an org's rollups costs far
--   more than a read may (~450k rows at 10M events a month).
-- * The projection (tollgate_forecast, at every read): what the window
--   counts now (spent + held) plus the profile over the hours left until the
--   window ends, the current hour pro rata; it runs out at the first instant
--   where that running total reaches the limit (linear within an hour). Two
--   array reads per stretch of hours, so a read of many budgets stays cheap.

-- The hour of the week of an instant in a zone: 0 = Monday 00:00-01:00.
CREATE OR REPLACE FUNCTION tollgate_hour_of_week(p_at timestamptz, p_tz text)
RETURNS integer LANGUAGE sql STABLE AS $$
    SELECT (extract(isodow FROM p_at AT TIME ZONE p_tz)::integer - 1) * 24
           + extract(hour FROM p_at AT TIME ZONE p_tz)::integer
$$;

-- The profile's spend over p_hours whole hours starting at hour-of-week
-- p_from, going round the week as often as needed (p_cum: the running sums,
-- p_cum[i + 1] = the spend of hours 0 .. i - 1, p_cum[169] = the week's).
-- One expression, no FROM, so that the planner inlines it: a call that is
-- not inlined costs more than the arithmetic (tollgate_forecast calls it
-- ~10 times per budget).
CREATE OR REPLACE FUNCTION tollgate_profile_sum(p_cum numeric[], p_from integer, p_hours bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT (p_hours / 168) * p_cum[169]
           + CASE WHEN p_from + p_hours % 168 <= 168
                  THEN p_cum[p_from + (p_hours % 168)::integer + 1] - p_cum[p_from + 1]
                  ELSE p_cum[169] - p_cum[p_from + 1]
                       + p_cum[p_from + (p_hours % 168)::integer - 167] END
$$;

-- The profile's spend from the start of an hour at hour-of-week p_from to
-- p_hours (fractional) later: whole hours, then the part of the last one.
CREATE OR REPLACE FUNCTION tollgate_profile_until(p_cum numeric[], p_from integer, p_hours numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT tollgate_profile_sum(p_cum, p_from, floor(p_hours)::bigint)
           + (p_hours - floor(p_hours))
             * (p_cum[((p_from + floor(p_hours)::bigint) % 168)::integer + 2]
                - p_cum[((p_from + floor(p_hours)::bigint) % 168)::integer + 1])
$$;

-- The forecast of one window at p_at: projected_usd, what it will count at
-- p_end (spent + held now, p_used, plus the profile until then; null for a
-- window with no end, a `total` budget), and runs_out_at, the first instant
-- at which that reaches p_limit (p_at when it has already; null when not
-- before p_end, or when nothing more is expected).
CREATE OR REPLACE FUNCTION tollgate_forecast(
    p_cum numeric[], p_tz text, p_at timestamptz, p_end timestamptz, p_used numeric,
    p_limit numeric, OUT projected_usd numeric, OUT runs_out_at timestamptz)
LANGUAGE plpgsql STABLE AS $$
DECLARE
    v_hour timestamptz := date_trunc('hour', p_at, 'UTC');
    v_from integer := tollgate_hour_of_week(date_trunc('hour', p_at, 'UTC'), p_tz);
    v_week numeric := p_cum[169];
    v_done numeric;  -- the profile from v_hour to p_at: already counted in p_used
    v_target numeric;
    v_weeks bigint;
    v_hours bigint;
    v_before numeric;
    v_lo integer;
    v_hi integer;
    v_mid integer;
BEGIN
    IF p_cum IS NULL THEN
        RETURN;
    END IF;
    v_done := tollgate_profile_until(p_cum, v_from, extract(epoch FROM p_at - v_hour) / 3600);
    IF p_end < 'infinity' THEN
        projected_usd := p_used + tollgate_profile_until(
            p_cum, v_from, extract(epoch FROM p_end - v_hour) / 3600) - v_done;
    END IF;
    IF p_used >= p_limit THEN
        runs_out_at := p_at;
        RETURN;
    END IF;
    IF v_week <= 0 THEN
        RETURN;
    END IF;
    -- The first t with profile(v_hour .. t) >= v_target: whole weeks, then
    -- the hour of the week in which it gets there, then where in that hour.
    v_target := p_limit - p_used + v_done;
    v_weeks := greatest(ceil(v_target / v_week) - 1, 0);
    IF v_weeks > 0 AND v_weeks * v_week >= v_target THEN
        v_weeks := v_weeks - 1;  -- the division rounded up
    END IF;
    IF v_weeks > 5200 THEN
        RETURN;  -- a century away: not a date anyone plans by
    END IF;
    -- The running total is monotonic (no hour costs less than nothing): a
    -- binary search for the first hour r of the week where it gets there;
    -- r = 168 does, since the whole week is exactly v_week.
    v_lo := 1;
    v_hi := 168;
    WHILE v_lo < v_hi LOOP
        v_mid := (v_lo + v_hi) / 2;
        IF v_weeks * v_week + tollgate_profile_sum(p_cum, v_from, v_mid) >= v_target THEN
            v_hi := v_mid;
        ELSE
            v_lo := v_mid + 1;
        END IF;
    END LOOP;
    v_hours := v_weeks * 168 + v_lo - 1;
    v_before := tollgate_profile_sum(p_cum, v_from, v_hours);
    runs_out_at := v_hour + make_interval(secs => (v_hours * 3600
        + (v_target - v_before) * 3600
          / (p_cum[(v_from + v_hours) % 168 + 2] - p_cum[(v_from + v_hours) % 168 + 1]))::double precision);
    IF runs_out_at < p_at THEN
        runs_out_at := p_at;
    ELSIF runs_out_at >= p_end THEN
        runs_out_at := NULL;
    END IF;
END $$;

-- The forecast fields of a budget as GET /v1/budgets and the dashboard show
-- them ('{}' never: every key is there, null without a profile yet).
CREATE OR REPLACE FUNCTION tollgate_forecast_json(
    p_profile budgets_budgetforecast, p_tz text, p_at timestamptz, p_period text,
    p_end timestamptz, p_used numeric, p_limit numeric)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_profile.budget_id IS NULL THEN
               jsonb_build_object('projected_usd', NULL, 'runs_out_at', NULL, 'forecast', NULL)
           ELSE jsonb_build_object(
               'projected_usd', trim_scale(round(f.projected_usd, 10))::text,
               'runs_out_at', to_char(f.runs_out_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"'),
               'forecast', jsonb_build_object(
                   'basis', p_profile.basis, 'weeks', p_profile.weeks,
                   'history_hours', p_profile.history_hours,
                   'as_of', to_char(p_profile.as_of AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')))
           END
    FROM tollgate_forecast(p_profile.cumulative_usd, p_tz, p_at,
                           CASE WHEN p_period = 'total' THEN 'infinity' ELSE p_end END,
                           p_used, p_limit) f
$$;

-- Compute the profile of every budget of an org from the complete hours
-- before p_at's hour (see the top of this file). History: the hours since
-- the org's first rolled-up hour. Spend per hour comes from the hourly
-- rollups (a model-filtered budget's from its models' rows), a key budget's
-- from the key rollups, a tag budget's from the raw events that carry its
-- tag (so only the hours prune_events has kept). A budget with no spend in
-- the span gets a profile of zeros. Returns how many budgets it wrote.
--
-- Hash joins and aggregates in memory: the planner cannot estimate the
-- CTE's grouping sets per kind of subject, and with nested loops instead a
-- refresh of an org with 470k rollup rows in 4 weeks and 800 budgets took
-- 17 s (loadtests/forecast_backtest.py measures it; docs/benchmarks/forecast.md).
CREATE OR REPLACE FUNCTION tollgate_forecast_refresh(p_org bigint, p_at timestamptz)
RETURNS integer LANGUAGE plpgsql
SET enable_nestloop = off
SET work_mem = '64MB'
AS $$
DECLARE
    v_tz text;
    v_hour timestamptz := date_trunc('hour', p_at, 'UTC');
    v_first timestamptz;
    v_history integer;
    v_weeks integer;
    v_span integer;
    v_count integer;
BEGIN
    SELECT time_zone INTO v_tz FROM budgets_organization WHERE id = p_org;
    SELECT min(hour) INTO v_first FROM tracking_hourlyrollup WHERE org_id = p_org;
    v_history := coalesce(greatest(floor(extract(epoch FROM v_hour - v_first) / 3600), 0), 0);
    v_weeks := least(v_history / 168, 4);
    v_span := CASE WHEN v_weeks > 0 THEN v_weeks * 168 ELSE least(v_history, 24) END;
    IF v_span = 0 THEN
        DELETE FROM budgets_budgetforecast
        WHERE budget_id IN (SELECT id FROM budgets_budget WHERE org_id = p_org);
        RETURN 0;
    END IF;

    WITH span AS MATERIALIZED (
        -- The hour of the week of each hour of the span, once per hour, not
        -- once per rollup row.
        SELECT hour, tollgate_hour_of_week(hour, v_tz) AS how
        FROM generate_series(v_hour - v_span * interval '1 hour', v_hour - interval '1 hour',
                             interval '1 hour') hour
    ), hours AS MATERIALIZED (
        -- g: 3 the org's hours, 1 a team's, 2 a user's.
        SELECT h.team_id, h.user_id, s.how, GROUPING(h.team_id, h.user_id) AS g,
               sum(h.cost_usd) AS cost
        FROM tracking_hourlyrollup h
        JOIN span s ON s.hour = h.hour
        WHERE h.org_id = p_org AND h.hour >= v_hour - v_span * interval '1 hour'
          AND h.hour < v_hour
        GROUP BY GROUPING SETS ((s.how), (h.team_id, s.how), (h.user_id, s.how))
    ), spend AS (
        SELECT b.id AS budget_id, s.how, s.cost
        FROM budgets_budget b JOIN hours s ON s.g = 3
        WHERE b.org_id = p_org AND b.scope = 'org' AND b.model_filter = ''
        UNION ALL
        SELECT b.id, s.how, s.cost
        FROM budgets_budget b JOIN hours s ON s.g = 1 AND s.team_id = b.team_id
        WHERE b.org_id = p_org AND b.scope = 'team' AND b.model_filter = ''
        UNION ALL
        SELECT b.id, s.how, s.cost
        FROM budgets_budget b JOIN hours s ON s.g = 2 AND s.user_id = b.user_id
        WHERE b.org_id = p_org AND b.scope = 'user' AND b.model_filter = ''
        UNION ALL
        -- Model-filtered org, team and user budgets: the rollups of the
        -- models they count (the rollups keep the model).
        SELECT b.id, s.how, sum(h.cost_usd)
        FROM budgets_budget b
        JOIN tracking_hourlyrollup h
          ON h.org_id = p_org AND h.hour >= v_hour - v_span * interval '1 hour'
         AND h.hour < v_hour
         AND (b.scope = 'org' OR (b.scope = 'team' AND h.team_id = b.team_id)
              OR (b.scope = 'user' AND h.user_id = b.user_id))
        JOIN span s ON s.hour = h.hour
        WHERE b.org_id = p_org AND b.scope IN ('org', 'team', 'user') AND b.model_filter <> ''
          AND tollgate_model_matches(h.model, b.model_filter)
        GROUP BY 1, 2
        UNION ALL
        -- Key budgets: the key rollups (per hour, key and model).
        SELECT b.id, s.how, sum(k.cost_usd)
        FROM budgets_budget b
        JOIN tracking_keyrollup k
          ON k.org_id = p_org AND k.key_id = b.key_id
         AND k.hour >= v_hour - v_span * interval '1 hour' AND k.hour < v_hour
        JOIN span s ON s.hour = k.hour
        WHERE b.org_id = p_org AND b.scope = 'key'
          AND (b.model_filter = '' OR tollgate_model_matches(k.model, b.model_filter))
        GROUP BY 1, 2
        UNION ALL
        -- Tag budgets: the raw events of the span that carry the tag (the
        -- hourly rollups keep no tags; tag rollups exist only for the names
        -- an org reports on), each event's tags joined as 'name=value' texts.
        SELECT b.id, tollgate_hour_of_week(date_trunc('hour', e.started_at, 'UTC'), v_tz),
               sum(e.cost_usd)
        FROM tracking_requestevent e
        CROSS JOIN LATERAL jsonb_each_text(e.tags) t(name, value)
        JOIN budgets_budget b
          ON b.org_id = p_org AND b.scope = 'tag' AND b.tag = t.name || '=' || t.value
        WHERE e.org_id = p_org
          AND e.started_at >= v_hour - v_span * interval '1 hour' AND e.started_at < v_hour
          AND (b.model_filter = '' OR tollgate_model_matches(e.model, b.model_filter))
        GROUP BY 1, 2
    ), rates AS (
        SELECT b.id AS budget_id, i,
               round(CASE WHEN v_weeks > 0 THEN coalesce(s.cost, 0) / v_weeks
                          ELSE coalesce(t.total, 0) / v_span END, 10) AS rate
        FROM budgets_budget b
        CROSS JOIN generate_series(0, 167) i
        LEFT JOIN spend s ON s.budget_id = b.id AND s.how = i  -- one row per budget and hour
        LEFT JOIN (SELECT budget_id, sum(cost) AS total FROM spend GROUP BY 1) t
               ON t.budget_id = b.id
        WHERE b.org_id = p_org
    ), profiles AS (
        SELECT budget_id, array_agg(rate ORDER BY i) AS hourly,
               array_agg(before ORDER BY i) || sum(rate) AS cumulative
        FROM (SELECT budget_id, i, rate,
                     sum(rate) OVER (PARTITION BY budget_id ORDER BY i) - rate AS before
              FROM rates) r
        GROUP BY budget_id
    )
    INSERT INTO budgets_budgetforecast (budget_id, as_of, basis, weeks, history_hours,
                                        hourly_usd, cumulative_usd)
    SELECT budget_id, v_hour, CASE WHEN v_weeks > 0 THEN 'hour_of_week' ELSE 'recent_rate' END,
           v_weeks, v_history, hourly, cumulative
    FROM profiles
    ON CONFLICT (budget_id) DO UPDATE
    SET as_of = excluded.as_of, basis = excluded.basis, weeks = excluded.weeks,
        history_hours = excluded.history_hours, hourly_usd = excluded.hourly_usd,
        cumulative_usd = excluded.cumulative_usd;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END $$;
