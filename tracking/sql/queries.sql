-- Named queries of the tracking app's sync side (aggregate_usage, prune_events,
-- reprice, GET /v1/usage), run through Django's connection. Loaded once by
-- tracking/selectors.py; parameters are %(name)s (so no other percent sign in a
-- block, comments included: the driver formats the whole text).
--
-- Two rows of tracking_aggregationstate drive them:
--   aggregate_usage: the hourly rollups hold exactly the events with
--                    received_at <= this watermark (see tracking/services.py,
--                    "Watermark"); later ones are the raw tail.
--   prune_events:    raw events that started before this hour were deleted; the
--                    rollups of earlier hours are all that is left of them.

-- lock_rollups --
-- Serialises the writers of tracking_hourlyrollup and tracking_dailyrollup
-- (aggregate_usage, reprice, prune_events' horizon), one transaction at a
-- time, so that a refresh never races a prune or another refresh of the same
-- hour or day. The key is an arbitrary constant that only Tollgate uses.
SELECT pg_advisory_xact_lock(7340021001)

-- job_watermark --
SELECT watermark FROM tracking_aggregationstate WHERE name = %(name)s

-- advance_watermark --
-- Never moves back: two aggregators may finish their passes in any order.
INSERT INTO tracking_aggregationstate AS s (name, watermark, updated_at)
VALUES (%(name)s, %(watermark)s, now())
ON CONFLICT (name) DO UPDATE
SET watermark = greatest(s.watermark, excluded.watermark), updated_at = excluded.updated_at

-- statement_time --
-- The database's clock (the one ingest stamps received_at with), taken before
-- the snapshot of any later statement.
SELECT statement_timestamp()

-- pass_bound --
-- How far a pass may move the aggregation watermark: to just before the start
-- of the oldest other transaction still running in this database (it may yet
-- insert events stamped with its start), and at most to the database clock
-- minus `settle`; but never less far than the clock minus `lag`, so that one
-- long transaction cannot hold the rollups back for longer than that. A
-- session of another role shows neither state nor start unless this role may
-- read all statistics: it counts as running since forever, which leaves the lag.
-- A transaction that has not shown up yet (its start is published a moment
-- after it is taken) started after the clock minus `settle`.
SELECT greatest(
    statement_timestamp() - %(lag)s,
    least(statement_timestamp() - %(settle)s,
          (SELECT min(coalesce(a.xact_start, '-infinity')) - interval '1 microsecond'
           FROM pg_stat_activity a
           WHERE a.datname = current_database() AND a.backend_type = 'client backend'
             AND a.pid <> pg_backend_pid() AND a.state IS DISTINCT FROM 'idle')))

-- add_received --
-- The incremental pass: adds the events received after the watermark and up
-- to the next one to their hourly rollups, and to the daily rollups of the
-- orgs whose days are built (DailyRollupZone; the others are built whole
-- later), in one statement. The rollups hold exactly the events received up
-- to the watermark, so adding these keeps them exact, and the pass costs the
-- new events only, however many events their hours already hold (recomputing
-- the touched hours re-read the whole current hour every pass: ~1M events at
-- 300 events/s by the end of an hour). Idempotent with the watermark: the
-- pass commits the sums and the new watermark together, or neither.
-- Events that started before the prune horizon are counted apart and not
-- added, as refresh_buckets skips those hours. A day is the hours that start
-- in it (as in refresh_days). Uses index event_received.
WITH received AS (
    SELECT e.org_id, date_trunc('hour', e.started_at, 'UTC') AS hour,
           e.team_id, e.user_id, e.model,
           count(*) AS requests,
           count(*) FILTER (WHERE e.status = 'error') AS errors,
           count(*) FILTER (WHERE NOT e.priced) AS unpriced_requests,
           sum(e.input_tokens) AS input_tokens,
           sum(e.cache_read_tokens) AS cache_read_tokens,
           sum(e.cache_write_tokens) AS cache_write_tokens,
           sum(e.output_tokens) AS output_tokens,
           sum(e.reasoning_tokens) AS reasoning_tokens,
           sum(e.cost_usd) AS cost_usd
    FROM tracking_requestevent e
    WHERE e.received_at > %(watermark)s AND e.received_at <= %(through)s
    GROUP BY 1, 2, 3, 4, 5
),
fresh AS (
    SELECT * FROM received WHERE hour >= %(pruned_before)s
),
hours_written AS (
    INSERT INTO tracking_hourlyrollup AS r (
        org_id, hour, team_id, user_id, model, requests, errors, unpriced_requests,
        input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
        cost_usd)
    SELECT org_id, hour, team_id, user_id, model, requests, errors, unpriced_requests,
           input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
           cost_usd
    FROM fresh
    ORDER BY org_id, hour, team_id, user_id, model
    ON CONFLICT (org_id, hour, team_id, user_id, model) DO UPDATE
    SET requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
        unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
        input_tokens = r.input_tokens + excluded.input_tokens,
        cache_read_tokens = r.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
        output_tokens = r.output_tokens + excluded.output_tokens,
        reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens,
        cost_usd = r.cost_usd + excluded.cost_usd
    RETURNING 1
),
days_written AS (
    INSERT INTO tracking_dailyrollup AS r (
        org_id, day, team_id, user_id, model, requests, errors, unpriced_requests, cost_usd)
    SELECT f.org_id, tollgate_local_trunc('day', f.hour, z.time_zone), f.team_id, f.user_id,
           f.model,
           sum(f.requests), sum(f.errors), sum(f.unpriced_requests), sum(f.cost_usd)
    FROM fresh f JOIN tracking_dailyrollupzone z ON z.org_id = f.org_id
    GROUP BY 1, 2, 3, 4, 5
    ORDER BY 1, 2, 3, 4, 5
    ON CONFLICT (org_id, day, team_id, user_id, model) DO UPDATE
    SET requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
        unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
        cost_usd = r.cost_usd + excluded.cost_usd
    RETURNING r.org_id, r.day
),
tags_written AS (
    -- The tag rollups of the names built for each org (tracking_tagrollupbuild):
    -- one more read of the same few events, one row per name whether or not
    -- the event carries the tag (NULL value), so each name sums to the hour.
    INSERT INTO tracking_tagrollup AS r (
        org_id, hour, name, value, team_id, model, requests, errors, unpriced_requests,
        input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
        cost_usd)
    SELECT e.org_id, date_trunc('hour', e.started_at, 'UTC'), b.name, e.tags ->> b.name,
           e.team_id, e.model,
           count(*), count(*) FILTER (WHERE e.status = 'error'),
           count(*) FILTER (WHERE NOT e.priced),
           sum(e.input_tokens), sum(e.cache_read_tokens), sum(e.cache_write_tokens),
           sum(e.output_tokens), sum(e.reasoning_tokens), sum(e.cost_usd)
    FROM tracking_requestevent e
    JOIN tracking_tagrollupbuild b ON b.org_id = e.org_id
    WHERE e.received_at > %(watermark)s AND e.received_at <= %(through)s
      AND e.started_at >= %(pruned_before)s
    GROUP BY 1, 2, 3, 4, 5, 6
    ORDER BY 1, 3, 2, 4, 5, 6
    ON CONFLICT (org_id, name, hour, value, team_id, model) DO UPDATE
    SET requests = r.requests + excluded.requests, errors = r.errors + excluded.errors,
        unpriced_requests = r.unpriced_requests + excluded.unpriced_requests,
        input_tokens = r.input_tokens + excluded.input_tokens,
        cache_read_tokens = r.cache_read_tokens + excluded.cache_read_tokens,
        cache_write_tokens = r.cache_write_tokens + excluded.cache_write_tokens,
        output_tokens = r.output_tokens + excluded.output_tokens,
        reasoning_tokens = r.reasoning_tokens + excluded.reasoning_tokens,
        cost_usd = r.cost_usd + excluded.cost_usd
    RETURNING 1
),
keys_written AS (
    -- The key rollups (tracking_keyrollup): what key budgets seed from once
    -- the raw events are pruned.
    INSERT INTO tracking_keyrollup AS r (org_id, hour, key_id, model, requests, cost_usd)
    SELECT e.org_id, date_trunc('hour', e.started_at, 'UTC'), e.key_id, e.model, count(*),
           sum(e.cost_usd)
    FROM tracking_requestevent e
    WHERE e.received_at > %(watermark)s AND e.received_at <= %(through)s
      AND e.started_at >= %(pruned_before)s AND e.key_id IS NOT NULL
    GROUP BY 1, 2, 3, 4
    ORDER BY 1, 3, 2, 4
    ON CONFLICT (org_id, key_id, hour, model) DO UPDATE
    SET requests = r.requests + excluded.requests, cost_usd = r.cost_usd + excluded.cost_usd
    RETURNING 1
)
SELECT (SELECT count(*) FROM (SELECT DISTINCT org_id, hour FROM fresh) b) AS buckets,
       (SELECT coalesce(sum(requests), 0) FROM fresh) AS events,
       (SELECT coalesce(sum(requests), 0) FROM received
        WHERE hour < %(pruned_before)s) AS skipped_events,
       (SELECT count(*) FROM hours_written) AS written,
       (SELECT count(*) FROM (SELECT DISTINCT org_id, day FROM days_written) d) AS days,
       (SELECT count(*) FROM tags_written) AS tag_rows,
       (SELECT count(*) FROM keys_written) AS key_rows

-- rebuild_buckets --
-- Every bucket from the given hour on that has raw events or a rollup. A rollup
-- hour before the org's oldest raw event is left alone: its events were pruned
-- (or deleted some other way), and the rollup is all that is left of them.
WITH oldest AS (
    SELECT o.id AS org_id,
           (SELECT date_trunc('hour', min(e.started_at), 'UTC')
            FROM tracking_requestevent e WHERE e.org_id = o.id) AS hour
    FROM budgets_organization o
)
SELECT org_id, hour FROM (
    SELECT e.org_id, date_trunc('hour', e.started_at, 'UTC') AS hour
    FROM tracking_requestevent e
    WHERE e.started_at >= %(since)s
    UNION
    SELECT r.org_id, r.hour
    FROM tracking_hourlyrollup r JOIN oldest ON oldest.org_id = r.org_id
    WHERE r.hour >= %(since)s AND r.hour >= oldest.hour
) b
ORDER BY org_id, hour

-- refresh_buckets --
-- Recomputes (org, hour) buckets from their raw events received up to
-- `through` (the aggregation watermark they are written under): upserts every
-- (team, user, model) row, deletes the rows no event backs any more. Exact
-- (numeric sums) and idempotent: an unchanged row is not even rewritten.
-- Hours before the prune horizon are skipped: their raw events are gone.
-- Reads events through index event_org_started, rollups through the unique
-- index rollup_unique_bucket (org, hour, ...).
WITH buckets AS (
    SELECT DISTINCT b.org_id, b.hour
    FROM unnest(%(org_ids)s::bigint[], %(hours)s::timestamptz[]) AS b(org_id, hour)
    WHERE b.hour >= %(pruned_before)s
),
fresh AS (
    -- LATERAL: one index range scan per bucket. A plain join lets the planner
    -- hash the whole events table on org_id and filter the hours afterwards.
    SELECT b.org_id, b.hour, f.*
    FROM buckets b
    CROSS JOIN LATERAL (
        SELECT e.team_id, e.user_id, e.model,
               count(*) AS requests,
               count(*) FILTER (WHERE e.status = 'error') AS errors,
               count(*) FILTER (WHERE NOT e.priced) AS unpriced_requests,
               sum(e.input_tokens) AS input_tokens,
               sum(e.cache_read_tokens) AS cache_read_tokens,
               sum(e.cache_write_tokens) AS cache_write_tokens,
               sum(e.output_tokens) AS output_tokens,
               sum(e.reasoning_tokens) AS reasoning_tokens,
               sum(e.cost_usd) AS cost_usd
        FROM tracking_requestevent e
        WHERE e.org_id = b.org_id
          AND e.started_at >= b.hour AND e.started_at < b.hour + interval '1 hour'
          AND e.received_at <= %(through)s
        GROUP BY e.team_id, e.user_id, e.model
    ) f
),
written AS (
    INSERT INTO tracking_hourlyrollup AS r (
        org_id, hour, team_id, user_id, model, requests, errors, unpriced_requests,
        input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
        cost_usd)
    SELECT org_id, hour, team_id, user_id, model, requests, errors, unpriced_requests,
           input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
           cost_usd
    FROM fresh
    ORDER BY org_id, hour, team_id, user_id, model
    ON CONFLICT (org_id, hour, team_id, user_id, model) DO UPDATE
    SET requests = excluded.requests, errors = excluded.errors,
        unpriced_requests = excluded.unpriced_requests, input_tokens = excluded.input_tokens,
        cache_read_tokens = excluded.cache_read_tokens,
        cache_write_tokens = excluded.cache_write_tokens, output_tokens = excluded.output_tokens,
        reasoning_tokens = excluded.reasoning_tokens, cost_usd = excluded.cost_usd
    WHERE (r.requests, r.errors, r.unpriced_requests, r.input_tokens, r.cache_read_tokens,
           r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, r.cost_usd)
          IS DISTINCT FROM
          (excluded.requests, excluded.errors, excluded.unpriced_requests, excluded.input_tokens,
           excluded.cache_read_tokens, excluded.cache_write_tokens, excluded.output_tokens,
           excluded.reasoning_tokens, excluded.cost_usd)
    RETURNING 1
),
removed AS (
    DELETE FROM tracking_hourlyrollup r
    USING buckets b
    WHERE r.org_id = b.org_id AND r.hour = b.hour
      AND NOT EXISTS (
          SELECT 1 FROM fresh f
          WHERE f.org_id = r.org_id AND f.hour = r.hour AND f.model = r.model
            AND f.team_id IS NOT DISTINCT FROM r.team_id
            AND f.user_id IS NOT DISTINCT FROM r.user_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM buckets) AS buckets,
       (SELECT coalesce(sum(requests), 0) FROM fresh) AS events,
       (SELECT count(*) FROM written) AS written,
       (SELECT count(*) FROM removed) AS removed

-- refresh_days --
-- Re-sums the local days of these (org, hour) buckets from the hourly
-- rollups, in the time zone the org's days are built in (orgs without one
-- are skipped: day_zones_to_build builds them whole). Run in the transaction
-- that refreshed the hours, after it, so that daily and hourly rollups never
-- disagree. A day is keyed by its first instant (tollgate_local_trunc) and is
-- the hours that start in it, up to the next day's first instant (23 to 25 of
-- them). Idempotent like refresh_buckets.
-- Reads the hourly rollups through rollup_unique_bucket (org, hour, ...).
WITH days AS (
    SELECT DISTINCT b.org_id, d.period_start AS day, d.period_end AS day_end
    FROM unnest(%(org_ids)s::bigint[], %(hours)s::timestamptz[]) AS b(org_id, hour)
    JOIN tracking_dailyrollupzone z ON z.org_id = b.org_id
    CROSS JOIN LATERAL tollgate_period_bounds('day', z.time_zone, b.hour) d
),
fresh AS (
    SELECT d.org_id, d.day, f.*
    FROM days d
    CROSS JOIN LATERAL (
        SELECT r.team_id, r.user_id, r.model,
               sum(r.requests) AS requests, sum(r.errors) AS errors,
               sum(r.unpriced_requests) AS unpriced_requests, sum(r.cost_usd) AS cost_usd
        FROM tracking_hourlyrollup r
        WHERE r.org_id = d.org_id AND r.hour >= d.day AND r.hour < d.day_end
        GROUP BY r.team_id, r.user_id, r.model
    ) f
),
written AS (
    INSERT INTO tracking_dailyrollup AS r (
        org_id, day, team_id, user_id, model, requests, errors, unpriced_requests, cost_usd)
    SELECT org_id, day, team_id, user_id, model, requests, errors, unpriced_requests, cost_usd
    FROM fresh
    ORDER BY org_id, day, team_id, user_id, model
    ON CONFLICT (org_id, day, team_id, user_id, model) DO UPDATE
    SET requests = excluded.requests, errors = excluded.errors,
        unpriced_requests = excluded.unpriced_requests, cost_usd = excluded.cost_usd
    WHERE (r.requests, r.errors, r.unpriced_requests, r.cost_usd)
          IS DISTINCT FROM
          (excluded.requests, excluded.errors, excluded.unpriced_requests, excluded.cost_usd)
    RETURNING 1
),
removed AS (
    DELETE FROM tracking_dailyrollup r
    USING days d
    WHERE r.org_id = d.org_id AND r.day = d.day
      AND NOT EXISTS (
          SELECT 1 FROM fresh f
          WHERE f.org_id = r.org_id AND f.day = r.day AND f.model = r.model
            AND f.team_id IS NOT DISTINCT FROM r.team_id
            AND f.user_id IS NOT DISTINCT FROM r.user_id)
    RETURNING 1
)
SELECT (SELECT count(*) FROM days) AS days,
       (SELECT count(*) FROM written) AS written,
       (SELECT count(*) FROM removed) AS removed

