-- Budgets as the API shows them, and managing them (PUT/DELETE /v1/budgets).
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- One budget as the API shows it (money as text: JSON numbers would lose
-- precision; "model": its model filter, null for every model), written as
-- JSON text in two parts: what a hold leaves as it is (the head, an object
-- left open) and what a hold changes (the tail, which closes it). A batch
-- of holds (tollgate_decide_many) writes each window's head once and a tail
-- per item, and joins texts instead of building jsonb values: building them
-- was 40% of a six-budget hold's cost (docs/benchmarks/six-budgets.md).
-- tollgate_budget_json is the two as jsonb, for every other reader.
-- STABLE, not IMMUTABLE (to_char and json_build_object are STABLE): the
-- planner inlines a SQL function only when its declared volatility covers
-- its body, and a call that is not inlined cost ~30 us instead of ~10.
CREATE OR REPLACE FUNCTION tollgate_budget_json_head(
    p_scope text, p_subject text, p_model text, p_period text, p_limit numeric, p_soft smallint,
    p_enforce boolean, p_spent numeric, p_period_end timestamptz)
RETURNS text LANGUAGE sql STABLE AS $$
    -- The last member is a boolean: rtrim takes exactly the closing brace.
    SELECT rtrim(json_build_object(
        'scope', p_scope, 'id', p_subject, 'model', nullif(p_model, ''), 'period', p_period,
        'limit_usd', trim_scale(p_limit)::text,
        'spent_usd', trim_scale(p_spent)::text,
        'soft_limit_pct', p_soft,
        'resets_at', CASE WHEN p_period = 'total' THEN NULL
                          ELSE to_char(p_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
        'enforce', p_enforce)::text, '}')
$$;

-- Numbers printed as decimal text never need escaping.
CREATE OR REPLACE FUNCTION tollgate_budget_json_tail(
    p_limit numeric, p_spent numeric, p_reserved numeric)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT ', "reserved_usd" : "' || trim_scale(p_reserved)::text
        || '", "remaining_usd" : "'
        || trim_scale(greatest(p_limit - p_spent - p_reserved, 0))::text
        || '", "used_pct" : '
        || CASE WHEN p_limit > 0
                THEN '"' || round((p_spent + p_reserved) * 100 / p_limit, 1)::text || '"'
                ELSE 'null' END
        || '}'
$$;

DROP FUNCTION IF EXISTS tollgate_budget_json(
    text, text, text, numeric, smallint, boolean, numeric, numeric, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_budget_json(
    p_scope text, p_subject text, p_model text, p_period text, p_limit numeric, p_soft smallint,
    p_enforce boolean, p_spent numeric, p_reserved numeric, p_period_end timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT (tollgate_budget_json_head(p_scope, p_subject, p_model, p_period, p_limit, p_soft,
                                      p_enforce, p_spent, p_period_end)
            || tollgate_budget_json_tail(p_limit, p_spent, p_reserved))::jsonb
$$;

-- Whether a budget warns at `p_used` (spent + reserved + this request): it
-- reached its soft limit, or a zero limit has anything used.
CREATE OR REPLACE FUNCTION tollgate_warns(p_limit numeric, p_soft smallint, p_used numeric)
RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN p_limit > 0 THEN p_used * 100 >= p_soft * p_limit ELSE p_used > 0 END
$$;

-- The soft-limit warning of a budget that warns (tollgate_warns), as JSON
-- text.
CREATE OR REPLACE FUNCTION tollgate_warning_text(
    p_scope text, p_subject text, p_model text, p_period text, p_limit numeric,
    p_enforce boolean, p_used numeric)
RETURNS text LANGUAGE sql STABLE AS $$
    SELECT json_build_object('scope', p_scope, 'id', p_subject, 'model', nullif(p_model, ''),
        'period', p_period,
        'used_pct', CASE WHEN p_limit > 0 THEN round(p_used * 100 / p_limit, 1)::text END,
        'enforce', p_enforce)::text
$$;

-- The warnings of one budget at `p_used`: the warning, or none.
DROP FUNCTION IF EXISTS tollgate_warning(text, text, text, numeric, smallint, boolean, numeric);
CREATE OR REPLACE FUNCTION tollgate_warning(
    p_scope text, p_subject text, p_model text, p_period text, p_limit numeric, p_soft smallint,
    p_enforce boolean, p_used numeric)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE WHEN tollgate_warns(p_limit, p_soft, p_used)
                THEN jsonb_build_array(tollgate_warning_text(p_scope, p_subject, p_model,
                                           p_period, p_limit, p_enforce, p_used)::jsonb)
                ELSE '[]'::jsonb END
$$;

-- The budgets of one (org, team, user, key, tags, model) as the API shows
-- them (p_tags: 'name=value' texts).
DROP FUNCTION IF EXISTS tollgate_list_subject_budgets(bigint, bigint, bigint, timestamptz, bigint);
CREATE OR REPLACE FUNCTION tollgate_list_subject_budgets(
    p_org bigint, p_team bigint, p_user bigint, p_at timestamptz, p_key bigint,
    p_tags text[], p_model text)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(tollgate_budget_json(a.scope, a.subject, a.model_filter, a.period,
        a.limit_usd, a.soft_limit_pct, a.enforce, a.spent, a.reserved, a.period_end)), '[]')
    FROM tollgate_applicable(p_org, p_team, p_user, p_at, p_key, p_tags, p_model) a
$$;

-- Every budget of an org with its current window (zeros before first use)
-- and its forecast (25_forecasts.sql), or those the filters keep (NULL: no
-- filter): p_scope, the scope; p_team, a team's budgets (the team's slug);
-- p_tag, the tag budgets of a tag ('name=value') or of every value of a tag
-- name ('name'); p_model, the budgets of this model filter ('' for the
-- unfiltered ones).
DROP FUNCTION IF EXISTS tollgate_list_budgets(bigint, text, timestamptz);
DROP FUNCTION IF EXISTS tollgate_list_budgets(bigint, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_list_budgets(
    p_org bigint, p_at timestamptz, p_scope text DEFAULT NULL, p_team text DEFAULT NULL,
    p_tag text DEFAULT NULL, p_model text DEFAULT NULL)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(
        tollgate_budget_json(b.scope, s.subject, b.model_filter,
            b.period, b.limit_usd, b.soft_limit_pct::smallint, b.enforce,
            coalesce(w.spent, 0), coalesce(w.reserved, 0), pb.period_end)
        || tollgate_forecast_json(f, o.time_zone, coalesce(p_at, now()), b.period, pb.period_end,
                                  coalesce(w.spent, 0) + coalesce(w.reserved, 0), b.limit_usd)
        ORDER BY tollgate_budget_rank(b.scope, b.model_filter), s.subject, b.model_filter,
                 b.period), '[]')
    FROM budgets_budget b
    JOIN budgets_organization o ON o.id = b.org_id
    LEFT JOIN budgets_team t ON t.id = b.team_id
    LEFT JOIN budgets_enduser u ON u.id = b.user_id
    LEFT JOIN budgets_apikey k ON k.id = b.key_id
    CROSS JOIN LATERAL (SELECT CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug
                                            WHEN 'user' THEN u.external_id
                                            WHEN 'key' THEN k.lookup_id ELSE b.tag END
                               AS subject) s
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, o.time_zone, coalesce(p_at, now())) pb
    LEFT JOIN budgets_budgetwindow w ON w.budget_id = b.id AND w.period_start = pb.period_start
    LEFT JOIN budgets_budgetforecast f ON f.budget_id = b.id
    WHERE b.org_id = p_org
      AND (p_scope IS NULL OR b.scope = p_scope)
      AND (p_team IS NULL OR (b.scope = 'team' AND t.slug = p_team))
      AND (p_tag IS NULL
           OR (b.scope = 'tag' AND (b.tag = p_tag OR starts_with(b.tag, p_tag || '='))))
      AND (p_model IS NULL OR b.model_filter = p_model)
