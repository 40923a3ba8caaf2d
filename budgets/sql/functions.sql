-- Server-side functions of the budget hot path. Each hot-path request is one
-- call to one of these functions: one round trip, one transaction.
-- Installed (CREATE OR REPLACE) by the migrations of the budgets app; a change
-- here needs a new migration that runs this file again.

-- Start and end of the period that contains p_at, in the org's time zone.
-- Days, ISO weeks (Monday) and calendar months roll over at local midnight.
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
                ELSE date_trunc(p_period, p_at, p_tz) END,
           CASE WHEN p_period = 'total' THEN '9999-12-31 00:00:00+00'::timestamptz
                ELSE ((date_trunc(p_period, p_at, p_tz) AT TIME ZONE p_tz)
                      + ('1 ' || p_period)::interval) AT TIME ZONE p_tz END
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

-- The price of `p_model` in effect at `p_at`: the newest row with
-- effective_from <= p_at, preferring the caller's provider. A set-returning
-- SQL function, so the planner inlines it into LATERAL joins (ingest prices
-- a whole batch in one statement).
CREATE OR REPLACE FUNCTION tollgate_price_at(p_model text, p_provider text, p_at timestamptz)
RETURNS SETOF tracking_price LANGUAGE sql STABLE ROWS 1 AS $$
    SELECT * FROM tracking_price p
    WHERE p.model = p_model AND p.effective_from <= p_at
    ORDER BY p.provider = coalesce(p_provider, '') DESC, p.effective_from DESC
    LIMIT 1
$$;

-- Cost of usage in disjoint token buckets at one price row. Cache reads and
-- writes fall back to the input price, reasoning to the output price. Above
-- the tier threshold (all input tokens counted) input and output use the
-- tier's prices. NULL when p is NULL (no price). A plain expression, inlined.
CREATE OR REPLACE FUNCTION tollgate_cost(
    p tracking_price, p_input bigint, p_cache_read bigint, p_cache_write bigint,
    p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql IMMUTABLE AS $$
    SELECT round(
        CASE WHEN (p).tier_threshold_tokens IS NOT NULL
                  AND p_input + p_cache_read + p_cache_write > (p).tier_threshold_tokens
             THEN p_input * coalesce((p).input_above_threshold_per_token, (p).input_per_token)
                + p_output * coalesce((p).output_above_threshold_per_token, (p).output_per_token)
                + p_reasoning * coalesce((p).reasoning_per_token,
                                         (p).output_above_threshold_per_token, (p).output_per_token)
             ELSE p_input * (p).input_per_token + p_output * (p).output_per_token
                + p_reasoning * coalesce((p).reasoning_per_token, (p).output_per_token) END
        + p_cache_read * coalesce((p).cache_read_per_token, (p).input_per_token)
        + p_cache_write * coalesce((p).cache_write_per_token, (p).input_per_token), 10)
$$;

-- Cost of one event's usage; NULL when the model has no price.
CREATE OR REPLACE FUNCTION tollgate_event_cost(
    p_model text, p_provider text, p_at timestamptz, p_input bigint, p_cache_read bigint,
    p_cache_write bigint, p_output bigint, p_reasoning bigint)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_cost(pr, p_input, p_cache_read, p_cache_write, p_output, p_reasoning)
    FROM tollgate_price_at(p_model, p_provider, p_at) pr
$$;

-- Price of an estimate (input tokens + at most max_output tokens).
CREATE OR REPLACE FUNCTION tollgate_estimate_cost(
    p_model text, p_input bigint, p_max_output bigint, p_at timestamptz)
RETURNS numeric LANGUAGE sql STABLE AS $$
    SELECT tollgate_event_cost(p_model, NULL, p_at, p_input, 0, 0, p_max_output, 0)
$$;

-- Every budget that applies to (org, team, user), with the bounds of its
-- current period and the window row for that period when it exists.
CREATE OR REPLACE FUNCTION tollgate_applicable(
    p_org bigint, p_tz text, p_team bigint, p_user bigint, p_at timestamptz)
RETURNS TABLE (budget_id bigint, scope text, subject text, period text, limit_usd numeric,
               soft_limit_pct smallint, enforce boolean, period_start timestamptz,
               period_end timestamptz, window_id bigint, spent numeric, reserved numeric)
LANGUAGE sql STABLE AS $$
    SELECT b.id, b.scope,
           CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug ELSE u.external_id END,
           b.period, b.limit_usd, b.soft_limit_pct::smallint, b.enforce,
           pb.period_start, pb.period_end, w.id, coalesce(w.spent, 0), coalesce(w.reserved, 0)
    FROM budgets_budget b
    JOIN budgets_organization o ON o.id = b.org_id
    LEFT JOIN budgets_team t ON t.id = b.team_id
    LEFT JOIN budgets_enduser u ON u.id = b.user_id
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, p_tz, p_at) pb
    LEFT JOIN budgets_budgetwindow w ON w.budget_id = b.id AND w.period_start = pb.period_start
    WHERE b.org_id = p_org
      AND (b.scope = 'org'
           OR (b.scope = 'team' AND b.team_id = p_team)
           OR (b.scope = 'user' AND b.user_id = p_user))
    ORDER BY CASE b.scope WHEN 'org' THEN 0 WHEN 'team' THEN 1 ELSE 2 END, b.period
$$;

