"""POST /v1/events through the real server and database: exact costs for
every provider shape, price history, budget windows and settlement of holds,
batch atomicity, idempotency (also under concurrent replays), team-limited
keys, strict orgs, and bad input that gets the documented 4xx."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import psycopg
import pytest
from psycopg.types.json import Jsonb

from budgets.auth import ApiKeyInfo
from budgets.models import Budget, BudgetWindow, EndUser, Reservation, Team
from config.hotpath import db
from tests.conftest import assert_error, auth
from tracking import api as ingest
from tracking.models import Price, RequestEvent

EVENTS = "/v1/events"
SINCE_2000 = datetime(2000, 1, 1, tzinfo=UTC)
# A fixed past moment, so that costs and windows do not depend on today's date.
MARCH_10 = "2026-03-10T12:00:00Z"
MARCH_10_START = datetime(2026, 3, 10, tzinfo=UTC)


def per_million(usd: str) -> Decimal:
    """Prices are written per million tokens, as the providers publish them."""
    return Decimal(usd) / 1_000_000


def make_price(
    model: str,
    provider: str = "openai",
    *,
    input: str,
    output: str,
    cache_read: str | None = None,
    cache_write: str | None = None,
    reasoning: str | None = None,
    threshold: int | None = None,
    input_above: str | None = None,
    output_above: str | None = None,
    effective_from: datetime = SINCE_2000,
) -> Price:
    def optional(usd: str | None) -> Decimal | None:
        return None if usd is None else per_million(usd)

    return Price.objects.create(
        provider=provider,
        model=model,
        effective_from=effective_from,
        input_per_token=per_million(input),
        output_per_token=per_million(output),
        cache_read_per_token=optional(cache_read),
        cache_write_per_token=optional(cache_write),
        reasoning_per_token=optional(reasoning),
        tier_threshold_tokens=threshold,
        input_above_threshold_per_token=optional(input_above),
        output_above_threshold_per_token=optional(output_above),
    )


def post(api, key: str, body: dict):
    return api.post(EVENTS, json=body, headers=auth(key))


def post_raw(api, key: str, body: object):
    # json.dumps writes lone surrogates and NaN, which httpx's encoder refuses.
    headers = {**auth(key), "Content-Type": "application/json"}
    return api.post(EVENTS, content=json.dumps(body).encode(), headers=headers)


def event(event_id: str, **fields: object) -> dict:
    body: dict = {
        "id": event_id,
        "team": "search",
        "user": "alice",
        "model": "tg-plain",
        "usage": {"input_tokens": 1000, "output_tokens": 100},
        "started_at": MARCH_10,
    }
    body.update(fields)
    return body


def only_result(response, status: int = 201) -> dict:
    assert response.status_code == status, response.text
    results = response.json()["results"]
    assert len(results) == 1, results
    return results[0]


def window_at(budget: Budget, at: datetime) -> BudgetWindow:
    return BudgetWindow.objects.get(budget=budget, period_start__lte=at, period_end__gt=at)


@pytest.fixture
def plain_price(transactional_db) -> Price:
    # tg-plain: $1/M input, $10/M output; 1000 in + 100 out = 0.001 + 0.001 = 0.002.
    return make_price("tg-plain", input="1", output="10")


# --- pricing of every provider shape ------------------------------------------


def test_openai_chat_cached_at_the_cache_price_and_reasoning_at_the_output_price(api, org, key):
    make_price("tg-chat", input="2.50", output="10", cache_read="1.25")
    usage = {
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "total_tokens": 1500,
        "prompt_tokens_details": {"cached_tokens": 400},
        "completion_tokens_details": {"reasoning_tokens": 200},
    }

    result = only_result(post(api, key, event("chat-1", model="tg-chat", usage=usage)))

    # uncached 600 x 2.50/M = 0.0015; cached 400 x 1.25/M = 0.0005;
    # output 300 x 10/M = 0.003; reasoning 200 at the output price 10/M = 0.002.
    # Total 0.007.
    assert result == {
        "id": "chat-1",
        "cost_usd": "0.007",
        "priced": True,
        "price_model": "tg-chat",
        "cost_source": "price",
        "duplicate": False,
    }
    stored = RequestEvent.objects.get(event_id="chat-1")
    assert stored.cost_usd == Decimal("0.007")
    assert (
        stored.input_tokens,
        stored.cache_read_tokens,
        stored.cache_write_tokens,
        stored.output_tokens,
        stored.reasoning_tokens,
    ) == (600, 400, 0, 300, 200)


RESPONSES_USAGE = {
    "input_tokens": 2000,
    "input_tokens_details": {"cached_tokens": 1000},
    "output_tokens": 1500,
    "output_tokens_details": {"reasoning_tokens": 1000},
    "total_tokens": 3500,
}


def test_openai_responses_reasoning_at_the_models_own_reasoning_price(api, org, key):
    make_price("tg-reasoner", input="1.10", output="4.40", cache_read="0.275", reasoning="8.80")

    result = only_result(
        post(api, key, event("resp-1", model="tg-reasoner", usage=RESPONSES_USAGE))
    )

    # uncached 1000 x 1.10/M = 0.0011; cached 1000 x 0.275/M = 0.000275;
    # output 500 x 4.40/M = 0.0022; reasoning 1000 x 8.80/M = 0.0088.
    # Total 0.012375.
    assert result["cost_usd"] == "0.012375"
    assert result["priced"] is True


def test_openai_responses_reasoning_falls_back_to_the_output_price(api, org, key):
    make_price("tg-no-reasoning-price", input="1.10", output="4.40", cache_read="0.275")

    result = only_result(
        post(api, key, event("resp-2", model="tg-no-reasoning-price", usage=RESPONSES_USAGE))
    )

    # As above, but reasoning 1000 x 4.40/M (output) = 0.0044:
    # 0.0011 + 0.000275 + 0.0022 + 0.0044 = 0.007975.
    assert result["cost_usd"] == "0.007975"


def test_anthropic_cache_writes_and_reads_at_their_own_prices(api, org, key):
    make_price(
        "tg-claude", "anthropic", input="3", output="15", cache_write="3.75", cache_read="0.30"
    )
    usage = {
        "input_tokens": 100,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
        "output_tokens": 500,
        "service_tier": "standard",
    }

    result = only_result(post(api, key, event("claude-1", model="tg-claude", usage=usage)))

    # input 100 x 3/M = 0.0003; cache write 2000 x 3.75/M = 0.0075;
    # cache read 10000 x 0.30/M = 0.003; output 500 x 15/M = 0.0075. Total 0.0183.
    assert result["cost_usd"] == "0.0183"


def test_cache_without_its_own_price_is_billed_as_input(api, org, key):
    make_price("tg-no-cache-price", "anthropic", input="3", output="15")
    usage = {
        "input_tokens": 100,
        "cache_creation_input_tokens": 2000,
        "cache_read_input_tokens": 10000,
        "output_tokens": 500,
    }

    result = only_result(post(api, key, event("claude-2", model="tg-no-cache-price", usage=usage)))

    # (100 + 2000 + 10000) x 3/M = 0.0363; output 500 x 15/M = 0.0075. Total 0.0438.
    assert result["cost_usd"] == "0.0438"


def gemini_price() -> Price:
    return make_price(
        "tg-gemini",
        "google",
        input="1.25",
        output="10",
        cache_read="0.3125",
        threshold=200_000,
        input_above="2.50",
        output_above="15",
    )


def test_gemini_below_the_tier(api, org, key):
    gemini_price()
    usage = {
        "promptTokenCount": 10000,
        "cachedContentTokenCount": 8000,
        "candidatesTokenCount": 1000,
        "thoughtsTokenCount": 3000,
        "toolUsePromptTokenCount": 500,
        "totalTokenCount": 14500,
    }

    result = only_result(post(api, key, event("gem-1", model="tg-gemini", usage=usage)))

    # uncached (10000 - 8000 + 500 tool-use) = 2500 x 1.25/M = 0.003125;
    # cached 8000 x 0.3125/M = 0.0025; candidates 1000 x 10/M = 0.01;
    # thoughts 3000 at the output price 10/M = 0.03. Total 0.045625.
    assert result["cost_usd"] == "0.045625"


def test_gemini_above_the_tier_counting_cached_input(api, org, key):
    gemini_price()
    usage = {
        "promptTokenCount": 250_000,
        "cachedContentTokenCount": 50_000,
        "candidatesTokenCount": 2000,
        "thoughtsTokenCount": 1000,
    }

    result = only_result(post(api, key, event("gem-2", model="tg-gemini", usage=usage)))

    # All input is 250000 > 200000 (the uncached 200000 alone would not be above):
    # uncached 200000 x 2.50/M = 0.5; output 2000 x 15/M = 0.03;
    # thoughts 1000 at the above-tier output price 15/M = 0.015;
    # cached 50000 x 0.3125/M = 0.015625. Total 0.560625.
    assert result["cost_usd"] == "0.560625"


def test_gemini_exactly_at_the_tier_is_below_it(api, org, key):
    gemini_price()
    usage = {"promptTokenCount": 200_000, "candidatesTokenCount": 2000}

    result = only_result(post(api, key, event("gem-3", model="tg-gemini", usage=usage)))

    # 200000 is not above 200000: 200000 x 1.25/M = 0.25; 2000 x 10/M = 0.02. Total 0.27.
    assert result["cost_usd"] == "0.27"


def test_normalized_buckets_each_at_their_price(api, org, key):
    make_price(
        "tg-all",
        input="1",
        output="2",
        cache_read="0.5",
        cache_write="1.5",
        reasoning="3",
    )
    usage = {
        "input_tokens": 1,
        "cache_read_tokens": 10,
        "cache_write_tokens": 100,
        "output_tokens": 1000,
        "reasoning_tokens": 10000,
    }

    result = only_result(post(api, key, event("norm-1", model="tg-all", usage=usage)))

    # 1 x 1/M + 10 x 0.5/M + 100 x 1.5/M + 1000 x 2/M + 10000 x 3/M
    # = 0.000001 + 0.000005 + 0.00015 + 0.002 + 0.03 = 0.032156.
    assert result["cost_usd"] == "0.032156"


def test_cost_is_rounded_to_ten_decimal_places(api, org, key):
    make_price("tg-tiny", input="0.0000333", output="0")

    result = only_result(
        post(api, key, event("tiny-1", model="tg-tiny", usage={"input_tokens": 7}))
    )

    # 7 x 0.0000333/M = 2.331e-10, rounded to 10 places: 0.0000000002.
    assert result["cost_usd"] == "0.0000000002"


def test_provider_chooses_between_prices_of_the_same_model_name(api, org, key):
    make_price("tg-hosted", "openai", input="1", output="0")
    make_price("tg-hosted", "azure", input="3", output="0")
    usage = {"input_tokens": 1000}

    openai = only_result(
        post(api, key, event("p-1", model="tg-hosted", provider="openai", usage=usage))
    )
    azure = only_result(
        post(api, key, event("p-2", model="tg-hosted", provider="azure", usage=usage))
    )

    # 1000 x 1/M = 0.001 at OpenAI; 1000 x 3/M = 0.003 at Azure.
    assert (openai["cost_usd"], azure["cost_usd"]) == ("0.001", "0.003")


def test_callers_cost_wins_and_counts_as_priced(api, org, key, plain_price):
    result = only_result(post(api, key, event("own-1", cost_usd="0.5")))

    assert result["cost_usd"] == "0.5"
    assert result["priced"] is True
    assert RequestEvent.objects.get(event_id="own-1").cost_usd == Decimal("0.5")


def test_callers_cost_prices_an_unknown_model(api, org, key):
    result = only_result(post(api, key, event("own-2", model="tg-unknown", cost_usd=0.25)))

    assert (result["cost_usd"], result["priced"]) == ("0.25", True)


def test_unknown_model_is_stored_unpriced_at_zero_when_the_org_chooses_it(
    api, org, key, make_budget
):
    org.unpriced_policy = "zero"
    org.save(update_fields=["unpriced_policy"])
    budget = make_budget(org, "10")

    result = only_result(post(api, key, event("unk-1", model="tg-unknown")))

    assert result == {
        "id": "unk-1",
        "cost_usd": "0",
        "priced": False,
        "price_model": None,
        "cost_source": "zero",
        "duplicate": False,
    }
    stored = RequestEvent.objects.get(event_id="unk-1")
    assert (stored.priced, stored.cost_usd, stored.input_tokens) == (False, 0, 1000)
    assert sum(w.spent for w in BudgetWindow.objects.filter(budget=budget)) == 0


def test_usage_before_the_first_price_is_unpriced(api, org, key):
    org.unpriced_policy = "zero"
    org.save(update_fields=["unpriced_policy"])
    make_price("tg-new", input="1", output="1", effective_from=datetime(2026, 6, 1, tzinfo=UTC))

    result = only_result(post(api, key, event("early-1", model="tg-new")))

    assert (result["cost_usd"], result["priced"]) == ("0", False)


# --- price history --------------------------------------------------------------


def test_a_later_price_does_not_change_earlier_usage(api, org, key):
    make_price("tg-hist", input="1", output="0")
    usage = {"input_tokens": 1000}
    before = only_result(
        post(
            api, key, event("h-1", model="tg-hist", usage=usage, started_at="2026-05-31T23:59:59Z")
        )
    )
    make_price("tg-hist", input="2", output="0", effective_from=datetime(2026, 6, 1, tzinfo=UTC))

    still_before = only_result(
        post(
            api, key, event("h-2", model="tg-hist", usage=usage, started_at="2026-05-31T23:59:59Z")
        )
    )
    at_change = only_result(
        post(
            api, key, event("h-3", model="tg-hist", usage=usage, started_at="2026-06-01T00:00:00Z")
        )
    )
    after = only_result(
        post(
            api,
            key,
            event("h-4", model="tg-hist", usage=usage, started_at="2026-07-01T08:00:00+02:00"),
        )
    )

    # 1000 x 1/M = 0.001 before June; 1000 x 2/M = 0.002 from June 1st 00:00 UTC on.
    assert before["cost_usd"] == still_before["cost_usd"] == "0.001"
    assert at_change["cost_usd"] == after["cost_usd"] == "0.002"
    assert RequestEvent.objects.get(event_id="h-1").cost_usd == Decimal("0.001")


def test_replay_returns_the_stored_cost_even_after_a_price_edit(api, org, key, plain_price):
    first = only_result(post(api, key, event("stored-1")))
    plain_price.input_per_token = per_million("100")
    plain_price.save()

    replay = only_result(post(api, key, event("stored-1")), status=200)

    assert first["cost_usd"] == replay["cost_usd"] == "0.002"
    assert replay["duplicate"] is True


# --- budget windows ---------------------------------------------------------------


def test_event_without_reservation_adds_to_every_tier(api, org, key, make_budget, plain_price):
    org_budget = make_budget(org, "100")
    team_budget = make_budget(org, "10", scope="team", team="search", period="month")
    user_budget = make_budget(org, "1", scope="user", user="alice", period="total")
    other_team = make_budget(org, "10", scope="team", team="ads")

    assert post(api, key, event("w-1")).status_code == 201
    assert post(api, key, event("w-2")).status_code == 201

    for budget in (org_budget, team_budget, user_budget):
        w = window_at(budget, MARCH_10_START)
        assert (w.spent, w.reserved) == (Decimal("0.004"), 0), budget.scope
    assert not BudgetWindow.objects.filter(budget=other_team).exists()


def test_spend_lands_in_the_local_day_of_started_at(api, make_org, make_key, make_budget):
    make_price("tg-plain", input="1", output="10")
    tokyo = make_org("tokyo", time_zone="Asia/Tokyo")
    key = make_key(tokyo)
    budget = make_budget(tokyo, "100")

    # 15:30 UTC on March 10th is 00:30 on March 11th in Tokyo (UTC+9).
    response = post(api, key, event("tz-1", started_at="2026-03-10T15:30:00Z"))

    assert response.status_code == 201, response.text
    w = BudgetWindow.objects.get(budget=budget)
    assert w.period_start == datetime(2026, 3, 11, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert w.period_end == datetime(2026, 3, 12, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert w.spent == Decimal("0.002")


def test_yesterdays_event_counts_in_yesterdays_window(api, make_org, make_key, make_budget):
    make_price("tg-plain", input="1", output="10")
    tz = ZoneInfo("America/New_York")
    ny = make_org("nyc", time_zone="America/New_York")
    key = make_key(ny)
    budget = make_budget(ny, "100")
    today = datetime.now(tz).date()
    yesterday_noon = datetime.combine(today - timedelta(days=1), datetime.min.time(), tz).replace(
        hour=12
    )

    old = post(api, key, event("y-1", started_at=yesterday_noon.isoformat()))
    new = post(api, key, event("y-2", started_at=None, cost_usd="0.5"))

    assert old.status_code == new.status_code == 201, (old.text, new.text)
    windows = {w.period_start: w.spent for w in BudgetWindow.objects.filter(budget=budget)}
    yesterday_start = datetime.combine(today - timedelta(days=1), datetime.min.time(), tz)
    today_start = datetime.combine(today, datetime.min.time(), tz)
    assert windows == {yesterday_start: Decimal("0.002"), today_start: Decimal("0.5")}
    # Without started_at the event is dated now.
    stored = RequestEvent.objects.get(event_id="y-2").started_at
    assert abs(stored - datetime.now(UTC)) < timedelta(minutes=1)


# --- settlement of holds ----------------------------------------------------------


def reserve(api, key: str, amount: str, team: str = "search", user: str = "alice") -> str:
    response = api.post(
        "/v1/budget/reservations",
        json={"team": team, "user": user, "estimated_cost_usd": amount},
        headers=auth(key),
    )
    assert response.status_code == 201, response.text
    return response.json()["reservation_id"]


def today_event(event_id: str, **fields: object) -> dict:
    # Holds are taken in today's window; the events that settle them are dated now.
    return event(event_id, started_at=None, **fields)


def today_window(budget: Budget) -> BudgetWindow:
    return window_at(budget, datetime.now(UTC))


def test_event_settles_its_reservation(api, org, key, make_budget, plain_price):
    org_budget = make_budget(org, "10")
    user_budget = make_budget(org, "1", scope="user", user="alice")
    reservation_id = reserve(api, key, "0.05")
    assert today_window(org_budget).reserved == Decimal("0.05")

    result = only_result(post(api, key, today_event("s-1", reservation_id=reservation_id)))

    assert result["cost_usd"] == "0.002"
    assert result["reservation"] == {
        "id": reservation_id,
        "settled": True,
        "status": "settled",
        "held_usd": "0.05",
        "settled_usd": "0.002",
        "over_hold_usd": None,
    }
    assert Reservation.objects.get(pk=reservation_id).status == "settled"
    for budget in (org_budget, user_budget):
        w = today_window(budget)
        assert (w.reserved, w.spent) == (0, Decimal("0.002")), budget.scope


def test_cost_over_the_hold_still_counts_and_is_reported(api, org, key, make_budget, plain_price):
    budget = make_budget(org, "10")
    reservation_id = reserve(api, key, "0.0005")

    result = only_result(post(api, key, today_event("s-2", reservation_id=reservation_id)))

    # Real cost 0.002 against a hold of 0.0005: 0.0015 over.
    assert result["reservation"]["settled"] is True
    assert result["reservation"]["held_usd"] == "0.0005"
    assert result["reservation"]["over_hold_usd"] == "0.0015"
    w = today_window(budget)
    assert (w.reserved, w.spent) == (0, Decimal("0.002"))


def test_second_event_naming_a_settled_hold_adds_spend_only(
    api, org, key, make_budget, plain_price
):
    budget = make_budget(org, "10")
    first_hold = reserve(api, key, "0.05")
    other_hold = reserve(api, key, "0.07")  # keeps `reserved` above zero: a second unhold shows
    assert post(api, key, today_event("s-3", reservation_id=first_hold)).status_code == 201

    result = only_result(post(api, key, today_event("s-4", reservation_id=first_hold)))

    assert result["reservation"]["settled"] is False
    w = today_window(budget)
    assert w.reserved == Decimal("0.07")
    assert w.spent == Decimal("0.004")
    assert Reservation.objects.get(pk=other_hold).status == "active"


def test_two_events_of_one_batch_settle_a_hold_once(api, org, key, make_budget, plain_price):
    budget = make_budget(org, "10")
    hold = reserve(api, key, "0.05")
    reserve(api, key, "0.07")

    response = post(
        api,
        key,
        {
            "events": [
                today_event("b-1", reservation_id=hold),
                today_event("b-2", reservation_id=hold),
            ]
        },
    )

    assert response.status_code == 201, response.text
    w = today_window(budget)
    assert (w.reserved, w.spent) == (Decimal("0.07"), Decimal("0.004"))


def test_released_hold_is_not_taken_back_twice(api, org, key, make_budget, plain_price):
    budget = make_budget(org, "10")
    hold = reserve(api, key, "0.05")
    reserve(api, key, "0.07")
    release = api.post(f"/v1/budget/reservations/{hold}/release", headers=auth(key))
    assert release.status_code == 200, release.text

    result = only_result(post(api, key, today_event("r-1", reservation_id=hold)))

    assert result["reservation"]["settled"] is False
    assert Reservation.objects.get(pk=hold).status == "released"
    w = today_window(budget)
    assert (w.reserved, w.spent) == (Decimal("0.07"), Decimal("0.002"))


def test_another_orgs_hold_is_left_alone(
    api, org, key, make_org, make_key, make_budget, plain_price
):
    budget = make_budget(org, "10")
    hold = reserve(api, key, "0.05")
    intruder = make_key(make_org("other"))

    result = only_result(post(api, intruder, today_event("x-1", reservation_id=hold)))

    assert result["reservation"]["settled"] is False
    assert Reservation.objects.get(pk=hold).status == "active"
    assert today_window(budget).reserved == Decimal("0.05")


# --- batches: atomicity and idempotency ------------------------------------------


def test_one_invalid_event_rejects_the_whole_batch(api, org, key, make_budget, plain_price):
    make_budget(org, "10")
    events = [event(f"a-{i}", team=f"fresh{i}") for i in range(10)]
    events[6]["usage"] = {"prompt_tokens": -1}

    response = post(api, key, {"events": events})

    error = assert_error(response, 422, "invalid_field", "events[6].usage.prompt_tokens")
    assert [(e["index"], e["field"]) for e in error["errors"]] == [
        (6, "events[6].usage.prompt_tokens")
    ]
    assert RequestEvent.objects.count() == 0
    assert BudgetWindow.objects.count() == 0
    assert not Team.objects.filter(slug__startswith="fresh").exists()


def test_every_invalid_event_is_listed_by_index(api, org, key):
    events = [event(f"m-{i}") for i in range(5)]
    events[1]["status"] = "maybe"
    events[3].pop("model")
    events[4]["id"] = "m-0"

    response = post(api, key, {"events": events})

    error = assert_error(response, 422, "invalid_field", "events[1].status")
    assert [(e["index"], e["field"]) for e in error["errors"]] == [
        (1, "events[1].status"),
        (3, "events[3].model"),
        (4, "events[4].id"),
    ]
    assert all(isinstance(e["message"], str) and e["message"] for e in error["errors"])
    assert RequestEvent.objects.count() == 0


def test_replay_is_a_200_with_the_stored_results_and_no_double_spend(
    api, org, key, make_budget, plain_price
):
    budget = make_budget(org, "10")
    batch = {"events": [event("i-1"), event("i-2", cost_usd="0.3"), event("i-3", model="tg-x")]}
    first = post(api, key, batch)
    assert first.status_code == 201, first.text

    replay = post(api, key, batch)

    assert replay.status_code == 200, replay.text
    # i-3's model has no price: charged at the fallback rate (the catalog's
    # highest, here tg-plain's own), and a replay says so again.
    assert [
        (r["id"], r["cost_usd"], r["priced"], r["cost_source"], r["duplicate"])
        for r in replay.json()["results"]
    ] == [
        ("i-1", "0.002", True, "price", True),
        ("i-2", "0.3", True, "caller", True),
        ("i-3", "0.002", False, "fallback_rate", True),
    ]
    assert [r["duplicate"] for r in first.json()["results"]] == [False, False, False]
    assert RequestEvent.objects.count() == 3
    assert window_at(budget, MARCH_10_START).spent == Decimal("0.304")


def test_replay_without_started_at_is_still_a_duplicate(api, org, key, plain_price):
    body = event("now-1", started_at=None)
    assert post(api, key, body).status_code == 201

    assert only_result(post(api, key, body), status=200)["duplicate"] is True


def test_a_batch_mixing_old_and_new_events_is_201_and_counts_only_the_new(
    api, org, key, make_budget, plain_price
):
    budget = make_budget(org, "10")
    assert post(api, key, event("n-1")).status_code == 201

    response = post(api, key, {"events": [event("n-1"), event("n-2")]})

    assert response.status_code == 201, response.text
    assert [r["duplicate"] for r in response.json()["results"]] == [True, False]
    assert window_at(budget, MARCH_10_START).spent == Decimal("0.004")


def test_same_id_with_another_payload_is_a_conflict_and_stores_nothing(
    api, org, key, make_budget, plain_price
):
    budget = make_budget(org, "10")
    assert post(api, key, event("c-1")).status_code == 201
    changed = event("c-1", usage={"input_tokens": 1001, "output_tokens": 100})
    batch = {"events": [event("c-0", team="brand-new"), changed, event("c-2")]}

    response = post(api, key, batch)

    error = assert_error(response, 409, "conflict")
    assert error["conflicts"] == [{"index": 1, "id": "c-1"}]
    assert sorted(RequestEvent.objects.values_list("event_id", flat=True)) == ["c-1"]
    assert RequestEvent.objects.get().input_tokens == 1000
    assert not Team.objects.filter(slug="brand-new").exists()
    assert window_at(budget, MARCH_10_START).spent == Decimal("0.002")


@pytest.mark.parametrize(
    ("first", "again"),
    [
        ("0.5", 0.5),
        (0.5, "0.50"),
        ("1", 1),
        (2, "2.0000000000"),
        ("0.0000000001", 1e-10),
    ],
)
def test_equal_costs_spelled_differently_are_not_a_conflict(api, org, key, first, again):
    assert post_raw(api, key, event("eq-1", cost_usd=first)).status_code == 201

    # A JSON number and a decimal string of the same value are the same payload.
    replay = post_raw(api, key, event("eq-1", cost_usd=again))

    assert only_result(replay, status=200)["duplicate"] is True


def test_the_same_instant_in_another_offset_is_not_a_conflict(api, org, key, plain_price):
    assert post(api, key, event("t-1", started_at="2026-03-10T15:30:00Z")).status_code == 201

    replay = post(api, key, event("t-1", started_at="2026-03-11T00:30:00+09:00"))

    assert only_result(replay, status=200)["duplicate"] is True


def test_a_different_cost_is_a_conflict(api, org, key):
    assert post(api, key, event("d-1", cost_usd="0.5")).status_code == 201

    assert_error(post(api, key, event("d-1", cost_usd="0.5000000001")), 409, "conflict")


def test_event_ids_are_per_organization(api, org, key, make_org, make_key, plain_price):
    other_key = make_key(make_org("other"))
    assert post(api, key, event("shared-1")).status_code == 201

    response = post(api, other_key, event("shared-1", usage={"input_tokens": 5}))

    assert only_result(response)["duplicate"] is False
    assert RequestEvent.objects.filter(event_id="shared-1").count() == 2


def test_spend_past_the_largest_storable_amount_is_422_not_500(api, org, key, make_budget):
    budget = make_budget(org, "10", enforce=False)
    # Each cost is allowed on its own (up to 10^9), but eleven of them in one
    # window are more than numeric(20, 10) holds.
    batch = {"events": [event(f"huge-{i}", cost_usd="1000000000") for i in range(11)]}

    assert_error(post(api, key, batch), 422, "invalid_field")
    assert RequestEvent.objects.count() == 0
    assert not BudgetWindow.objects.filter(budget=budget).exists()


def test_a_full_batch_of_1000_is_accepted(api, org, key, plain_price):
    response = post(api, key, {"events": [event(f"full-{i}") for i in range(1000)]})

    assert response.status_code == 201, response.text
    assert len(response.json()["results"]) == 1000
    assert RequestEvent.objects.count() == 1000


# --- concurrent replays ----------------------------------------------------------------


def _post_many(url: str, key: str, bodies: list[dict], concurrency: int) -> list[tuple[int, dict]]:
    """POST every body at once from `concurrency` threads (as tests/budgets/
    test_concurrency.py's burst client), returning (status, JSON body) pairs."""
    host, port = urlsplit(url).hostname, urlsplit(url).port
    headers = {**auth(key), "Content-Type": "application/json"}
    local = threading.local()
    start = threading.Barrier(concurrency)

    def one(body: dict) -> tuple[int, dict]:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection(host, port, timeout=60)
            start.wait()
        local.conn.request("POST", EVENTS, json.dumps(body), headers)
        response = local.conn.getresponse()
        return response.status, json.loads(response.read())

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, bodies))


