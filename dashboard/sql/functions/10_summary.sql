-- The dashboard's statements: GET /v1/dashboard/summary's two halves and the
-- helpers they share.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- The org a dashboard shows: by id (an API key's, a member's) or by slug
-- (staff switching); with neither, the first org (staff without one). One
-- row at most; a SQL function in FROM, so the planner inlines it.
CREATE OR REPLACE FUNCTION tollgate_dashboard_org(p_org_id bigint, p_org_slug text)
RETURNS TABLE (id bigint, slug text, time_zone text)
LANGUAGE sql STABLE AS $$
    SELECT o.id, o.slug::text, o.time_zone::text FROM budgets_organization o
    WHERE (p_org_id IS NULL OR o.id = p_org_id)
      AND (p_org_slug IS NULL OR o.slug = p_org_slug)
    ORDER BY o.slug
    LIMIT 1
$$;

-- A time as API.md writes it (UTC, "Z").
CREATE OR REPLACE FUNCTION tollgate_iso(p_at timestamptz)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT to_char(p_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"')
$$;

-- The dashboard (GET /v1/dashboard/summary) is two statements that the
-- server runs at the same time on two pooled connections, so that the two
-- heavy aggregations use two cores: tollgate_dashboard_summary (KPIs,
-- budgets, recent requests) and tollgate_dashboard_breakdown (chart, top
-- lists). Both take the same p_at, hence the same bounds.
--
-- p_range: '24h' (the current UTC hour and the 23 before it, hourly buckets),
-- '7d' / '30d' (today and the 6 / 29 days before it, local days of p_tz),
-- 'mtd' (this local month), 'last_month' (the whole local month before it)
-- or 'custom' (the local days p_from to p_to, both included), daily.
-- [range_from, range_to) is the range; first_day and last_day its local
-- dates (the chart's day buckets). A range ends at `hi` (the end of the
-- current hour) when it reaches now. "Today", "month to date" and the
-- trailing-week run rate behind the month-end projection need the month and
-- the last 7 days whatever the range. Days and months start at the first
-- instant of their local date, as budget windows do (tollgate_period_bounds,
-- tollgate_local_day_start). Rollup hours count in the local day they start
-- in (exact for zones with whole-hour offsets).
DROP FUNCTION IF EXISTS tollgate_dashboard_bounds(text, text, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_dashboard_bounds(
    p_range text, p_tz text, p_at timestamptz, p_from date, p_to date)
RETURNS TABLE (range_from timestamptz, range_to timestamptz, first_day date, last_day date,
               hour timestamptz, today timestamptz, month timestamptz,
               month_end timestamptz, week timestamptz, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.range_from, least(f.range_to, b.hour + interval '1 hour'), f.first_day, f.last_day,
           b.hour, b.today, b.month, b.month_end, b.week,
           date_trunc('hour', least(f.range_from, b.month, b.week), 'UTC'), b.hour + interval '1 hour'
    FROM (SELECT date_trunc('hour', p_at, 'UTC') AS hour,
                 d.period_start AS today, m.period_start AS month, m.period_end AS month_end,
                 date_trunc('hour', p_at, 'UTC') - interval '7 days' AS week,
                 date_trunc('day', p_at AT TIME ZONE p_tz) AS local_today,
                 date_trunc('month', p_at AT TIME ZONE p_tz) AS local_month
          FROM tollgate_period_bounds('day', p_tz, p_at) d,
               tollgate_period_bounds('month', p_tz, p_at) m) b
    CROSS JOIN LATERAL (SELECT x.first_day, x.last_day,
        CASE p_range WHEN '24h' THEN b.hour + interval '1 hour' - interval '24 hours'
                     ELSE tollgate_local_day_start(x.first_day, p_tz) END AS range_from,
        CASE p_range WHEN '24h' THEN b.hour + interval '1 hour'
                     ELSE tollgate_local_day_start(x.last_day + 1, p_tz) END AS range_to
        FROM (SELECT CASE p_range
                  WHEN '24h' THEN NULL
                  WHEN '7d' THEN (b.local_today - interval '6 days')::date
                  WHEN '30d' THEN (b.local_today - interval '29 days')::date
                  WHEN 'mtd' THEN b.local_month::date
                  WHEN 'last_month' THEN (b.local_month - interval '1 month')::date
                  WHEN 'custom' THEN p_from END AS first_day,
              CASE p_range
                  WHEN '24h' THEN NULL
                  WHEN 'last_month' THEN (b.local_month - interval '1 day')::date
                  WHEN 'custom' THEN p_to
                  ELSE b.local_today::date END AS last_day) x
        WHERE p_range IN ('24h', '7d', '30d', 'mtd', 'last_month', 'custom')) f
$$;

-- Usage of one org (narrowed to one team, end user and model when p_team,
-- p_user, p_model are set) per bucket, team, user and model in [p_lo, p_hi). A bucket is a UTC hour, or with p_days a whole local
-- day (its start) of p_tz that the daily rollups can serve; the result is the
-- same either way, only the number of rows read differs (~640 a day instead
-- of ~640 an hour with the demo data).
--
-- The rollups plus the raw tail: the rollups hold exactly the events received
-- up to the aggregation watermark p_aggregated, the tail is the events
-- received after it (a few minutes of them), read from tracking_requestevent
-- and bucketed by hour. Late events in hours before the prune horizon are in
-- neither. The rule of GET /v1/usage. The caller reads p_aggregated in the
-- same snapshot as this query (a STABLE function), so the two agree.
--
-- Days: tracking_dailyrollup holds, per local day, the sum of the hourly
-- rollups whose hour starts in that day, written in the same transactions
-- as they are. A day comes from there when (1) the org's days are built in
-- p_tz (tracking_dailyrollupzone; after a change of time zone, not until
-- aggregate_usage has rebuilt them), (2) it lies wholly in [p_lo, p_hi), so
-- never today until it is over, and (3) no time of p_cuts falls inside it:
-- the caller filters buckets by those times (a trailing week that starts at
-- an hour), and a day row cannot be split. Everything else is read hour by
-- hour from the hourly rollups: the partial days at both ends and the days
-- that (3) leaves out.
--
-- Indexes: daily_rollup_unique_bucket (org, day, …) and rollup_unique_bucket
-- (org, hour, …) for the rollups, event_org_received for the tail.
--
-- The watermarks are arguments (see tollgate_dashboard_watermarks) so that the
-- planner sees their values: the tail after the aggregation watermark is then
-- found through event_org_received, not by reading the org's whole range.
DROP FUNCTION IF EXISTS tollgate_dashboard_usage(
    bigint, bigint, timestamptz, timestamptz, timestamptz, timestamptz);
DROP FUNCTION IF EXISTS tollgate_dashboard_usage(
    bigint, bigint, timestamptz, timestamptz, timestamptz, timestamptz, boolean, text,
    timestamptz[]);
CREATE OR REPLACE FUNCTION tollgate_dashboard_usage(
    p_org bigint, p_team bigint, p_user bigint, p_model text, p_lo timestamptz, p_hi timestamptz,
    p_aggregated timestamptz, p_pruned timestamptz,
    p_days boolean, p_tz text, p_cuts timestamptz[])
RETURNS TABLE (bucket timestamptz, team_id bigint, user_id bigint, model text, requests bigint,
               errors bigint, unpriced bigint, cost numeric)
LANGUAGE sql STABLE AS $$
    -- [days_lo, days_hi): the whole local days in [p_lo, p_hi), or nothing.
    WITH whole AS (
        SELECT CASE WHEN d.period_start = p_lo THEN p_lo ELSE d.period_end END AS lo,
               tollgate_local_trunc('day', p_hi, p_tz) AS hi
        FROM tollgate_period_bounds('day', p_tz, p_lo) d
    ),
    span AS MATERIALIZED (
        SELECT CASE WHEN served THEN w.lo ELSE p_hi END AS days_lo,
               CASE WHEN served THEN w.hi ELSE p_hi END AS days_hi
        FROM whole w
        CROSS JOIN LATERAL (SELECT p_days AND w.lo < w.hi AND EXISTS (
            SELECT 1 FROM tracking_dailyrollupzone z
            WHERE z.org_id = p_org AND z.time_zone = p_tz) AS served) x
    ),
    -- Whole days read hour by hour all the same: (3) above.
    hourly_days AS MATERIALIZED (
        SELECT DISTINCT d.period_start AS day, d.period_end AS day_end
        FROM unnest(p_cuts) c CROSS JOIN LATERAL tollgate_period_bounds('day', p_tz, c) d
        WHERE d.period_start <> c
    ),
    hour_ranges AS (
        SELECT p_lo AS lo, s.days_lo AS hi FROM span s
        UNION ALL
        SELECT s.days_hi, p_hi FROM span s
        UNION ALL
        SELECT d.day, d.day_end
        FROM hourly_days d, span s
        WHERE d.day >= s.days_lo AND d.day < s.days_hi
    )
    SELECT d.day, d.team_id, d.user_id, d.model, d.requests, d.errors, d.unpriced_requests,
           d.cost_usd
    FROM tracking_dailyrollup d, span s
    WHERE d.org_id = p_org AND d.day >= s.days_lo AND d.day < s.days_hi
      AND d.day NOT IN (SELECT day FROM hourly_days)
      AND (p_team IS NULL OR d.team_id = p_team)
      AND (p_user IS NULL OR d.user_id = p_user)
      AND (p_model IS NULL OR d.model = p_model)
    UNION ALL
    -- Per range, an index range scan of the hourly rollups. OFFSET 0 keeps
    -- the subquery from being pulled up into a join, which the planner
    -- (not knowing how narrow the ranges are) ran as a scan of all the
    -- org's hourly rows, filtered afterwards.
    SELECT r.hour, r.team_id, r.user_id, r.model, r.requests, r.errors, r.unpriced_requests,
           r.cost_usd
    FROM hour_ranges x
    CROSS JOIN LATERAL (
        SELECT r.* FROM tracking_hourlyrollup r
        WHERE r.org_id = p_org AND r.hour >= x.lo AND r.hour < x.hi
          AND (p_team IS NULL OR r.team_id = p_team)
          AND (p_user IS NULL OR r.user_id = p_user)
          AND (p_model IS NULL OR r.model = p_model)
        OFFSET 0) r
    UNION ALL
    SELECT date_trunc('hour', e.started_at, 'UTC'), e.team_id, e.user_id, e.model, count(*),
           count(*) FILTER (WHERE e.status = 'error'), count(*) FILTER (WHERE NOT e.priced),
           sum(e.cost_usd)
    FROM tracking_requestevent e
    WHERE e.org_id = p_org AND e.received_at > p_aggregated
      AND e.started_at >= greatest(p_lo, p_pruned) AND e.started_at < p_hi
      AND (p_team IS NULL OR e.team_id = p_team)
      AND (p_user IS NULL OR e.user_id = p_user)
      AND (p_model IS NULL OR e.model = p_model)
    GROUP BY 1, 2, 3, 4
$$;

-- aggregate_usage's watermark (every event received up to it is in the
-- rollups) and prune_events' (raw events before it are gone).
CREATE OR REPLACE FUNCTION tollgate_dashboard_watermarks(
    OUT aggregated timestamptz, OUT pruned timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT coalesce((SELECT watermark FROM tracking_aggregationstate
                     WHERE name = 'aggregate_usage'), '-infinity'),
           coalesce((SELECT watermark FROM tracking_aggregationstate
                     WHERE name = 'prune_events'), '-infinity')
$$;

-- The team and end user a dashboard is narrowed to, by slug and external
-- id; `missing` names the filter the org does not have ('team', 'user'), or
-- 'tag' for a tag filter's name p_tag that the org does not report on
-- (Organization.report_tags: only those names have tag rollups).
DROP FUNCTION IF EXISTS tollgate_dashboard_subjects(bigint, text, text);
CREATE OR REPLACE FUNCTION tollgate_dashboard_subjects(p_org bigint, p_team text, p_user text,
    p_tag text, OUT team_id bigint, OUT user_id bigint, OUT missing text)
LANGUAGE plpgsql STABLE AS $$
BEGIN
    IF p_team IS NOT NULL THEN
        SELECT t.id INTO team_id FROM budgets_team t WHERE t.org_id = p_org AND t.slug = p_team;
        IF team_id IS NULL THEN
            missing := 'team';
            RETURN;
        END IF;
    END IF;
    IF p_user IS NOT NULL THEN
        SELECT u.id INTO user_id FROM budgets_enduser u
        WHERE u.org_id = p_org AND u.external_id = p_user;
        IF user_id IS NULL THEN
            missing := 'user';
            RETURN;
        END IF;
    END IF;
    IF p_tag IS NOT NULL AND NOT EXISTS (SELECT 1 FROM budgets_organization o
                                         WHERE o.id = p_org AND p_tag = ANY(o.report_tags)) THEN
        missing := 'tag';
    END IF;
END $$;

-- Where one reported tag name's usage comes from (tollgate_tag_usage):
-- tail_after, where its raw tail starts (the aggregation watermark once the
-- name is built, else '-infinity'), and tags_from, the first hour whose
-- events' tags are known (before it the hourly rollups count under no value).
-- Values read before the statement that passes them on, for its index ranges.
CREATE OR REPLACE FUNCTION tollgate_dashboard_tag_state(p_org bigint, p_tag text,
    OUT tail_after timestamptz, OUT tags_from timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN x.complete_from IS NOT NULL THEN w.aggregated ELSE '-infinity' END,
           coalesce(x.complete_from, w.pruned)
    FROM tollgate_dashboard_watermarks() w
    LEFT JOIN tracking_tagrollupbuild x ON x.org_id = p_org AND x.name = p_tag
$$;

-- Usage under a tag filter, shaped like tollgate_dashboard_usage (hourly
-- buckets, no end user): the hours of [p_lo, p_hi) of the events that carry
-- p_tag = p_value (narrowed to a team and model), from tollgate_tag_usage,
-- the rule of GET /v1/usage?group_by=tag:NAME: the tag rollups plus the raw
-- tail. Hours before the name's tags_from have no tags left and count
-- nowhere here.
CREATE OR REPLACE FUNCTION tollgate_dashboard_tag_usage(
    p_org bigint, p_team bigint, p_model text, p_tag text, p_value text,
    p_lo timestamptz, p_hi timestamptz, p_tail_after timestamptz)
RETURNS TABLE (bucket timestamptz, team_id bigint, user_id bigint, model text, requests bigint,
               errors bigint, unpriced bigint, cost numeric)
LANGUAGE sql STABLE AS $$
    SELECT u.hour, u.team_id, NULL::bigint, u.model, sum(u.requests)::bigint,
           sum(u.errors)::bigint, sum(u.unpriced_requests)::bigint, sum(u.cost_usd)
    FROM tollgate_tag_usage(p_org, p_tag, p_team, p_lo, p_hi, p_tail_after) u
    WHERE u.value = p_value AND (p_model IS NULL OR u.model = p_model)
    GROUP BY u.hour, u.team_id, u.model
$$;

-- The budgets panel: the org's budgets as GET /v1/budgets shows them, those
-- that count the selected spend only, most used first. With a team filter:
-- the org's budgets (they count every request), the team's, and those of
-- API keys limited to that team (their requests are the team's). With a
-- user filter: the org's and that user's. With both: the org's, the team's,
-- its keys' and the user's. With a tag filter (p_tag, name=value): the
-- org's and the tag budgets of that tag, beside those of the other filters.
-- A model filter narrows nothing here: a model-filtered budget counts a
-- family of models, not one. Order: used % (spent and held over the limit)
-- descending, a zero limit with use first, unused ones last; ties by scope
-- and subject (the page sorts live budgets the same way, dashboard.js).
DROP FUNCTION IF EXISTS tollgate_dashboard_budgets(bigint, timestamptz, bigint, bigint);
CREATE OR REPLACE FUNCTION tollgate_dashboard_budgets(
    p_org bigint, p_at timestamptz, p_team bigint, p_user bigint, p_tag text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(x.b ORDER BY x.used DESC, x.n), '[]')
    FROM (SELECT e.b, e.n,
                 CASE WHEN (e.b->>'limit_usd')::numeric > 0
                      THEN ((e.b->>'spent_usd')::numeric + (e.b->>'reserved_usd')::numeric)
                           / (e.b->>'limit_usd')::numeric
                      WHEN (e.b->>'spent_usd')::numeric + (e.b->>'reserved_usd')::numeric > 0
                      THEN 'Infinity'::numeric
                      ELSE 0 END AS used
          FROM jsonb_array_elements(tollgate_list_budgets(p_org, p_at)) WITH ORDINALITY e(b, n)
          WHERE (p_team IS NULL AND p_user IS NULL AND p_tag IS NULL)
             OR e.b->>'scope' = 'org'
             OR (e.b->>'scope' = 'tag' AND e.b->>'id' = p_tag)
             OR (e.b->>'scope' = 'team' AND e.b->>'id' = (SELECT t.slug FROM budgets_team t
                                                          WHERE t.id = p_team))
             OR (e.b->>'scope' = 'key' AND p_team IS NOT NULL
                 AND e.b->>'id' IN (SELECT k.lookup_id FROM budgets_apikey k
                                    WHERE k.org_id = p_org AND k.team_id = p_team))
             OR (e.b->>'scope' = 'user' AND e.b->>'id' = (SELECT u.external_id
                                                          FROM budgets_enduser u
                                                          WHERE u.id = p_user))) x
$$;

-- Holds in flight: the active holds of an org (narrowed to a team, end user,
-- model and tag p_tag = p_tag_value like the rest of the page: a hold keeps
-- the tags of its request) that have not expired, their count,
-- what they hold now (tollgate_hold_left: less partial settlements) and the
-- five largest and five newest. The summary carries it, and the page
-- re-reads it on its own every few seconds (GET /v1/dashboard/holds): holds
-- come and go in seconds, and the hold path sends nothing for the page.
-- Index reservation_active_expiry (partial: active holds only, by expiry),
-- so closed holds are never read.
DROP FUNCTION IF EXISTS tollgate_dashboard_holds(bigint, bigint, bigint, text, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_dashboard_holds(
    p_org bigint, p_team bigint, p_user bigint, p_model text, p_tag text, p_tag_value text,
    p_at timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    WITH active AS MATERIALIZED (
        SELECT r.id, r.created_at, r.expires_at, r.team_id, r.user_id, r.model,
               tollgate_hold_left(r.amount, r.settled) AS held
        FROM budgets_reservation r
        WHERE r.status = 'active' AND r.expires_at > coalesce(p_at, now())
          AND r.org_id = p_org
          AND (p_team IS NULL OR r.team_id = p_team)
          AND (p_user IS NULL OR r.user_id = p_user)
          AND (p_model IS NULL OR r.model = p_model)
          AND (p_tag IS NULL OR r.tags @> jsonb_build_object(p_tag, p_tag_value))
    ),
    shown AS (
        SELECT a.id, a.held, a.created_at,
               jsonb_build_object('id', a.id, 'held_usd', trim_scale(a.held)::text,
                   'team', t.slug, 'user', u.external_id, 'model', nullif(a.model, ''),
                   'created_at', tollgate_iso(a.created_at),
                   'expires_at', tollgate_iso(a.expires_at)) AS j
        FROM (SELECT * FROM (SELECT * FROM active ORDER BY held DESC, id LIMIT 5) l
              UNION
              SELECT * FROM (SELECT * FROM active ORDER BY created_at DESC, id LIMIT 5) n) a
        LEFT JOIN budgets_team t ON t.id = a.team_id
        LEFT JOIN budgets_enduser u ON u.id = a.user_id
    )
    SELECT jsonb_build_object(
        'count', (SELECT count(*) FROM active),
        'held_usd', (SELECT trim_scale(coalesce(sum(held), 0))::text FROM active),
        'largest', (SELECT coalesce(jsonb_agg(s.j ORDER BY s.held DESC, s.id), '[]')
                    FROM (SELECT * FROM shown ORDER BY held DESC, id LIMIT 5) s),
        'newest', (SELECT coalesce(jsonb_agg(s.j ORDER BY s.created_at DESC, s.id), '[]')
                   FROM (SELECT * FROM shown ORDER BY created_at DESC, id LIMIT 5) s))
$$;

-- KPIs, budgets, holds in flight, recent requests (the last 50 of the
-- range) and the org's teams, narrowed to p_team, p_user (external id),
-- p_model and the tag p_tag = p_tag_value when set; p_from and p_to are a
-- custom range's local days. Under a tag filter the KPIs count the tag's
-- usage (tollgate_dashboard_tag_usage, from its 'tags_from' on), the
-- unpriced usage, recent requests and holds the raw rows that carry the tag.
-- Result: {"status": "ok", "summary": {…}}, or {"status": "not_found",
-- "field": "team" | "user" | "tag"} for a team or user the org does not
-- have, or a tag name it does not report on.
-- Indexes: event_org_started for the recent requests (newest first).
DROP FUNCTION IF EXISTS tollgate_dashboard_summary(
    bigint, text, text, date, date, text, text, text, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_dashboard_summary(
    p_org bigint, p_tz text, p_range text, p_from date, p_to date,
    p_team text, p_user text, p_model text, p_tag text, p_tag_value text, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql STABLE
-- Plans made for this call's values: a plan cached for "any watermark" would
-- read the org's whole range instead of the short tail after it. The
-- aggregations over a month of rollups (~100k rows at 10M events a week)
-- need more than the default 4 MB to hash in memory instead of sorting on disk.
SET plan_cache_mode = force_custom_plan
SET work_mem = '32MB' AS $$
DECLARE
    v_at timestamptz := coalesce(p_at, now());
    v_team bigint;
    v_user bigint;
    v_missing text;
    b record;
    w record;
    v_lo1 timestamptz;
    v_hi1 timestamptz;
    v_lo2 timestamptz;
    v_hi2 timestamptz;
    v_summary jsonb;
    v_tag jsonb := CASE WHEN p_tag IS NOT NULL THEN jsonb_build_object(p_tag, p_tag_value) END;
    v_tagged record;
BEGIN
    SELECT s.team_id, s.user_id, s.missing INTO v_team, v_user, v_missing
    FROM tollgate_dashboard_subjects(p_org, p_team, p_user, p_tag) s;
    IF v_missing IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'not_found', 'field', v_missing);
    END IF;
    SELECT * INTO v_tagged FROM tollgate_dashboard_tag_state(p_org, p_tag);
    SELECT * INTO b FROM tollgate_dashboard_bounds(p_range, p_tz, v_at, p_from, p_to);
    IF b.range_from IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'unknown range ' || p_range;
    END IF;
    SELECT * INTO w FROM tollgate_dashboard_watermarks();
    -- What the KPIs read: the range, and the month and trailing week up to
    -- now. One span when they meet; two when the range ended earlier (last
    -- month, a custom range), so that the time between is not read. Whole
    -- UTC hours: an hour counts in the local day it starts in.
    v_lo1 := date_trunc('hour', b.range_from, 'UTC');
    v_hi1 := date_trunc('hour', b.range_to - interval '1 microsecond', 'UTC') + interval '1 hour';
    v_lo2 := date_trunc('hour', least(b.month, b.week), 'UTC');
    v_hi2 := b.hi;
    IF v_lo2 <= v_hi1 AND v_lo1 <= v_hi2 THEN
        v_lo1 := least(v_lo1, v_lo2);
        v_hi1 := greatest(v_hi1, v_hi2);
        v_lo2 := v_hi2;
    END IF;

    -- Hours and whole local days: the KPIs below filter by day starts
    -- (range, today, month) and by the two times passed as cuts (the
    -- trailing week and the 24h range start at an hour), so that a day row
    -- is never split.
    WITH hourly AS (
        SELECT u.bucket AS hour, sum(u.requests) AS requests, sum(u.errors) AS errors,
               sum(u.unpriced) AS unpriced, sum(u.cost) AS cost
        FROM (SELECT * FROM tollgate_dashboard_usage(
                  p_org, v_team, v_user, p_model, v_lo1, v_hi1, w.aggregated, w.pruned,
                  true, p_tz, ARRAY[b.week, b.range_from, b.range_to])
              WHERE p_tag IS NULL
              UNION ALL
              SELECT * FROM tollgate_dashboard_usage(
                  p_org, v_team, v_user, p_model, v_lo2, v_hi2, w.aggregated, w.pruned,
                  true, p_tz, ARRAY[b.week])
              WHERE p_tag IS NULL
              UNION ALL
              SELECT * FROM tollgate_dashboard_tag_usage(
                  p_org, v_team, p_model, p_tag, p_tag_value, v_lo1, v_hi1,
                  v_tagged.tail_after)
              WHERE p_tag IS NOT NULL
              UNION ALL
              SELECT * FROM tollgate_dashboard_tag_usage(
                  p_org, v_team, p_model, p_tag, p_tag_value, v_lo2, v_hi2,
                  v_tagged.tail_after)
              WHERE p_tag IS NOT NULL) u
        GROUP BY u.bucket
    ),
    kpis AS (
        SELECT coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.range_from
                                              AND h.hour < b.range_to), 0) AS spend,
               coalesce(sum(h.requests) FILTER (WHERE h.hour >= b.range_from
                                                  AND h.hour < b.range_to), 0) AS requests,
               coalesce(sum(h.errors) FILTER (WHERE h.hour >= b.range_from
                                                AND h.hour < b.range_to), 0) AS errors,
               coalesce(sum(h.unpriced) FILTER (WHERE h.hour >= b.range_from
                                                  AND h.hour < b.range_to), 0) AS unpriced,
               coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.today), 0) AS today,
               coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.month), 0) AS mtd,
               coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.week), 0) AS week
        FROM hourly h
    ),
    -- Spend of models with no price in the range (charged at a hold or a
    -- fallback rate, or 0 under the org's "zero" policy) and their names, from
    -- the raw events: the rollups keep no unpriced cost. Index event_unpriced
    -- (partial: only unpriced events, few), so the org's priced events are
    -- never read. Raw events are kept longer than the longest range.
    unpriced AS (
        SELECT e.model, sum(e.cost_usd) AS cost, count(*) AS requests
        FROM tracking_requestevent e
        WHERE NOT e.priced AND e.org_id = p_org
          AND e.started_at >= b.range_from AND e.started_at < b.range_to
          AND (v_team IS NULL OR e.team_id = v_team)
          AND (v_user IS NULL OR e.user_id = v_user)
          AND (p_model IS NULL OR e.model = p_model)
          AND (v_tag IS NULL OR e.tags @> v_tag)
        GROUP BY e.model
    ),
    -- Under a tag filter, the newest hours of the range that hold its last
    -- 50 tagged requests (the tag usage's count per hour): the recent
    -- requests are read from those hours only, one index range scan each,
    -- rather than every event of the range newest first until 50 carry the
    -- tag (most of the range, for a rare tag).
    tagged_hours AS (
        SELECT x.hour
        FROM (SELECT h.hour, sum(h.requests) OVER (ORDER BY h.hour DESC) - h.requests AS newer
              FROM hourly h
              WHERE v_tag IS NOT NULL AND h.requests > 0
                AND h.hour >= date_trunc('hour', b.range_from, 'UTC')
                AND h.hour < b.range_to) x
        WHERE x.newer < 50
    ),
    recent_events AS (
        (SELECT e.* FROM tracking_requestevent e
         WHERE v_tag IS NULL AND e.org_id = p_org AND (v_team IS NULL OR e.team_id = v_team)
           AND (v_user IS NULL OR e.user_id = v_user)
           AND (p_model IS NULL OR e.model = p_model)
           AND e.started_at >= b.range_from AND e.started_at < b.range_to
         ORDER BY e.started_at DESC
         LIMIT 50)
        UNION ALL
        (SELECT e.* FROM tagged_hours th
         CROSS JOIN LATERAL (
             SELECT e.* FROM tracking_requestevent e
             WHERE e.org_id = p_org AND e.started_at >= th.hour
               AND e.started_at < th.hour + interval '1 hour'
               AND e.started_at >= b.range_from AND e.started_at < b.range_to
               AND e.tags @> v_tag AND (v_team IS NULL OR e.team_id = v_team)
               AND (p_model IS NULL OR e.model = p_model)
             OFFSET 0) e
         ORDER BY e.started_at DESC
         LIMIT 50)
    ),
    recent AS (
        SELECT e.event_id, e.started_at, t.slug AS team, u.external_id AS "user", e.model,
               e.input_tokens + e.cache_read_tokens + e.cache_write_tokens + e.output_tokens
                   + e.reasoning_tokens AS tokens,
               e.cost_usd, e.priced, e.status, e.latency_ms
        FROM recent_events e
        LEFT JOIN budgets_team t ON t.id = e.team_id
        LEFT JOIN budgets_enduser u ON u.id = e.user_id
    )
    SELECT jsonb_build_object(
        'org', (SELECT jsonb_build_object('slug', o.slug, 'name', o.name, 'time_zone', p_tz)
                FROM budgets_organization o WHERE o.id = p_org),
        'range', p_range,
        'team', p_team,
        'user', p_user,
        'model', p_model,
        'tag', p_tag || '=' || p_tag_value,
        -- What a tag filter can and cannot follow: its spend is known from
        -- tags_from on (before it, the events' tags were pruned), and top
        -- users (the tag rollups keep no end user) are not narrowed to it.
        'tag_filter', CASE WHEN p_tag IS NOT NULL THEN jsonb_build_object(
            'name', p_tag, 'value', p_tag_value,
            'tags_from', tollgate_iso(greatest(v_tagged.tags_from, b.range_from)),
            'not_followed', jsonb_build_array('top.users')) END,
        'granularity', CASE WHEN p_range = '24h' THEN 'hour' ELSE 'day' END,
        'from', tollgate_iso(b.range_from),
        'to', tollgate_iso(least(b.range_to, v_at)),
        -- The range's end when it ended before now (live spend is not its).
        'ends_at', CASE WHEN b.range_to <= b.hour THEN tollgate_iso(b.range_to) END,
        'from_date', b.first_day,
        'to_date', b.last_day,
        'generated_at', tollgate_iso(v_at),
        'aggregated_through', (SELECT tollgate_iso(watermark) FROM tracking_aggregationstate
                               WHERE name = 'aggregate_usage'),
        'kpis', (SELECT jsonb_build_object(
            'spend_usd', trim_scale(k.spend)::text,
            'today_usd', trim_scale(k.today)::text,
            'month_to_date_usd', trim_scale(k.mtd)::text,
            -- Month to date plus the trailing week's hourly rate until month end.
            'run_rate_usd_per_hour', trim_scale(round(k.week / 168, 10))::text,
            'projected_month_usd', trim_scale(round(k.mtd + k.week / 168
                * extract(epoch FROM b.month_end - v_at) / 3600, 2))::text,
            'today_starts_at', tollgate_iso(b.today),
            'month_starts_at', tollgate_iso(b.month),
            'month_ends_at', tollgate_iso(b.month_end),
            'requests', k.requests,
            'errors', k.errors,
            'error_rate_pct', CASE WHEN k.requests > 0
                                   THEN round(k.errors * 100.0 / k.requests, 2)::text END,
            'unpriced_requests', k.unpriced,
            'unpriced_usd', (SELECT trim_scale(coalesce(sum(p.cost), 0))::text FROM unpriced p),
            -- The names sent that no price entry resolves, costliest first (at most 20).
            'unpriced_models', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                                    'model', p.model, 'requests', p.requests,
                                    'cost_usd', trim_scale(p.cost)::text)
                                    ORDER BY p.cost DESC, p.model), '[]')
                                FROM (SELECT * FROM unpriced ORDER BY cost DESC, model
                                      LIMIT 20) p)) FROM kpis k),
        'budgets', tollgate_dashboard_budgets(p_org, v_at, v_team, v_user,
                                              p_tag || '=' || p_tag_value),
        'holds', tollgate_dashboard_holds(p_org, v_team, v_user, p_model, p_tag, p_tag_value,
                                          v_at),
        'recent', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', r.event_id, 'started_at', tollgate_iso(r.started_at),
                       'team', r.team, 'user', r."user", 'model', r.model, 'tokens', r.tokens,
                       'cost_usd', trim_scale(r.cost_usd)::text, 'priced', r.priced,
                       'status', r.status, 'latency_ms', r.latency_ms)
                       ORDER BY r.started_at DESC), '[]') FROM recent r),
        'teams', (SELECT coalesce(jsonb_agg(t.slug ORDER BY t.slug), '[]')
                  FROM budgets_team t WHERE t.org_id = p_org),
        -- Open (unacknowledged) alerts, newest first (index alert_open).
        -- The transactions this statement saw (xmin:xmax:xip,…): a page
        -- adds the live updates of the others to what this statement shows.
        'snapshot', pg_current_snapshot()::text,
        'alerts', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'id', a.id, 'kind', a.kind, 'scope', bu.scope,
                       'subject', CASE bu.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug
                                                WHEN 'user' THEN u.external_id
                                                WHEN 'key' THEN ak.lookup_id ELSE bu.tag END,
                       'period', bu.period, 'model', nullif(a.model, ''),
                       'created_at', tollgate_iso(a.created_at),
                       'limit_usd', trim_scale(a.limit_usd)::text,
                       'used_usd', trim_scale(a.used_usd)::text,
                       'delivery', a.delivery_status,
                       'message', CASE WHEN a.kind = 'unpriced_model'
                           THEN 'model ' || a.model || ' has no price: its first use was charged '
                                || tollgate_usd_for_people(a.used_usd)
                           ELSE bu.scope || ' budget ' || CASE bu.scope WHEN 'org' THEN o.slug
                                   WHEN 'team' THEN t.slug WHEN 'user' THEN u.external_id
                                   WHEN 'key' THEN ak.lookup_id ELSE bu.tag END
                               -- Which window: alerts of past periods stay open
                               -- until acknowledged, and read alike otherwise.
                               || ' (' || CASE bu.period WHEN 'total' THEN 'total'
                                    WHEN 'month' THEN to_char(aw.period_start AT TIME ZONE o.time_zone,
                                                              'FMMonth YYYY')
                                    ELSE bu.period || ' of ' || to_char(
                                        aw.period_start AT TIME ZONE o.time_zone, 'Mon FMDD') END
                               || CASE WHEN a.kind = 'projected'
                                    THEN ') is projected to exceed its limit of '
                                         || tollgate_usd_for_people(a.limit_usd)
                                         || coalesce(': ' || tollgate_usd_for_people(a.projected_usd)
                                                     || ' by the end', '')
                                         || ', running out '
                                         || to_char(a.runs_out_at AT TIME ZONE o.time_zone,
                                                    'Mon FMDD HH24:MI')
                                    ELSE ') reached its ' || a.kind || ' limit: '
                                         || tollgate_usd_for_people(a.used_usd) || ' of '
                                         || tollgate_usd_for_people(a.limit_usd) END END)
                       ORDER BY a.created_at DESC, a.id DESC), '[]')
                   FROM (SELECT * FROM budgets_alert
                         WHERE org_id = p_org AND acknowledged_at IS NULL
                         ORDER BY created_at DESC, id DESC LIMIT 20) a
                   JOIN budgets_organization o ON o.id = a.org_id
                   -- An unpriced model's alert has no budget: it is the
                   -- org's, shown like an org budget's (not on a team's page).
                   LEFT JOIN budgets_budget bu ON bu.id = a.budget_id
                   LEFT JOIN budgets_budgetwindow aw ON aw.id = a.window_id
                   LEFT JOIN budgets_team t ON t.id = bu.team_id
                   LEFT JOIN budgets_enduser u ON u.id = bu.user_id
                   LEFT JOIN budgets_apikey ak ON ak.id = bu.key_id
                   WHERE (p_team IS NULL OR t.slug = p_team)
                     AND (p_user IS NULL OR u.external_id = p_user)
                     AND (p_model IS NULL OR a.kind <> 'unpriced_model'
                          OR a.model = p_model)
                     -- A tag's page: its tag budgets' alerts (as a team's
                     -- page shows its team's).
                     AND (p_tag IS NULL OR bu.tag = p_tag || '=' || p_tag_value)))
    INTO v_summary;
    RETURN jsonb_build_object('status', 'ok', 'summary', v_summary);
