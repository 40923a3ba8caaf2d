"""GET /dashboard/export/chargeback: the chargeback report (last month by
team and reported tag) for the signed-in session, equal to the raw events
and to what GET /v1/reports/chargeback answers an API key."""

from __future__ import annotations

import pytest

from tests.conftest import auth
from tests.tracking.conftest import make_event, no_lag  # noqa: F401 - fixtures
from tests.tracking.test_usage_tags import csv_chargeback, db_chargeback, last_month_events, mark
from tracking.services import rollups_refresh

EXPORT = "/dashboard/export/chargeback"


@pytest.mark.usefixtures("no_lag")
def test_the_signed_in_download_equals_the_database_and_the_api(
    api,
    client,
    org,
    key,
    make_org,
    make_key,
    make_user,
    make_event,  # noqa: F811
):
    mark(org, "customer")
    start, end = last_month_events(org, make_event, org.time_zone)
    other = make_org("globex")
    mark(other, "customer")
    make_event(other, started_at=start, cost="999", tags={"customer": "acme"})
    rollups_refresh()
    client.force_login(make_user("ann", org=org))

    response = client.get(EXPORT, {"tag": "customer"})

    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == (
        f'attachment; filename="chargeback-{org.slug}-customer-{start:%Y-%m}.csv"'
    )
    got = csv_chargeback(response.content.decode())
    assert got == db_chargeback(org, start, end)
    by_key = api.get("/v1/reports/chargeback", params={"tag": "customer"}, headers=auth(key))
    assert by_key.text == response.content.decode()

    # Members get their own org only.
    assert client.get(EXPORT, {"tag": "customer", "org": "globex"}).status_code == 403


def test_it_needs_a_session_and_a_reported_tag(client, api, org, key, make_user):
    assert client.get(EXPORT, {"tag": "customer"}).status_code == 401
    assert api.get(EXPORT, params={"tag": "customer"}, headers=auth(key)).status_code == 401
    client.force_login(make_user("ann", org=org))
    response = client.get(EXPORT, {"tag": "customer"})
    assert response.status_code == 422 and response.json()["error"]["field"] == "tag"