def test_concurrent_replays_store_and_count_each_event_once(
    server, org, key, make_budget, plain_price
):
    budget = make_budget(org, "1000")
    batch = {"events": [event(f"burst-{i:02}", user=f"u{i % 7}") for i in range(50)]}

    answers = _post_many(server.url, key, [batch] * 20, concurrency=20)

    assert Counter(status for status, _ in answers).keys() <= {200, 201}, answers
    assert RequestEvent.objects.count() == 50
    # Every event was reported new by exactly one response, and with one cost.
    new = Counter(r["id"] for _, body in answers for r in body["results"] if not r["duplicate"])
    assert new == {f"burst-{i:02}": 1 for i in range(50)}
    assert {r["cost_usd"] for _, body in answers for r in body["results"]} == {"0.002"}
    # 50 x 0.002, counted once.
    assert window_at(budget, MARCH_10_START).spent == Decimal("0.1")


def test_concurrent_batches_in_opposite_orders_do_not_deadlock(
    server, org, key, make_budget, plain_price
):
    budget = make_budget(org, "1000")
    events = [event(f"order-{i:02}", team=f"t{i % 5}") for i in range(50)]
    bodies = [{"events": events if n % 2 else events[::-1]} for n in range(20)]

    answers = _post_many(server.url, key, bodies, concurrency=20)

    assert Counter(status for status, _ in answers).keys() <= {200, 201}, answers
    assert RequestEvent.objects.count() == 50
    assert window_at(budget, MARCH_10_START).spent == Decimal("0.1")


