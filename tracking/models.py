"""Prices, request events, and their hourly and daily rollups."""

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone

PER_TOKEN = {"max_digits": 20, "decimal_places": 14}


class Price(models.Model):
    """USD per token for one model from `effective_from` on.

    A new price is a new row: past costs never change. The hot path reads the
    newest row whose effective_from is not in the future.
    """

    provider = models.CharField(max_length=64)
    model = models.CharField(max_length=128)
    effective_from = models.DateTimeField(default=timezone.now)
    input_per_token = models.DecimalField(**PER_TOKEN)
    output_per_token = models.DecimalField(**PER_TOKEN)
    cache_read_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    cache_write_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    reasoning_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    # Optional long-context tier: a request whose prompt (uncached, cache
    # read and cache write tokens) is above the threshold bills all its tokens
    # at these prices (docs/api.md, "Prices").
    tier_threshold_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    output_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    cache_read_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    cache_write_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    cache_write_1h_above_threshold_per_token = models.DecimalField(
        **PER_TOKEN, null=True, blank=True
    )
    # Tokens with a price of their own (parts of the buckets, provider_usage.py);
    # empty: the bucket's price.
    cache_write_1h_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    cache_read_audio_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    input_audio_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    # Audio input in the long-context tier (empty: the audio rate below it).
    input_audio_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    input_image_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    output_audio_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    output_image_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    # A paid web search (or grounding query): at the default (medium) search
    # context size, and at the low and high ones (empty: the medium price).
    web_search_per_call = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    web_search_low_per_call = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    web_search_high_per_call = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    # Billed once per request that searched, however many queries it ran
    # (Google's grounding of Gemini 2.x), instead of per query.
    web_search_per_request = models.BooleanField(default=False, db_default=False)
    # Multipliers of the token cost by where the request was served
    # ({"us": "1.1"}; Anthropic's inference_geo). Empty: none.
    region_multipliers = models.JSONField(default=dict, blank=True)
    # "" (standard), "flex", "priority" or "batch": the prices of that
    # service tier. A request of a tier the model has no row for pays the
    # standard row's.
    service_tier = models.CharField(max_length=16, blank=True, default="", db_default="")

    class Meta:
        ordering = ["provider", "model", "service_tier", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "service_tier", "effective_from"],
                name="price_unique_effective",
            ),
            models.CheckConstraint(
                condition=Q(input_per_token__gte=0, output_per_token__gte=0),
                name="price_non_negative",
            ),
        ]
        indexes = [
            # Used by tollgate_estimate_cost: newest price of a model.
            models.Index(fields=["model", "-effective_from"], name="price_model_latest"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} from {self.effective_from:%Y-%m-%d}"


class ModelAlias(models.Model):
    """A model name an organization sends that means a price entry: an Azure
    deployment name ("my-gpt4o-prod") for its base model ("gpt-4o"). Pricing
    tries it right after the exact name (docs/sql.md, "Model names")."""

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    name = models.CharField(max_length=128, help_text="The model name as the gateway sends it.")
    model = models.CharField(max_length=128, help_text="The price entry's model key it means.")

    class Meta:
        ordering = ["org", "name"]
        constraints = [
            # Also the index pricing reads an org's alias by.
            models.UniqueConstraint(fields=["org", "name"], name="model_alias_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} → {self.model}"


MONEY = {"max_digits": 20, "decimal_places": 10}


class RequestEvent(models.Model):
    """One LLM request as a gateway reported it (POST /v1/events).

    Token counts are stored in disjoint buckets (tracking/provider_usage.py), so that
    cost = sum(bucket x its price) and no token is billed twice.
    """

    class Status(models.TextChoices):
        OK = "ok"
        ERROR = "error"

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    # The caller's idempotency key, unique per organization.
    event_id = models.CharField(max_length=128)
    team = models.ForeignKey(
        "budgets.Team", null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    user = models.ForeignKey(
        "budgets.EndUser", null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    # The API key that recorded it: the event counts toward that key's budgets.
    key = models.ForeignKey(
        "budgets.ApiKey", null=True, blank=True, on_delete=models.SET_NULL, db_index=False
    )
    model = models.CharField(max_length=128)
    provider = models.CharField(max_length=64, blank=True)
    started_at = models.DateTimeField()
    received_at = models.DateTimeField(default=timezone.now)
    input_tokens = models.BigIntegerField(default=0, help_text="Uncached input tokens.")
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(
        default=0, help_text="Output tokens, reasoning excluded."
    )
    reasoning_tokens = models.BigIntegerField(default=0)
    # Parts of the buckets above with prices of their own (provider_usage.py).
    # Database defaults, so that older writers still work.
    cache_write_1h_tokens = models.BigIntegerField(default=0, db_default=0)
    cache_read_audio_tokens = models.BigIntegerField(default=0, db_default=0)
    input_audio_tokens = models.BigIntegerField(default=0, db_default=0)
    input_image_tokens = models.BigIntegerField(default=0, db_default=0)
    output_audio_tokens = models.BigIntegerField(default=0, db_default=0)
    output_image_tokens = models.BigIntegerField(default=0, db_default=0)
    web_search_calls = models.BigIntegerField(default=0, db_default=0)
    # The search context size of its web searches ("low", "high"; "" the
    # default, medium), from the request: it chooses the search price.
    web_search_context_size = models.CharField(max_length=8, blank=True, default="", db_default="")
    # The price tier the event was billed in: "", "flex", "priority", "batch".
    service_tier = models.CharField(max_length=16, blank=True, default="", db_default="")
    # Where it was served ("us"), for a price's region_multipliers; "" none.
    inference_geo = models.CharField(max_length=32, blank=True, default="", db_default="")
    cost_usd = models.DecimalField(**MONEY)
    priced = models.BooleanField(help_text="False: no price was known (cost 0 until repriced).")
    # The price entry's model key that priced the event (the name it resolved
    # to, budgets/sql/functions/20_pricing.sql); NULL when unpriced or priced
    # by the caller's own cost. Kept so that a replay answers what the first
    # recording said. NULL, not "": it is what the SQL writes and the API
    # answers (null), with no translation either way.
    price_model = models.CharField(max_length=128, null=True, blank=True)  # noqa: DJ001
    # Where cost_usd came from: "price" (the catalog), "caller" (its cost_usd),
    # and for an unpriced model, per the org's unpriced_policy: "hold" (the
    # hold it settled), "fallback_rate" or "zero". "" for events recorded
    # before this field. A database default, so that older writers still work.
    cost_source = models.CharField(max_length=16, blank=True, default="", db_default="")
    latency_ms = models.IntegerField(null=True, blank=True)
    status = models.CharField(max_length=5, choices=Status.choices, default=Status.OK)
    reservation_id = models.UUIDField(null=True, blank=True)
    tags = models.JSONField(default=dict, blank=True)
    # SHA-256 of the canonical request payload: a replay with the same id and a
    # different payload is a conflict (409).
    payload_hash = models.CharField(max_length=64)

    class Meta:
        ordering = ["-started_at"]
        constraints = [
            models.UniqueConstraint(fields=["org", "event_id"], name="event_unique_id"),
            models.CheckConstraint(
                condition=models.Q(
                    input_tokens__gte=0,
                    cache_read_tokens__gte=0,
                    cache_write_tokens__gte=0,
                    output_tokens__gte=0,
                    reasoning_tokens__gte=0,
                    cost_usd__gte=0,
                ),
                name="event_non_negative",
            ),
        ]
        indexes = [
            # Used by the dashboard summary's recent requests and /v1/usage's raw tail.
            models.Index(fields=["org", "-started_at"], name="event_org_started"),
            # Used by aggregate_usage to find events received since its watermark.
            models.Index(fields=["received_at"], name="event_received"),
            # Used by GET /v1/usage (query "usage" in tracking/sql/queries.sql): one
            # org's events received after the aggregation watermark, i.e. the hours
            # it reads raw because the rollups may miss them. Without the org in
            # front it would walk every org's recent events.
            models.Index(fields=["org", "received_at"], name="event_org_received"),
            # Used by reprice (tracking/services.py, _reprice_queryset): unpriced
            # events since a date. Partial, so the priced events, nearly all of
            # them, cost ingest nothing here.
            models.Index(fields=["started_at"], condition=Q(priced=False), name="event_unpriced"),
        ]

    def __str__(self) -> str:
        return f"{self.event_id} {self.model} ${self.cost_usd}"


class HourlyRollup(models.Model):
    """Usage per (org, team, user, model) and UTC hour, rebuilt from raw events
    by `manage.py aggregate_usage`."""

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    team = models.ForeignKey(
        "budgets.Team", null=True, blank=True, on_delete=models.CASCADE, db_index=False
    )
    user = models.ForeignKey(
        "budgets.EndUser", null=True, blank=True, on_delete=models.CASCADE, db_index=False
    )
    model = models.CharField(max_length=128)
    hour = models.DateTimeField()
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**MONEY, default=0)

    class Meta:
        ordering = ["-hour"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "hour", "team", "user", "model"],
                name="rollup_unique_bucket",
                nulls_distinct=False,
            ),
        ]
        # The unique index (org, hour, …) also serves the dashboard and
        # /v1/usage, which read one org's hours in a range.

    def __str__(self) -> str:
        return f"{self.org_id} {self.hour:%Y-%m-%d %H}h {self.model}"


class DailyRollup(models.Model):
    """Usage per (org, team, user, model) and local day of the org: the sum of
    the hourly rollups whose hour starts in that day (a day of 23 or 25 hours
    on a DST change), keyed by the first instant of its local date
    (tollgate_local_trunc, the rule of budget windows). Written by the same
    transactions that write the hourly rows (tracking/services.py), so the two
    never disagree; only in the time zone that DailyRollupZone names for the org.

    It serves the dashboard's day ranges, which would otherwise sum ~640 hourly
    rows per day. Tokens are left out: the dashboard shows none, and
    GET /v1/usage, whose days are those of any zone asked for, reads the
    hourly rows."""

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    team = models.ForeignKey(
        "budgets.Team", null=True, blank=True, on_delete=models.CASCADE, db_index=False
    )
    user = models.ForeignKey(
        "budgets.EndUser", null=True, blank=True, on_delete=models.CASCADE, db_index=False
    )
    model = models.CharField(max_length=128)
    day = models.DateTimeField(help_text="Start of the local day: the first instant of its date.")
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**MONEY, default=0)

    class Meta:
        ordering = ["-day"]
        constraints = [
            models.UniqueConstraint(
                fields=["org", "day", "team", "user", "model"],
                name="daily_rollup_unique_bucket",
                nulls_distinct=False,
            ),
        ]
        # The unique index (org, day, …) also serves the dashboard, which reads
        # one org's days in a range.

    def __str__(self) -> str:
        return f"{self.org_id} {self.day:%Y-%m-%d} {self.model}"


class DailyRollupZone(models.Model):
    """The time zone in which an org's daily rollups are built. The dashboard
    reads them only when it is the org's time zone now; otherwise (a new org,
    a changed time zone) it sums hourly rollups until aggregate_usage has
    rebuilt the days in the new zone."""

    org = models.OneToOneField(
        "budgets.Organization", primary_key=True, on_delete=models.CASCADE, related_name="+"
    )
    time_zone = models.CharField(max_length=64)
    built_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.org_id} days in {self.time_zone}"


