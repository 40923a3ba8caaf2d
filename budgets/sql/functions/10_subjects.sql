-- Periods, subjects (teams and end users, registered on first sight) and the
-- budgets that apply to a request.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- The first instant of local date p_day (a midnight, as a timestamp) in zone
-- p_tz: its local midnight, except where the clock changes at midnight.
-- PostgreSQL reads a local time that happens twice as the later instant and
-- one that does not happen with the offset before the change. So p_day read
-- directly is right where midnight is skipped (America/Santiago 2026-09-06:
-- the day starts at 01:00) and wrong where it repeats (America/Havana
-- 2026-11-01: 05:00Z, an hour after the day began); the instant after the
-- day before's last microsecond is right where midnight repeats and wrong
-- where the hour before midnight is skipped (the day begins exactly at
-- 00:00 but 23:59:59 is read after it). The earlier of the two is the first
-- instant in every zone's rules from 2011 to 2037
-- (tests/budgets/test_period_bounds_zones.py checks every zone and change of
-- 2020-2030 against Python's zoneinfo). Only before 2011 did clocks fall back
-- across midnight from after it (America/Goose_Bay, 00:01 to 23:01): there the
-- later midnight is returned, and the minute before the change lies in the
-- day before's window.
-- STABLE (timestamptz + interval is), so that it inlines.
CREATE OR REPLACE FUNCTION tollgate_local_day_start(p_day timestamp, p_tz text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT least(p_day AT TIME ZONE p_tz,
                 (p_day - interval '1 microsecond') AT TIME ZONE p_tz + interval '1 microsecond')
$$;

-- The start of the local day, ISO week or month that contains p_at in zone
-- p_tz: the first instant of its first local date (tollgate_local_day_start).
-- What date_trunc(p_period, p_at, p_tz) is meant to give, but that reads the
-- truncated midnight back as PostgreSQL does, the later instant where
-- midnight happens twice (America/Havana 2026-11-01 04:30Z: 05:00Z, after
-- it). Every day key and day start is this one rule: budget windows, daily
-- rollups, the dashboard's days and GET /v1/usage's local days.
CREATE OR REPLACE FUNCTION tollgate_local_trunc(p_period text, p_at timestamptz, p_tz text)
RETURNS timestamptz LANGUAGE sql STABLE AS $$
    SELECT tollgate_local_day_start(date_trunc(p_period, p_at AT TIME ZONE p_tz), p_tz)
$$;

-- Start and end of the period that contains p_at, in the org's time zone.
-- Days, ISO weeks (Monday) and calendar months start at the first instant of
-- their first local date (tollgate_local_trunc), and a period ends where
-- the next one starts, so periods tile time.
-- The single window of a `total` budget spans 1970 to 9999 (finite, so that
-- Python can read it).
--
-- One row, declared as a table: PostgreSQL inlines a SQL function called in
-- FROM only when it returns a set. Declared with OUT parameters it ran as a
-- function call for every budget of every hold and event (~45 us each, two
-- per hold; tests/budgets/test_period_bounds_inlined.py).
DROP FUNCTION IF EXISTS tollgate_period_bounds(text, text, timestamptz);
CREATE FUNCTION tollgate_period_bounds(p_period text, p_tz text, p_at timestamptz)
RETURNS TABLE (period_start timestamptz, period_end timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN p_period = 'total' THEN '1970-01-01 00:00:00+00'::timestamptz
                ELSE tollgate_local_trunc(p_period, p_at, p_tz) END,
           CASE WHEN p_period = 'total' THEN '9999-12-31 00:00:00+00'::timestamptz
                ELSE tollgate_local_day_start(
                    date_trunc(p_period, p_at AT TIME ZONE p_tz) + ('1 ' || p_period)::interval,
                    p_tz) END
$$;

-- Id of a team (or end user) by the caller's identifier, registering it on
-- first sight when p_create. NULL when absent and not created.
CREATE OR REPLACE FUNCTION tollgate_team_id(p_org bigint, p_slug text, p_create boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_id bigint;
BEGIN
    IF p_slug IS NULL THEN RETURN NULL; END IF;
    SELECT id INTO v_id FROM budgets_team WHERE org_id = p_org AND slug = p_slug;
    IF v_id IS NOT NULL OR NOT p_create THEN RETURN v_id; END IF;
    INSERT INTO budgets_team (org_id, slug, name, created_at) VALUES (p_org, p_slug, '', now())
    ON CONFLICT (org_id, slug) DO NOTHING RETURNING id INTO v_id;
    IF v_id IS NULL THEN  -- a concurrent request registered it first; this statement sees it
        SELECT id INTO v_id FROM budgets_team WHERE org_id = p_org AND slug = p_slug;
    END IF;
    RETURN v_id;
END $$;

CREATE OR REPLACE FUNCTION tollgate_enduser_id(p_org bigint, p_external_id text, p_create boolean)
RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE v_id bigint;
BEGIN
    IF p_external_id IS NULL THEN RETURN NULL; END IF;
    SELECT id INTO v_id FROM budgets_enduser WHERE org_id = p_org AND external_id = p_external_id;
    IF v_id IS NOT NULL OR NOT p_create THEN RETURN v_id; END IF;
    INSERT INTO budgets_enduser (org_id, external_id, created_at) VALUES (p_org, p_external_id, now())
    ON CONFLICT (org_id, external_id) DO NOTHING RETURNING id INTO v_id;
    IF v_id IS NULL THEN
        SELECT id INTO v_id FROM budgets_enduser WHERE org_id = p_org AND external_id = p_external_id;
    END IF;
    RETURN v_id;
END $$;

-- The order budgets are listed in, and so which one a denial names: org,
-- team, user, key, tag; in a scope, unfiltered before model-filtered. Every
-- list orders by (tollgate_budget_rank, subject, model filter, period), a
-- total order: one hold and a batch name the same budget
-- (tests/budgets/test_batch_holds.py).
CREATE OR REPLACE FUNCTION tollgate_budget_rank(p_scope text, p_model_filter text)
RETURNS integer LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT 2 * CASE p_scope WHEN 'org' THEN 0 WHEN 'team' THEN 1 WHEN 'user' THEN 2
                            WHEN 'key' THEN 3 ELSE 4 END
           + CASE WHEN p_model_filter = '' THEN 0 ELSE 1 END
$$;

-- Whether a model name matches one allow-list entry or model filter: the
-- exact name, or a family pattern ("claude-opus-*": a prefix ending in "*").
-- Entries are stored lower-cased (budgets/labels.py), the name is compared
-- lower-cased; no name (NULL) matches nothing. A plain expression, so that
-- it inlines where a budget lookup calls it.
CREATE OR REPLACE FUNCTION tollgate_model_matches(p_model text, p_entry text)
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(p_entry = lower(p_model)
                    OR (right(p_entry, 1) = '*' AND starts_with(lower(p_model), left(p_entry, -1))),
                    false)
$$;

-- A tags object ({"name": "value"}) as the texts tag budgets are named by
-- ('name=value', sorted; empty for no tags). One row, declared as a table so
-- that a query calling it in FROM inlines it; its result is then a column,
-- which tollgate_applicable may take and still inline (a subquery as an
-- argument would stop that).
CREATE OR REPLACE FUNCTION tollgate_tag_pairs(p_tags jsonb)
RETURNS TABLE (pairs text[]) LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(array_agg(t.key || '=' || t.value ORDER BY t.key), '{}')
    FROM jsonb_each_text(CASE WHEN jsonb_typeof(p_tags) = 'object' THEN p_tags
                              ELSE '{}' END) t
$$;

-- Every budget that applies to a request of (org, team, user, key, tags,
-- model), in no order, with its subject's name and its org's time zone.
-- p_key: the API key of the request (a key budget's subject is the key's
-- lookup id). p_tags: the request's tags as 'name=value' texts (a tag
-- budget's subject), NULL or empty for none. p_model: the model named, NULL
-- for none; a model-filtered budget applies only to a model it matches.
--
-- Each kind of budget is read by its own branch through its own index (the
-- org's through budget_unique_scope_period, a team's, user's or key's
-- through its foreign key's, tag budgets through the partial index
-- budget_org_tag, so that an org with thousands of them, one per customer,
-- reads only those of the request's tags), and each subject's name comes
-- from its row by primary key. One condition with ORs across the subjects
-- cannot use an index: that read every budget of the org for every request
-- (docs/benchmarks/six-budgets.md).
CREATE OR REPLACE FUNCTION tollgate_subject_budgets(
    p_org bigint, p_team bigint, p_user bigint, p_key bigint, p_tags text[], p_model text)
RETURNS TABLE (budget_id bigint, scope text, subject text, period text, limit_usd numeric,
               soft_limit_pct smallint, enforce boolean, model_filter text, time_zone text)
LANGUAGE sql STABLE AS $$
    SELECT b.id, b.scope, coalesce(b.subject, o.slug), b.period, b.limit_usd,
           b.soft_limit_pct::smallint, b.enforce, b.model_filter, o.time_zone
    FROM budgets_organization o
    CROSS JOIN LATERAL (
          SELECT bb.id, bb.scope, NULL::text AS subject, bb.model_filter, bb.period,
                 bb.limit_usd, bb.soft_limit_pct, bb.enforce
          FROM budgets_budget bb
          WHERE bb.org_id = o.id AND bb.scope = 'org'
          UNION ALL
          SELECT bb.id, bb.scope, t.slug, bb.model_filter, bb.period,
                 bb.limit_usd, bb.soft_limit_pct, bb.enforce
          FROM budgets_team t JOIN budgets_budget bb ON bb.team_id = t.id
          WHERE t.id = p_team AND bb.org_id = o.id
          UNION ALL
          SELECT bb.id, bb.scope, u.external_id, bb.model_filter, bb.period,
                 bb.limit_usd, bb.soft_limit_pct, bb.enforce
          FROM budgets_enduser u JOIN budgets_budget bb ON bb.user_id = u.id
          WHERE u.id = p_user AND bb.org_id = o.id
          UNION ALL
          SELECT bb.id, bb.scope, k.lookup_id, bb.model_filter, bb.period,
                 bb.limit_usd, bb.soft_limit_pct, bb.enforce
          FROM budgets_apikey k JOIN budgets_budget bb ON bb.key_id = k.id
          WHERE k.id = p_key AND bb.org_id = o.id
          UNION ALL
          SELECT bb.id, bb.scope, bb.tag, bb.model_filter, bb.period,
                 bb.limit_usd, bb.soft_limit_pct, bb.enforce
          FROM budgets_budget bb
          WHERE bb.org_id = o.id AND bb.scope = 'tag' AND bb.tag = ANY(p_tags)) b
    WHERE o.id = p_org AND (b.model_filter = '' OR tollgate_model_matches(p_model, b.model_filter))
$$;

-- Every budget that applies to a request (tollgate_subject_budgets) at
-- p_at, with the bounds of its current period and the window row for that
-- period when it exists, in listing order. Periods are read in the org's
-- time zone as its row says at this statement, never as a caller remembers
-- it: a change of zone (tollgate_change_time_zone) applies to every
-- process's next statement.
DROP FUNCTION IF EXISTS tollgate_applicable(bigint, bigint, bigint, timestamptz, bigint);
CREATE OR REPLACE FUNCTION tollgate_applicable(
    p_org bigint, p_team bigint, p_user bigint, p_at timestamptz, p_key bigint,
    p_tags text[], p_model text)
RETURNS TABLE (budget_id bigint, scope text, subject text, period text, limit_usd numeric,
               soft_limit_pct smallint, enforce boolean, period_start timestamptz,
               period_end timestamptz, window_id bigint, spent numeric, reserved numeric,
               model_filter text)
LANGUAGE sql STABLE AS $$
    SELECT b.budget_id, b.scope, b.subject, b.period, b.limit_usd, b.soft_limit_pct, b.enforce,
           pb.period_start, pb.period_end, w.id, coalesce(w.spent, 0), coalesce(w.reserved, 0),
           b.model_filter
    FROM tollgate_subject_budgets(p_org, p_team, p_user, p_key, p_tags, p_model) b
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, b.time_zone, p_at) pb
    LEFT JOIN budgets_budgetwindow w
           ON w.budget_id = b.budget_id AND w.period_start = pb.period_start
    ORDER BY tollgate_budget_rank(b.scope, b.model_filter), 3, b.model_filter, b.period
$$;

-- Create the windows of these (budget, period) pairs that do not exist yet:
-- the first use of a period, by a hold or an event. In (budget, period)
-- order, the one order of the lock order (50_holds.sql): a concurrent
-- transaction creating the same windows in another order would wait for this
-- one while it waits. ON CONFLICT waits for a concurrent creation of the
-- same window, then skips it.
CREATE OR REPLACE FUNCTION tollgate_create_windows(
    p_budget_ids bigint[], p_starts timestamptz[], p_ends timestamptz[])
RETURNS void LANGUAGE sql AS $$
    INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)
    SELECT DISTINCT w.budget_id, w.period_start, w.period_end, 0, 0
    FROM unnest(p_budget_ids, p_starts, p_ends) AS w(budget_id, period_start, period_end)
    ORDER BY w.budget_id, w.period_start
    ON CONFLICT (budget_id, period_start) DO NOTHING
$$;