$$;

-- A budget created mid-period (or moved to another period) starts with the
-- spend already recorded for its scope in its current window, and with the
-- holds already open on its scope: otherwise a cap added late would let
-- through almost a whole extra limit. Creates the current window once; a
-- budget whose window exists (a changed limit) keeps it as it is.
--
-- Spent: the costs of the scope's events that started in the window, from
-- the raw events where they are kept and from the hourly rollups for the
-- hours whose raw events were pruned (an hour only partly in the window
-- counts whole there: more, never less). Holds: every active hold of the
-- scope taken since the window began gets this window added to its
-- window_ids and what it holds (tollgate_hold_left: its amount less what
-- partial settlements took) to the window's reserved, so that settling,
-- releasing or expiring it takes it back here too. A tag budget counts the
-- events and holds that carry its tag, a model-filtered one those of a
-- model it matches (a hold's model as the request named it). Locks those holds in id
-- order, then creates the window: the lock order of 50_holds.sql.
DROP FUNCTION IF EXISTS tollgate_seed_window(bigint, text, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_seed_window(p_budget bigint, p_at timestamptz)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    b record;
    v_start timestamptz;
    v_end timestamptz;
    v_pruned timestamptz;
    v_spent numeric;
    v_holds uuid[];
    v_reserved numeric;
    v_window bigint;
BEGIN
    SELECT bu.id, bu.org_id, bu.scope, bu.team_id, bu.user_id, bu.key_id, bu.period,
           o.time_zone, nullif(bu.model_filter, '') AS model_filter,
           CASE WHEN bu.scope = 'tag'
                THEN jsonb_build_object(split_part(bu.tag, '=', 1),
                                        substr(bu.tag, strpos(bu.tag, '=') + 1)) END AS tag
    INTO b
    FROM budgets_budget bu JOIN budgets_organization o ON o.id = bu.org_id
    WHERE bu.id = p_budget
    FOR KEY SHARE OF o;  -- the zone stays until this commits (tollgate_change_time_zone)
    SELECT pb.period_start, pb.period_end INTO v_start, v_end
    FROM tollgate_period_bounds(b.period, b.time_zone, p_at) pb;
    PERFORM 1 FROM budgets_budgetwindow WHERE budget_id = p_budget AND period_start = v_start;
    IF FOUND THEN
        RETURN;
    END IF;

    SELECT coalesce(max(watermark), '-infinity') INTO v_pruned
    FROM tracking_aggregationstate WHERE name = 'prune_events';
    SELECT coalesce(sum(e.cost_usd), 0) INTO v_spent
    FROM tracking_requestevent e
    WHERE e.org_id = b.org_id
      AND e.started_at >= greatest(v_start, v_pruned) AND e.started_at < v_end
      AND (b.scope = 'org' OR (b.scope = 'team' AND e.team_id = b.team_id)
           OR (b.scope = 'user' AND e.user_id = b.user_id)
           OR (b.scope = 'key' AND e.key_id = b.key_id)
           OR (b.scope = 'tag' AND e.tags @> b.tag))
      AND (b.model_filter IS NULL OR tollgate_model_matches(e.model, b.model_filter));
    -- Pruned hours: the hourly rollups, which keep no key and no tags; a key
    -- budget's from the key rollups (tracking_keyrollup, unique index
    -- key_rollup_unique_bucket); a tag budget counts the raw events still kept.
    SELECT v_spent + coalesce(sum(h.cost_usd), 0) INTO v_spent
    FROM tracking_hourlyrollup h
    WHERE h.org_id = b.org_id AND b.scope NOT IN ('key', 'tag')
      AND h.hour > v_start - interval '1 hour' AND h.hour < least(v_end, v_pruned)
      AND (b.scope = 'org' OR (b.scope = 'team' AND h.team_id = b.team_id)
           OR (b.scope = 'user' AND h.user_id = b.user_id))
      AND (b.model_filter IS NULL OR tollgate_model_matches(h.model, b.model_filter));
    SELECT v_spent + coalesce(sum(k.cost_usd), 0) INTO v_spent
    FROM tracking_keyrollup k
    WHERE b.scope = 'key' AND k.org_id = b.org_id AND k.key_id = b.key_id
      AND k.hour > v_start - interval '1 hour' AND k.hour < least(v_end, v_pruned)
      AND (b.model_filter IS NULL OR tollgate_model_matches(k.model, b.model_filter));

    SELECT array_agg(r.id ORDER BY r.id), coalesce(sum(tollgate_hold_left(r.amount, r.settled)), 0)
    INTO v_holds, v_reserved
    FROM (SELECT r.id, r.amount, r.settled FROM budgets_reservation r
          WHERE r.org_id = b.org_id AND r.status = 'active' AND r.created_at >= v_start
            AND (b.scope = 'org' OR (b.scope = 'team' AND r.team_id = b.team_id)
                 OR (b.scope = 'user' AND r.user_id = b.user_id)
                 OR (b.scope = 'key' AND r.key_id = b.key_id)
                 OR (b.scope = 'tag' AND r.tags @> b.tag))
            AND (b.model_filter IS NULL OR tollgate_model_matches(r.model, b.model_filter))
          ORDER BY r.id
          FOR UPDATE) r;

    INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)
    VALUES (p_budget, v_start, v_end, v_spent, v_reserved)
    ON CONFLICT (budget_id, period_start) DO NOTHING
    RETURNING id INTO v_window;
    IF v_window IS NOT NULL AND v_holds IS NOT NULL THEN
        UPDATE budgets_reservation SET window_ids = window_ids || v_window
        WHERE id = ANY(v_holds);
    END IF;