-- One budget as the API shows it (money as text: JSON numbers would lose precision).
-- STABLE, not IMMUTABLE (to_char and jsonb_build_object are STABLE): the
-- planner inlines a SQL function only when its declared volatility covers
-- its body, and a call that is not inlined cost ~30 us instead of ~10 (this
-- and tollgate_warning run for every budget of every hold).
CREATE OR REPLACE FUNCTION tollgate_budget_json(
    p_scope text, p_subject text, p_period text, p_limit numeric, p_soft smallint,
    p_enforce boolean, p_spent numeric, p_reserved numeric, p_period_end timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT jsonb_build_object(
        'scope', p_scope, 'id', p_subject, 'period', p_period,
        'limit_usd', trim_scale(p_limit)::text,
        'spent_usd', trim_scale(p_spent)::text,
        'reserved_usd', trim_scale(p_reserved)::text,
        'remaining_usd', trim_scale(greatest(p_limit - p_spent - p_reserved, 0))::text,
        'used_pct', CASE WHEN p_limit > 0
                         THEN round((p_spent + p_reserved) * 100 / p_limit, 1)::text END,
        'soft_limit_pct', p_soft,
        'resets_at', CASE WHEN p_period = 'total' THEN NULL
                          ELSE to_char(p_period_end AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') END,
        'enforce', p_enforce)
$$;

-- A soft-limit warning when `p_used` (spent + reserved + this request) reaches
-- the budget's soft limit; NULL otherwise (jsonb || NULL leaves arrays as is).
CREATE OR REPLACE FUNCTION tollgate_warning(
    p_scope text, p_subject text, p_period text, p_limit numeric, p_soft smallint,
    p_enforce boolean, p_used numeric)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT CASE
        WHEN p_limit > 0 AND p_used * 100 >= p_soft * p_limit THEN jsonb_build_array(
            jsonb_build_object('scope', p_scope, 'id', p_subject, 'period', p_period,
                'used_pct', round(p_used * 100 / p_limit, 1)::text, 'enforce', p_enforce))
        WHEN p_limit = 0 AND p_used > 0 THEN jsonb_build_array(
            jsonb_build_object('scope', p_scope, 'id', p_subject, 'period', p_period,
                'used_pct', NULL, 'enforce', p_enforce))
        ELSE '[]'::jsonb END
$$;

-- The budgets of one (org, team, user) as the API shows them.
CREATE OR REPLACE FUNCTION tollgate_list_subject_budgets(
    p_org bigint, p_tz text, p_team bigint, p_user bigint, p_at timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(tollgate_budget_json(a.scope, a.subject, a.period, a.limit_usd,
        a.soft_limit_pct, a.enforce, a.spent, a.reserved, a.period_end)), '[]')
    FROM tollgate_applicable(p_org, p_tz, p_team, p_user, p_at) a
$$;

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

-- The decision for one request. With p_hold it also takes the hold: every
-- applicable window gets `reserved += amount` in one step, or none does.
--
-- Concurrency: windows are locked in id order (no deadlocks between holds),
-- and the limits are checked again under the lock, so concurrent holds can
-- never take an enforced window's spent + reserved over its limit. A request
-- that is already over on the unlocked read is denied without taking locks,
-- so a full budget does not serialise its denials. Little work happens while
-- the locks are held: they are the throughput limit of a shared (org) budget.
--
-- Result: {"status": "ok" | "held" | "denied" | "not_found" | "unpriced", ...}.
CREATE OR REPLACE FUNCTION tollgate_decide(
    p_org bigint, p_tz text, p_strict boolean, p_team text, p_user text,
    p_amount numeric, p_model text, p_input bigint, p_max_output bigint,
    p_hold boolean, p_ttl_seconds integer, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql
-- Generic plans: with "auto", PL/pgSQL kept re-planning the inlined budget
-- lookups on every call (custom plans looked cheaper), which cost more than
-- running them (measured: 1,349 -> 841 us per hold, 896 -> 468 in a batch).
SET plan_cache_mode = force_generic_plan AS $$
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
    r record;
BEGIN
    -- Subjects: one read in the common case, registration on first sight.
    SELECT (SELECT id FROM budgets_team WHERE org_id = p_org AND slug = p_team),
           (SELECT id FROM budgets_enduser WHERE org_id = p_org AND external_id = p_user)
    INTO v_team, v_user;
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
    IF v_amount IS NULL AND p_input IS NOT NULL THEN
        v_amount := tollgate_estimate_cost(p_model, p_input, coalesce(p_max_output, 0), v_at);
        IF v_amount IS NULL THEN
            RETURN jsonb_build_object('status', 'unpriced', 'field', 'model');
        END IF;
    END IF;
    v_amount := coalesce(v_amount, 0);

    -- Unlocked read: the answer for a check, an early denial for a hold.
    FOR r IN SELECT * FROM tollgate_applicable(p_org, p_tz, v_team, v_user, v_at) LOOP
        IF v_blocked IS NULL AND r.enforce AND r.spent + r.reserved + v_amount > r.limit_usd THEN
            v_blocked := tollgate_budget_json(r.scope, r.subject, r.period, r.limit_usd,
                r.soft_limit_pct, r.enforce, r.spent, r.reserved, r.period_end);
        END IF;
        IF r.window_id IS NULL THEN
            v_missing := true;
        ELSE
            v_window_ids := v_window_ids || r.window_id;
        END IF;
        IF p_hold AND v_blocked IS NULL THEN
            CONTINUE;  -- described from the locked rows below
        END IF;
        v_rows := v_rows || tollgate_budget_json(r.scope, r.subject, r.period, r.limit_usd,
            r.soft_limit_pct, r.enforce, r.spent, r.reserved, r.period_end);
        v_warnings := v_warnings || tollgate_warning(r.scope, r.subject, r.period, r.limit_usd,
            r.soft_limit_pct, r.enforce, r.spent + r.reserved + v_amount);
    END LOOP;

    IF p_hold AND v_blocked IS NULL AND v_missing THEN
        -- First use of a period: create its windows, then collect every id again.
        -- In (budget, period) order like tollgate_decide_many and
        -- tollgate_record_events: a concurrent transaction creating the same
        -- windows in another order would wait for this one while it waits.
        INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)
        SELECT a.budget_id, a.period_start, a.period_end, 0, 0
        FROM tollgate_applicable(p_org, p_tz, v_team, v_user, v_at) a
        WHERE a.window_id IS NULL
        ORDER BY a.budget_id, a.period_start
        ON CONFLICT (budget_id, period_start) DO NOTHING;
        SELECT coalesce(array_agg(a.window_id), '{}') INTO v_window_ids
        FROM tollgate_applicable(p_org, p_tz, v_team, v_user, v_at) a;
    END IF;

    IF p_hold AND v_blocked IS NULL THEN
        -- Lock in id order and decide on the newest committed values.
        FOR r IN
            SELECT w.id, b.scope, b.period, b.limit_usd, b.soft_limit_pct::smallint AS soft,
                   b.enforce, w.spent, w.reserved, w.period_end,
                   CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug
                                ELSE u.external_id END AS subject
            FROM budgets_budgetwindow w
            JOIN budgets_budget b ON b.id = w.budget_id
            JOIN budgets_organization o ON o.id = b.org_id
            LEFT JOIN budgets_team t ON t.id = b.team_id
            LEFT JOIN budgets_enduser u ON u.id = b.user_id
            WHERE w.id = ANY(v_window_ids)
            ORDER BY w.id
            FOR UPDATE OF w
        LOOP
            IF v_blocked IS NULL AND r.enforce AND r.spent + r.reserved + v_amount > r.limit_usd THEN
                v_blocked := tollgate_budget_json(r.scope, r.subject, r.period, r.limit_usd,
                    r.soft, r.enforce, r.spent, r.reserved, r.period_end);
            END IF;
            -- Described as they will be after the hold.
            v_rows := v_rows || tollgate_budget_json(r.scope, r.subject, r.period, r.limit_usd,
                r.soft, r.enforce, r.spent, r.reserved + v_amount, r.period_end);
            v_warnings := v_warnings || tollgate_warning(r.scope, r.subject, r.period, r.limit_usd,
                r.soft, r.enforce, r.spent + r.reserved + v_amount);
            -- An alert is possible only at or past the soft limit; most holds skip it.
            v_alert := v_alert OR (r.limit_usd > 0
                AND (r.spent + r.reserved + v_amount) * 100 >= r.soft * r.limit_usd);
        END LOOP;
        IF v_blocked IS NOT NULL THEN
            -- Lost the race for the last of the budget: deny, nothing written.
            RETURN jsonb_build_object('status', 'denied', 'amount_usd', trim_scale(v_amount)::text,
                'blocked', v_blocked, 'budgets', tollgate_list_subject_budgets(
                    p_org, p_tz, v_team, v_user, v_at), 'warnings', '[]'::jsonb);
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
        (id, org_id, team_id, user_id, amount, status, window_ids, model, created_at, expires_at)
    VALUES (v_res_id, p_org, v_team, v_user, v_amount, 'active', v_window_ids,
            coalesce(p_model, ''), now(), v_expires);
    RETURN jsonb_build_object('status', 'held', 'reservation_id', v_res_id,
        'amount_usd', trim_scale(v_amount)::text,
        'expires_at', to_char(v_expires AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'),
        'budgets', v_rows, 'warnings', v_warnings);
END $$;

-- Take a hold back from the windows it was added to. Caller holds no locks.
CREATE OR REPLACE FUNCTION tollgate_unhold(p_window_ids bigint[], p_amount numeric)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM budgets_budgetwindow WHERE id = ANY(p_window_ids) ORDER BY id FOR UPDATE;
    UPDATE budgets_budgetwindow SET reserved = reserved - p_amount WHERE id = ANY(p_window_ids);
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
    SELECT status, amount, window_ids INTO r
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
    PERFORM tollgate_unhold(r.window_ids, r.amount);
    RETURN jsonb_build_object('status', 'released', 'released_now', true);
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
        RETURNING amount, window_ids
    ), per_window AS (
        SELECT wid, sum(e.amount) AS amount FROM expired e, unnest(e.window_ids) AS wid GROUP BY wid
    )
    SELECT (SELECT count(*) FROM expired), array_agg(wid ORDER BY wid), array_agg(amount ORDER BY wid)
    INTO v_count, v_ids, v_amounts FROM per_window;
    IF v_ids IS NOT NULL THEN
        PERFORM 1 FROM budgets_budgetwindow WHERE id = ANY(v_ids) ORDER BY id FOR UPDATE;
        UPDATE budgets_budgetwindow w SET reserved = w.reserved - d.amount
        FROM unnest(v_ids, v_amounts) AS d(wid, amount) WHERE w.id = d.wid;
    END IF;
    RETURN coalesce(v_count, 0);
END $$;

-- Every budget of an org with its current window (zeros before first use).
CREATE OR REPLACE FUNCTION tollgate_list_budgets(p_org bigint, p_tz text, p_at timestamptz)
RETURNS jsonb LANGUAGE sql STABLE AS $$
    SELECT coalesce(jsonb_agg(
        tollgate_budget_json(b.scope,
            CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug ELSE u.external_id END,
            b.period, b.limit_usd, b.soft_limit_pct::smallint, b.enforce,
            coalesce(w.spent, 0), coalesce(w.reserved, 0), pb.period_end)
        ORDER BY CASE b.scope WHEN 'org' THEN 0 WHEN 'team' THEN 1 ELSE 2 END,
                 coalesce(t.slug, u.external_id), b.period), '[]')
    FROM budgets_budget b
    JOIN budgets_organization o ON o.id = b.org_id
    LEFT JOIN budgets_team t ON t.id = b.team_id
    LEFT JOIN budgets_enduser u ON u.id = b.user_id
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, coalesce(p_tz, o.time_zone), coalesce(p_at, now())) pb
    LEFT JOIN budgets_budgetwindow w ON w.budget_id = b.id AND w.period_start = pb.period_start
    WHERE b.org_id = p_org
$$;

-- Create or replace one budget (scope org: p_subject must be the org's slug).
CREATE OR REPLACE FUNCTION tollgate_put_budget(
    p_org bigint, p_tz text, p_strict boolean, p_scope text, p_subject text, p_period text,
    p_limit numeric, p_soft smallint, p_enforce boolean, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
    v_team bigint;
    v_user bigint;
    v_budget bigint;
    r record;
BEGIN
    IF p_scope = 'org' THEN
        PERFORM 1 FROM budgets_organization WHERE id = p_org AND slug = p_subject;
        IF NOT FOUND THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    ELSIF p_scope = 'team' THEN
        v_team := tollgate_team_id(p_org, p_subject, NOT p_strict);
        IF v_team IS NULL THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    ELSE
        v_user := tollgate_enduser_id(p_org, p_subject, NOT p_strict);
        IF v_user IS NULL THEN RETURN jsonb_build_object('status', 'not_found'); END IF;
    END IF;
    INSERT INTO budgets_budget (org_id, scope, team_id, user_id, period, limit_usd,
                                soft_limit_pct, enforce, created_at, updated_at)
    VALUES (p_org, p_scope, v_team, v_user, p_period, p_limit, p_soft, p_enforce, now(), now())
    ON CONFLICT (org_id, scope, team_id, user_id, period) DO UPDATE
        SET limit_usd = EXCLUDED.limit_usd, soft_limit_pct = EXCLUDED.soft_limit_pct,
            enforce = EXCLUDED.enforce, updated_at = now()
    RETURNING id INTO v_budget;
    SELECT a.* INTO r FROM tollgate_applicable(p_org, p_tz, v_team, v_user, coalesce(p_at, now())) a
    WHERE a.budget_id = v_budget;
    RETURN jsonb_build_object('status', 'ok', 'budget', tollgate_budget_json(r.scope, r.subject,
        r.period, r.limit_usd, r.soft_limit_pct, r.enforce, r.spent, r.reserved, r.period_end));
END $$;

CREATE OR REPLACE FUNCTION tollgate_delete_budget(
    p_org bigint, p_scope text, p_subject text, p_period text)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE v_budget bigint;
BEGIN
    -- Locked first, so that no hold can open a new window for it in between.
    SELECT b.id INTO v_budget
    FROM budgets_budget b
    JOIN budgets_organization o ON o.id = b.org_id
    WHERE b.org_id = p_org AND b.scope = p_scope AND b.period = p_period
      AND CASE p_scope
            WHEN 'org' THEN o.slug = p_subject
            WHEN 'team' THEN b.team_id = (SELECT id FROM budgets_team WHERE org_id = p_org AND slug = p_subject)
            ELSE b.user_id = (SELECT id FROM budgets_enduser WHERE org_id = p_org AND external_id = p_subject)
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
    DELETE FROM budgets_budget WHERE id = v_budget;
    RETURN jsonb_build_object('status', 'deleted');
END $$;

-- Every (item, applicable budget) pair of a batch of decisions.
CREATE OR REPLACE FUNCTION tollgate_batch_applicable(p_items jsonb)
RETURNS TABLE (window_id bigint, budget_id bigint, period_start timestamptz,
               period_end timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT a.window_id, a.budget_id, a.period_start, a.period_end
    FROM jsonb_array_elements(p_items) i
    LEFT JOIN budgets_team t ON t.org_id = (i->>'org_id')::bigint AND t.slug = i->>'team'
    LEFT JOIN budgets_enduser u
           ON u.org_id = (i->>'org_id')::bigint AND u.external_id = i->>'user'
    -- Joins, not subqueries as arguments: the planner inlines a set-returning
    -- SQL function only when its arguments hold no subqueries (measured: 380 us
    -- per item as a function call, a few us inlined).
    CROSS JOIN LATERAL tollgate_applicable((i->>'org_id')::bigint, i->>'tz', t.id, u.id, now()) a
$$;

-- Many holds in one transaction: the decisions of concurrent requests that
-- one server process collected while its previous call was running
-- (budgets/db.py, DecisionBatcher). A hot budget row is then locked and
-- committed once per batch instead of once per request, which is what caps a
-- shared (org) budget's throughput.
--
-- Set-wise: the batch's windows are locked and read (with their budgets)
-- once, every item is decided in order in memory (each sees the holds of the
-- items before it; a denied item changes nothing), then one UPDATE adds each
-- window's summed holds, one INSERT writes the reservations, and alerts are
-- raised once for the windows that reached a threshold. Per item the result
-- is what tollgate_decide answers for a hold (the budgets of a held item in
-- window id order, described as they are after its hold; those of a denied
-- item from the blocking budget on, as they were). PostgreSQL CPU per hold
-- (loadtests/hold_cost.py, batches of 32-64): ~480 us calling tollgate_decide
-- per item, ~100 us set-wise; most of what is left is building each item's
-- JSON answer.
--
-- Deadlock freedom: everything a batch waits for is taken up front in one
-- global order: new teams (sorted), new users (sorted), missing windows
-- (sorted by budget and period), then every window lock (sorted by id) -
-- the same id order single decisions, releases and the sweeper use.
--
-- p_items: [{"org_id", "tz", "strict", "team", "user", "amount", "model",
--            "input_tokens", "max_output_tokens", "ttl_seconds"}, ...]
-- Result: the tollgate_decide result of each item, in order.
CREATE OR REPLACE FUNCTION tollgate_decide_many(p_items jsonb)
RETURNS jsonb LANGUAGE plpgsql SET plan_cache_mode = force_generic_plan AS $$
DECLARE
    -- The batch's windows by slot (1..n in window id order), read under lock.
    w_id bigint[];
    w_scope text[];
    w_subject text[];
    w_period text[];
    w_limit numeric[];
    w_soft smallint[];
    w_enforce boolean[];
    w_end timestamptz[];
    w_spent numeric[];
    w_reserved numeric[];   -- including the holds of the items decided so far
    w_added numeric[];      -- what this batch adds, for the one UPDATE
    w_alert boolean[];      -- reached a threshold: tollgate_raise_alerts looks
    -- The reservations to insert, one element per held item.
    r_id uuid[] := '{}';
    r_org bigint[] := '{}';
    r_team bigint[] := '{}';
    r_user bigint[] := '{}';
    r_amount numeric[] := '{}';
    r_windows text[] := '{}';
    r_model text[] := '{}';
    r_expires timestamptz[] := '{}';
    v_results jsonb[] := '{}';
    v_rows jsonb;
    v_warnings jsonb;
    v_amount numeric;
    v_used numeric;
    v_block integer;
    v_res_id uuid;
    v_ttl integer;
    v_expires timestamptz;
    v_expires_text text;
    v_alert_ids bigint[];
    v_missing boolean;
    s integer;
    it record;
BEGIN
    -- Subjects seen for the first time (of orgs that register them), in
    -- sorted order; ON CONFLICT waits for a concurrent registration of the
    -- same one. Known subjects are skipped before the insert is tried.
    INSERT INTO budgets_team (org_id, slug, name, created_at)
    SELECT x.org_id, x.team, '', now()
    FROM (SELECT DISTINCT (i->>'org_id')::bigint AS org_id, i->>'team' AS team
          FROM jsonb_array_elements(p_items) i
          WHERE i->>'team' IS NOT NULL AND NOT (i->>'strict')::boolean) x
    WHERE NOT EXISTS (SELECT 1 FROM budgets_team t WHERE t.org_id = x.org_id AND t.slug = x.team)
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

    -- The batch's windows; the first use of a period creates them (a new
    -- statement then sees the windows created here or by others).
    SELECT array_agg(DISTINCT a.window_id), coalesce(bool_or(a.window_id IS NULL), false)
    INTO w_id, v_missing
    FROM tollgate_batch_applicable(p_items) a;
    IF v_missing THEN
        INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)
        SELECT DISTINCT a.budget_id, a.period_start, a.period_end, 0, 0
        FROM tollgate_batch_applicable(p_items) a
        WHERE a.window_id IS NULL
        ORDER BY a.budget_id, a.period_start
        ON CONFLICT (budget_id, period_start) DO NOTHING;
        SELECT array_agg(DISTINCT a.window_id) INTO w_id FROM tollgate_batch_applicable(p_items) a;
    END IF;

    -- Locked in id order and read once with their budgets (the newest
    -- committed values: a row locked after waiting is read again).
    SELECT array_agg(l.id ORDER BY l.id), array_agg(b.scope ORDER BY l.id),
           array_agg(CASE b.scope WHEN 'org' THEN o.slug WHEN 'team' THEN t.slug
                                  ELSE u.external_id END ORDER BY l.id),
           array_agg(b.period ORDER BY l.id), array_agg(b.limit_usd ORDER BY l.id),
           array_agg(b.soft_limit_pct::smallint ORDER BY l.id), array_agg(b.enforce ORDER BY l.id),
           array_agg(l.period_end ORDER BY l.id), array_agg(l.spent ORDER BY l.id),
           array_agg(l.reserved ORDER BY l.id), array_agg(0::numeric ORDER BY l.id),
           array_agg(false ORDER BY l.id)
    INTO w_id, w_scope, w_subject, w_period, w_limit, w_soft, w_enforce, w_end, w_spent,
         w_reserved, w_added, w_alert
    FROM (SELECT w.id, w.budget_id, w.period_end, w.spent, w.reserved
          FROM budgets_budgetwindow w
          WHERE w.id = ANY(w_id)
          ORDER BY w.id
          FOR UPDATE) l
    JOIN budgets_budget b ON b.id = l.budget_id
    JOIN budgets_organization o ON o.id = b.org_id
    LEFT JOIN budgets_team t ON t.id = b.team_id
    LEFT JOIN budgets_enduser u ON u.id = b.user_id;

    -- Each item with its subjects, its amount and the slots of its windows:
    -- in the order tollgate_applicable lists budgets (org, team, user; by
    -- period), and sorted (= window id order).
    FOR it IN
        SELECT x.org_id, x.team, x."user", x.model, x.input_tokens, x.ttl_seconds,
               t.id AS team_id, u.id AS user_id,
               coalesce(x.amount, CASE WHEN x.input_tokens IS NOT NULL THEN
                   tollgate_estimate_cost(x.model, x.input_tokens,
                                          coalesce(x.max_output_tokens, 0), now()) END) AS amount,
               coalesce(k.slots, '{}') AS slots, coalesce(k.sorted, '{}') AS sorted,
               coalesce(k.windows, '{}') AS windows
        FROM jsonb_array_elements(p_items) WITH ORDINALITY AS e(i, idx)
        CROSS JOIN LATERAL jsonb_to_record(e.i) AS x(
            org_id bigint, tz text, team text, "user" text, amount numeric, model text,
            input_tokens bigint, max_output_tokens bigint, ttl_seconds integer)
        LEFT JOIN budgets_team t ON t.org_id = x.org_id AND t.slug = x.team
        LEFT JOIN budgets_enduser u ON u.org_id = x.org_id AND u.external_id = x."user"
        CROSS JOIN LATERAL (
            SELECT array_agg(n.slot::int ORDER BY CASE a.scope WHEN 'org' THEN 0 WHEN 'team' THEN 1
                                                          ELSE 2 END, a.period) AS slots,
                   array_agg(n.slot::int ORDER BY n.slot) AS sorted,
                   array_agg(a.window_id ORDER BY CASE a.scope WHEN 'org' THEN 0
                                                  WHEN 'team' THEN 1 ELSE 2 END,
                                                  a.period) AS windows
            FROM tollgate_applicable(x.org_id, x.tz, t.id, u.id, now()) a
            JOIN unnest(w_id) WITH ORDINALITY AS n(window_id, slot) ON n.window_id = a.window_id
        ) k
        ORDER BY e.idx
    LOOP
        IF it.team IS NOT NULL AND it.team_id IS NULL THEN
            v_results := array_append(v_results,
                jsonb_build_object('status', 'not_found', 'field', 'team'));
            CONTINUE;
        ELSIF it."user" IS NOT NULL AND it.user_id IS NULL THEN
            v_results := array_append(v_results,
                jsonb_build_object('status', 'not_found', 'field', 'user'));
            CONTINUE;
        ELSIF it.amount IS NULL AND it.input_tokens IS NOT NULL THEN
            v_results := array_append(v_results,
                jsonb_build_object('status', 'unpriced', 'field', 'model'));
            CONTINUE;
        END IF;
        v_amount := coalesce(it.amount, 0);

        -- The first enforced budget (in listing order) that cannot take it.
        v_block := NULL;
        FOR k IN 1 .. cardinality(it.slots) LOOP
            s := it.slots[k];
            IF w_enforce[s] AND w_spent[s] + w_reserved[s] + v_amount > w_limit[s] THEN
                v_block := k;
                EXIT;
            END IF;
        END LOOP;

        v_rows := '[]';
        v_warnings := '[]';
        IF v_block IS NOT NULL THEN
            -- Denied: nothing changes. Described as they are, from the blocker on.
            FOR k IN v_block .. cardinality(it.slots) LOOP
                s := it.slots[k];
                v_rows := v_rows || tollgate_budget_json(w_scope[s], w_subject[s],
                    w_period[s], w_limit[s], w_soft[s], w_enforce[s], w_spent[s], w_reserved[s],
                    w_end[s]);
                v_warnings := v_warnings || tollgate_warning(w_scope[s], w_subject[s],
                    w_period[s], w_limit[s], w_soft[s], w_enforce[s],
                    w_spent[s] + w_reserved[s] + v_amount);
            END LOOP;
            v_results := array_append(v_results, jsonb_build_object(
                'status', 'denied', 'amount_usd', trim_scale(v_amount)::text,
                'blocked', v_rows->0, 'budgets', v_rows, 'warnings', v_warnings));
            CONTINUE;
        END IF;

        -- Held: every window takes it. Described as they are after the hold.
        FOREACH s IN ARRAY it.sorted LOOP
            w_reserved[s] := w_reserved[s] + v_amount;
            w_added[s] := w_added[s] + v_amount;
            v_used := w_spent[s] + w_reserved[s];
            v_rows := v_rows || tollgate_budget_json(w_scope[s], w_subject[s],
                w_period[s], w_limit[s], w_soft[s], w_enforce[s], w_spent[s], w_reserved[s],
                w_end[s]);
            v_warnings := v_warnings || tollgate_warning(w_scope[s], w_subject[s],
                w_period[s], w_limit[s], w_soft[s], w_enforce[s], v_used);
            -- An alert is possible only at or past the soft limit; most holds skip it.
            IF w_limit[s] > 0 AND v_used * 100 >= w_soft[s] * w_limit[s] THEN
                w_alert[s] := true;
            END IF;
        END LOOP;
        IF it.ttl_seconds IS DISTINCT FROM v_ttl THEN
            v_ttl := it.ttl_seconds;
            v_expires := now() + make_interval(secs => v_ttl);
            v_expires_text := to_char(v_expires AT TIME ZONE 'UTC',
                                      'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"');
        END IF;
        v_res_id := tollgate_new_reservation_id();
        r_id := array_append(r_id, v_res_id);
        r_org := array_append(r_org, it.org_id);
        r_team := array_append(r_team, it.team_id);
        r_user := array_append(r_user, it.user_id);
        r_amount := array_append(r_amount, v_amount);
        r_windows := array_append(r_windows, it.windows::text);
        r_model := array_append(r_model, coalesce(it.model, ''));
        r_expires := array_append(r_expires, v_expires);
        v_results := array_append(v_results, jsonb_build_object(
            'status', 'held', 'reservation_id', v_res_id,
            'amount_usd', trim_scale(v_amount)::text, 'expires_at', v_expires_text,
            'budgets', v_rows, 'warnings', v_warnings));
    END LOOP;

    UPDATE budgets_budgetwindow w SET reserved = w.reserved + d.added
    FROM unnest(w_id, w_added) AS d(id, added)
    WHERE w.id = d.id AND d.added > 0;
    SELECT array_agg(a.id) INTO v_alert_ids
    FROM unnest(w_id, w_alert) AS a(id, alert) WHERE a.alert;
    IF v_alert_ids IS NOT NULL THEN
        PERFORM tollgate_raise_alerts(v_alert_ids);
    END IF;
    INSERT INTO budgets_reservation
        (id, org_id, team_id, user_id, amount, status, window_ids, model, created_at, expires_at)
    SELECT r.id, r.org_id, r.team_id, r.user_id, r.amount, 'active', r.windows::bigint[],
           r.model, now(), r.expires
    FROM unnest(r_id, r_org, r_team, r_user, r_amount, r_windows, r_model, r_expires)
         AS r(id, org_id, team_id, user_id, amount, windows, model, expires);
    RETURN to_jsonb(v_results);
END $$;

-- Record a batch of request events (POST /v1/events) in one transaction:
-- store the new ones with their cost, settle the holds they name, and add
-- their cost to the `spent` of every budget window that applies (the period
-- that contains each event's started_at, in the org's time zone).
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
--   "started_at" (or null = now), "reservation_id", "tags", "payload_hash"}, ...]
-- Result: {"status": "ok", "results": [{"idx", "id", "cost_usd", "priced",
--   "duplicate", "reservation"}]} or {"status": "not_found", "errors": [...]}.
CREATE OR REPLACE FUNCTION tollgate_record_events(
    p_org bigint, p_tz text, p_strict boolean, p_events jsonb)
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
            payload_hash text)
        LEFT JOIN budgets_team t ON t.org_id = p_org AND t.slug = e.team
        LEFT JOIN budgets_enduser u ON u.org_id = p_org AND u.external_id = e."user"
    ), ins AS (
        INSERT INTO tracking_requestevent (
            org_id, event_id, team_id, user_id, model, provider, started_at, received_at,
            input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
            cost_usd, priced, latency_ms, status, reservation_id, tags, payload_hash)
        SELECT p_org, i.event_id, i.team_id, i.user_id, i.model, coalesce(i.provider, ''), i.at,
               clock_timestamp(), i.input_tokens, i.cache_read_tokens, i.cache_write_tokens,
               i.output_tokens, i.reasoning_tokens,
               coalesce(i.cost_usd, c.list_cost, 0), i.cost_usd IS NOT NULL OR c.list_cost IS NOT NULL,
               i.latency_ms, i.status, i.reservation_id, coalesce(i.tags, '{}'), i.payload_hash
        FROM input i
        LEFT JOIN LATERAL tollgate_price_at(i.model, i.provider, i.at) pr ON true
        CROSS JOIN LATERAL (SELECT tollgate_cost(pr, i.input_tokens, i.cache_read_tokens,
            i.cache_write_tokens, i.output_tokens, i.reasoning_tokens) AS list_cost) c
        ORDER BY i.event_id
        ON CONFLICT (org_id, event_id) DO NOTHING
        RETURNING event_id, team_id, user_id, started_at, cost_usd, priced, reservation_id
    )
    SELECT coalesce(jsonb_agg(to_jsonb(ins)), '[]') INTO v_inserted FROM ins;

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
        FROM (SELECT event_id, cost_usd, priced, reservation_id, payload_hash
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

    -- Settle the holds named by new events (each hold once, however many events name it).
    v_settle_ids := ARRAY(SELECT DISTINCT (n->>'reservation_id')::uuid
                          FROM jsonb_array_elements(v_inserted) n
                          WHERE n->>'reservation_id' IS NOT NULL ORDER BY 1);
    v_settled := '[]';
    IF v_settle_ids <> '{}' THEN
        -- Locked and read by primary key, the status checked on what was read
        -- (not in a WHERE: see tollgate_release on the partial index).
        SELECT coalesce(array_agg(r.id) FILTER (
                   WHERE r.status = 'active'
                     -- An event of a team settles only that team's (or a
                     -- teamless) hold: a team-limited key, whose events always
                     -- carry its team, cannot settle another team's hold.
                     AND EXISTS (SELECT 1 FROM jsonb_to_recordset(v_inserted)
                                               AS n(reservation_id uuid, team_id bigint)
                                 WHERE n.reservation_id = r.id
                                   AND (n.team_id IS NULL OR r.team_id IS NULL
                                        OR r.team_id = n.team_id))), '{}')
        INTO v_settle_ids
        FROM (SELECT id, status, team_id FROM budgets_reservation
              WHERE id = ANY(v_settle_ids) AND org_id = p_org
              ORDER BY id FOR UPDATE) r;
        WITH settled AS (
            UPDATE budgets_reservation r SET status = 'settled', closed_at = now()
            WHERE r.id = ANY(v_settle_ids)
            RETURNING r.id, r.amount, r.window_ids
        )
        SELECT coalesce(jsonb_agg(to_jsonb(settled)), '[]') INTO v_settled FROM settled;
    END IF;

    -- Spend per window of the events' periods: one pass over the applicable
    -- budgets, two more only when a period's window does not exist yet.
    FOR i IN 1..2 LOOP
        SELECT array_agg(x.window_id ORDER BY x.window_id), array_agg(x.cost ORDER BY x.window_id),
               coalesce(bool_or(x.window_id IS NULL), false)
        INTO v_spend_ids, v_spend_costs, v_missing
        FROM (SELECT a.window_id, sum(n.cost_usd) AS cost
              FROM jsonb_to_recordset(v_inserted)
                   AS n(team_id bigint, user_id bigint, started_at timestamptz, cost_usd numeric)
              CROSS JOIN LATERAL tollgate_applicable(p_org, p_tz, n.team_id, n.user_id,
                                                     n.started_at) a
              GROUP BY a.window_id, a.budget_id, a.period_start) x;
        EXIT WHEN NOT v_missing;
        INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)
        SELECT DISTINCT a.budget_id, a.period_start, a.period_end, 0, 0
        FROM jsonb_to_recordset(v_inserted)
             AS n(team_id bigint, user_id bigint, started_at timestamptz)
        CROSS JOIN LATERAL tollgate_applicable(p_org, p_tz, n.team_id, n.user_id, n.started_at) a
        WHERE a.window_id IS NULL
        ORDER BY a.budget_id, a.period_start
        ON CONFLICT (budget_id, period_start) DO NOTHING;
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
    PERFORM tollgate_raise_alerts(v_spend_ids);

    -- One result per event, in request order.
    SELECT jsonb_agg(jsonb_build_object(
               'idx', (e->>'idx')::int,
               'id', r.event_id,
               'cost_usd', trim_scale(r.cost_usd)::text,
               'priced', r.priced,
               'duplicate', NOT r.new,
               -- `settled`: this event settled the hold now (for a replay: the
               -- hold is settled); `status`: the hold's state now.
               'reservation', CASE WHEN r.reservation_id IS NULL THEN NULL
                   ELSE jsonb_build_object(
                       'id', r.reservation_id,
                       'settled', CASE WHEN r.new THEN s.id IS NOT NULL
                                       ELSE res.status = 'settled' END,
                       'status', res.status,
                       'held_usd', trim_scale(res.amount)::text,
                       'over_hold_usd', CASE WHEN res.status = 'settled' AND res.amount < r.cost_usd
                                             THEN trim_scale(r.cost_usd - res.amount)::text END)
                   END)
               ORDER BY (e->>'idx')::int)
    INTO v_results
    FROM jsonb_array_elements(p_events) e
    JOIN (SELECT n.*, true AS new
          FROM jsonb_to_recordset(v_inserted)
               AS n(event_id text, cost_usd numeric, priced boolean, reservation_id uuid)
          UNION ALL
          SELECT p.*, false
          FROM jsonb_to_recordset(v_replayed)
               AS p(event_id text, cost_usd numeric, priced boolean, reservation_id uuid)
         ) r ON r.event_id = e->>'event_id'
    LEFT JOIN jsonb_to_recordset(v_settled) AS s(id uuid, amount numeric)
           ON s.id = r.reservation_id AND r.new
    -- A replay's stored reservation is the one it names (same payload hash).
    -- Looked up per event by primary key. As a join (OFFSET 0 keeps the
    -- planner from turning the lookup into one), a generic plan built on
    -- stale statistics of the table hashed it whole: ~280 pages per call in
    -- tests/budgets/test_active_holds_plans.py.
    LEFT JOIN LATERAL (SELECT status, amount FROM budgets_reservation
                       WHERE id = r.reservation_id AND org_id = p_org
                       OFFSET 0) res ON true;
    -- xid: this transaction, for the dashboard's live updates; a page leaves
    -- out the spend its summary's snapshot already saw (dashboard/live.py).
    -- NULL when the transaction wrote nothing.
    RETURN jsonb_build_object('status', 'ok', 'results', v_results,
                              'xid', pg_current_xact_id_if_assigned()::text);
