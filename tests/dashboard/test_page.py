"""The dashboard page and sign-in (Django views): who gets which page."""

from __future__ import annotations

import io
import json
import re

import pytest
from django.core.management import call_command

from tests.dashboard.conftest import PASSWORD, event, record


def page_config(response) -> dict:
    html = response.content.decode()
    start = html.index('<script id="dashboard-config" type="application/json">')
    start = html.index(">", start) + 1
    return json.loads(html[start : html.index("</script>", start)])


def test_signed_out_visitors_are_sent_to_sign_in(client, db):
    response = client.get("/?range=30d")

    assert response.status_code == 302
    assert response["Location"] == "/accounts/login/?next=/%3Frange%3D30d"


def test_sign_in_page_signs_in_and_returns_to_the_dashboard(client, org, make_user):
    make_user("ann", org=org)

    page = client.get("/accounts/login/?next=/")
    response = client.post(
        "/accounts/login/", {"username": "ann", "password": PASSWORD, "next": "/?range=24h"}
    )

    assert page.status_code == 200 and b"Sign in" in page.content
    assert response.status_code == 302 and response["Location"] == "/?range=24h"
    assert client.get("/").status_code == 200


def test_a_wrong_password_shows_the_form_again(client, org, make_user):
    make_user("ann", org=org)

    response = client.post("/accounts/login/", {"username": "ann", "password": "wrong"})

    assert response.status_code == 200
    assert b"did not match" in response.content


def test_member_gets_their_org_and_no_switcher(client, org, make_org, make_user):
    make_org("globex")
    client.force_login(make_user("ann", org=org))

    response = client.get("/?range=24h&team=search")

    assert response.status_code == 200
    assert page_config(response) == {
        "summaryUrl": "/v1/dashboard/summary",
        "holdsUrl": "/v1/dashboard/holds",
        "socketPath": "/ws/spend/",
        "org": "acme",
        "switchOrg": False,
        "range": "24h",
        "from": "",
        "to": "",
        "team": "search",
        "user": "",
        "model": "",
        "tag": "",
    }
    assert b'id="org-switcher"' not in response.content
    assert b"dashboard/dashboard.js" in response.content


def test_member_cannot_open_another_org(client, org, make_org, make_user):
    make_org("globex")
    client.force_login(make_user("ann", org=org))

    response = client.get("/?org=globex")

    assert response.status_code == 403
    assert b"may not see that organization" in response.content


def test_login_of_no_org_gets_a_403_page(client, org, make_user):
    client.force_login(make_user("drifter"))

    response = client.get("/")

    assert response.status_code == 403
    assert b"belongs to no organization" in response.content


def test_staff_get_a_switcher_over_every_org(client, org, make_org, make_user):
    make_org("globex")
    client.force_login(make_user("root", staff=True))

    response = client.get("/?org=globex&range=nonsense")

    assert response.status_code == 200
    config = page_config(response)
    assert config["org"] == "globex" and config["switchOrg"] is True
    assert config["range"] == "7d"  # the page falls back; the API would answer 422
    assert b'<option value="acme">' in response.content
    assert b'<option value="globex" selected>' in response.content
    assert client.get("/?org=initech").status_code == 404


def test_page_script_and_styles_are_served(api):
    for path, kind in (
        ("/static/dashboard/dashboard.js", "javascript"),
        ("/static/dashboard/dashboard.css", "css"),
    ):
        response = api.get(path)
        assert response.status_code == 200
        assert kind in response.headers["content-type"]


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/", "/"])
def test_a_session_cookie_with_an_escaped_nul_is_no_session_not_a_500(client, db, path):
    # A quoted cookie may escape a NUL, which PostgreSQL text refuses.
    response = client.get(path, HTTP_COOKIE='sessionid="\\000abcdefgh"')

    assert response.status_code in (200, 302)


def test_the_page_says_which_price_map_is_in_force(client, org, make_user, tmp_path):
    client.force_login(make_user("ann", org=org))
    assert "No price map loaded by" in client.get("/").content.decode()

    prices = {"gpt-x": {"litellm_provider": "openai", "mode": "chat",
                        "input_cost_per_token": 1e-06, "output_cost_per_token": 2e-06}}  # fmt: skip
    path = tmp_path / "prices-2026-12.json"
    path.write_text(json.dumps(prices))
    call_command("load_prices", str(path), stdout=io.StringIO())

    line = client.get("/").content.decode()
    line = line[line.index('id="prices-in-force"') :]
    line = " ".join(line[: line.index("</p>")].split())
    assert "Prices from prices-2026-12.json, loaded " in line
    assert ": 1 model, newest price in effect since " in line


def test_staff_land_on_the_org_they_last_viewed_else_the_busiest(
    api, client, org, make_org, make_key, make_user
):
    make_org("aaa-empty")  # first by slug, and no traffic at all
    globex = make_org("globex")
    record(api, make_key(org), [event("old", cost="1.00")])
    record(api, make_key(globex), [event("new", cost="1.00")])  # received last
    client.force_login(make_user("root", staff=True))

    assert page_config(client.get("/"))["org"] == "globex"
    assert page_config(client.get("/?org=acme"))["org"] == "acme"
    assert page_config(client.get("/"))["org"] == "acme"
    # Another staff login keeps its own landing.
    client.force_login(make_user("rita", staff=True))
    assert page_config(client.get("/"))["org"] == "globex"


def test_staff_with_an_org_of_their_own_land_there_until_they_switch(
    client, org, make_org, make_user
):
    make_org("globex")
    client.force_login(make_user("root", org=org, staff=True))

    assert page_config(client.get("/"))["org"] == "acme"
    client.get("/?org=globex")
    assert page_config(client.get("/"))["org"] == "globex"


def test_the_org_switcher_is_sorted_by_the_name_it_shows(client, make_org, make_user):
    make_org("a-zeta", name="Zeta Corp")
    make_org("m-beta", name="beta labs")
    make_org("z-alpha", name="Alpha Inc")
    make_org("delta")  # no name: listed by its slug
    client.force_login(make_user("root", staff=True))

    html = client.get("/?org=delta").content.decode()

    shown = re.findall(r'<option value="([^"]+)"', html[html.index('id="org-switcher"') :])
    assert shown == ["z-alpha", "m-beta", "delta", "a-zeta"]
