-- Named queries of the dashboard's summary and live updates, registered by
-- dashboard/apps.py with config/hotpath/db.py; parameters are %(name)s.

-- dashboard_session --
-- A dashboard login's session (django.contrib.sessions' database backend),
-- read on the event loop instead of through the ORM. Primary key lookup.
SELECT s.session_data FROM django_session s
WHERE s.session_key = %(session_key)s AND s.expire_date > now()

-- dashboard_user --
-- The signed-in user, their password hash (the session carries an HMAC of it,
-- so that a password change ends other sessions) and their organization.
SELECT u.id, u.password, u.is_active, u.is_staff, m.org_id, o.slug
FROM auth_user u
LEFT JOIN dashboard_membership m ON m.user_id = u.id
LEFT JOIN budgets_organization o ON o.id = m.org_id
WHERE u.id = %(user_id)s

-- dashboard_summary --
-- GET /v1/dashboard/summary, first half: KPIs, budgets, recent requests, of
-- the one org tollgate_dashboard_org chooses.
SELECT o.slug, tollgate_dashboard_summary(o.id, o.time_zone, %(range)s, %(from_date)s,
                                          %(to_date)s, %(team)s, %(user)s, %(model)s,
                                          %(tag_name)s, %(tag_value)s, %(at)s)
FROM tollgate_dashboard_org(%(org_id)s, %(org_slug)s) o

-- dashboard_org --
-- The org a summary is for when the caller named it by slug (staff) or not at
-- all, chosen like the two statements below: its live updates are heard from
-- before they run (dashboard/live.py, Keeper).
SELECT id FROM tollgate_dashboard_org(%(org_id)s, %(org_slug)s)

-- dashboard_breakdown --
-- Second half, run at the same time on another connection: chart and top lists.
SELECT o.slug, tollgate_dashboard_breakdown(o.id, o.time_zone, %(range)s, %(from_date)s,
                                            %(to_date)s, %(team)s, %(user)s, %(model)s,
                                            %(tag_name)s, %(tag_value)s, %(at)s)
FROM tollgate_dashboard_org(%(org_id)s, %(org_slug)s) o

-- dashboard_tags --
-- Third statement of a summary asked for a tag breakdown (group_tag).
SELECT o.slug, tollgate_dashboard_tags(o.id, o.time_zone, %(range)s, %(from_date)s,
                                       %(to_date)s, %(team)s, %(user)s, %(model)s,
                                       %(group_tag)s, %(tag_name)s, %(tag_value)s, %(at)s)
FROM tollgate_dashboard_org(%(org_id)s, %(org_slug)s) o

-- dashboard_holds --
-- GET /v1/dashboard/holds: the holds in flight, which the page re-reads every
-- few seconds; `missing` names a team or user the org does not have, or a
-- tag name it does not report on.
SELECT o.slug, s.missing,
       CASE WHEN s.missing IS NULL
            THEN tollgate_dashboard_holds(o.id, s.team_id, s.user_id, %(model)s, %(tag_name)s,
                                          %(tag_value)s, NULL) END
FROM tollgate_dashboard_org(%(org_id)s, %(org_slug)s) o
CROSS JOIN LATERAL tollgate_dashboard_subjects(o.id, %(team)s, %(user)s, %(tag_name)s) s

-- sign_in_attempt --
-- Count a sign-in attempt, or say how long its key must wait (dashboard/signins.py).
SELECT tollgate_sign_in_attempt(%(key)s, %(limit)s, make_interval(secs => %(window_seconds)s))

-- sign_in_succeeded --
SELECT tollgate_sign_in_succeeded(%(key)s)