END $$;

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
-- '7d' / '30d' (today and the 6 / 29 days before it, local days of p_tz) or
-- 'mtd' (this local month, daily). "Today", "month to date" and the
-- trailing-week run rate behind the month-end projection need the month and
-- the last 7 days whatever the range. Rollup hours count in the local day
-- they start in (exact for zones with whole-hour offsets).
CREATE OR REPLACE FUNCTION tollgate_dashboard_bounds(p_range text, p_tz text, p_at timestamptz)
RETURNS TABLE (range_from timestamptz, hour timestamptz, today timestamptz, month timestamptz,
               month_end timestamptz, week timestamptz, lo timestamptz, hi timestamptz)
LANGUAGE sql STABLE AS $$
    SELECT f.range_from, b.hour, b.today, b.month, b.month_end, b.week,
           date_trunc('hour', least(f.range_from, b.month, b.week), 'UTC'), b.hour + interval '1 hour'
    FROM (SELECT date_trunc('hour', p_at, 'UTC') AS hour,
                 date_trunc('day', p_at, p_tz) AS today,
                 date_trunc('month', p_at, p_tz) AS month,
                 ((date_trunc('month', p_at, p_tz) AT TIME ZONE p_tz) + interval '1 month')
                     AT TIME ZONE p_tz AS month_end,
                 date_trunc('hour', p_at, 'UTC') - interval '7 days' AS week) b
    CROSS JOIN LATERAL (SELECT CASE p_range
        WHEN '24h' THEN b.hour + interval '1 hour' - interval '24 hours'
        WHEN '7d' THEN ((b.today AT TIME ZONE p_tz) - interval '6 days') AT TIME ZONE p_tz
        WHEN '30d' THEN ((b.today AT TIME ZONE p_tz) - interval '29 days') AT TIME ZONE p_tz
        WHEN 'mtd' THEN b.month END AS range_from) f