def test_concurrent_events_settle_one_hold_once(server, api, org, key, make_budget, plain_price):
    budget = make_budget(org, "10")
    hold = reserve(api, key, "0.05")
    reserve(api, key, "0.07")
    bodies = [today_event(f"cs-{i}", reservation_id=hold) for i in range(20)]

    answers = _post_many(server.url, key, bodies, concurrency=20)

    assert Counter(status for status, _ in answers) == {201: 20}, answers
    settled = [body["results"][0]["reservation"]["settled"] for _, body in answers]
    assert settled.count(True) == 1
    w = today_window(budget)
    assert (w.reserved, w.spent) == (Decimal("0.07"), Decimal("0.04"))


def test_concurrent_conflicting_payloads_store_one_of_them(
    server, org, key, make_budget, plain_price
):
    budget = make_budget(org, "1000")
    cheap, dear = event("race-id", cost_usd="0.1"), event("race-id", cost_usd="0.2")
    bodies = [cheap if n % 2 else dear for n in range(20)]

    answers = _post_many(server.url, key, bodies, concurrency=20)

    stored = RequestEvent.objects.get(event_id="race-id").cost_usd
    statuses = Counter(status for status, _ in answers)
    assert statuses[201] == 1, answers
    # The ten with the stored payload are the one insert and nine replays; the
    # ten with the other payload are conflicts.
    assert statuses == {201: 1, 200: 9, 409: 10}, answers
    for (status, body), sent in zip(answers, bodies, strict=True):
        if status in (200, 201):
            assert Decimal(sent["cost_usd"]) == stored
            assert body["results"][0]["cost_usd"] == sent["cost_usd"]
        else:
            assert body["error"]["conflicts"] == [{"index": 0, "id": "race-id"}]
    assert window_at(budget, MARCH_10_START).spent == stored