-- day_zones_to_build --
-- Orgs whose daily rollups are not built in their time zone: new ones, and
-- those whose time zone changed (every org when all_orgs is set: a rebuild).
SELECT o.id
FROM budgets_organization o
LEFT JOIN tracking_dailyrollupzone z ON z.org_id = o.id
WHERE %(all_orgs)s OR z.time_zone IS DISTINCT FROM o.time_zone
ORDER BY o.id

-- build_days --
-- Every daily rollup of one org, re-summed from its hourly rollups in the
-- org's time zone, which becomes the zone of its days. Rows of other days
-- (another time zone's, or hours no longer there) are deleted; unchanged
-- rows are not rewritten.
WITH org AS (
    SELECT o.id AS org_id, o.time_zone FROM budgets_organization o WHERE o.id = %(org_id)s
),
fresh AS (
    SELECT r.org_id, tollgate_local_trunc('day', r.hour, o.time_zone) AS day, r.team_id,
           r.user_id, r.model, sum(r.requests) AS requests, sum(r.errors) AS errors,
           sum(r.unpriced_requests) AS unpriced_requests, sum(r.cost_usd) AS cost_usd
    FROM tracking_hourlyrollup r JOIN org o ON o.org_id = r.org_id
    GROUP BY 1, 2, 3, 4, 5
),
written AS (
    INSERT INTO tracking_dailyrollup AS r (
        org_id, day, team_id, user_id, model, requests, errors, unpriced_requests, cost_usd)
    SELECT org_id, day, team_id, user_id, model, requests, errors, unpriced_requests, cost_usd
    FROM fresh
    ORDER BY org_id, day, team_id, user_id, model
    ON CONFLICT (org_id, day, team_id, user_id, model) DO UPDATE
    SET requests = excluded.requests, errors = excluded.errors,
        unpriced_requests = excluded.unpriced_requests, cost_usd = excluded.cost_usd
    WHERE (r.requests, r.errors, r.unpriced_requests, r.cost_usd)
          IS DISTINCT FROM
          (excluded.requests, excluded.errors, excluded.unpriced_requests, excluded.cost_usd)
    RETURNING 1
),
removed AS (
    DELETE FROM tracking_dailyrollup r
    WHERE r.org_id = %(org_id)s
      AND NOT EXISTS (
          SELECT 1 FROM fresh f
          WHERE f.day = r.day AND f.model = r.model
            AND f.team_id IS NOT DISTINCT FROM r.team_id
            AND f.user_id IS NOT DISTINCT FROM r.user_id)
    RETURNING 1
),
zone AS (
    INSERT INTO tracking_dailyrollupzone AS z (org_id, time_zone, built_at)
    SELECT org_id, time_zone, now() FROM org
    ON CONFLICT (org_id) DO UPDATE SET time_zone = excluded.time_zone, built_at = excluded.built_at
    RETURNING 1
)
SELECT (SELECT count(DISTINCT day) FROM fresh) AS days,
       (SELECT count(*) FROM written) AS written,
       (SELECT count(*) FROM removed) AS removed,
       (SELECT count(*) FROM zone) AS zones

-- refresh_tag_buckets --
-- refresh_buckets for the tag rollups of every name built for the bucket's
-- org: recomputed from the raw events received up to `through`, rows no
-- event backs any more deleted, unchanged rows left alone. In the
-- transaction of refresh_buckets (a rebuild, reprice). Hours before the prune
-- horizon are skipped.
WITH buckets AS (
    SELECT DISTINCT b.org_id, b.hour, t.name
    FROM unnest(%(org_ids)s::bigint[], %(hours)s::timestamptz[]) AS b(org_id, hour)
    JOIN tracking_tagrollupbuild t ON t.org_id = b.org_id
    WHERE b.hour >= %(pruned_before)s
),
fresh AS (
    SELECT b.org_id, b.hour, b.name, f.*
    FROM buckets b
    CROSS JOIN LATERAL (
        SELECT e.tags ->> b.name AS value, e.team_id, e.model,
               count(*) AS requests,
               count(*) FILTER (WHERE e.status = 'error') AS errors,
               count(*) FILTER (WHERE NOT e.priced) AS unpriced_requests,
               sum(e.input_tokens) AS input_tokens,
               sum(e.cache_read_tokens) AS cache_read_tokens,
               sum(e.cache_write_tokens) AS cache_write_tokens,
               sum(e.output_tokens) AS output_tokens,
               sum(e.reasoning_tokens) AS reasoning_tokens,
               sum(e.cost_usd) AS cost_usd
        FROM tracking_requestevent e
        WHERE e.org_id = b.org_id
          AND e.started_at >= b.hour AND e.started_at < b.hour + interval '1 hour'
          AND e.received_at <= %(through)s
        GROUP BY 1, 2, 3
    ) f
),
written AS (
    INSERT INTO tracking_tagrollup AS r (
        org_id, hour, name, value, team_id, model, requests, errors, unpriced_requests,
        input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
        cost_usd)
    SELECT org_id, hour, name, value, team_id, model, requests, errors, unpriced_requests,
           input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
           cost_usd
    FROM fresh
    ORDER BY org_id, name, hour, value, team_id, model
    ON CONFLICT (org_id, name, hour, value, team_id, model) DO UPDATE
    SET requests = excluded.requests, errors = excluded.errors,
        unpriced_requests = excluded.unpriced_requests, input_tokens = excluded.input_tokens,
        cache_read_tokens = excluded.cache_read_tokens,
        cache_write_tokens = excluded.cache_write_tokens, output_tokens = excluded.output_tokens,
        reasoning_tokens = excluded.reasoning_tokens, cost_usd = excluded.cost_usd
    WHERE (r.requests, r.errors, r.unpriced_requests, r.input_tokens, r.cache_read_tokens,
           r.cache_write_tokens, r.output_tokens, r.reasoning_tokens, r.cost_usd)
          IS DISTINCT FROM
          (excluded.requests, excluded.errors, excluded.unpriced_requests, excluded.input_tokens,
           excluded.cache_read_tokens, excluded.cache_write_tokens, excluded.output_tokens,
           excluded.reasoning_tokens, excluded.cost_usd)
    RETURNING 1
),
removed AS (
    DELETE FROM tracking_tagrollup r
    USING buckets b
    WHERE r.org_id = b.org_id AND r.name = b.name AND r.hour = b.hour
      -- Plain equalities (NULL spelled out): the anti-join hashes on all of
      -- them; IS NOT DISTINCT FROM would leave it comparing every value and
      -- team of a model's rows with each other.
      AND NOT EXISTS (
          SELECT 1 FROM fresh f
          WHERE f.org_id = r.org_id AND f.name = r.name AND f.hour = r.hour
            AND f.model = r.model
            AND coalesce(f.value, '') = coalesce(r.value, '')
            AND (f.value IS NULL) = (r.value IS NULL)
            AND coalesce(f.team_id, 0) = coalesce(r.team_id, 0))
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS written,
       (SELECT count(*) FROM removed) AS removed

-- refresh_key_buckets --
-- refresh_buckets for the key rollups (tracking_keyrollup) of these (org,
-- hour) buckets, in its transaction: recomputed from the raw events received
-- up to `through`, rows no event backs any more deleted, unchanged rows left
-- alone. Hours before the prune horizon are skipped.
WITH buckets AS (
    SELECT DISTINCT b.org_id, b.hour
    FROM unnest(%(org_ids)s::bigint[], %(hours)s::timestamptz[]) AS b(org_id, hour)
    WHERE b.hour >= %(pruned_before)s
),
fresh AS (
    SELECT b.org_id, b.hour, f.*
    FROM buckets b
    CROSS JOIN LATERAL (
        SELECT e.key_id, e.model, count(*) AS requests, sum(e.cost_usd) AS cost_usd
        FROM tracking_requestevent e
        WHERE e.org_id = b.org_id
          AND e.started_at >= b.hour AND e.started_at < b.hour + interval '1 hour'
          AND e.received_at <= %(through)s AND e.key_id IS NOT NULL
        GROUP BY 1, 2
    ) f
),
written AS (
    INSERT INTO tracking_keyrollup AS r (org_id, hour, key_id, model, requests, cost_usd)
    SELECT org_id, hour, key_id, model, requests, cost_usd FROM fresh
    ORDER BY org_id, key_id, hour, model
    ON CONFLICT (org_id, key_id, hour, model) DO UPDATE
    SET requests = excluded.requests, cost_usd = excluded.cost_usd
    WHERE (r.requests, r.cost_usd) IS DISTINCT FROM (excluded.requests, excluded.cost_usd)
    RETURNING 1
),
removed AS (
    DELETE FROM tracking_keyrollup r
    USING buckets b
    WHERE r.org_id = b.org_id AND r.hour = b.hour
      AND NOT EXISTS (
          SELECT 1 FROM fresh f
          WHERE f.org_id = r.org_id AND f.hour = r.hour AND f.key_id = r.key_id
            AND f.model = r.model)
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS written,
       (SELECT count(*) FROM removed) AS removed

-- tag_builds_to_change --
-- Tag names an org reports on whose rollups are not built yet ("build"), and
-- built names it no longer reports on ("drop").
SELECT o.id, n.name, 'build' AS action
FROM budgets_organization o CROSS JOIN LATERAL unnest(o.report_tags) AS n(name)
WHERE NOT EXISTS (SELECT 1 FROM tracking_tagrollupbuild b
                  WHERE b.org_id = o.id AND b.name = n.name)
UNION ALL
SELECT b.org_id, b.name, 'drop'
FROM tracking_tagrollupbuild b JOIN budgets_organization o ON o.id = b.org_id
WHERE NOT b.name = ANY(o.report_tags)
ORDER BY 1, 2

-- build_tag --
-- The tag rollups of one (org, tag name), whole, from the raw events still
-- kept (started from the prune horizon on) and received up to the
-- aggregation watermark, the events the hourly rollups hold; then marked
-- built from the prune horizon on. Under lock_rollups, so the watermark and
-- horizon stay put, after drop_tag in the same transaction (rows left from an
-- earlier build go first); reads the org's events through event_org_started.
WITH written AS (
    INSERT INTO tracking_tagrollup (
        org_id, hour, name, value, team_id, model, requests, errors, unpriced_requests,
        input_tokens, cache_read_tokens, cache_write_tokens, output_tokens, reasoning_tokens,
        cost_usd)
    SELECT e.org_id, date_trunc('hour', e.started_at, 'UTC'), %(name)s, e.tags ->> %(name)s,
           e.team_id, e.model,
           count(*), count(*) FILTER (WHERE e.status = 'error'),
           count(*) FILTER (WHERE NOT e.priced),
           sum(e.input_tokens), sum(e.cache_read_tokens), sum(e.cache_write_tokens),
           sum(e.output_tokens), sum(e.reasoning_tokens), sum(e.cost_usd)
    FROM tracking_requestevent e
    WHERE e.org_id = %(org_id)s AND e.started_at >= %(pruned_before)s
      AND e.received_at <= %(through)s
    GROUP BY 1, 2, 3, 4, 5, 6
    RETURNING 1
),
built AS (
    INSERT INTO tracking_tagrollupbuild AS b (org_id, name, complete_from, built_at)
    VALUES (%(org_id)s, %(name)s, %(pruned_before)s, now())
    ON CONFLICT (org_id, name) DO UPDATE
    SET complete_from = excluded.complete_from, built_at = excluded.built_at
    RETURNING 1
)
SELECT (SELECT count(*) FROM written) AS written, (SELECT count(*) FROM built) AS built

-- drop_tag --
WITH removed AS (
    DELETE FROM tracking_tagrollup r
    WHERE r.org_id = %(org_id)s AND r.name = %(name)s
    RETURNING 1
),
unbuilt AS (
    DELETE FROM tracking_tagrollupbuild b
    WHERE b.org_id = %(org_id)s AND b.name = %(name)s
    RETURNING 1
)
SELECT (SELECT count(*) FROM removed), (SELECT count(*) FROM unbuilt)

-- events_not_rolled_up --
-- Raw events that started before the cutoff and are not (surely) in the
-- rollups yet. Events in hours already pruned never get rolled up (see
-- refresh_buckets) and do not count. Uses index event_received.
SELECT count(*)
FROM tracking_requestevent e
WHERE e.received_at > %(aggregated_through)s
  AND e.started_at < %(cutoff)s AND e.started_at >= %(pruned_before)s

-- count_events_before --
-- Per organization, through index event_org_started.
SELECT o.id,
       (SELECT count(*) FROM tracking_requestevent e
        WHERE e.org_id = o.id AND e.started_at < %(cutoff)s) AS events
FROM budgets_organization o
ORDER BY o.id

-- delete_events_before --
-- One batch of prune_events, found through index event_org_started.
DELETE FROM tracking_requestevent
WHERE id IN (SELECT e.id FROM tracking_requestevent e
             WHERE e.org_id = %(org_id)s AND e.started_at < %(cutoff)s
             LIMIT %(batch_size)s)

-- repriced_windows --
-- The windows that a batch of repriced events counts in, and by how much each
-- one's spent changes: the windows of every budget that applies to the
-- event's org, team and user, for the period (in the org's time zone) that
-- contains the event's started_at. Creates the window rows that do not exist.
WITH changed AS (
    SELECT c.event_pk, c.delta
    FROM unnest(%(event_pks)s::bigint[], %(deltas)s::numeric[]) AS c(event_pk, delta)
),
affected AS (
    SELECT b.id AS budget_id, pb.period_start, pb.period_end, sum(c.delta) AS delta
    FROM changed c
    JOIN tracking_requestevent e ON e.id = c.event_pk
    JOIN budgets_organization o ON o.id = e.org_id
    JOIN budgets_budget b
      ON b.org_id = e.org_id
     AND (b.scope = 'org'
          OR (b.scope = 'team' AND b.team_id = e.team_id)
          OR (b.scope = 'user' AND b.user_id = e.user_id))
    CROSS JOIN LATERAL tollgate_period_bounds(b.period, o.time_zone, e.started_at) pb
    GROUP BY 1, 2, 3
),
created AS (
    INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)
    SELECT budget_id, period_start, period_end, 0, 0 FROM affected
    ORDER BY budget_id, period_start
    ON CONFLICT (budget_id, period_start) DO NOTHING
    RETURNING 1
)
SELECT a.budget_id, a.period_start, a.delta, (SELECT count(*) FROM created) AS created
FROM affected a
ORDER BY a.budget_id, a.period_start

-- adjust_windows --
-- Adds the deltas of repriced_windows to spent. Locks the windows in id
-- order, like the hot path does, so that the two never deadlock. A window
-- that never counted an event (its budget was created later) cannot go below
-- zero.
WITH deltas AS (
    SELECT d.budget_id, d.period_start, d.delta
    FROM unnest(%(budget_ids)s::bigint[], %(period_starts)s::timestamptz[], %(deltas)s::numeric[])
         AS d(budget_id, period_start, delta)
),
locked AS (
    SELECT w.id, d.delta
    FROM budgets_budgetwindow w
    JOIN deltas d ON d.budget_id = w.budget_id AND d.period_start = w.period_start
    ORDER BY w.id
    FOR UPDATE OF w
)
UPDATE budgets_budgetwindow w
SET spent = greatest(w.spent + l.delta, 0)
FROM locked l
WHERE w.id = l.id
RETURNING w.id

-- judge_alerts --
-- After adjust_windows, in its transaction (the windows stay locked): a
-- repriced window may cross a threshold or fall back below one.
SELECT tollgate_raise_alerts(%(window_ids)s::bigint[])

-- usage --
-- GET /v1/usage: spend, tokens and requests of one org per period (a UTC
-- hour, or a local day or month of time_zone: the hours that start in it,
-- keyed by its first instant, as the daily rollups are), exact and current: the
-- hourly rollups, which hold exactly the events received up to the
-- aggregation watermark passed in as aggregated_through, plus the raw tail,
-- the events received after it. Late events in hours before the prune
-- horizon are in neither (see refresh_buckets).
-- The tail starts at the watermark this statement sees: a pass advances it
-- in the transaction that writes the rollups it vouches for, so the two
-- always agree. The caller also passes the watermark it read just before, in
-- a statement of its own, as aggregated_through: never later than the one
-- seen here (it only moves on), it bounds the index range, so that the
-- planner sees a value and picks event_org_received (with only the value
-- read here it would guess, and walk the org's whole range by started_at).
-- Indexes: event_org_received (the tail), rollup_unique_bucket (rollups).
WITH state AS (
    SELECT coalesce((SELECT watermark FROM tracking_aggregationstate
                     WHERE name = 'prune_events'), '-infinity') AS pruned_before,
           coalesce((SELECT watermark FROM tracking_aggregationstate
                     WHERE name = 'aggregate_usage'), '-infinity') AS aggregated
),
limited AS (
    -- A team-limited key sees its own team only (NULL matches no row).
    SELECT (SELECT t.id FROM budgets_team t
            WHERE t.org_id = %(org_id)s AND t.slug = %(team)s) AS team_id
),
usage AS (
    SELECT r.hour, r.team_id, r.user_id, r.model, r.requests, r.errors, r.unpriced_requests,
           r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens,
           r.reasoning_tokens, r.cost_usd
    FROM tracking_hourlyrollup r
    WHERE r.org_id = %(org_id)s AND r.hour >= %(from)s AND r.hour < %(to)s
      AND (%(team)s::text IS NULL OR r.team_id = (SELECT team_id FROM limited))
    UNION ALL
    SELECT date_trunc('hour', e.started_at, 'UTC'), e.team_id, e.user_id, e.model, 1,
           (e.status = 'error')::int, (NOT e.priced)::int, e.input_tokens, e.cache_read_tokens,
           e.cache_write_tokens, e.output_tokens, e.reasoning_tokens, e.cost_usd
    FROM tracking_requestevent e, state s
    WHERE e.org_id = %(org_id)s AND e.received_at > %(aggregated_through)s
      AND e.received_at > s.aggregated
      AND e.started_at >= %(from)s AND e.started_at < %(to)s
      AND e.started_at >= s.pruned_before
      AND (%(team)s::text IS NULL OR e.team_id = (SELECT team_id FROM limited))
)
SELECT CASE WHEN %(granularity)s = 'hour' THEN u.hour
            ELSE tollgate_local_trunc(%(granularity)s, u.hour, %(time_zone)s) END AS period_start,
       CASE WHEN %(by_team)s THEN t.slug END AS team,
       CASE WHEN %(by_user)s THEN eu.external_id END AS "user",
       CASE WHEN %(by_model)s THEN u.model END AS model,
       sum(u.requests)::bigint AS requests,
       sum(u.errors)::bigint AS errors,
       sum(u.unpriced_requests)::bigint AS unpriced_requests,
       sum(u.input_tokens)::bigint AS input_tokens,
       sum(u.cache_read_tokens)::bigint AS cache_read_tokens,
       sum(u.cache_write_tokens)::bigint AS cache_write_tokens,
       sum(u.output_tokens)::bigint AS output_tokens,
       sum(u.reasoning_tokens)::bigint AS reasoning_tokens,
       sum(u.cost_usd) AS cost_usd
FROM usage u
LEFT JOIN budgets_team t ON t.id = u.team_id
LEFT JOIN budgets_enduser eu ON eu.id = u.user_id
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST, 4 NULLS FIRST

-- usage_by_tag --
-- GET /v1/usage with group_by=tag:NAME (and the chargeback report): as
-- "usage", per value of one tag name the org reports on (NULL: events
-- without it), by tollgate_tag_usage (tracking/sql/functions/20_tag_usage.sql).
-- tail_after: see there.
SELECT CASE WHEN %(granularity)s = 'hour' THEN u.hour
            ELSE tollgate_local_trunc(%(granularity)s, u.hour, %(time_zone)s) END AS period_start,
       CASE WHEN %(by_team)s THEN t.slug END AS team,
       u.value AS tag,
       CASE WHEN %(by_model)s THEN u.model END AS model,
       sum(u.requests)::bigint AS requests,
       sum(u.errors)::bigint AS errors,
       sum(u.unpriced_requests)::bigint AS unpriced_requests,
       sum(u.input_tokens)::bigint AS input_tokens,
       sum(u.cache_read_tokens)::bigint AS cache_read_tokens,
       sum(u.cache_write_tokens)::bigint AS cache_write_tokens,
       sum(u.output_tokens)::bigint AS output_tokens,
       sum(u.reasoning_tokens)::bigint AS reasoning_tokens,
       sum(u.cost_usd) AS cost_usd
FROM tollgate_tag_usage(
    %(org_id)s, %(tag)s,
    -- A team-limited key sees its own team only (an unknown slug: no rows).
    CASE WHEN %(team)s::text IS NULL THEN NULL
         ELSE coalesce((SELECT t.id FROM budgets_team t
                        WHERE t.org_id = %(org_id)s AND t.slug = %(team)s), -1) END,
    %(from)s, %(to)s, %(tail_after)s) u
LEFT JOIN budgets_team t ON t.id = u.team_id
GROUP BY 1, 2, 3, 4
ORDER BY 1, 2 NULLS FIRST, 3 NULLS FIRST, 4 NULLS FIRST

-- month_bounds --
-- The chargeback report's month, bounded as budget windows are.
SELECT period_start, period_end FROM tollgate_period_bounds('month', %(time_zone)s, %(at)s)

-- tag_build --
-- Where a reported tag name's rollups begin, if they are built.
SELECT complete_from FROM tracking_tagrollupbuild WHERE org_id = %(org_id)s AND name = %(tag)s

-- event_costs --
-- reprice: each event's cost at the price in effect when it started, by the
-- same SQL functions that price events at ingest (NULL: still no price),
-- and the price entry's key the model resolved to.
SELECT e.id, tollgate_cost(pr, e.input_tokens, e.cache_read_tokens, e.cache_write_tokens,
                           e.output_tokens, e.reasoning_tokens, e.cache_write_1h_tokens,
                           e.input_audio_tokens, e.input_image_tokens, e.output_audio_tokens,
                           e.output_image_tokens, e.web_search_calls, e.inference_geo,
                           e.web_search_context_size, e.cache_read_audio_tokens), pr.model
FROM tracking_requestevent e
LEFT JOIN LATERAL tollgate_price_at(e.org_id, e.model, e.provider, e.started_at,
                                    e.service_tier) pr ON true
WHERE e.id = ANY(%(event_ids)s)

-- unpriced_models --
-- load_prices --check: the models of events that started since `since` and
-- have no price (priced false: none resolved when they were recorded, nor
-- since by reprice), with how many events and what they were charged (the
-- org's unpriced policy), most charged first. Uses index event_unpriced.
SELECT e.model, count(*) AS events, sum(e.cost_usd) AS charged, max(e.started_at) AS last_seen
FROM tracking_requestevent e
WHERE NOT e.priced AND e.started_at >= %(since)s
GROUP BY e.model
ORDER BY charged DESC, e.model

-- price_map_in_force --
-- load_prices --check: the last price map loaded (its audit entry) and the
-- newest price change in effect.
SELECT (SELECT a.object_id FROM budgets_auditentry a
        WHERE a.object_type = 'prices' AND a.action = 'load'
        ORDER BY a.at DESC LIMIT 1),
       (SELECT max(a.at) FROM budgets_auditentry a
        WHERE a.object_type = 'prices' AND a.action = 'load'),
       (SELECT max(p.effective_from) FROM tracking_price p WHERE p.effective_from <= now()),
       (SELECT count(DISTINCT (p.provider, p.model)) FROM tracking_price p)
