-- Usage by the values of one reported tag name: GET /v1/usage's
-- group_by=tag:NAME and the chargeback report (tracking/sql/queries.sql,
-- usage_by_tag) and the dashboard's tag breakdown
-- (dashboard/sql/functions/30_tags.sql). One rule, in one place.
-- Installed after every migrate by config/sqlfunctions.py.

-- Per UTC hour in [p_lo, p_hi), tag value, team and model of org p_org (one
-- team when p_team is set): the tag rollups of p_tag plus the raw tail, as
-- exact and current as GET /v1/usage:
-- - from the name's complete_from on (tracking_tagrollupbuild), its tag
--   rollups, which hold the events received up to the aggregation
--   watermark, plus the events received after it, read raw;
-- - before complete_from (hours pruned before the name was built) the hourly
--   rollups, under a NULL value: their events' tags are gone;
-- - a name not built yet (aggregate_usage builds it on its next pass): the
--   hourly rollups before the prune horizon under NULL, and every raw event
--   from it on.
-- Events without the tag count under a NULL value. Late events in hours
-- before the prune horizon are in neither, as in GET /v1/usage.
-- p_tail_after is the caller's reading of where the raw tail starts (the
-- aggregation watermark for a built name, '-infinity' for one not built),
-- taken before this snapshot: never later than the one seen here, it
-- bounds the index range so that the planner sees a value (the reason
-- "usage" takes aggregated_through). A plain SELECT: inlined into the caller.
-- Indexes: tag_rollup_unique_bucket (org, name, hour, ...),
-- rollup_unique_bucket, event_org_received (a built name's tail),
-- event_org_started (a name not built).
CREATE OR REPLACE FUNCTION tollgate_tag_usage(
    p_org bigint, p_tag text, p_team bigint, p_lo timestamptz, p_hi timestamptz,
    p_tail_after timestamptz)
RETURNS TABLE (hour timestamptz, value text, team_id bigint, model text, requests bigint,
               errors bigint, unpriced_requests bigint, input_tokens bigint,
               cache_read_tokens bigint, cache_write_tokens bigint, output_tokens bigint,
               reasoning_tokens bigint, cost_usd numeric)
LANGUAGE sql STABLE AS $$
    WITH state AS (
        SELECT coalesce((SELECT watermark FROM tracking_aggregationstate
                         WHERE name = 'prune_events'), '-infinity') AS pruned_before,
               coalesce((SELECT watermark FROM tracking_aggregationstate
                         WHERE name = 'aggregate_usage'), '-infinity') AS aggregated,
               (SELECT b.complete_from FROM tracking_tagrollupbuild b
                WHERE b.org_id = p_org AND b.name = p_tag) AS complete_from
    ),
    bounds AS (
        SELECT s.pruned_before, s.complete_from IS NOT NULL AS built,
               coalesce(s.complete_from, s.pruned_before) AS tags_from,
               CASE WHEN s.complete_from IS NOT NULL THEN s.aggregated
                    ELSE '-infinity' END AS tail_after
        FROM state s
    )
    SELECT r.hour, NULL::text, r.team_id, r.model, r.requests, r.errors, r.unpriced_requests,
           r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens,
           r.reasoning_tokens, r.cost_usd
    FROM tracking_hourlyrollup r, bounds b
    WHERE r.org_id = p_org AND r.hour >= p_lo AND r.hour < p_hi AND r.hour < b.tags_from
      AND (p_team IS NULL OR r.team_id = p_team)
    UNION ALL
    SELECT r.hour, r.value, r.team_id, r.model, r.requests, r.errors, r.unpriced_requests,
           r.input_tokens, r.cache_read_tokens, r.cache_write_tokens, r.output_tokens,
           r.reasoning_tokens, r.cost_usd
    FROM tracking_tagrollup r, bounds b
    WHERE r.org_id = p_org AND r.name = p_tag AND r.hour >= p_lo AND r.hour < p_hi
      AND r.hour >= b.tags_from AND b.built
      AND (p_team IS NULL OR r.team_id = p_team)
    UNION ALL
    SELECT date_trunc('hour', e.started_at, 'UTC'), e.tags ->> p_tag, e.team_id, e.model, 1,
           (e.status = 'error')::int, (NOT e.priced)::int, e.input_tokens, e.cache_read_tokens,
           e.cache_write_tokens, e.output_tokens, e.reasoning_tokens, e.cost_usd
    FROM tracking_requestevent e, bounds b
    WHERE e.org_id = p_org AND e.received_at > p_tail_after AND e.received_at > b.tail_after
      AND e.started_at >= p_lo AND e.started_at < p_hi AND e.started_at >= b.pruned_before
      AND (p_team IS NULL OR e.team_id = p_team)
$$;