def test_events_and_a_hold_opening_the_same_windows_do_not_deadlock(
    test_database_url, org, make_budget
):
    """At the start of a period, a hold and a batch of events may both create
    the same missing windows. Both must insert them in one global order
    (budget id), or each waits for the other's uncommitted row. The race is
    made certain here: the events' transaction has created the first window
    (lowest budget id) when the hold starts, and records the events once the
    hold waits."""
    # Created in this order, the user budget's id is below the team budget's:
    # the opposite of the scope order (org, team, user) budgets are listed in.
    user_budget = make_budget(org, "10", scope="user", user="alice")
    team_budget = make_budget(org, "10", scope="team", team="search")
    assert user_budget.pk < team_budget.pk
    key_info = ApiKeyInfo(
        key_id=0,
        org_id=org.pk,
        org_slug=org.slug,
        strict=False,
        fail_mode="",
        team_slug=None,
        is_admin=False,
        revoked=False,
    )
    events, _ = ingest.validate(event("race-1", started_at=None, cost_usd="0.5"), key_info)
    hold_params = {
        "org_id": org.pk,
        "strict": False,
        "team": "search",
        "user": "alice",
        "amount": Decimal("0.01"),
        "model": None,
        "input_tokens": None,
        "max_output_tokens": None,
        "hold": True,
        "ttl_seconds": 60,
        "at": None,
        "key_id": None,
        "service_tier": "",
        "tags": None,
    }
    failures: list[Exception] = []

    with (
        psycopg.connect(test_database_url) as events_conn,
        psycopg.connect(test_database_url, autocommit=True) as hold_conn,
        psycopg.connect(test_database_url, autocommit=True) as watch,
    ):
        events_conn.execute(
            "INSERT INTO budgets_budgetwindow (budget_id, period_start, period_end, spent, reserved)"
            " SELECT %s, period_start, period_end, 0, 0"
            " FROM tollgate_period_bounds('day', 'UTC', now())",
            [user_budget.pk],
        )

        def hold() -> None:
            try:
                hold_conn.execute(db.QUERIES["decide"], hold_params)
            except psycopg.Error as exc:
                failures.append(exc)

        holder = threading.Thread(target=hold)
        holder.start()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = watch.execute(
                "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s",
                [hold_conn.info.backend_pid],
            ).fetchone()
            if waiting and waiting[0] == "Lock":
                break
            time.sleep(0.01)
        else:
            pytest.fail("the hold never waited for the events' window")
        try:
            events_conn.execute(
                db.QUERIES["record_events"],
                {"org_id": org.pk, "strict": False, "events": Jsonb(events)},
            )
            events_conn.commit()
        except psycopg.Error as exc:
            failures.append(exc)
        holder.join(30)

    assert failures == []
    for budget in (user_budget, team_budget):
        w = today_window(budget)
        assert (w.spent, w.reserved) == (Decimal("0.5"), Decimal("0.01")), budget.scope