$$;

-- Usage of one org (one team when p_team is set) per bucket, team, user and
-- model in [p_lo, p_hi). A bucket is a UTC hour, or with p_days a whole local
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
CREATE OR REPLACE FUNCTION tollgate_dashboard_usage(
    p_org bigint, p_team bigint, p_lo timestamptz, p_hi timestamptz,
    p_aggregated timestamptz, p_pruned timestamptz,
    p_days boolean, p_tz text, p_cuts timestamptz[])
RETURNS TABLE (bucket timestamptz, team_id bigint, user_id bigint, model text, requests bigint,
               errors bigint, unpriced bigint, cost numeric)
LANGUAGE sql STABLE AS $$
    -- [days_lo, days_hi): the whole local days in [p_lo, p_hi), or nothing.
    -- A local day is 23 to 25 hours long, so 26 hours after a day's start
    -- lies in the next day.
    WITH whole AS (
        SELECT CASE WHEN date_trunc('day', p_lo, p_tz) = p_lo THEN p_lo
                    ELSE date_trunc('day', date_trunc('day', p_lo, p_tz) + interval '26 hours',
                                    p_tz) END AS lo,
               date_trunc('day', p_hi, p_tz) AS hi
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
        SELECT DISTINCT date_trunc('day', c, p_tz) AS day FROM unnest(p_cuts) c
        WHERE date_trunc('day', c, p_tz) <> c
    ),
    hour_ranges AS (
        SELECT p_lo AS lo, s.days_lo AS hi FROM span s
        UNION ALL
        SELECT s.days_hi, p_hi FROM span s
        UNION ALL
        SELECT d.day, date_trunc('day', d.day + interval '26 hours', p_tz)
        FROM hourly_days d, span s
        WHERE d.day >= s.days_lo AND d.day < s.days_hi
    )
    SELECT d.day, d.team_id, d.user_id, d.model, d.requests, d.errors, d.unpriced_requests,
           d.cost_usd
    FROM tracking_dailyrollup d, span s
    WHERE d.org_id = p_org AND d.day >= s.days_lo AND d.day < s.days_hi
      AND d.day NOT IN (SELECT day FROM hourly_days)
      AND (p_team IS NULL OR d.team_id = p_team)
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
        OFFSET 0) r
    UNION ALL
    SELECT date_trunc('hour', e.started_at, 'UTC'), e.team_id, e.user_id, e.model, count(*),
           count(*) FILTER (WHERE e.status = 'error'), count(*) FILTER (WHERE NOT e.priced),
           sum(e.cost_usd)
    FROM tracking_requestevent e
    WHERE e.org_id = p_org AND e.received_at > p_aggregated
      AND e.started_at >= greatest(p_lo, p_pruned) AND e.started_at < p_hi
      AND (p_team IS NULL OR e.team_id = p_team)
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