class TagRollup(models.Model):
    """Usage per (org, UTC hour, tag name, tag value, team, model), for the tag
    names the org reports on (Organization.report_tags): GET /v1/usage's
    group_by=tag:NAME, the dashboard's tag breakdown and the chargeback
    report. An event without the tag counts under value NULL, so that every
    name's rows add up to the hour's whole usage. Kept by the transactions
    that keep the hourly rollups (tracking/services.py), for the names that
    TagRollupBuild says are built."""

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    hour = models.DateTimeField()
    name = models.CharField(max_length=64)
    value = models.TextField(null=True, blank=True)  # noqa: DJ001 - NULL: the event lacks the tag
    team = models.ForeignKey(
        "budgets.Team", null=True, blank=True, on_delete=models.CASCADE, db_index=False
    )
    model = models.CharField(max_length=128)
    requests = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)
    unpriced_requests = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    cache_read_tokens = models.BigIntegerField(default=0)
    cache_write_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    reasoning_tokens = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**MONEY, default=0)

    class Meta:
        ordering = ["-hour"]
        constraints = [
            # Also the index the reports read one org's name over a range by.
            models.UniqueConstraint(
                fields=["org", "name", "hour", "value", "team", "model"],
                name="tag_rollup_unique_bucket",
                nulls_distinct=False,
            ),
        ]

    def __str__(self) -> str:
        return f"{self.org_id} {self.hour:%Y-%m-%d %H}h {self.name}={self.value}"


