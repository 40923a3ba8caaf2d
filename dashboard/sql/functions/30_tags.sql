-- The dashboard's tag breakdown (GET /v1/dashboard/summary?group_tag=NAME):
-- spend and requests of the summary's range and team by the values of one
-- tag name the org reports on (Organization.report_tags), read by
-- tollgate_tag_usage (tracking/sql/functions/20_tag_usage.sql), the rule of
-- GET /v1/usage?group_by=tag:NAME. A third statement, run beside the two of
-- the summary only when a tag is asked for.
-- It follows the range and the team and model filters; the tag rollups keep
-- no end user, so under a user filter it answers {"status": "by_user"}.
-- Under a tag filter (p_filter_tag = p_filter_value) it splits that tag's
-- name only (one value then); a tag rollup holds one name, so the values of
-- another name among a tag's events are not known: {"status": "by_tag"}.
-- Result: {"tag", "tags_from", "values": [{"value", "other", "spend_usd",
-- "requests"}]} (the 12 costliest values, then the rest as one "other"
-- entry; null value: events without the tag), or {"status": "not_reported"}
-- for a name the org does not report on, or NULL for an unknown team.
DROP FUNCTION IF EXISTS tollgate_dashboard_tags(bigint, text, text, text, text, timestamptz);
DROP FUNCTION IF EXISTS tollgate_dashboard_tags(
    bigint, text, text, date, date, text, text, text, text, timestamptz);
CREATE OR REPLACE FUNCTION tollgate_dashboard_tags(
    p_org bigint, p_tz text, p_range text, p_from date, p_to date,
    p_team text, p_user text, p_model text, p_tag text, p_filter_tag text,
    p_filter_value text, p_at timestamptz)
RETURNS jsonb LANGUAGE plpgsql STABLE
SET plan_cache_mode = force_custom_plan AS $$
DECLARE
    v_team bigint;
    v_tail_after timestamptz;
    v_tags_from timestamptz;
    b record;
    v_result jsonb;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM budgets_organization o
                   WHERE o.id = p_org AND p_tag = ANY(o.report_tags)) THEN
        RETURN jsonb_build_object('status', 'not_reported');
    END IF;
    IF p_team IS NOT NULL THEN
        SELECT id INTO v_team FROM budgets_team WHERE org_id = p_org AND slug = p_team;
        IF v_team IS NULL THEN
            RETURN NULL;
        END IF;
    END IF;
    IF p_user IS NOT NULL THEN
        RETURN jsonb_build_object('status', 'by_user');
    END IF;
    IF p_filter_tag IS NOT NULL AND p_filter_tag <> p_tag THEN
        RETURN jsonb_build_object('status', 'by_tag');
    END IF;
    SELECT * INTO b FROM tollgate_dashboard_bounds(p_range, p_tz, coalesce(p_at, now()), p_from,
                                                   p_to);
    -- Values, not subqueries, for tollgate_tag_usage's index ranges (see there).
    SELECT s.tail_after, s.tags_from INTO v_tail_after, v_tags_from
    FROM tollgate_dashboard_tag_state(p_org, p_tag) s;

    WITH sums AS (
        SELECT u.value, sum(u.cost_usd) AS cost, sum(u.requests) AS requests
        FROM tollgate_tag_usage(p_org, p_tag, v_team, b.range_from, b.range_to, v_tail_after) u
        WHERE (p_model IS NULL OR u.model = p_model)
          AND (p_filter_tag IS NULL OR u.value = p_filter_value)
        GROUP BY u.value
    ),
    ranked AS (
        SELECT s.*, row_number() OVER (ORDER BY s.cost DESC, s.value NULLS LAST) AS rank
        FROM sums s
    ),
    shown AS (
        SELECT CASE WHEN r.rank <= 12 THEN r.value END AS value, r.rank > 12 AS other,
               min(r.rank) AS rank, sum(r.cost) AS cost, sum(r.requests) AS requests
        FROM ranked r
        GROUP BY 1, 2
    )
    SELECT jsonb_build_object(
        'tag', p_tag,
        'tags_from', tollgate_iso(greatest(v_tags_from, b.range_from)),
        'values', (SELECT coalesce(jsonb_agg(jsonb_build_object(
                       'value', s.value, 'other', s.other,
                       'spend_usd', trim_scale(s.cost)::text, 'requests', s.requests)
                       ORDER BY s.rank), '[]') FROM shown s))
    INTO v_result;
    RETURN v_result;
END $$;