-- KPIs, budgets, recent requests (the last 50) and the org's teams.
-- Result: {"status": "ok", "summary": {…}}, or {"status": "not_found"} for
-- a team the org does not have.
-- Indexes: event_org_started for the recent requests (newest first).
CREATE OR REPLACE FUNCTION tollgate_dashboard_summary(
    p_org bigint, p_tz text, p_range text, p_team text, p_at timestamptz)
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
    b record;
    w record;
    v_summary jsonb;
BEGIN
    IF p_team IS NOT NULL THEN
        SELECT id INTO v_team FROM budgets_team WHERE org_id = p_org AND slug = p_team;
        IF v_team IS NULL THEN
            RETURN jsonb_build_object('status', 'not_found', 'field', 'team');
        END IF;
    END IF;
    SELECT * INTO b FROM tollgate_dashboard_bounds(p_range, p_tz, v_at);
    IF b.range_from IS NULL THEN
        RAISE EXCEPTION USING ERRCODE = '22023', MESSAGE = 'unknown range ' || p_range;
    END IF;
    SELECT * INTO w FROM tollgate_dashboard_watermarks();

    -- Hours and whole local days: the KPIs below filter by day starts
    -- (range, today, month) and by the two times passed as cuts (the
    -- trailing week and the 24h range start at an hour), so that a day row
    -- is never split.
    WITH hourly AS (
        SELECT u.bucket AS hour, sum(u.requests) AS requests, sum(u.errors) AS errors,
               sum(u.unpriced) AS unpriced, sum(u.cost) AS cost
        FROM tollgate_dashboard_usage(p_org, v_team, b.lo, b.hi, w.aggregated, w.pruned,
                                      true, p_tz, ARRAY[b.week, b.range_from]) u
        GROUP BY u.bucket
    ),
    kpis AS (
        SELECT coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.range_from), 0) AS spend,
               coalesce(sum(h.requests) FILTER (WHERE h.hour >= b.range_from), 0) AS requests,
               coalesce(sum(h.errors) FILTER (WHERE h.hour >= b.range_from), 0) AS errors,
               coalesce(sum(h.unpriced) FILTER (WHERE h.hour >= b.range_from), 0) AS unpriced,
               coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.today), 0) AS today,
               coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.month), 0) AS mtd,
               coalesce(sum(h.cost) FILTER (WHERE h.hour >= b.week), 0) AS week
        FROM hourly h
    ),
    recent AS (
        SELECT e.event_id, e.started_at, t.slug AS team, u.external_id AS "user", e.model,
               e.input_tokens + e.cache_read_tokens + e.cache_write_tokens + e.output_tokens
                   + e.reasoning_tokens AS tokens,
               e.cost_usd, e.priced, e.status, e.latency_ms
        FROM tracking_requestevent e
        LEFT JOIN budgets_team t ON t.id = e.team_id
        LEFT JOIN budgets_enduser u ON u.id = e.user_id
        WHERE e.org_id = p_org AND (v_team IS NULL OR e.team_id = v_team)
        ORDER BY e.started_at DESC
        LIMIT 50
    )
    SELECT jsonb_build_object(
        'org', (SELECT jsonb_build_object('slug', o.slug, 'name', o.name, 'time_zone', p_tz)
                FROM budgets_organization o WHERE o.id = p_org),
        'range', p_range,
        'team', p_team,
        'granularity', CASE WHEN p_range = '24h' THEN 'hour' ELSE 'day' END,
        'from', tollgate_iso(b.range_from),
        'to', tollgate_iso(v_at),
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
            'unpriced_requests', k.unpriced) FROM kpis k),
        'budgets', tollgate_list_budgets(p_org, p_tz, v_at),
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
                                                ELSE u.external_id END,
                       'period', bu.period, 'created_at', tollgate_iso(a.created_at),
                       'limit_usd', trim_scale(a.limit_usd)::text,
                       'used_usd', trim_scale(a.used_usd)::text,
                       'delivery', a.delivery_status,
                       'message', bu.scope || ' budget ' || CASE bu.scope WHEN 'org' THEN o.slug
                               WHEN 'team' THEN t.slug ELSE u.external_id END
                           || ' (' || bu.period || ') reached its ' || a.kind || ' limit: $'
                           || trim_scale(a.used_usd) || ' of $' || trim_scale(a.limit_usd))
                       ORDER BY a.created_at DESC, a.id DESC), '[]')
                   FROM (SELECT * FROM budgets_alert
                         WHERE org_id = p_org AND acknowledged_at IS NULL
                         ORDER BY created_at DESC, id DESC LIMIT 20) a
                   JOIN budgets_budget bu ON bu.id = a.budget_id
                   JOIN budgets_organization o ON o.id = a.org_id
                   LEFT JOIN budgets_team t ON t.id = bu.team_id
                   LEFT JOIN budgets_enduser u ON u.id = bu.user_id
                   WHERE p_team IS NULL OR t.slug = p_team))
    INTO v_summary;
    RETURN jsonb_build_object('status', 'ok', 'summary', v_summary);