# --- who may record what -------------------------------------------------------------


def test_team_limited_key_records_for_its_team(api, org, make_key, plain_price):
    team_key = make_key(org, team="search")
    body = event("tk-1")
    body.pop("team")

    assert post(api, team_key, body).status_code == 201
    assert RequestEvent.objects.get(event_id="tk-1").team.slug == "search"


def test_team_limited_key_cannot_record_for_another_team(api, org, make_key, plain_price):
    team_key = make_key(org, team="search")
    batch = {"events": [event("tk-2"), event("tk-3", team="ads")]}

    assert_error(post(api, team_key, batch), 403, "forbidden", "events[1].team")
    assert_error(post(api, team_key, event("tk-4", team="ads")), 403, "forbidden", "team")
    assert RequestEvent.objects.count() == 0
    assert not Team.objects.filter(slug="ads").exists()


def test_events_need_a_key(api):
    assert_error(api.post(EVENTS, json=event("anon-1")), 401, "unauthenticated")


def test_strict_org_rejects_unknown_team_or_user_and_stores_nothing(
    api, make_org, make_key, plain_price
):
    strict = make_org("strictco", strict=True)
    key = make_key(strict)
    Team.objects.create(org=strict, slug="search")
    EndUser.objects.create(org=strict, external_id="alice")
    batch = {"events": [event("st-1"), event("st-2", team="ghosts"), event("st-3", user="casper")]}

    response = post(api, key, batch)

    error = assert_error(response, 404, "not_found")
    assert [(e["index"], e["field"]) for e in error["errors"]] == [(1, "team"), (2, "user")]
    assert RequestEvent.objects.count() == 0
    assert Team.objects.filter(org=strict).count() == 1
    assert EndUser.objects.filter(org=strict).count() == 1

    assert post(api, key, {"events": [event("st-1")]}).status_code == 201


