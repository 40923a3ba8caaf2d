-- Holds: deciding and taking them (one implementation for one hold and for a
-- batch: tollgate_decide_many), releasing and expiring them.
--
-- Lock order, the same in every function that writes budget windows (here and
-- in 60_events.sql), so that none deadlocks with another: new teams (sorted),
-- new users (sorted), then events by id, reservations by id, the org row
-- (key share, only to create windows), missing windows (sorted by budget and
-- period), then window rows by id, then alerts (docs/sql.md). Settlements,
-- releases, extensions and the sweeper lock a hold before its windows.
--
-- A hold holds what is left of its amount: the amount less what events have
-- settled into it so far (partial settlements, tollgate_record_events), never
-- below zero (tollgate_hold_left). Whatever closes it takes exactly that back
-- from its windows.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- Every (item, applicable budget) pair of a batch of decisions (idx: the
-- item's position in p_items, from 1), with what orders an item's budgets
-- as tollgate_applicable lists them. The same budgets as tollgate_applicable
-- gives each item, but each budget's period and window are looked up once
-- per batch rather than once per item that it applies to (the org's budget
-- applies to all of them).
DROP FUNCTION IF EXISTS tollgate_batch_applicable(jsonb);
CREATE OR REPLACE FUNCTION tollgate_batch_applicable(p_items jsonb)
RETURNS TABLE (idx bigint, window_id bigint, budget_id bigint, period_start timestamptz,
               period_end timestamptz, rank integer, subject text, model_filter text,
               period text)
LANGUAGE sql STABLE AS $$
    WITH pairs AS (
        SELECT e.idx, b.budget_id, b.scope, b.subject, b.model_filter, b.period, b.time_zone,
               coalesce((e.i->>'at')::timestamptz, now()) AS at
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(i, idx)
        LEFT JOIN budgets_team t
               ON t.org_id = (e.i->>'org_id')::bigint AND t.slug = e.i->>'team'
        LEFT JOIN budgets_enduser u
               ON u.org_id = (e.i->>'org_id')::bigint AND u.external_id = e.i->>'user'
        CROSS JOIN LATERAL tollgate_tag_pairs(e.i->'tags') tg
        -- Joins, not subqueries as arguments: the planner inlines a
        -- set-returning SQL function only when its arguments hold no
        -- subqueries (measured: 380 us per item as a function call, a few
        -- us inlined).
        CROSS JOIN LATERAL tollgate_subject_budgets((e.i->>'org_id')::bigint, t.id, u.id,
                                                    (e.i->>'key_id')::bigint, tg.pairs,
                                                    e.i->>'model') b
    ), windows AS MATERIALIZED (
        SELECT d.budget_id, d.at, pb.period_start, pb.period_end, w.id AS window_id
        FROM (SELECT DISTINCT p.budget_id, p.period, p.time_zone, p.at FROM pairs p) d
        CROSS JOIN LATERAL tollgate_period_bounds(d.period, d.time_zone, d.at) pb
        LEFT JOIN budgets_budgetwindow w
               ON w.budget_id = d.budget_id AND w.period_start = pb.period_start
    )
    SELECT p.idx, w.window_id, p.budget_id, w.period_start, w.period_end,
           tollgate_budget_rank(p.scope, p.model_filter), p.subject, p.model_filter, p.period
    FROM pairs p
    JOIN windows w ON w.budget_id = p.budget_id AND w.at = p.at
$$;

-- Many holds in one transaction: the decisions of concurrent requests that
-- one server process collected while its previous call was running
-- (budgets/api.py, DecisionBatcher). A hot budget row is then locked and
-- committed once per batch instead of once per request, which is what caps a
-- shared (org) budget's throughput.
--
-- Set-wise: every item's subjects, amount and early refusals are read in
-- one statement, the budgets of every item in one more (each budget's
-- window once), the batch's windows are locked and read (with their
-- budgets) once, every item is decided in order in memory (each sees the
-- holds of the items before it; a denied item changes nothing), then one
-- statement writes the reservations and adds each window's summed holds,
-- and alerts are raised once for the windows that reached a threshold. Per
-- item the result is what tollgate_decide answers for a hold (the budgets of
-- a held item in window id order, described as they are after its hold;
-- those of a denied item from the blocking budget on, as they were), written
-- as JSON text (tollgate_budget_json_head). Only the lock and what follows
-- it hold the windows: everything that can be read before is.
--
-- Planned with random_page_cost = 1.1: its tables are small and hot, and at
-- the default (4, a disk's) the planner scanned a whole table of a few
-- hundred budgets for every item rather than read its index
-- (docs/benchmarks/six-budgets.md).
--
-- Deadlock freedom: everything a batch waits for is taken up front in one
-- global order: new teams (sorted), new users (sorted), missing windows
-- (sorted by budget and period), then every window lock (sorted by id) -
-- the same id order single decisions, releases and the sweeper use.
--
-- p_items: [{"org_id", "strict", "team", "user", "amount", "model",
--            "input_tokens", "max_output_tokens", "ttl_seconds", "at", "key_id",
--            "service_tier", "tags" ({"name": "value"} or null)}, ...]
-- ("at": the moment whose periods apply, null for now; tests set it).
-- Result: the tollgate_decide result of each item, in order, as JSON text
-- (an array): not cast to json, whose check parsed the whole answer again
-- (4.5% of a batch's PostgreSQL time); the caller parses it.
DROP FUNCTION IF EXISTS tollgate_decide_many(jsonb);  -- it answered jsonb before
CREATE OR REPLACE FUNCTION tollgate_decide_many(p_items jsonb)
RETURNS text LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan SET random_page_cost = 1.1 AS $$
DECLARE
    -- The batch's windows by slot (1..n in window id order), read under lock.
    w_id bigint[];
    w_scope text[];
    w_subject text[];
    w_model text[];         -- the budget's model filter ('' for none)
    w_period text[];
    w_limit numeric[];
    w_soft smallint[];
    w_enforce boolean[];
    w_head text[];          -- the JSON text of what the batch leaves as it is
    w_spent numeric[];
    w_reserved numeric[];   -- including the holds of the items decided so far
    w_added numeric[];      -- what this batch adds, for the one UPDATE
    w_alert boolean[];      -- reached a threshold: tollgate_raise_alerts looks
    w_holds_count boolean[]; -- the org judges alerts on spent + reserved
    -- Every (item, budget) pair, grouped by item (idx ascending), each
    -- item's in listing order: the item, the window and its slot; and each
    -- item's slots again in slot (= window id) order, in the same places.
    p_idx bigint[];
    p_window bigint[];
    p_slot integer[];
    p_sorted integer[];
    v_first integer := 1;   -- the current item's first pair
    v_last integer;         -- and its last
    v_windows bigint[];
    -- Each item, read before the lock (idx order): its subjects, what it
    -- asks, and the answer of an item refused before budgets are looked at.
    i_idx bigint[];
    i_org bigint[];
    i_team bigint[];
    i_user bigint[];
    i_key bigint[];
    i_model text[];
    i_tags jsonb[];
    i_ttl integer[];
    i_amount numeric[];
    i_refused text[];
    -- The reservations to insert, one element per held item.
    r_id uuid[] := '{}';
    r_org bigint[] := '{}';
    r_team bigint[] := '{}';
    r_user bigint[] := '{}';
    r_key bigint[] := '{}';
    r_amount numeric[] := '{}';
    r_windows text[] := '{}';
    r_model text[] := '{}';
    r_tags jsonb[] := '{}';
    r_expires timestamptz[] := '{}';
    v_results text[] := '{}';  -- each item's answer as JSON text
    v_rows text;
    v_warnings text;
    v_amount numeric;
    v_used numeric;
    v_block integer;
    v_res_id uuid;
    v_ttl integer;
    v_expires timestamptz;
    v_expires_text text;
    v_alert_ids bigint[];
    v_missing boolean;
    v_unregistered boolean;
    s integer;
BEGIN
    -- Each item with its subjects and its amount, and the answer of one
    -- refused before its budgets are looked at, read before the lock so that
    -- the windows are held for as little as possible. Subjects seen for the
    -- first time (of orgs that register them) are registered, and the items
    -- read again.
    FOR v_pass IN 1 .. 2 LOOP
        SELECT array_agg(e.idx ORDER BY e.idx), array_agg(x.org_id ORDER BY e.idx),
               array_agg(t.id ORDER BY e.idx), array_agg(u.id ORDER BY e.idx),
               array_agg(x.key_id ORDER BY e.idx), array_agg(x.model ORDER BY e.idx),
               array_agg(nullif(x.tags, '{}') ORDER BY e.idx),
               array_agg(x.ttl_seconds ORDER BY e.idx),
               array_agg(coalesce(da.amount, x.amount, 0) ORDER BY e.idx),
               array_agg(CASE
                   WHEN x.team IS NOT NULL AND t.id IS NULL
                   THEN json_build_object('status', 'not_found', 'field', 'team')::text
                   WHEN x."user" IS NOT NULL AND u.id IS NULL
                   THEN json_build_object('status', 'not_found', 'field', 'user')::text
                   WHEN mr.refusal IS NOT NULL
                   THEN json_build_object('status', 'model_not_allowed', 'model', x.model,
                                          'refused_by', mr.refusal)::text
                   WHEN da.unpriced = 'deny'
                   THEN json_build_object('status', 'unpriced_model', 'field', 'model')::text
                   WHEN da.unpriced IS NOT NULL
                   THEN json_build_object('status', 'unpriced', 'field', 'model')::text
                   WHEN rc.cap IS NOT NULL
                   THEN json_build_object('status', 'too_expensive', 'amount_usd',
                            trim_scale(coalesce(da.amount, x.amount, 0))::text, 'cap', rc.cap)::text
                   END ORDER BY e.idx)
               , coalesce(bool_or(NOT x.strict AND ((x.team IS NOT NULL AND t.id IS NULL)
                                                    OR (x."user" IS NOT NULL AND u.id IS NULL))),
                          false)
        INTO i_idx, i_org, i_team, i_user, i_key, i_model, i_tags, i_ttl, i_amount, i_refused,
             v_unregistered
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(i, idx)
        CROSS JOIN LATERAL jsonb_to_record(e.i) AS x(
            org_id bigint, strict boolean, team text, "user" text, amount numeric, model text,
            input_tokens bigint, max_output_tokens bigint, ttl_seconds integer, at timestamptz,
            key_id bigint, service_tier text, tags jsonb)
        LEFT JOIN budgets_team t ON t.org_id = x.org_id AND t.slug = x.team
        LEFT JOIN budgets_enduser u ON u.org_id = x.org_id AND u.external_id = x."user"
        JOIN budgets_organization o ON o.id = x.org_id
        -- Priced (or refused) only when there is something to price: a plain
        -- amount skips the call (a function call per item is what a batch
        -- cannot afford), unless its org denies models without a price.
        LEFT JOIN LATERAL (
            SELECT d.amount, d.unpriced
            FROM tollgate_decide_amount(x.org_id, x.amount, x.model, x.input_tokens,
                                        x.max_output_tokens, coalesce(x.at, now()),
                                        coalesce(x.service_tier, '')) d
            WHERE x.amount IS NULL OR (x.model IS NOT NULL AND o.unpriced_policy = 'deny')
            OFFSET 0  -- not pulled up into the join: the condition then gates the call
        ) da ON true
        LEFT JOIN budgets_apikey ak ON ak.id = x.key_id
        LEFT JOIN LATERAL tollgate_request_cap(
            coalesce(CASE WHEN da.unpriced IS NULL THEN coalesce(da.amount, x.amount) END, 0),
            ak.lookup_id, ak.max_request_usd, t.slug, t.max_request_usd,
            o.slug, o.max_request_usd) rc ON true
        LEFT JOIN LATERAL tollgate_model_refusal(x.model, ak.lookup_id, ak.allowed_models,
            t.slug, t.allowed_models, o.slug, o.allowed_models) mr ON true;
        EXIT WHEN v_pass = 2 OR NOT v_unregistered;
        -- In sorted order; ON CONFLICT waits for a concurrent registration of
        -- the same one. Known subjects are skipped before the insert is tried.
        INSERT INTO budgets_team (org_id, slug, name, created_at)
        SELECT x.org_id, x.team, '', now()
        FROM (SELECT DISTINCT (i->>'org_id')::bigint AS org_id, i->>'team' AS team
              FROM jsonb_array_elements(p_items) i
              WHERE i->>'team' IS NOT NULL AND NOT (i->>'strict')::boolean) x
        WHERE NOT EXISTS (SELECT 1 FROM budgets_team t
                          WHERE t.org_id = x.org_id AND t.slug = x.team)
        ORDER BY 1, 2
        ON CONFLICT (org_id, slug) DO NOTHING;
        INSERT INTO budgets_enduser (org_id, external_id, created_at)
        SELECT x.org_id, x.external_id, now()
        FROM (SELECT DISTINCT (i->>'org_id')::bigint AS org_id, i->>'user' AS external_id
              FROM jsonb_array_elements(p_items) i
              WHERE i->>'user' IS NOT NULL AND NOT (i->>'strict')::boolean) x
        WHERE NOT EXISTS (SELECT 1 FROM budgets_enduser u
                          WHERE u.org_id = x.org_id AND u.external_id = x.external_id)
        ORDER BY 1, 2
        ON CONFLICT (org_id, external_id) DO NOTHING;
    END LOOP;

    -- The budgets of every item, and so the batch's windows; the first use
    -- of a period creates them (a new statement then sees the windows created
    -- here or by others).
    SELECT array_agg(a.idx ORDER BY a.idx, a.rank, a.subject, a.model_filter, a.period),
           array_agg(a.window_id ORDER BY a.idx, a.rank, a.subject, a.model_filter, a.period),
           coalesce(bool_or(a.window_id IS NULL), false),
           array_agg(DISTINCT a.window_id) FILTER (WHERE a.window_id IS NOT NULL)
    INTO p_idx, p_window, v_missing, w_id
    FROM tollgate_batch_applicable(p_items) a;
    IF v_missing THEN
        PERFORM 1 FROM budgets_organization
        WHERE id IN (SELECT (i->>'org_id')::bigint FROM jsonb_array_elements(p_items) i)
        ORDER BY id FOR KEY SHARE;  -- the zone stays (tollgate_change_time_zone)
        PERFORM tollgate_create_windows(array_agg(a.budget_id), array_agg(a.period_start),
                                        array_agg(a.period_end))
        FROM tollgate_batch_applicable(p_items) a
        WHERE a.window_id IS NULL;
        SELECT array_agg(a.idx ORDER BY a.idx, a.rank, a.subject, a.model_filter, a.period),
               array_agg(a.window_id ORDER BY a.idx, a.rank, a.subject, a.model_filter, a.period),
               array_agg(DISTINCT a.window_id) FILTER (WHERE a.window_id IS NOT NULL)
        INTO p_idx, p_window, w_id
        FROM tollgate_batch_applicable(p_items) a;
    END IF;

    -- Locked in id order and read once with their budgets (the newest
    -- committed values: a row locked after waiting is read again).
    SELECT array_agg(l.id ORDER BY l.id), array_agg(b.scope ORDER BY l.id),
           array_agg(sj.subject ORDER BY l.id), array_agg(b.model_filter ORDER BY l.id),
           array_agg(b.period ORDER BY l.id), array_agg(b.limit_usd ORDER BY l.id),
           array_agg(b.soft_limit_pct::smallint ORDER BY l.id), array_agg(b.enforce ORDER BY l.id),
           array_agg(tollgate_budget_json_head(b.scope, sj.subject, b.model_filter, b.period,
                         b.limit_usd, b.soft_limit_pct::smallint, b.enforce, l.spent,
                         l.period_end) ORDER BY l.id),
           array_agg(l.spent ORDER BY l.id),
           array_agg(l.reserved ORDER BY l.id), array_agg(0::numeric ORDER BY l.id),
           array_agg(false ORDER BY l.id), array_agg(o.alerts_count_holds ORDER BY l.id)
    INTO w_id, w_scope, w_subject, w_model, w_period, w_limit, w_soft, w_enforce, w_head,
         w_spent, w_reserved, w_added, w_alert, w_holds_count
    FROM (SELECT w.id, w.budget_id, w.period_end, w.spent, w.reserved
          FROM budgets_budgetwindow w
          WHERE w.id = ANY(w_id)
          ORDER BY w.id
          FOR UPDATE) l
    JOIN budgets_budget b ON b.id = l.budget_id
    JOIN budgets_organization o ON o.id = b.org_id
    LEFT JOIN budgets_team t ON t.id = b.team_id
    LEFT JOIN budgets_enduser u ON u.id = b.user_id
    LEFT JOIN budgets_apikey ak ON ak.id = b.key_id
    CROSS JOIN LATERAL (SELECT CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug
                                            WHEN 'user' THEN u.external_id
                                            WHEN 'key' THEN ak.lookup_id
                                            ELSE b.tag END::text AS subject) sj;

    -- Each pair's slot (null: its window went with its budget meanwhile),
    -- in listing order and, per item, in slot order.
    SELECT array_agg(n.slot::int ORDER BY p.ord), array_agg(n.slot::int ORDER BY p.idx, n.slot)
    INTO p_slot, p_sorted
    FROM unnest(p_idx, p_window) WITH ORDINALITY AS p(idx, window_id, ord)
    LEFT JOIN unnest(w_id) WITH ORDINALITY AS n(window_id, slot) ON n.window_id = p.window_id;

    -- Each item in turn; its pairs are the next ones with its idx
    -- (v_first .. v_last).
    FOR i IN 1 .. coalesce(cardinality(i_idx), 0) LOOP
        WHILE v_first <= cardinality(p_idx) AND p_idx[v_first] < i_idx[i] LOOP
            v_first := v_first + 1;
        END LOOP;
        v_last := v_first - 1;
        WHILE v_last < cardinality(p_idx) AND p_idx[v_last + 1] = i_idx[i] LOOP
            v_last := v_last + 1;
        END LOOP;
        IF i_refused[i] IS NOT NULL THEN
            v_results := array_append(v_results, i_refused[i]);
            CONTINUE;
        END IF;
        v_amount := i_amount[i];

        -- The first enforced budget (in listing order) that cannot take it.
        v_block := NULL;
        FOR k IN v_first .. v_last LOOP
            s := p_slot[k];
            IF s IS NOT NULL AND w_enforce[s]
               AND w_spent[s] + w_reserved[s] + v_amount > w_limit[s] THEN
                v_block := k;
                EXIT;
            END IF;
        END LOOP;

        -- The answer's lists, as JSON text: each element is preceded by ", "
        -- (the first one's is cut off: substr counts two characters where
        -- left(x, -2) counted them all).
        v_rows := '';
        v_warnings := '';
        IF v_block IS NOT NULL THEN
            -- Denied: nothing changes. Described as they are, from the blocker on.
            FOR k IN v_block .. v_last LOOP
                s := p_slot[k];
                CONTINUE WHEN s IS NULL;
                v_rows := v_rows || ', ' || w_head[s]
                          || tollgate_budget_json_tail(w_limit[s], w_spent[s], w_reserved[s]);
                v_used := w_spent[s] + w_reserved[s] + v_amount;
                IF tollgate_warns(w_limit[s], w_soft[s], v_used) THEN
                    v_warnings := v_warnings || ', ' || tollgate_warning_text(w_scope[s],
                        w_subject[s], w_model[s], w_period[s], w_limit[s], w_enforce[s], v_used);
                END IF;
            END LOOP;
            s := p_slot[v_block];
            v_results := array_append(v_results, '{"status" : "denied", "amount_usd" : "'
                || trim_scale(v_amount)::text || '", "blocked" : ' || w_head[s]
                || tollgate_budget_json_tail(w_limit[s], w_spent[s], w_reserved[s])
                || ', "budgets" : [' || substr(v_rows, 3) || '], "warnings" : ['
                || substr(v_warnings, 3) || ']}');
            CONTINUE;
        END IF;

        -- Held: every window takes it. Described as they are after the hold.
        v_windows := '{}';
        FOR k IN v_first .. v_last LOOP
            IF p_slot[k] IS NOT NULL THEN
                v_windows := v_windows || p_window[k];
            END IF;
            s := p_sorted[k];
            CONTINUE WHEN s IS NULL;
            w_reserved[s] := w_reserved[s] + v_amount;
            w_added[s] := w_added[s] + v_amount;
            v_used := w_spent[s] + w_reserved[s];
            v_rows := v_rows || ', ' || w_head[s]
                      || tollgate_budget_json_tail(w_limit[s], w_spent[s], w_reserved[s]);
            IF tollgate_warns(w_limit[s], w_soft[s], v_used) THEN
                v_warnings := v_warnings || ', ' || tollgate_warning_text(w_scope[s],
                    w_subject[s], w_model[s], w_period[s], w_limit[s], w_enforce[s], v_used);
            END IF;
            -- A hold can cross a threshold only where holds count (settled
            -- spend is judged by the events) and at or past the soft limit;
            -- most holds skip alerts.
            IF w_holds_count[s] AND w_limit[s] > 0 AND v_used * 100 >= w_soft[s] * w_limit[s] THEN
                w_alert[s] := true;
            END IF;
        END LOOP;
        IF i_ttl[i] IS DISTINCT FROM v_ttl THEN
            v_ttl := i_ttl[i];
            v_expires := now() + make_interval(secs => v_ttl);
            v_expires_text := to_char(v_expires AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
        END IF;
        v_res_id := tollgate_new_reservation_id();
        r_id := array_append(r_id, v_res_id);
        r_org := array_append(r_org, i_org[i]);
        r_team := array_append(r_team, i_team[i]);
        r_user := array_append(r_user, i_user[i]);
        r_key := array_append(r_key, i_key[i]);
        r_amount := array_append(r_amount, v_amount);
        r_windows := array_append(r_windows, v_windows::text);
        r_model := array_append(r_model, coalesce(i_model[i], ''));
        r_tags := array_append(r_tags, i_tags[i]);
        r_expires := array_append(r_expires, v_expires);
        v_results := array_append(v_results, '{"status" : "held", "reservation_id" : "'
            || v_res_id::text || '", "amount_usd" : "' || trim_scale(v_amount)::text
            || '", "expires_at" : "' || v_expires_text || '", "budgets" : ['
            || substr(v_rows, 3) || '], "warnings" : [' || substr(v_warnings, 3) || ']}');
    END LOOP;

    -- The holds and what they add to their windows, in one statement.
    WITH r AS (
        INSERT INTO budgets_reservation
            (id, org_id, team_id, user_id, key_id, amount, status, window_ids, model, tags,
             created_at, expires_at)
        SELECT r.id, r.org_id, r.team_id, r.user_id, r.key_id, r.amount, 'active',
               r.windows::bigint[], r.model, r.tags, now(), r.expires
        FROM unnest(r_id, r_org, r_team, r_user, r_key, r_amount, r_windows, r_model, r_tags,
                    r_expires)
             AS r(id, org_id, team_id, user_id, key_id, amount, windows, model, tags, expires)
    )
    UPDATE budgets_budgetwindow w SET reserved = w.reserved + d.added
    FROM unnest(w_id, w_added) AS d(id, added)
    WHERE w.id = d.id AND d.added > 0;
    SELECT array_agg(a.id) INTO v_alert_ids
    FROM unnest(w_id, w_alert) AS a(id, alert) WHERE a.alert;
    IF v_alert_ids IS NOT NULL THEN
        PERFORM tollgate_raise_alerts(v_alert_ids);
    END IF;
    RETURN '[' || array_to_string(v_results, ', ') || ']';
END $$;

-- The per-request cap that `p_amount` exceeds, the tightest of the key's,
-- the team's and the org's (no row: none does), from the caps the caller
-- read with the rows it has (so read at decision time: a changed cap applies
-- to the next request in every process). A set-returning SQL function with
-- no query of its own, so that a batch's query inlines it for each item.
DROP FUNCTION IF EXISTS tollgate_request_cap(bigint, bigint, bigint, numeric);
CREATE OR REPLACE FUNCTION tollgate_request_cap(
    p_amount numeric, p_key text, p_key_cap numeric, p_team text, p_team_cap numeric,
    p_org text, p_org_cap numeric)
RETURNS TABLE (cap jsonb) LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('scope', c.scope, 'id', c.id,
                              'max_request_usd', trim_scale(c.cap)::text)
    FROM (VALUES ('key', p_key, p_key_cap), ('team', p_team, p_team_cap),
                 ('org', p_org, p_org_cap)) AS c(scope, id, cap)
    WHERE c.cap IS NOT NULL AND p_amount > c.cap
    ORDER BY c.cap, c.scope
    LIMIT 1
$$;

-- Whether a model name is on an allow-list: one of its entries matches it
-- (tollgate_model_matches, the rule of budgets' model filters too).
CREATE OR REPLACE FUNCTION tollgate_model_allowed(p_model text, p_allowed text[])
RETURNS boolean LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT EXISTS (SELECT 1 FROM unnest(p_allowed) a(entry)
                   WHERE tollgate_model_matches(p_model, a.entry))
$$;

-- The allow-list that refuses the model (no row: none does), the org's, then
-- the team's, then the key's, from the lists the caller read with the rows it
-- has (no read of its own, so a changed list applies to the next request in
-- every process). An empty list allows every model; a request that names no
-- model (a status read, an amount-only check) is judged by none. A set-returning SQL
-- function, like tollgate_request_cap, so that a batch's query inlines it.
CREATE OR REPLACE FUNCTION tollgate_model_refusal(
    p_model text, p_key text, p_key_allowed text[], p_team text, p_team_allowed text[],
    p_org text, p_org_allowed text[])
RETURNS TABLE (refusal jsonb) LANGUAGE sql IMMUTABLE AS $$
    SELECT jsonb_build_object('scope', c.scope, 'id', c.id)
    FROM (VALUES (1, 'org', p_org, p_org_allowed), (2, 'team', p_team, p_team_allowed),
                 (3, 'key', p_key, p_key_allowed)) AS c(n, scope, id, allowed)
    WHERE p_model IS NOT NULL AND cardinality(c.allowed) > 0
      AND NOT tollgate_model_allowed(p_model, c.allowed)
    ORDER BY c.n
    LIMIT 1
$$;

-- The decision for one request. With p_hold it also takes the hold: every
-- applicable window gets `reserved += amount` in one step, or none does.
--
-- A hold is decided here and in tollgate_decide_many (the batches), alike:
-- as a batch of one, a hold cost PostgreSQL about twice the CPU
-- (docs/benchmarks/investigations/layout-move.md; 1.2x to 1.5x with six
-- budgets since the six-budget rework, docs/benchmarks/six-budgets.md), so
-- both stay, and
-- tests/budgets/test_batch_holds.py checks that they give the same answer,
-- windows, holds and alerts for random sequences of holds.
--
-- Concurrency: windows are locked in id order (no deadlocks between holds),
-- and the limits are checked again under the lock, so concurrent holds can
-- never take an enforced window's spent + reserved over its limit. A request
-- that is already over on the unlocked read is denied without taking locks,
-- so a full budget does not serialise its denials. Little work happens while
-- the locks are held: they are the throughput limit of a shared (org) budget.
--
-- Result: {"status": "ok" | "held" | "denied" | "not_found" | "unpriced" |
-- "unpriced_model" | "too_expensive", ...} ("unpriced": an estimate that
-- cannot be priced; "unpriced_model": the org denies models with no price,
-- tollgate_decide_amount in 20_pricing.sql; "model_not_allowed": an allow-list
-- of the org, the team or the key refuses the model, checked before the
-- others and before anything is held). p_key: the caller's API key, whose
-- per-request cap, allow-list and key budgets apply (null: no key's).
-- p_tags: the request's tags ({"name": "value"}, null for none): every tag
-- budget of one of them applies, and a hold keeps them.
DROP FUNCTION IF EXISTS tollgate_decide(bigint, text, boolean, text, text, numeric, text, bigint,
                                        bigint, boolean, integer, timestamptz);
DROP FUNCTION IF EXISTS tollgate_decide(bigint, boolean, text, text, numeric, text, bigint,
                                        bigint, boolean, integer, timestamptz, bigint, text);
DROP FUNCTION IF EXISTS tollgate_decide(bigint, text, boolean, text, text, numeric, text, bigint,
                                        bigint, boolean, integer, timestamptz, bigint);
CREATE OR REPLACE FUNCTION tollgate_decide(
    p_org bigint, p_strict boolean, p_team text, p_user text,
    p_amount numeric, p_model text, p_input bigint, p_max_output bigint,
    p_hold boolean, p_ttl_seconds integer, p_at timestamptz, p_key bigint DEFAULT NULL,
    p_tier text DEFAULT '', p_tags jsonb DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql
-- Generic plans: with "auto", PL/pgSQL kept re-planning the inlined budget
-- lookups on every call (custom plans looked cheaper), which cost more than
-- running them (docs/benchmarks/questions/hold-cost.md). A random read
-- priced as in tollgate_decide_many.
SET plan_cache_mode = force_generic_plan SET random_page_cost = 1.1 AS $$
DECLARE
    v_at timestamptz := coalesce(p_at, now());
    v_team bigint;
    v_user bigint;
    v_amount numeric := p_amount;
    v_rows jsonb := '[]';
    v_warnings jsonb := '[]';
    v_blocked jsonb;
    v_window_ids bigint[] := '{}';
    v_missing boolean := false;
    v_alert boolean := false;
    v_res_id uuid;
    v_expires timestamptz;
    v_cap jsonb;
    v_refusal jsonb;
    v_unpriced text;
    v_tags jsonb := nullif(p_tags, '{}');
    v_block_rank integer;
    v_pairs text[];
    v_denies_unpriced boolean;
    r record;
BEGIN
    -- Subjects, tags and whether the org denies unpriced models: one read in
    -- the common case, registration on first sight.
    SELECT (SELECT id FROM budgets_team WHERE org_id = p_org AND slug = p_team),
           (SELECT id FROM budgets_enduser WHERE org_id = p_org AND external_id = p_user),
           (SELECT pairs FROM tollgate_tag_pairs(v_tags)),
           (SELECT o.unpriced_policy = 'deny' FROM budgets_organization o WHERE o.id = p_org)
    INTO v_team, v_user, v_pairs, v_denies_unpriced;
    IF p_team IS NOT NULL AND v_team IS NULL THEN
        v_team := tollgate_team_id(p_org, p_team, NOT p_strict);
        IF v_team IS NULL THEN
            RETURN jsonb_build_object('status', 'not_found', 'field', 'team');
        END IF;
    END IF;
    IF p_user IS NOT NULL AND v_user IS NULL THEN
        v_user := tollgate_enduser_id(p_org, p_user, NOT p_strict);
        IF v_user IS NULL THEN
            RETURN jsonb_build_object('status', 'not_found', 'field', 'user');
        END IF;
    END IF;
    -- Priced (or refused) only when there is something to price: a plain
    -- amount skips the call, unless the org denies models without a price.
    IF (v_amount IS NULL AND p_input IS NOT NULL)
       OR (p_model IS NOT NULL AND v_denies_unpriced) THEN
        SELECT d.amount, d.unpriced INTO v_amount, v_unpriced
        FROM tollgate_decide_amount(p_org, p_amount, p_model, p_input, p_max_output, v_at,
                                    coalesce(p_tier, '')) d;
    END IF;
    -- The org, team and key rows, read once for their allow-lists and caps.
    SELECT c.cap, m.refusal INTO v_cap, v_refusal
    FROM budgets_organization o
    LEFT JOIN budgets_team t ON t.id = v_team
    LEFT JOIN budgets_apikey k ON k.id = p_key
    LEFT JOIN LATERAL tollgate_request_cap(
        coalesce(CASE WHEN v_unpriced IS NULL THEN v_amount END, 0), k.lookup_id,
        k.max_request_usd, t.slug, t.max_request_usd, o.slug, o.max_request_usd) c ON true
    LEFT JOIN LATERAL tollgate_model_refusal(p_model, k.lookup_id, k.allowed_models, t.slug,
        t.allowed_models, o.slug, o.allowed_models) m ON true
    WHERE o.id = p_org;
    IF v_refusal IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'model_not_allowed', 'model', p_model,
                                  'refused_by', v_refusal);
    ELSIF v_unpriced = 'deny' THEN
        RETURN jsonb_build_object('status', 'unpriced_model', 'field', 'model');
    ELSIF v_unpriced IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'unpriced', 'field', 'model');
    END IF;
    v_amount := coalesce(v_amount, 0);
    IF v_cap IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'too_expensive',
            'amount_usd', trim_scale(v_amount)::text, 'cap', v_cap);
    END IF;

    -- Unlocked read: the answer for a check, an early denial for a hold.
    FOR r IN SELECT * FROM tollgate_applicable(p_org, v_team, v_user, v_at, p_key, v_pairs, p_model) LOOP
        IF v_blocked IS NULL AND r.enforce AND r.spent + r.reserved + v_amount > r.limit_usd THEN
            v_blocked := tollgate_budget_json(r.scope, r.subject, r.model_filter, r.period,
                r.limit_usd, r.soft_limit_pct, r.enforce, r.spent, r.reserved, r.period_end);
        END IF;
        IF r.window_id IS NULL THEN
            v_missing := true;
        ELSE
            v_window_ids := v_window_ids || r.window_id;
        END IF;
        IF p_hold AND v_blocked IS NULL THEN
            CONTINUE;  -- described from the locked rows below
        END IF;
        v_rows := v_rows || tollgate_budget_json(r.scope, r.subject, r.model_filter, r.period,
            r.limit_usd, r.soft_limit_pct, r.enforce, r.spent, r.reserved, r.period_end);
        v_warnings := v_warnings || tollgate_warning(r.scope, r.subject, r.model_filter,
            r.period, r.limit_usd, r.soft_limit_pct, r.enforce, r.spent + r.reserved + v_amount);
    END LOOP;

    IF p_hold AND v_blocked IS NULL AND v_missing THEN
        -- First use of a period: create its windows, then collect every id
        -- again. The org's zone cannot change until this commits
        -- (tollgate_change_time_zone).
        PERFORM 1 FROM budgets_organization WHERE id = p_org FOR KEY SHARE;
        PERFORM tollgate_create_windows(array_agg(a.budget_id), array_agg(a.period_start),
                                        array_agg(a.period_end))
        FROM tollgate_applicable(p_org, v_team, v_user, v_at, p_key, v_pairs, p_model) a
        WHERE a.window_id IS NULL;
        SELECT coalesce(array_agg(a.window_id), '{}') INTO v_window_ids
        FROM tollgate_applicable(p_org, v_team, v_user, v_at, p_key, v_pairs, p_model) a;
    END IF;

    IF p_hold AND v_blocked IS NULL THEN
        -- Lock in id order and decide on the newest committed values; the
        -- budget named is the first that cannot take it in listing order
        -- (tollgate_budget_rank), as a batch names it.
        FOR r IN
            SELECT w.id, b.scope, b.period, b.limit_usd, b.soft_limit_pct::smallint AS soft,
                   b.enforce, w.spent, w.reserved, w.period_end, o.alerts_count_holds,
                   b.model_filter, tollgate_budget_rank(b.scope, b.model_filter) AS rank,
                   CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug
                                WHEN 'user' THEN u.external_id WHEN 'key' THEN ak.lookup_id
                                ELSE b.tag END AS subject
            FROM budgets_budgetwindow w
            JOIN budgets_budget b ON b.id = w.budget_id
            JOIN budgets_organization o ON o.id = b.org_id
            LEFT JOIN budgets_team t ON t.id = b.team_id
            LEFT JOIN budgets_enduser u ON u.id = b.user_id
            LEFT JOIN budgets_apikey ak ON ak.id = b.key_id
            WHERE w.id = ANY(v_window_ids)
            ORDER BY w.id
            FOR UPDATE OF w
        LOOP
            IF r.enforce AND r.spent + r.reserved + v_amount > r.limit_usd
               AND (v_blocked IS NULL
                    OR (r.rank, r.subject, r.model_filter, r.period)
                       < (v_block_rank, v_blocked->>'id', coalesce(v_blocked->>'model', ''),
                          v_blocked->>'period')) THEN
                v_block_rank := r.rank;
                v_blocked := tollgate_budget_json(r.scope, r.subject, r.model_filter, r.period,
                    r.limit_usd, r.soft, r.enforce, r.spent, r.reserved, r.period_end);
            END IF;
            -- Described as they will be after the hold.
            v_rows := v_rows || tollgate_budget_json(r.scope, r.subject, r.model_filter,
                r.period, r.limit_usd, r.soft, r.enforce, r.spent, r.reserved + v_amount,
                r.period_end);
            v_warnings := v_warnings || tollgate_warning(r.scope, r.subject, r.model_filter,
                r.period, r.limit_usd, r.soft, r.enforce, r.spent + r.reserved + v_amount);
            -- A hold can cross a threshold only where holds count (settled
            -- spend is judged by the events) and at or past the soft limit;
            -- most holds skip alerts.
            v_alert := v_alert OR (r.alerts_count_holds AND r.limit_usd > 0
                AND (r.spent + r.reserved + v_amount) * 100 >= r.soft * r.limit_usd);
        END LOOP;
        IF v_blocked IS NOT NULL THEN
            -- Lost the race for the last of the budget: deny, nothing written.
            RETURN jsonb_build_object('status', 'denied', 'amount_usd', trim_scale(v_amount)::text,
                'blocked', v_blocked, 'budgets', tollgate_list_subject_budgets(
                    p_org, v_team, v_user, v_at, p_key, v_pairs, p_model),
                'warnings', '[]'::jsonb);
        END IF;
    END IF;

    IF v_blocked IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'denied', 'amount_usd', trim_scale(v_amount)::text,
            'blocked', v_blocked, 'budgets', v_rows, 'warnings', v_warnings);
    END IF;
    IF NOT p_hold THEN
        RETURN jsonb_build_object('status', 'ok', 'amount_usd', trim_scale(v_amount)::text,
            'budgets', v_rows, 'warnings', v_warnings);
    END IF;

    UPDATE budgets_budgetwindow SET reserved = reserved + v_amount WHERE id = ANY(v_window_ids);
    IF v_alert THEN
        PERFORM tollgate_raise_alerts(v_window_ids);
    END IF;
    v_expires := now() + make_interval(secs => p_ttl_seconds);
    v_res_id := tollgate_new_reservation_id();
    INSERT INTO budgets_reservation
        (id, org_id, team_id, user_id, key_id, amount, status, window_ids, model, tags,
         created_at, expires_at)
    VALUES (v_res_id, p_org, v_team, v_user, p_key, v_amount, 'active', v_window_ids,
            coalesce(p_model, ''), v_tags, now(), v_expires);
    RETURN jsonb_build_object('status', 'held', 'reservation_id', v_res_id,
        'amount_usd', trim_scale(v_amount)::text,
        'expires_at', to_char(v_expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'budgets', v_rows, 'warnings', v_warnings);
END $$;

-- What an active hold still holds on its windows: its amount less what has
-- been settled into it, not below zero (settled NULL: a hold closed before
-- settled amounts were kept). The one rule of every writer that takes a hold
-- back (release, expiry, extension, settlement, a window seeded mid-period).
CREATE OR REPLACE FUNCTION tollgate_hold_left(p_amount numeric, p_settled numeric)
RETURNS numeric LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT greatest(p_amount - coalesce(p_settled, 0), 0)
$$;

-- Take a hold back from the windows it was added to. Caller holds no locks.
-- A window at or over a threshold is judged again (where its org counts
-- holds, it may fall back below and re-arm); the others skip alerts.
CREATE OR REPLACE FUNCTION tollgate_unhold(p_window_ids bigint[], p_amount numeric)
RETURNS void LANGUAGE plpgsql AS $$
DECLARE v_judge bigint[];
BEGIN
    PERFORM 1 FROM budgets_budgetwindow WHERE id = ANY(p_window_ids) ORDER BY id FOR UPDATE;
    WITH u AS (
        UPDATE budgets_budgetwindow SET reserved = reserved - p_amount
        WHERE id = ANY(p_window_ids)
        RETURNING id, soft_alerted OR hard_alerted AS alerted
    )
    SELECT array_agg(id) FILTER (WHERE alerted) INTO v_judge FROM u;
    IF v_judge IS NOT NULL THEN
        PERFORM tollgate_raise_alerts(v_judge);
    END IF;
END $$;

-- A reservation id: a UUID version 7 (RFC 9562), whose first 48 bits are the
-- milliseconds since 1970 it was made at (the transaction's start) and the
-- other 74 random. New holds go to the end of the primary key's index
-- instead of a random page of it, and an id tells when its hold was taken,
-- so a release can tell a hold deleted by RESERVATION_RETENTION_DAYS from an
-- id never given out (tollgate_release). Ids made before 0022 are version 4.
-- p_at: another time than now, for tests and loadtests/hold_ids.py.
DROP FUNCTION IF EXISTS tollgate_new_reservation_id();
CREATE OR REPLACE FUNCTION tollgate_new_reservation_id(p_at timestamptz DEFAULT now())
RETURNS uuid LANGUAGE sql VOLATILE PARALLEL SAFE AS $$
    SELECT encode(set_bit(set_bit(
               overlay(uuid_send(gen_random_uuid())
                       PLACING substring(int8send(floor(extract(epoch FROM p_at) * 1000)::bigint) FROM 3)
                       FROM 1 FOR 6),
               52, 1), 53, 1), 'hex')::uuid
$$;

-- When a version 7 id was made; null for any other version.
CREATE OR REPLACE FUNCTION tollgate_reservation_id_time(p_id uuid)
RETURNS timestamptz LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT CASE WHEN substring(p_id::text FROM 15 FOR 1) = '7'
                THEN to_timestamp(('x' || substring(replace(p_id::text, '-', '') FOR 12))::bit(48)::bigint
                                  / 1000.0)
           END
$$;

-- Release a hold. Idempotent: releasing again (or a hold that was settled or
-- expired) changes nothing and reports the reservation's status.
--
-- The hold is locked and read by its primary key, and its status checked
-- here: a statement that also says `status = 'active'` may be planned on the
-- partial index of active holds (reservation_active_expiry) when that index's
-- statistics are stale (a VACUUM when few holds were active), and then reads
-- every active hold of the database (measured: ~200 ms for one batch of
-- events with 400,000 holds active).
--
-- p_retention: RESERVATION_RETENTION_DAYS, null when holds are kept forever
-- (and for admin, which releases holds it lists).
-- A hold is deleted no sooner than p_retention after it closed, so after it
-- was taken: an id not found that was made longer ago than that may have
-- been one, and answers 'closed' (it was settled, released or expired; which
-- one is no longer known). Anything else not found is 'not_found'.
DROP FUNCTION IF EXISTS tollgate_release(bigint, uuid);
CREATE OR REPLACE FUNCTION tollgate_release(p_org bigint, p_id uuid, p_retention interval DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE r record;
BEGIN
    SELECT status, amount, settled, window_ids INTO r
    FROM budgets_reservation WHERE id = p_id AND org_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        IF tollgate_reservation_id_time(p_id) < now() - p_retention THEN
            RETURN jsonb_build_object('status', 'closed', 'released_now', false);
        END IF;
        RETURN jsonb_build_object('status', 'not_found');
    END IF;
    IF r.status <> 'active' THEN
        RETURN jsonb_build_object('status', r.status, 'released_now', false);
    END IF;
    UPDATE budgets_reservation SET status = 'released', closed_at = now() WHERE id = p_id;
    -- What partial settlements took is spent and stays spent.
    PERFORM tollgate_unhold(r.window_ids, tollgate_hold_left(r.amount, r.settled));
    RETURN jsonb_build_object('status', 'released', 'released_now', true);
END $$;

-- Extend a hold (POST /v1/budget/reservations/{id}/extend): it expires
-- p_ttl_seconds from now, or later if it already did (never earlier, so a
-- repeat is harmless). A hold that is no longer active answers how it closed
-- (settled, released, expired; 'closed' for an id older than the retention,
-- as in tollgate_release). A hold whose time is up but that no sweeper has
-- reached yet is expired here, as the sweeper would, rather than revived: a
-- hold stops counting when it expires, whoever looks first.
-- Locks the hold, then (expiring it) its windows in id order.
CREATE OR REPLACE FUNCTION tollgate_extend(p_org bigint, p_id uuid, p_ttl_seconds integer,
                                           p_retention interval DEFAULT NULL)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    r record;
    v_expires timestamptz;
BEGIN
    SELECT status, amount, settled, window_ids, expires_at INTO r
    FROM budgets_reservation WHERE id = p_id AND org_id = p_org FOR UPDATE;
    IF NOT FOUND THEN
        IF tollgate_reservation_id_time(p_id) < now() - p_retention THEN
            RETURN jsonb_build_object('status', 'closed');
        END IF;
        RETURN jsonb_build_object('status', 'not_found');
    END IF;
    IF r.status = 'active' AND r.expires_at <= now() THEN
        UPDATE budgets_reservation SET status = 'expired', closed_at = now() WHERE id = p_id;
        PERFORM tollgate_unhold(r.window_ids, tollgate_hold_left(r.amount, r.settled));
        RETURN jsonb_build_object('status', 'expired');
    END IF;
    IF r.status <> 'active' THEN
        RETURN jsonb_build_object('status', r.status);
    END IF;
    UPDATE budgets_reservation
    SET expires_at = greatest(expires_at, now() + make_interval(secs => p_ttl_seconds))
    WHERE id = p_id
    RETURNING expires_at INTO v_expires;
    RETURN jsonb_build_object('status', 'active',
        'expires_at', to_char(v_expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'amount_usd', trim_scale(r.amount)::text,
        'settled_usd', trim_scale(coalesce(r.settled, 0))::text);
END $$;

-- Expire holds whose time is up. Safe to run from many processes at once
-- (SKIP LOCKED). The windows are locked once, in id order like every other
-- writer, so the sweeper cannot deadlock with holds. Returns how many expired.
CREATE OR REPLACE FUNCTION tollgate_expire_reservations(p_limit integer)
RETURNS integer LANGUAGE plpgsql AS $$
DECLARE
    v_count integer;
    v_ids bigint[];
    v_amounts numeric[];
BEGIN
    WITH expired AS (
        UPDATE budgets_reservation SET status = 'expired', closed_at = now()
        WHERE id IN (SELECT id FROM budgets_reservation
                     WHERE status = 'active' AND expires_at <= now()
                     ORDER BY expires_at LIMIT p_limit FOR UPDATE SKIP LOCKED)
        RETURNING tollgate_hold_left(amount, settled) AS amount, window_ids
    ), per_window AS (
        SELECT wid, sum(e.amount) AS amount FROM expired e, unnest(e.window_ids) AS wid GROUP BY wid
    )
    SELECT (SELECT count(*) FROM expired), array_agg(wid ORDER BY wid), array_agg(amount ORDER BY wid)
    INTO v_count, v_ids, v_amounts FROM per_window;
    IF v_ids IS NOT NULL THEN
        PERFORM 1 FROM budgets_budgetwindow WHERE id = ANY(v_ids) ORDER BY id FOR UPDATE;
        -- Windows at or over a threshold are judged again, as in tollgate_unhold.
        WITH u AS (
            UPDATE budgets_budgetwindow w SET reserved = w.reserved - d.amount
            FROM unnest(v_ids, v_amounts) AS d(wid, amount) WHERE w.id = d.wid
            RETURNING w.id, w.soft_alerted OR w.hard_alerted AS alerted
        )
        SELECT array_agg(id) FILTER (WHERE alerted) INTO v_ids FROM u;
        IF v_ids IS NOT NULL THEN
            PERFORM tollgate_raise_alerts(v_ids);
        END IF;
    END IF;
    RETURN coalesce(v_count, 0);
END $$;