END $$;

-- The chart (spend per bucket, stacked by team, or by model when p_team is
-- set; the six largest on their own, the rest as "other") and the top ten
-- teams, users and models of the range. Result: {"chart": {…}, "top": {…}},
-- or NULL for a team the org does not have.
CREATE OR REPLACE FUNCTION tollgate_dashboard_breakdown(
    p_org bigint, p_tz text, p_range text, p_team text, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_custom_plan
SET work_mem = '32MB'
-- Grouping tens of thousands of rollup rows: the planner, misled by the raw
-- tail's estimate, sorts them (89 ms at 10M events, when it was ~100k rows)
-- where hashing takes 58 ms.
SET enable_sort = off AS $$
DECLARE
    v_team bigint;
    b record;
    w record;
    v_result jsonb;
BEGIN
    IF p_team IS NOT NULL THEN
        SELECT id INTO v_team FROM budgets_team WHERE org_id = p_org AND slug = p_team;
        IF v_team IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    SELECT * INTO b FROM tollgate_dashboard_bounds(p_range, p_tz, coalesce(p_at, now()));
    SELECT * INTO w FROM tollgate_dashboard_watermarks();

    -- The range's usage summed five ways in one pass (hashed grouping
    -- sets), into the small set that everything below reads. set_id is
    -- GROUPING(bucket, team_id, user_id, model), a bit set for each column
    -- that a set does not group by: 3 = (bucket, team), 6 = (bucket, model)
    -- for the chart; 11 = team, 13 = user, 14 = model for the top lists.
    WITH sums AS MATERIALIZED (
        SELECT GROUPING(g.bucket, g.team_id, g.user_id, g.model) AS set_id,
               g.bucket, g.team_id, g.user_id, g.model,
               sum(g.requests) AS requests, sum(g.cost) AS cost
        FROM (SELECT CASE WHEN p_range = '24h' THEN u.bucket
                          ELSE date_trunc('day', u.bucket, p_tz) END AS bucket,
                     u.team_id, u.user_id, u.model, u.requests, u.cost
              FROM tollgate_dashboard_usage(p_org, v_team, b.range_from, b.hi, w.aggregated,
                                            w.pruned, p_range <> '24h', p_tz, '{}') u) g
        GROUP BY GROUPING SETS ((g.bucket, g.team_id), (g.bucket, g.model), (g.team_id),
                                (g.user_id), (g.model))
    ),
    -- Every bucket, also those without spend: UTC hours, or local days
    -- stepped in local time (a day is not always 24 hours).
    buckets AS (
        SELECT h AS bucket FROM generate_series(b.range_from, b.hour, interval '1 hour') h
        WHERE p_range = '24h'
        UNION ALL
        SELECT d AT TIME ZONE p_tz
        FROM generate_series(b.range_from AT TIME ZONE p_tz, b.today AT TIME ZONE p_tz,
                             interval '1 day') d
        WHERE p_range <> '24h'
    ),
    stacked AS (
        SELECT s.bucket, CASE WHEN v_team IS NULL THEN t.slug ELSE s.model END AS key, s.cost
        FROM sums s LEFT JOIN budgets_team t ON v_team IS NULL AND t.id = s.team_id
        WHERE s.set_id = CASE WHEN v_team IS NULL THEN 3 ELSE 6 END
    ),
    -- Each key ranked by its total, by window functions over the rows: a
    -- join back on the key (IS NOT DISTINCT FROM, for the teamless key)
    -- cannot hash; on an org of 100 teams the 24h breakdown took 44.5 ms
    -- with it, 40.0 without.
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
        WHERE s.set_id = 13 ORDER BY 2 DESC, 1 LIMIT 10
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
