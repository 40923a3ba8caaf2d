-- Recording request events (POST /v1/events): store, price, settle holds and
-- add to the budget windows, in one transaction. Takes its locks in the order
-- given at the top of 50_holds.sql.
-- Installed after every migrate by config/sqlfunctions.py (all apps' files,
-- in app order then file name order, in one transaction); a function no file
-- defines any more is dropped. Each hot-path request is one call to one of
-- these functions: one round trip, one transaction.

-- Record a batch of request events (POST /v1/events) in one transaction:
-- store the new ones with their cost, settle the holds they name, and add
-- their cost to the `spent` of every budget window that applies (the period
-- that contains each event's started_at, in the org's time zone; tag budgets
-- of its tags and model-filtered budgets of its model included). A hold an
-- event settles is taken back from the windows it was taken on.
--
-- Idempotent per (org, event id): a replay with the same payload hash is
-- reported as a duplicate with the stored result; a different payload under
-- the same id raises SQLSTATE TG409 (the whole batch rolls back), also when
-- the other payload was committed concurrently (ON CONFLICT waits for it).
--
-- Locks are taken in the global order of tollgate_decide_many: subjects
-- (sorted), event ids (sorted), reservations (by id), windows (by id).
--
-- p_events: [{"idx", "event_id", "team", "user", "model", "provider",
--   "input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens",
--   "reasoning_tokens", "cost_usd" (caller's, or null), "latency_ms", "status",
--   "started_at" (or null = now), "reservation_id", "final" (null = true: the
--   event closes the hold it names; false: a partial settlement), "tags",
--   "payload_hash", and optional (absent = 0 or ''): the parts
--   "cache_write_1h_tokens", "cache_read_audio_tokens", "input_audio_tokens",
--   "input_image_tokens", "output_audio_tokens", "output_image_tokens", "web_search_calls", and
--   "service_tier" (the price tier: '', 'flex', 'priority', 'batch'),
--   "inference_geo", "web_search_context_size" ('low', 'high'; '' medium)}, ...]
-- Result: {"status": "ok", "results": [{"idx", "id", "cost_usd", "priced",
--   "price_model", "cost_source", "duplicate", "reservation"}]} or
--   {"status": "not_found", "errors": [...]}. price_model: the price entry's
--   key the event's model resolved to (20_pricing.sql), NULL when unpriced or
--   the caller's cost. cost_source: "price", "caller", or for a model with no
--   price (the org's unpriced_policy, tollgate_fallback_cost) "hold" (what was
--   left of the hold this event closed), "fallback_rate" or "zero"; NULL for events recorded
--   before it was kept.
DROP FUNCTION IF EXISTS tollgate_record_events(bigint, text, boolean, jsonb);
CREATE OR REPLACE FUNCTION tollgate_record_events(
    p_org bigint, p_strict boolean, p_events jsonb)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_errors jsonb;
    v_inserted jsonb;
    v_conflicts jsonb;
    v_settled jsonb;
    v_results jsonb;
    v_spend_ids bigint[];
    v_spend_costs numeric[];
    v_missing boolean;
    v_unhold_ids bigint[];
    v_unhold_amounts numeric[];
    v_replayed jsonb := '[]';
    v_replay_ids text[];
    v_settle_ids uuid[];
    v_unpriced boolean;  -- a new event has no price
    v_claims jsonb;
    v_holds jsonb;
    -- Read once per batch (a primary-key probe), so a change applies to the next call.
    v_policy text := (SELECT unpriced_policy FROM budgets_organization WHERE id = p_org);
BEGIN
    IF NOT p_strict THEN
        PERFORM tollgate_team_id(p_org, x.team, true)
        FROM (SELECT DISTINCT e->>'team' AS team FROM jsonb_array_elements(p_events) e
              WHERE e->>'team' IS NOT NULL ORDER BY 1) x;
        PERFORM tollgate_enduser_id(p_org, x.external_id, true)
        FROM (SELECT DISTINCT e->>'user' AS external_id FROM jsonb_array_elements(p_events) e
              WHERE e->>'user' IS NOT NULL ORDER BY 1) x;
    END IF;

    SELECT jsonb_agg(jsonb_build_object('index', (e->>'idx')::int,
               'field', CASE WHEN t.id IS NULL AND e->>'team' IS NOT NULL THEN 'team' ELSE 'user' END)
               ORDER BY (e->>'idx')::int)
    INTO v_errors
    FROM jsonb_array_elements(p_events) e
    LEFT JOIN budgets_team t ON t.org_id = p_org AND t.slug = e->>'team'
    LEFT JOIN budgets_enduser u ON u.org_id = p_org AND u.external_id = e->>'user'
    WHERE (e->>'team' IS NOT NULL AND t.id IS NULL) OR (e->>'user' IS NOT NULL AND u.id IS NULL);
    IF v_errors IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'not_found', 'errors', v_errors);
    END IF;

    WITH input AS (
        SELECT e.*, coalesce(e.started_at, now()) AS at, t.id AS team_id, u.id AS user_id
        FROM jsonb_to_recordset(p_events) AS e(
            idx integer, event_id text, team text, "user" text, model text, provider text,
            input_tokens bigint, cache_read_tokens bigint, cache_write_tokens bigint,
            output_tokens bigint, reasoning_tokens bigint, cost_usd numeric, latency_ms integer,
            status text, started_at timestamptz, reservation_id uuid, tags jsonb,
            payload_hash text, cache_write_1h_tokens bigint, input_audio_tokens bigint,
            input_image_tokens bigint, output_audio_tokens bigint, output_image_tokens bigint,
            web_search_calls bigint, service_tier text, inference_geo text,
            web_search_context_size text, cache_read_audio_tokens bigint, key_id bigint)
        LEFT JOIN budgets_team t ON t.org_id = p_org AND t.slug = e.team
        LEFT JOIN budgets_enduser u ON u.org_id = p_org AND u.external_id = e."user"
    ), ins AS (
        INSERT INTO tracking_requestevent (
            org_id, event_id, team_id, user_id, key_id, model, provider, started_at, received_at,
            input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
            cost_usd, priced, price_model, latency_ms, status, reservation_id, tags,
            payload_hash, cost_source, cache_write_1h_tokens, input_audio_tokens,
            input_image_tokens, output_audio_tokens, output_image_tokens, web_search_calls,
            service_tier, inference_geo, web_search_context_size, cache_read_audio_tokens)
        SELECT p_org, i.event_id, i.team_id, i.user_id, i.key_id, i.model, coalesce(i.provider, ''), i.at,
               clock_timestamp(), i.input_tokens, i.cache_read_tokens, i.cache_write_tokens,
               i.output_tokens, i.reasoning_tokens,
               coalesce(i.cost_usd, c.list_cost, fb.cost, 0),
               i.cost_usd IS NOT NULL OR c.list_cost IS NOT NULL,
               CASE WHEN i.cost_usd IS NULL THEN pr.model END,
               i.latency_ms, i.status, i.reservation_id, coalesce(i.tags, '{}'), i.payload_hash,
               CASE WHEN i.cost_usd IS NOT NULL THEN 'caller'
                    WHEN c.list_cost IS NOT NULL THEN 'price'
                    WHEN v_policy <> 'zero' THEN 'fallback_rate'
                    ELSE 'zero' END,
               coalesce(i.cache_write_1h_tokens, 0), coalesce(i.input_audio_tokens, 0),
               coalesce(i.input_image_tokens, 0), coalesce(i.output_audio_tokens, 0),
               coalesce(i.output_image_tokens, 0), coalesce(i.web_search_calls, 0),
               coalesce(i.service_tier, ''), coalesce(i.inference_geo, ''),
               coalesce(i.web_search_context_size, ''), coalesce(i.cache_read_audio_tokens, 0)
        FROM input i
        LEFT JOIN LATERAL tollgate_price_at(p_org, i.model, i.provider, i.at,
                                            coalesce(i.service_tier, '')) pr ON true
        CROSS JOIN LATERAL (SELECT tollgate_cost(pr, i.input_tokens, i.cache_read_tokens,
            i.cache_write_tokens, i.output_tokens, i.reasoning_tokens,
            coalesce(i.cache_write_1h_tokens, 0), coalesce(i.input_audio_tokens, 0),
            coalesce(i.input_image_tokens, 0), coalesce(i.output_audio_tokens, 0),
            coalesce(i.output_image_tokens, 0), coalesce(i.web_search_calls, 0),
            i.inference_geo, i.web_search_context_size,
            coalesce(i.cache_read_audio_tokens, 0)) AS list_cost) c
        -- Only for unpriced usage (the WHERE only reads outer values, so it
        -- gates the call): priced events never reach the catalog scan.
        LEFT JOIN LATERAL (SELECT tollgate_fallback_cost(p_org, i.input_tokens,
                               i.cache_read_tokens, i.cache_write_tokens, i.output_tokens,
                               i.reasoning_tokens) AS cost
                           WHERE i.cost_usd IS NULL AND c.list_cost IS NULL
                             AND v_policy <> 'zero') fb ON true
        ORDER BY i.event_id
        ON CONFLICT (org_id, event_id) DO NOTHING
        RETURNING event_id, team_id, user_id, key_id, started_at, cost_usd, priced, price_model,
                  cost_source, reservation_id, model,
                  (SELECT tp.pairs FROM tollgate_tag_pairs(tags) tp) AS tag_pairs
    )
    SELECT coalesce(jsonb_agg(to_jsonb(ins)), '[]'), coalesce(bool_or(NOT ins.priced), false)
    INTO v_inserted, v_unpriced FROM ins;

    -- Ids that were not inserted exist already: same payload = replay, else
    -- conflict. Only they are read back (new events answer from RETURNING):
    -- the usual batch of new events reads nothing here. That read has a plan
    -- risk: for an org newer than the table's statistics, the planner sees ~1
    -- row for org_id and may walk the whole org through event_org_received.
    v_replay_ids := ARRAY(SELECT e->>'event_id' FROM jsonb_array_elements(p_events) e
                          EXCEPT
                          SELECT n->>'event_id' FROM jsonb_array_elements(v_inserted) n);
    IF cardinality(v_replay_ids) > 0 THEN
        SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]') INTO v_replayed
        FROM (SELECT event_id, cost_usd, priced, price_model, cost_source, reservation_id,
                     payload_hash
              FROM tracking_requestevent
              WHERE org_id = p_org AND event_id = ANY(v_replay_ids)) r;
        SELECT jsonb_agg(jsonb_build_object('index', (e->>'idx')::int, 'id', e->>'event_id')
                         ORDER BY (e->>'idx')::int)
        INTO v_conflicts
        FROM jsonb_array_elements(p_events) e
        JOIN jsonb_to_recordset(v_replayed) AS r(event_id text, payload_hash text)
          ON r.event_id = e->>'event_id'
        WHERE r.payload_hash <> e->>'payload_hash';
        IF v_conflicts IS NOT NULL THEN
            RAISE EXCEPTION 'event id reused with a different payload'
                USING ERRCODE = 'TG409', DETAIL = v_conflicts::text;
        END IF;
    END IF;

    -- Settle the holds named by new events. An event settles into a hold that
    -- is active and of its team (or teamless): its cost adds to what the hold
    -- has settled. The hold closes ('settled') when one of them is final (the
    -- default); after partial settlements only ("final": false) it stays
    -- active, holding what is left of its amount (tollgate_hold_left). Either
    -- way the windows give back what the hold no longer holds.
    v_settle_ids := ARRAY(SELECT DISTINCT (n->>'reservation_id')::uuid
                          FROM jsonb_array_elements(v_inserted) n
                          WHERE n->>'reservation_id' IS NOT NULL ORDER BY 1);
    v_settled := '[]';
    v_claims := '[]';
    IF v_settle_ids <> '{}' THEN
        -- Locked and read by primary key, the status checked on what was read
        -- in the next statement (a `status = 'active'` in this one may be
        -- planned on the partial index: see tollgate_release).
        SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]') INTO v_holds
        FROM (SELECT id, status, team_id, amount, settled FROM budgets_reservation
              WHERE id = ANY(v_settle_ids) AND org_id = p_org
              ORDER BY id FOR UPDATE) r;
        -- An event of a team settles only that team's (or a teamless) hold: a
        -- team-limited key, whose events always carry its team, cannot settle
        -- another team's hold.
        SELECT coalesce(jsonb_agg(jsonb_build_object(
                   'event_id', n.event_id, 'reservation_id', r.id,
                   'final', coalesce((e->>'final')::boolean, true),
                   'cost_usd', n.cost_usd, 'cost_source', n.cost_source,
                   'hold_left', tollgate_hold_left(r.amount, r.settled))), '[]')
        INTO v_claims
        FROM jsonb_to_recordset(v_holds)
             AS r(id uuid, status text, team_id bigint, amount numeric, settled numeric)
        JOIN jsonb_to_recordset(v_inserted)
             AS n(event_id text, reservation_id uuid, team_id bigint, cost_usd numeric,
                  cost_source text)
          ON n.reservation_id = r.id
        JOIN jsonb_array_elements(p_events) e ON e->>'event_id' = n.event_id
        WHERE r.status = 'active'
          AND (n.team_id IS NULL OR r.team_id IS NULL OR r.team_id = n.team_id);

        -- An unpriced event that closes a hold is charged what is left of it:
        -- what the caller expected the call to cost, rather than the fallback
        -- rate. One event per hold (the first by id) when several of the batch
        -- close it; a partial one, or one closing a hold with nothing left,
        -- keeps the fallback rate.
        WITH charged AS (
            UPDATE tracking_requestevent e SET cost_usd = h.amount, cost_source = 'hold'
            FROM (SELECT DISTINCT ON (c.reservation_id) c.event_id, c.hold_left AS amount
                  FROM jsonb_to_recordset(v_claims)
                       AS c(event_id text, reservation_id uuid, final boolean,
                            cost_source text, hold_left numeric)
                  WHERE c.final AND c.cost_source = 'fallback_rate'
                  ORDER BY c.reservation_id, c.event_id) h
            WHERE e.org_id = p_org AND e.event_id = h.event_id AND h.amount > 0
            RETURNING e.event_id, e.cost_usd
        ), patched AS (
            SELECT jsonb_agg(CASE WHEN c.event_id IS NULL THEN n
                                  ELSE n || jsonb_build_object('cost_usd', c.cost_usd,
                                                               'cost_source', 'hold') END) AS inserted,
                   bool_or(c.event_id IS NOT NULL) AS any_charged
            FROM jsonb_array_elements(v_inserted) n
            LEFT JOIN charged c ON c.event_id = n->>'event_id'
        ), claims AS (
            SELECT jsonb_agg(CASE WHEN c.event_id IS NULL THEN k
                                  ELSE k || jsonb_build_object('cost_usd', c.cost_usd) END)
                   AS claims
            FROM jsonb_array_elements(v_claims) k
            LEFT JOIN charged c ON c.event_id = k->>'event_id'
        )
        SELECT p.inserted, coalesce(k.claims, '[]') INTO v_inserted, v_claims
        FROM patched p, claims k;

        -- Each hold once: what its events settled, whether it closes, and
        -- what its windows give back (all it held when it closes, else the
        -- part of it the new costs used up).
        WITH per_hold AS (
            SELECT c.reservation_id AS id, sum(c.cost_usd) AS added, bool_or(c.final) AS closes
            FROM jsonb_to_recordset(v_claims)
                 AS c(reservation_id uuid, cost_usd numeric, final boolean)
            GROUP BY c.reservation_id
        ), settled AS (
            UPDATE budgets_reservation r
            SET settled = coalesce(r.settled, 0) + h.added,
                status = CASE WHEN h.closes THEN 'settled' ELSE r.status END,
                closed_at = CASE WHEN h.closes THEN now() ELSE r.closed_at END
            FROM per_hold h
            -- By primary key: joined on per_hold alone, a generic plan built on
            -- stale statistics hashed the whole table
            -- (tests/budgets/test_active_holds_plans.py).
            WHERE r.id = ANY(v_settle_ids) AND r.id = h.id
            RETURNING r.id, r.window_ids,
                      -- r.settled is the new value here: what it held before, less what it holds now.
                      tollgate_hold_left(r.amount, r.settled - h.added)
                      - CASE WHEN h.closes THEN 0 ELSE tollgate_hold_left(r.amount, r.settled) END
                      AS amount
        )
        SELECT coalesce(jsonb_agg(to_jsonb(settled)) FILTER (WHERE settled.amount > 0), '[]')
        INTO v_settled FROM settled;
    END IF;

    -- Spend per window of the events' periods: one pass over the applicable
    -- budgets, two more only when a period's window does not exist yet.
    FOR i IN 1..2 LOOP
        SELECT array_agg(x.window_id ORDER BY x.window_id), array_agg(x.cost ORDER BY x.window_id),
               coalesce(bool_or(x.window_id IS NULL), false)
        INTO v_spend_ids, v_spend_costs, v_missing
        FROM (SELECT a.window_id, sum(n.cost_usd) AS cost
              FROM jsonb_to_recordset(v_inserted)
                   AS n(team_id bigint, user_id bigint, key_id bigint, started_at timestamptz,
                        cost_usd numeric, tag_pairs text[], model text)
              CROSS JOIN LATERAL tollgate_applicable(p_org, n.team_id, n.user_id,
                                                     n.started_at, n.key_id, n.tag_pairs,
                                                     n.model) a
              GROUP BY a.window_id, a.budget_id, a.period_start) x;
        EXIT WHEN NOT v_missing;
        -- The zone stays until this commits (tollgate_change_time_zone).
        PERFORM 1 FROM budgets_organization WHERE id = p_org FOR KEY SHARE;
        PERFORM tollgate_create_windows(array_agg(a.budget_id), array_agg(a.period_start),
                                        array_agg(a.period_end))
        FROM jsonb_to_recordset(v_inserted)
             AS n(team_id bigint, user_id bigint, key_id bigint, started_at timestamptz,
                  tag_pairs text[], model text)
        CROSS JOIN LATERAL tollgate_applicable(p_org, n.team_id, n.user_id, n.started_at,
                                               n.key_id, n.tag_pairs, n.model) a
        WHERE a.window_id IS NULL;
    END LOOP;

    SELECT coalesce(array_agg(x.wid ORDER BY x.wid), '{}'), array_agg(x.amount ORDER BY x.wid)
    INTO v_unhold_ids, v_unhold_amounts
    FROM (SELECT w.wid, sum((s->>'amount')::numeric) AS amount
          FROM jsonb_array_elements(v_settled) s
          CROSS JOIN LATERAL (SELECT jsonb_array_elements_text(s->'window_ids')::bigint AS wid) w
          GROUP BY w.wid) x;

    PERFORM 1 FROM budgets_budgetwindow
    WHERE id = ANY(coalesce(v_spend_ids, '{}') || v_unhold_ids)
    ORDER BY id
    FOR UPDATE;
    UPDATE budgets_budgetwindow w SET reserved = w.reserved - d.amount
    FROM unnest(v_unhold_ids, v_unhold_amounts) AS d(wid, amount)
    WHERE w.id = d.wid;
    UPDATE budgets_budgetwindow w SET spent = w.spent + d.cost
    FROM unnest(v_spend_ids, v_spend_costs) AS d(wid, cost)
    WHERE w.id = d.wid AND d.cost > 0;
    -- Spend may cross a threshold; a settled hold (cost below it, where the
    -- org counts holds) may fall back below one.
    PERFORM tollgate_raise_alerts(coalesce(v_spend_ids, '{}') || v_unhold_ids);
    -- The first use of a model name that no price entry resolves raises an
    -- alert, once per org and name ever (tollgate_alert_unpriced_models). A
    -- batch whose new events are all priced skips it on what its INSERT
    -- returned, reading no table.
    IF v_unpriced THEN
        PERFORM tollgate_alert_unpriced_models(p_org, p_events, v_inserted);
    END IF;

    -- One result per event, in request order.
    SELECT jsonb_agg(jsonb_build_object(
               'idx', (e->>'idx')::int,
               'id', r.event_id,
               'cost_usd', trim_scale(r.cost_usd)::text,
               'priced', r.priced,
               'price_model', r.price_model,
               'cost_source', nullif(r.cost_source, ''),
               'duplicate', NOT r.new,
               -- `settled`: this event's cost was settled into the hold now
               -- (for a replay: the hold has settled costs); `status`: the
               -- hold's state now ('active' after a partial settlement);
               -- `settled_usd`: all settled into it so far (NULL: closed
               -- before that was kept; over_hold_usd then compares this event).
               'reservation', CASE WHEN r.reservation_id IS NULL THEN NULL
                   ELSE jsonb_build_object(
                       'id', r.reservation_id,
                       'settled', CASE WHEN r.new THEN s.event_id IS NOT NULL
                                       ELSE res.status = 'settled' OR res.settled > 0 END,
                       'status', res.status,
                       'held_usd', trim_scale(res.amount)::text,
                       'settled_usd', trim_scale(res.settled)::text,
                       'over_hold_usd', CASE
                           WHEN res.settled IS NULL THEN
                               CASE WHEN res.status = 'settled' AND res.amount < r.cost_usd
                                    THEN trim_scale(r.cost_usd - res.amount)::text END
                           WHEN res.settled > res.amount
                               THEN trim_scale(res.settled - res.amount)::text END)
                   END)
               ORDER BY (e->>'idx')::int)
    INTO v_results
    FROM jsonb_array_elements(p_events) e
    JOIN (SELECT n.*, true AS new
          FROM jsonb_to_recordset(v_inserted)
               AS n(event_id text, cost_usd numeric, priced boolean, price_model text,
                    cost_source text, reservation_id uuid)
          UNION ALL
          SELECT p.*, false
          FROM jsonb_to_recordset(v_replayed)
               AS p(event_id text, cost_usd numeric, priced boolean, price_model text,
                    cost_source text, reservation_id uuid)
         ) r ON r.event_id = e->>'event_id'
    LEFT JOIN jsonb_to_recordset(v_claims) AS s(event_id text)
           ON s.event_id = r.event_id AND r.new
    -- A replay's stored reservation is the one it names (same payload hash).
    -- Looked up per event by primary key. As a join (OFFSET 0 keeps the
    -- planner from turning the lookup into one), a generic plan built on
    -- stale statistics of the table hashed it whole: ~280 pages per call in
    -- tests/budgets/test_active_holds_plans.py.
    LEFT JOIN LATERAL (SELECT status, amount, settled FROM budgets_reservation
                       WHERE id = r.reservation_id AND org_id = p_org
                       OFFSET 0) res ON true;
    -- xid: this transaction, for the dashboard's live updates; a page leaves
    -- out the spend its summary's snapshot already saw (dashboard/live.py).
    -- NULL when the transaction wrote nothing.
    RETURN jsonb_build_object('status', 'ok', 'results', v_results,
                              'xid', pg_current_xact_id_if_assigned()::text);
END $$;