def test_open_org_registers_new_teams_and_users(api, org, key, plain_price):
    assert post(api, key, event("reg-1", team="newteam", user="newbie")).status_code == 201

    stored = RequestEvent.objects.get(event_id="reg-1")
    assert (stored.team.slug, stored.user.external_id) == ("newteam", "newbie")
    assert (stored.team.org_id, stored.user.org_id) == (org.pk, org.pk)


def test_stored_event_keeps_every_field(api, org, key, plain_price):
    body = event(
        "full-fields",
        provider="openai",
        latency_ms=812,
        status="error",
        tags={"feature": "summarize", "env": "prod"},
        started_at="2026-03-10T12:00:00.250+01:00",
    )

    assert post(api, key, body).status_code == 201

    stored = RequestEvent.objects.get(event_id="full-fields")
    assert stored.org_id == org.pk
    assert (stored.model, stored.provider, stored.latency_ms, stored.status) == (
        "tg-plain",
        "openai",
        812,
        "error",
    )
    assert stored.tags == {"feature": "summarize", "env": "prod"}
    assert stored.started_at == datetime(2026, 3, 10, 11, 0, 0, 250_000, tzinfo=UTC)
    assert len(stored.payload_hash) == 64


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"id": "i" * 128}, id="id-128-chars"),
        pytest.param({"model": "m" * 128}, id="model-128-chars"),
        pytest.param({"provider": "p" * 64}, id="provider-64-chars"),
        pytest.param({"latency_ms": 0}, id="latency-zero"),
        pytest.param({"status": "error"}, id="status-error"),
        pytest.param({"tags": {f"k{i}": "v" for i in range(20)}}, id="tags-20"),
        pytest.param({"tags": {"k" * 64: "v" * 256}}, id="tag-longest"),
        pytest.param({"tags": {}}, id="tags-empty"),
        pytest.param({"usage": None}, id="usage-null"),
        pytest.param({"usage": {}}, id="usage-empty"),
        pytest.param({"cost_usd": "0"}, id="cost-zero"),
        pytest.param({"cost_usd": "1000000000"}, id="cost-largest"),
        pytest.param({"started_at": "2000-01-01T00:00:00Z"}, id="started-2000"),
        pytest.param(
            {"started_at": (datetime.now(UTC) + timedelta(hours=12)).isoformat()},
            id="started-in-12-hours",
        ),
    ],
)
def test_values_at_the_limits_are_accepted(api, key, plain_price, changes):
    response = post_raw(api, key, event("edge-1", **changes))

    assert only_result(response)["duplicate"] is False
    assert RequestEvent.objects.count() == 1