END $$;

-- The chart (spend per bucket, stacked by team, or by model when p_team is
-- set; the six largest on their own, the rest as "other") and the top ten
-- teams, users and models of the range, narrowed like the summary (under a
-- tag filter, from the tag's usage, which keeps no end user: no top users).
-- Result: {"chart": {…}, "top": {…}}, or NULL for a team or user the org
-- does not have or a tag name it does not report on.
DROP FUNCTION IF EXISTS tollgate_dashboard_breakdown(
    bigint, text, text, date, date, text, text, text, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_dashboard_breakdown(
    p_org bigint, p_tz text, p_range text, p_from date, p_to date,
    p_team text, p_user text, p_model text, p_tag text, p_tag_value text, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_custom_plan
SET work_mem = '32MB'
-- Grouping tens of thousands of rollup rows: the planner, misled by the raw
-- tail's estimate, sorts them where hashing is faster
-- (docs/benchmarks/questions/dashboard-scale.md).
SET enable_sort = off AS $$
DECLARE
    v_team bigint;
    v_user bigint;
    v_missing text;
    b record;
    w record;
    v_hi timestamptz;
    v_result jsonb;
    v_tagged record;
BEGIN
    SELECT s.team_id, s.user_id, s.missing INTO v_team, v_user, v_missing
    FROM tollgate_dashboard_subjects(p_org, p_team, p_user, p_tag) s;
    IF v_missing IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT * INTO v_tagged FROM tollgate_dashboard_tag_state(p_org, p_tag);
    SELECT * INTO b
    FROM tollgate_dashboard_bounds(p_range, p_tz, coalesce(p_at, now()), p_from, p_to);
    SELECT * INTO w FROM tollgate_dashboard_watermarks();
    -- Whole UTC hours: an hour counts in the local day it starts in.
    v_hi := date_trunc('hour', b.range_to - interval '1 microsecond', 'UTC') + interval '1 hour';

    -- Every bucket, also those without spend: UTC hours, or local days
    -- stepped by local date (a day is not always 24 hours, nor starts at 00:00).
    WITH buckets AS (
        SELECT h AS bucket FROM generate_series(b.range_from, b.hour, interval '1 hour') h
        WHERE p_range = '24h'
        UNION ALL
        SELECT tollgate_local_day_start(d, p_tz)
        FROM generate_series(b.first_day::timestamp, b.last_day::timestamp, interval '1 day') d
        WHERE p_range <> '24h'
    ),
    -- The local day of every bucket the usage can have (the range's UTC
    -- hours, and the day starts, which are not hours where the offset is not
    -- whole hours), computed once per bucket instead of once per row: the
    -- rows of every team, user and model share their bucket's (~35k rows,
    -- ~750 buckets for 30 days of the demo data; per row it made the 30d
    -- breakdown ~2x slower).
    day_of AS MATERIALIZED (
        SELECT x.bucket, tollgate_local_trunc('day', x.bucket, p_tz) AS day
        FROM (SELECT h AS bucket
              FROM generate_series(date_trunc('hour', b.range_from, 'UTC'),
                                   v_hi - interval '1 hour', interval '1 hour') h
              UNION
              SELECT bk.bucket FROM buckets bk) x
        WHERE p_range <> '24h'
    ),
    -- The range's usage summed five ways in one pass (hashed grouping
    -- sets), into the small set that everything below reads. set_id is
    -- GROUPING(bucket, team_id, user_id, model), a bit set for each column
    -- that a set does not group by: 3 = (bucket, team), 6 = (bucket, model)
    -- for the chart; 11 = team, 13 = user, 14 = model for the top lists.
    sums AS MATERIALIZED (
        SELECT GROUPING(g.bucket, g.team_id, g.user_id, g.model) AS set_id,
               g.bucket, g.team_id, g.user_id, g.model,
               sum(g.requests) AS requests, sum(g.cost) AS cost
        FROM (SELECT CASE WHEN p_range = '24h' THEN u.bucket
                          ELSE coalesce(d.day, tollgate_local_trunc('day', u.bucket, p_tz))
                          END AS bucket,
                     u.team_id, u.user_id, u.model, u.requests, u.cost
              FROM (SELECT * FROM tollgate_dashboard_usage(
                        p_org, v_team, v_user, p_model, b.range_from, v_hi, w.aggregated,
                        w.pruned, p_range <> '24h', p_tz, '{}')
                    WHERE p_tag IS NULL
                    UNION ALL
                    SELECT * FROM tollgate_dashboard_tag_usage(
                        p_org, v_team, p_model, p_tag, p_tag_value, b.range_from, v_hi,
                        v_tagged.tail_after)
                    WHERE p_tag IS NOT NULL) u
              LEFT JOIN day_of d ON d.bucket = u.bucket) g
        GROUP BY GROUPING SETS ((g.bucket, g.team_id), (g.bucket, g.model), (g.team_id),
                                (g.user_id), (g.model))
    ),
    stacked AS (
        SELECT s.bucket, CASE WHEN v_team IS NULL THEN t.slug ELSE s.model END AS key, s.cost
        FROM sums s LEFT JOIN budgets_team t ON v_team IS NULL AND t.id = s.team_id
        WHERE s.set_id = CASE WHEN v_team IS NULL THEN 3 ELSE 6 END
    ),
    -- Each key ranked by its total, by window functions over the rows: a
    -- join back on the key (IS NOT DISTINCT FROM, for the teamless key)
    -- cannot hash, which made the breakdown of an org with many teams slower.
    keyed AS (
        SELECT s.bucket, s.key, s.cost, sum(s.cost) OVER (PARTITION BY s.key) AS total
        FROM stacked s
    ),
    ranked AS (
        SELECT k.bucket, k.key, k.cost,
               dense_rank() OVER (ORDER BY k.total DESC, k.key NULLS LAST) AS rank
        FROM keyed k
    ),
    stacks AS (
        SELECT CASE WHEN r.rank <= 6 THEN r.key END AS key, r.rank > 6 AS other,
               min(r.rank) AS rank, r.bucket, sum(r.cost) AS cost
        FROM ranked r
        GROUP BY 1, 2, 4
    ),
    series AS (
        SELECT k.key, k.other, k.rank,
               (SELECT sum(s.cost) FROM stacks s
                WHERE s.key IS NOT DISTINCT FROM k.key AND s.other = k.other) AS total,
               (SELECT jsonb_agg(trim_scale(coalesce(s.cost, 0))::text ORDER BY bk.bucket)
                FROM buckets bk
                LEFT JOIN stacks s ON s.bucket = bk.bucket
                 AND s.key IS NOT DISTINCT FROM k.key AND s.other = k.other) AS "values"
        FROM (SELECT DISTINCT key, other, rank FROM stacks) k
    ),
    top_teams AS (
        SELECT t.slug AS id, s.cost, s.requests
        FROM sums s LEFT JOIN budgets_team t ON t.id = s.team_id
        WHERE s.set_id = 11 ORDER BY 2 DESC, 1 LIMIT 10
    ),
    top_users AS (
        SELECT u.external_id AS id, s.cost, s.requests
        FROM sums s LEFT JOIN budgets_enduser u ON u.id = s.user_id
        WHERE s.set_id = 13 AND p_tag IS NULL ORDER BY 2 DESC, 1 LIMIT 10
    ),
    top_models AS (
        SELECT s.model AS id, s.cost, s.requests
        FROM sums s WHERE s.set_id = 14 ORDER BY 2 DESC, 1 LIMIT 10
    )
    SELECT jsonb_build_object(
        'chart', jsonb_build_object(
            'split_by', CASE WHEN v_team IS NULL THEN 'team' ELSE 'model' END,
            'buckets', (SELECT jsonb_agg(tollgate_iso(bk.bucket) ORDER BY bk.bucket)
                        FROM buckets bk),
            'series', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                           'key', s.key, 'other', s.other, 'total_usd', trim_scale(s.total)::text,
                           'values', s."values") ORDER BY s.rank), '[]') FROM series s)),
        'top', jsonb_build_object(
            'teams', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id,
                          'spend_usd', trim_scale(x.cost)::text, 'requests', x.requests)
                          ORDER BY x.cost DESC, x.id), '[]') FROM top_teams x),
            'users', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id,
                          'spend_usd', trim_scale(x.cost)::text, 'requests', x.requests)
                          ORDER BY x.cost DESC, x.id), '[]') FROM top_users x),
            'models', (SELECT coalesce(jsonb_agg(jsonb_build_object('id', x.id,
                           'spend_usd', trim_scale(x.cost)::text, 'requests', x.requests)
                           ORDER BY x.cost DESC, x.id), '[]') FROM top_models x)),
        -- What tollgate_dashboard_summary's 'snapshot' is for the KPIs, for
        -- the chart and top lists: the two statements run on two connections.
        'chart_snapshot', pg_current_snapshot()::text)
    INTO v_result;
    RETURN v_result;
END $$;