END $$;

-- The audit log (budgets_auditentry, append-only): one entry of a change made
-- with an API key, written by the function that makes the change, so that it
-- commits with it. The label names the key as it is now (lookup id, name).
CREATE OR REPLACE FUNCTION tollgate_audit(
    p_org bigint, p_key bigint, p_request_id text, p_client text,
    p_object_type text, p_object_id text, p_action text, p_old jsonb, p_new jsonb)
RETURNS void LANGUAGE sql AS $$
    INSERT INTO budgets_auditentry (org_id, at, actor_kind, actor_key_id, actor_label,
                                    object_type, object_id, action, old, new,
                                    request_id, client_addr)
    SELECT p_org, now(), 'key', p_key,
           coalesce((SELECT left('key ' || k.lookup_id
                                 || CASE WHEN k.name <> '' THEN ' (' || k.name || ')' ELSE '' END, 200)
                     FROM budgets_apikey k WHERE k.id = p_key), ''),
           p_object_type, left(p_object_id, 400), p_action, p_old, p_new,
           left(coalesce(p_request_id, ''), 64), p_client::inet
$$;

-- A budget's values as the audit log records them (budgets/audit.py's
-- budget_values writes the same keys for admin's changes; "model" only for a
-- model-filtered budget).
DROP FUNCTION IF EXISTS tollgate_budget_audit_values(text, text, text, numeric, integer, boolean);
CREATE OR REPLACE FUNCTION tollgate_budget_audit_values(
    p_scope text, p_subject text, p_model text, p_period text, p_limit numeric, p_soft integer,
    p_enforce boolean)