class KeyRollup(models.Model):
    """Requests and cost per (org, UTC hour, API key, model) of the events
    recorded with a key: what a key budget created mid-period counts for
    hours whose raw events were pruned (tollgate_seed_window). A table of its
    own instead of a key in the hourly rollups' grain, which would multiply
    their rows (2.4x when keys cut across teams,
    docs/benchmarks/tag-rollups.md) for every report that reads them; this
    one has a row per key and model an hour. Kept by the transactions that
    keep the hourly rollups."""

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    hour = models.DateTimeField()
    key = models.ForeignKey("budgets.ApiKey", on_delete=models.CASCADE, db_index=False)
    model = models.CharField(max_length=128)
    requests = models.BigIntegerField(default=0)
    cost_usd = models.DecimalField(**MONEY, default=0)

    class Meta:
        ordering = ["-hour"]
        constraints = [
            # Also the index seeding reads a key's hours by.
            models.UniqueConstraint(
                fields=["org", "key", "hour", "model"], name="key_rollup_unique_bucket"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.org_id} {self.hour:%Y-%m-%d %H}h key {self.key_id} {self.model}"


class TagRollupBuild(models.Model):
    """A tag name whose rollups are built for an org: from `complete_from` on
    (the prune horizon when it was built; earlier hours had no raw events
    left to read) TagRollup holds exactly the events the hourly rollups hold.
    aggregate_usage builds the names an org marks and drops the ones it
    unmarks."""

    org = models.ForeignKey("budgets.Organization", on_delete=models.CASCADE, db_index=False)
    name = models.CharField(max_length=64)
    complete_from = models.DateTimeField()
    built_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["org", "name"], name="tag_rollup_build_unique"),
        ]

    def __str__(self) -> str:
        return f"{self.org_id} tag {self.name} from {self.complete_from:%Y-%m-%d %H}h"


class AggregationState(models.Model):
    """Watermarks of incremental jobs (one row per job name)."""

    name = models.CharField(max_length=64, primary_key=True)
    watermark = models.DateTimeField()
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"{self.name} @ {self.watermark}"