# --- bad input -----------------------------------------------------------------------

MISSING = object()
FAR_FUTURE = (datetime.now(UTC) + timedelta(days=30)).isoformat()

# (changes to one event, the field named, relative to the event)
BAD_EVENTS = [
    pytest.param({"id": MISSING}, "id", id="id-missing"),
    pytest.param({"id": None}, "id", id="id-null"),
    pytest.param({"id": ""}, "id", id="id-empty"),
    pytest.param({"id": "x" * 129}, "id", id="id-129-chars"),
    pytest.param({"id": 5}, "id", id="id-number"),
    pytest.param({"id": "a\x00b"}, "id", id="id-nul"),
    pytest.param({"team": 7}, "team", id="team-number"),
    pytest.param({"team": "t" * 129}, "team", id="team-129-chars"),
    pytest.param({"user": ["alice"]}, "user", id="user-list"),
    pytest.param({"user": "\ud800"}, "user", id="user-lone-surrogate"),
    pytest.param({"model": MISSING}, "model", id="model-missing"),
    pytest.param({"model": ""}, "model", id="model-empty"),
    pytest.param({"model": {"name": "gpt"}}, "model", id="model-object"),
    pytest.param({"provider": 1}, "provider", id="provider-number"),
    pytest.param({"provider": "p" * 65}, "provider", id="provider-65-chars"),
    pytest.param({"model": "m" * 129}, "model", id="model-129-chars"),
    pytest.param({"latency_ms": -1}, "latency_ms", id="latency-negative"),
    pytest.param({"latency_ms": 1.5}, "latency_ms", id="latency-float"),
    pytest.param({"latency_ms": "fast"}, "latency_ms", id="latency-string"),
    pytest.param({"latency_ms": True}, "latency_ms", id="latency-bool"),
    pytest.param({"latency_ms": 10**12}, "latency_ms", id="latency-huge"),
    pytest.param({"status": "maybe"}, "status", id="status-maybe"),
    pytest.param({"status": ["ok"]}, "status", id="status-list"),
    pytest.param({"started_at": "2026-03-10T10:00:00"}, "started_at", id="started-naive"),
    pytest.param({"started_at": "yesterday"}, "started_at", id="started-garbage"),
    pytest.param({"started_at": ""}, "started_at", id="started-empty"),
    pytest.param({"started_at": 1773136800}, "started_at", id="started-number"),
    pytest.param({"started_at": FAR_FUTURE}, "started_at", id="started-far-future"),
    pytest.param({"started_at": "1999-12-31T23:59:59Z"}, "started_at", id="started-1999"),
    pytest.param({"started_at": "0001-01-01T00:00:00+01:00"}, "started_at", id="started-year-1"),
    # fromisoformat stops reading at a NUL (was accepted as 2026-03-10T12:00Z).
    pytest.param({"started_at": "2026-03-10T12:00:00Z\x00junk"}, "started_at", id="started-nul"),
    pytest.param({"cost_usd": "1_000"}, "cost_usd", id="cost-underscore"),
    pytest.param({"reservation_id": "not-a-uuid"}, "reservation_id", id="reservation-garbage"),
    pytest.param({"reservation_id": 12345}, "reservation_id", id="reservation-number"),
    pytest.param({"reservation_id": True}, "reservation_id", id="reservation-bool"),
    # str() of it is 32 hex digits, which uuid.UUID took (was accepted).
    pytest.param(
        {"reservation_id": 12345678901234567890123456789012},
        "reservation_id",
        id="reservation-32-digit-number",
    ),
    pytest.param({"tags": "feature"}, "tags", id="tags-string"),
    pytest.param({"tags": ["a"]}, "tags", id="tags-list"),
    pytest.param({"tags": {f"k{i}": "v" for i in range(21)}}, "tags", id="tags-21"),
    pytest.param({"tags": {"n": 1}}, "tags.n", id="tags-number-value"),
    pytest.param({"tags": {"n": None}}, "tags.n", id="tags-null-value"),
    pytest.param({"tags": {"n": "v" * 257}}, "tags.n", id="tags-long-value"),
    pytest.param({"tags": {"n": "a\x00b"}}, "tags.n", id="tags-nul-value"),
    pytest.param({"tags": {"n": "\udfff"}}, "tags.n", id="tags-surrogate-value"),
    pytest.param({"tags": {"k" * 65: "v"}}, "tags." + "k" * 65, id="tags-long-name"),
    pytest.param({"tags": {"a\x01": "v"}}, "tags.a\x01", id="tags-control-name"),
    pytest.param({"tags": {"\ud800": "v"}}, "tags.\ud800", id="tags-surrogate-name"),
    pytest.param({"tags": {"\ud800": 1}}, "tags.\ud800", id="tags-surrogate-name-bad-value"),
    pytest.param({"cost_usd": "-0.01"}, "cost_usd", id="cost-negative"),
    pytest.param({"cost_usd": "lots"}, "cost_usd", id="cost-garbage"),
    pytest.param({"cost_usd": True}, "cost_usd", id="cost-bool"),
    pytest.param({"cost_usd": "NaN"}, "cost_usd", id="cost-nan-string"),
    pytest.param({"cost_usd": "1e12"}, "cost_usd", id="cost-too-large"),
    pytest.param({"cost_usd": [1]}, "cost_usd", id="cost-list"),
    pytest.param({"usage": {"prompt_tokens": -1}}, "usage.prompt_tokens", id="usage-negative"),
    pytest.param({"usage": {"prompt_tokens": 1.5}}, "usage.prompt_tokens", id="usage-float"),
    pytest.param({"usage": {"prompt_tokens": "9"}}, "usage.prompt_tokens", id="usage-string"),
    pytest.param({"usage": {"output_tokens": False}}, "usage.output_tokens", id="usage-bool"),
    pytest.param(
        {"usage": {"prompt_tokens": 5, "prompt_tokens_details": {"cached_tokens": 6}}},
        "usage.prompt_tokens_details.cached_tokens",
        id="usage-cached-over-prompt",
    ),
    pytest.param({"usage": {"foo": 1}}, "usage.foo", id="usage-unknown-shape"),
    pytest.param({"usage": {"\udc00": 1}}, "usage.\udc00", id="usage-surrogate-key"),
    pytest.param({"usage": [1, 2]}, "usage", id="usage-list"),
]