RETURNS jsonb LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('scope', p_scope, 'subject', p_subject, 'period', p_period,
        'limit_usd', trim_scale(p_limit)::text, 'soft_limit_pct', p_soft, 'enforce', p_enforce)
        || CASE WHEN p_model <> '' THEN jsonb_build_object('model', p_model) ELSE '{}' END
$$;

-- A budget's name in the audit log: its path in the API, with its model
-- filter as the query says it (budgets/audit.py's budget_address).
CREATE OR REPLACE FUNCTION tollgate_budget_address(
    p_scope text, p_subject text, p_model text, p_period text)
RETURNS text LANGUAGE sql IMMUTABLE AS $$
    SELECT p_scope || '/' || p_subject || '/' || p_period
           || CASE WHEN p_model <> '' THEN '?model=' || p_model ELSE '' END
$$;

-- Create or replace one budget (scope org: p_subject must be the org's slug;
-- scope tag: p_subject is 'name=value', validated by the caller; p_model:
-- its model filter, lower-cased by the caller, '' for none), and record the
-- change in the audit log (p_key: the admin key that made it; a PUT that
-- changes nothing records nothing).
DROP FUNCTION IF EXISTS tollgate_put_budget(bigint, boolean, text, text, text, numeric,
                                            smallint, boolean, timestamptz, bigint, text, text);
CREATE OR REPLACE FUNCTION tollgate_put_budget(
    p_org bigint, p_strict boolean, p_scope text, p_subject text, p_period text,
    p_limit numeric, p_soft smallint, p_enforce boolean, p_at timestamptz,
    p_key bigint, p_request_id text, p_client text, p_model text DEFAULT '')
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_team bigint;
    v_user bigint;
    v_key bigint;
    v_tag text := CASE WHEN p_scope = 'tag' THEN p_subject ELSE '' END;
    v_model text := coalesce(p_model, '');
    v_budget bigint;
    v_old jsonb;
    v_new jsonb := tollgate_budget_audit_values(p_scope, p_subject, v_model, p_period, p_limit,
                                                p_soft, p_enforce);
    v_address text := tollgate_budget_address(p_scope, p_subject, v_model, p_period);
    r record;
BEGIN
    IF p_scope = 'org' THEN
        PERFORM 1 FROM budgets_organization WHERE id = p_org AND slug = p_subject;
        IF NOT FOUND THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    ELSIF p_scope = 'team' THEN
        v_team := tollgate_team_id(p_org, p_subject, NOT p_strict);
        IF v_team IS NULL THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    ELSIF p_scope = 'user' THEN
        v_user := tollgate_enduser_id(p_org, p_subject, NOT p_strict);
        IF v_user IS NULL THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    ELSIF p_scope = 'key' THEN
        -- A key is never registered by a budget: it must exist (revoked or not).
        SELECT id INTO v_key FROM budgets_apikey WHERE org_id = p_org AND lookup_id = p_subject;
        IF v_key IS NULL THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    END IF;
    -- Insert, or lock the existing row and read its values before replacing
    -- them (an upsert cannot say what it overwrote). Looped: a budget deleted
    -- between the two statements is inserted on the next turn.
    LOOP
        INSERT INTO budgets_budget (org_id, scope, team_id, user_id, key_id, tag, model_filter,
                                    period, limit_usd, soft_limit_pct, enforce, created_at,
                                    updated_at)
        VALUES (p_org, p_scope, v_team, v_user, v_key, v_tag, v_model, p_period, p_limit, p_soft,
                p_enforce, now(), now())
        ON CONFLICT (org_id, scope, team_id, user_id, key_id, tag, model_filter, period)
        DO NOTHING
        RETURNING id INTO v_budget;
        EXIT WHEN v_budget IS NOT NULL;
        SELECT b.id, tollgate_budget_audit_values(p_scope, p_subject, v_model, p_period,
                                                  b.limit_usd, b.soft_limit_pct, b.enforce)
        INTO v_budget, v_old
        FROM budgets_budget b
        WHERE b.org_id = p_org AND b.scope = p_scope AND b.period = p_period
          AND b.team_id IS NOT DISTINCT FROM v_team AND b.user_id IS NOT DISTINCT FROM v_user
          AND b.key_id IS NOT DISTINCT FROM v_key AND b.tag = v_tag
          AND b.model_filter = v_model
        FOR UPDATE;
        IF v_budget IS NOT NULL THEN
            UPDATE budgets_budget
            SET limit_usd = p_limit, soft_limit_pct = p_soft, enforce = p_enforce,
                updated_at = now()
            WHERE id = v_budget;
            EXIT;
        END IF;
    END LOOP;
    IF v_old IS NULL THEN
        PERFORM tollgate_audit(p_org, p_key, p_request_id, p_client, 'budget', v_address,
                               'create', NULL, v_new);
    ELSIF v_old IS DISTINCT FROM v_new THEN
        PERFORM tollgate_audit(p_org, p_key, p_request_id, p_client, 'budget', v_address,
                               'update', v_old, v_new);
    END IF;
    PERFORM tollgate_seed_window(v_budget, coalesce(p_at, now()));
    -- A new limit moves the thresholds: judge the current window again (a
    -- raised limit re-arms them; a seeded or lowered one may cross).
    PERFORM tollgate_judge_alerts(tollgate_current_windows(p_org, v_budget, coalesce(p_at, now())));
    -- Read as a request of its subject and model would: a family pattern
    -- matches its own prefix ('claude-opus-*' matches 'claude-opus-').
    SELECT a.* INTO r
    FROM tollgate_applicable(p_org, v_team, v_user, coalesce(p_at, now()), v_key,
                             ARRAY[v_tag], nullif(rtrim(v_model, '*'), '')) a
    WHERE a.budget_id = v_budget;
    RETURN jsonb_build_object('status', 'ok', 'budget', tollgate_budget_json(r.scope, r.subject,
        r.model_filter, r.period, r.limit_usd, r.soft_limit_pct, r.enforce, r.spent, r.reserved,
        r.period_end));
END $$;

DROP FUNCTION IF EXISTS tollgate_delete_budget(bigint, text, text, text, bigint, text, text);
CREATE OR REPLACE FUNCTION tollgate_delete_budget(
    p_org bigint, p_scope text, p_subject text, p_period text,
    p_key bigint, p_request_id text, p_client text, p_model text DEFAULT '')
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_budget bigint;
    v_old jsonb;
    v_model text := coalesce(p_model, '');
BEGIN
    -- Locked first, so that no hold can open a new window for it in between.
    SELECT b.id, tollgate_budget_audit_values(p_scope, p_subject, v_model, p_period, b.limit_usd,
                                              b.soft_limit_pct, b.enforce)
    INTO v_budget, v_old
    FROM budgets_budget b
    JOIN budgets_organization o ON o.id = b.org_id
    WHERE b.org_id = p_org AND b.scope = p_scope AND b.period = p_period
      AND b.model_filter = v_model
      AND CASE p_scope
            WHEN 'org' THEN o.slug = p_subject
            WHEN 'team' THEN b.team_id = (SELECT id FROM budgets_team WHERE org_id = p_org AND slug = p_subject)
            WHEN 'user' THEN b.user_id = (SELECT id FROM budgets_enduser WHERE org_id = p_org AND external_id = p_subject)
            WHEN 'key' THEN b.key_id = (SELECT id FROM budgets_apikey WHERE org_id = p_org AND lookup_id = p_subject)
            ELSE b.tag = p_subject
          END
    FOR UPDATE OF b;
    IF v_budget IS NULL THEN
        RETURN jsonb_build_object('status', 'not_found');
    END IF;
    -- Django emulates on_delete=CASCADE in Python; the database's foreign key
    -- from the windows has no cascade, so they go first. Holds that still
    -- name these windows release into nothing, which is what they should do.
    DELETE FROM budgets_alertdeliveryattempt
    WHERE alert_id IN (SELECT id FROM budgets_alert WHERE budget_id = v_budget);
    DELETE FROM budgets_alert WHERE budget_id = v_budget;
    DELETE FROM budgets_budgetwindow WHERE budget_id = v_budget;
    DELETE FROM budgets_budgetforecast WHERE budget_id = v_budget;
    DELETE FROM budgets_budget WHERE id = v_budget;
    PERFORM tollgate_audit(p_org, p_key, p_request_id, p_client, 'budget',
                           tollgate_budget_address(p_scope, p_subject, v_model, p_period),
                           'delete', v_old, NULL);
    RETURN jsonb_build_object('status', 'deleted');
END $$;

-- Change an org's time zone, carrying each budget's current window into the
-- new zone's: the window row that contains p_at under the old zone takes the
-- bounds of the period that contains p_at under the new one, with its spend,
-- its holds (their window_ids keep pointing at it) and its alert flags. No
-- budget opens empty, and holds taken on it settle and release on it. Spend
-- before the old window began is not added where the new period starts
-- earlier (the budget counts what it counted).
--
-- Every process sees the change at its next statement: periods are read from
-- the org's row (tollgate_applicable), and window creation first takes a key
-- share lock on that row, which this function's FOR UPDATE excludes, so no
-- window of the old zone can be created behind it. Locks the org row, then
-- window rows by id. Where the new zone's period has a window already (only
-- a window made under an earlier zone can be one), the holds on it are
-- updated after the windows, against the order of 50_holds.sql: an event
-- settling such a hold at that instant may deadlock with the change, and
-- PostgreSQL then aborts one of them (a change of zone is rare; it can be
-- made again).
-- Result: [{"budget_id", "window_id", "from": [start, end], "to": [start, end]}].
CREATE OR REPLACE FUNCTION tollgate_change_time_zone(p_org bigint, p_tz text, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_old text;
    v_moved jsonb := '[]';
    r record;
BEGIN
    CREATE TEMP TABLE IF NOT EXISTS tollgate_tz_moves (
        budget_id bigint, window_id bigint, other_id bigint,
        old_start timestamptz, old_end timestamptz, new_start timestamptz, new_end timestamptz
    ) ON COMMIT DROP;
    SELECT time_zone INTO v_old FROM budgets_organization WHERE id = p_org FOR UPDATE;
    IF v_old IS NULL OR v_old = p_tz THEN
        RETURN v_moved;
    END IF;
    TRUNCATE tollgate_tz_moves;
    INSERT INTO tollgate_tz_moves
    SELECT b.id, w.id, other.id, w.period_start, w.period_end, nb.period_start, nb.period_end
    FROM budgets_budget b
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, v_old, p_at) ob
    JOIN budgets_budgetwindow w ON w.budget_id = b.id AND w.period_start = ob.period_start
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, p_tz, p_at) nb
    LEFT JOIN budgets_budgetwindow other
           ON other.budget_id = b.id AND other.period_start = nb.period_start AND other.id <> w.id
    WHERE b.org_id = p_org AND b.period <> 'total'
      AND (w.period_start, w.period_end) IS DISTINCT FROM (nb.period_start, nb.period_end);

    PERFORM 1 FROM budgets_budgetwindow
    WHERE id IN (SELECT window_id FROM tollgate_tz_moves
                 UNION ALL SELECT other_id FROM tollgate_tz_moves)
    ORDER BY id FOR UPDATE;

    -- A window the new zone's period has already: folded into the carried
    -- one (its spend, holds and alerts), then removed to free its start.
    FOR r IN SELECT * FROM tollgate_tz_moves WHERE other_id IS NOT NULL ORDER BY window_id LOOP
        UPDATE budgets_budgetwindow w
        SET spent = w.spent + o.spent, reserved = w.reserved + o.reserved,
            soft_alerted = w.soft_alerted OR o.soft_alerted,
            hard_alerted = w.hard_alerted OR o.hard_alerted
        FROM budgets_budgetwindow o
        WHERE w.id = r.window_id AND o.id = r.other_id;
        UPDATE budgets_reservation SET window_ids = array_replace(window_ids, r.other_id, r.window_id)
        WHERE status = 'active' AND window_ids @> ARRAY[r.other_id];
        UPDATE budgets_alert SET window_id = r.window_id WHERE window_id = r.other_id;
        DELETE FROM budgets_budgetwindow WHERE id = r.other_id;
    END LOOP;

    UPDATE budgets_budgetwindow w SET period_start = m.new_start, period_end = m.new_end
    FROM tollgate_tz_moves m WHERE w.id = m.window_id;
    UPDATE budgets_organization SET time_zone = p_tz WHERE id = p_org;

    SELECT coalesce(jsonb_agg(jsonb_build_object(
               'budget_id', m.budget_id, 'window_id', m.window_id,
               'from', jsonb_build_array(m.old_start, m.old_end),
               'to', jsonb_build_array(m.new_start, m.new_end)) ORDER BY m.window_id), '[]')
    INTO v_moved FROM tollgate_tz_moves m;
    RETURN v_moved;
END $$;