def with_changes(base: dict, changes: dict) -> dict:
    body = dict(base)
    for name, value in changes.items():
        if value is MISSING:
            body.pop(name, None)
        else:
            body[name] = value
    return body


@pytest.fixture
def nothing_stored(org, make_budget, plain_price):
    """An org budget, so that a stored event would also open a window; the
    events name a fresh team and user, so that registering them would show."""
    make_budget(org, "10")

    def check() -> None:
        assert RequestEvent.objects.count() == 0
        assert BudgetWindow.objects.count() == 0
        assert not Team.objects.filter(slug="fresh-team").exists()
        assert not EndUser.objects.filter(external_id="fresh-user").exists()

    return check


def fresh_event(event_id: str) -> dict:
    return event(event_id, team="fresh-team", user="fresh-user")


@pytest.mark.parametrize(("changes", "field"), BAD_EVENTS)
def test_bad_event_in_a_batch_is_422_naming_it(api, key, nothing_stored, changes, field):
    events = [fresh_event(f"ok-{i}") for i in range(5)]
    events[3] = with_changes(events[3], changes)

    response = post_raw(api, key, {"events": events})

    error = assert_error(response, 422, "invalid_field", f"events[3].{field}")
    assert [(e["index"], e["field"]) for e in error["errors"]] == [(3, f"events[3].{field}")]
    nothing_stored()


@pytest.mark.parametrize(("changes", "field"), BAD_EVENTS)
def test_bad_single_event_is_422_naming_it(api, key, nothing_stored, changes, field):
    response = post_raw(api, key, with_changes(fresh_event("single"), changes))

    assert_error(response, 422, "invalid_field", field)
    nothing_stored()


@pytest.mark.parametrize(
    ("body", "status", "code", "field"),
    [
        pytest.param({"events": {"id": "x"}}, 422, "invalid_field", "events", id="events-object"),
        pytest.param({"events": "x"}, 422, "invalid_field", "events", id="events-string"),
        pytest.param({"events": None}, 422, "invalid_field", "events", id="events-null"),
        pytest.param({"events": []}, 422, "invalid_field", "events", id="events-empty"),
        pytest.param(
            {"events": ["x", fresh_event("e-1")]},
            422,
            "invalid_field",
            "events[0]",
            id="event-string",
        ),
        pytest.param(
            {"events": [fresh_event(f"e-{i}") for i in range(1001)]},
            413,
            "payload_too_large",
            None,
            id="batch-1001",
        ),
        pytest.param([fresh_event("e-1")], 400, "malformed_json", None, id="body-list"),
    ],
)
def test_bad_batch_gets_the_documented_status(api, key, nothing_stored, body, status, code, field):
    assert_error(post_raw(api, key, body), status, code, field)
    nothing_stored()


def test_body_that_is_not_json_is_400(api, key, nothing_stored):
    headers = {**auth(key), "Content-Type": "application/json"}
    response = api.post(EVENTS, content=b'{"id": "x", ', headers=headers)

    assert_error(response, 400, "malformed_json")
    nothing_stored()


def test_replay_of_a_settling_event_reports_the_settled_hold(api, org, key, make_budget):
    make_budget(org, "10")
    reservation_id = reserve(api, key, "0.05")
    event = today_event("settle-replay", reservation_id=reservation_id)
    post(api, key, event)

    replay = only_result(post(api, key, event), status=200)

    assert replay["duplicate"] is True
    assert replay["reservation"]["settled"] is True
    assert replay["reservation"]["status"] == "settled"
    assert replay["reservation"]["held_usd"] == "0.05"


def test_team_limited_key_cannot_settle_another_teams_hold(api, org, key, make_key, make_budget):
    budget = make_budget(org, "10")
    other_team_hold = api.post(
        "/v1/budget/reservations",
        headers=auth(key),
        json={"team": "research", "estimated_cost_usd": "1"},
    ).json()
    search_key = make_key(org, team="search")

    result = only_result(
        post(
            api,
            search_key,
            today_event("cross-team", reservation_id=other_team_hold["reservation_id"]),
        )
    )

    assert result["reservation"]["settled"] is False
    assert result["reservation"]["status"] == "active"
    assert Reservation.objects.get(pk=other_team_hold["reservation_id"]).status == "active"
    assert today_window(budget).reserved == Decimal("1")
