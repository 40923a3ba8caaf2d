"""Writes of the tracking app (sync ORM): the price catalog, hourly and daily
rollups, pruning and repricing of raw events."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from budgets.audit import SYSTEM, Actor, audit_record, json_value
from tracking import selectors
from tracking.models import Price, RequestEvent

DEFAULT_PRICE_FILE = Path(__file__).resolve().parent / "data" / "prices.json"
# The first price known for a model also prices its earlier usage.
FIRST_EFFECTIVE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
# Modes whose usage is billed per token (a chat-like request reports it):
# realtime sessions, image generation (gpt-image-1, Gemini image output) and
# audio transcription by tokens too. Entries without a token price (priced
# per image, second or character) are skipped.
PRICED_MODES = {
    "chat",
    "completion",
    "responses",
    "realtime",
    "image_generation",
    "image_edit",
    "audio_transcription",
}
PRICE_FIELDS = [
    "input_per_token",
    "output_per_token",
    "cache_read_per_token",
    "cache_write_per_token",
    "reasoning_per_token",
    "tier_threshold_tokens",
    "input_above_threshold_per_token",
    "output_above_threshold_per_token",
    "cache_read_above_threshold_per_token",
    "cache_write_above_threshold_per_token",
    "cache_write_1h_above_threshold_per_token",
    "cache_write_1h_per_token",
    "cache_read_audio_per_token",
    "input_audio_per_token",
    "input_audio_above_threshold_per_token",
    "input_image_per_token",
    "output_audio_per_token",
    "output_image_per_token",
    "web_search_per_call",
    "web_search_low_per_call",
    "web_search_high_per_call",
    "web_search_per_request",
    "region_multipliers",
]
SERVICE_TIERS = ("", "flex", "priority", "batch")
# Providers that bill the long-context tier from the threshold itself (a
# prompt of exactly 128k tokens pays it), not from one token above it.
INCLUSIVE_THRESHOLD_PROVIDERS = {"xai"}
_THRESHOLD_KEY = re.compile(
    r"^(?:input_cost_per_token|output_cost_per_token|cache_read_input_token_cost"
    r"|cache_creation_input_token_cost|input_cost_per_audio_token)"
    r"_above_(\d+)(k?)_tokens(_batches|_flex|_priority)?$"
)


@dataclass
class PriceLoadReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    # Entries not priced per token, by mode: embeddings, speech, and images
    # or transcriptions priced per image or second.
    skipped_modes: dict[str, int] = field(default_factory=dict)


def _provider(entry: dict[str, Any]) -> str:
    provider = str(entry.get("litellm_provider", "unknown"))
    if provider.startswith("vertex_ai") or provider == "gemini":
        return "google"
    return provider


def _token_price(entry: dict[str, Any], key: str) -> Decimal | None:
    value = entry.get(key)
    if value is None or isinstance(value, bool) or not isinstance(value, (int, Decimal, str)):
        return None
    try:
        price = Decimal(str(value))
    except ArithmeticError:
        return None
    return price if price.is_finite() and price >= 0 else None


def _first(*prices: Decimal | None) -> Decimal | None:
    return next((p for p in prices if p is not None), None)


def _half(price: Decimal | None) -> Decimal | None:
    return None if price is None else price / 2


def _threshold(entry: dict[str, Any], suffix: str) -> int | None:
    """The long-context threshold of the rates with this suffix ("" standard,
    "_flex", "_priority", "_batches"): the lowest one the entry names (no
    entry of LiteLLM's map names two)."""
    found = []
    for key, value in entry.items():
        match = _THRESHOLD_KEY.match(key)
        if match and value is not None and (match.group(3) or "") in ("", suffix):
            if suffix == "_batches" and match.group(3) != "_batches":
                continue
            found.append(int(match.group(1)) * (1000 if match.group(2) else 1))
    return min(found) if found else None


def _region_multipliers(entry: dict[str, Any]) -> dict[str, str]:
    regions = entry.get("provider_specific_entry")
    if not isinstance(regions, dict):
        return {}
    # "fast" is a speed, not a region.
    return {
        str(name).lower(): str(value)
        for name, value in sorted(regions.items())
        if name != "fast" and _token_price(regions, name) is not None
    }


def price_fields_from_litellm(entry: dict[str, Any], tier: str = "") -> dict[str, Any] | None:
    """One price row's fields from a LiteLLM price map entry, for a service
    tier ("" standard, "flex", "priority", "batch"); None when the entry has
    no rates of that tier (a request of that tier then pays the standard row).

    A tier's rate falls back to the standard one where the map has none, as
    LiteLLM's cost_per_token resolves it. Batch: the `*_batches` rates; an
    entry without them costs half of every standard rate (OpenAI, Anthropic
    and Google all bill batches at 50%)."""

    def rate(key: str) -> Decimal | None:
        return _token_price(entry, key)

    def above(prefix: str, threshold: int | None, suffix: str) -> Decimal | None:
        if threshold is None:
            return None
        size = f"{threshold // 1000}k" if threshold % 1000 == 0 else str(threshold)
        key = f"{prefix}_above_{size}_tokens"
        return _first(rate(key + suffix), rate(key) if suffix not in ("", "_batches") else None)

    if tier == "batch":
        return _batch_fields(entry)
    suffix = f"_{tier}" if tier else ""
    if (
        tier
        and rate(f"input_cost_per_token{suffix}") is None
        and (rate(f"output_cost_per_token{suffix}") is None)
    ):
        return None
    input_rate = _first(rate(f"input_cost_per_token{suffix}"), rate("input_cost_per_token"))
    output_rate = _first(rate(f"output_cost_per_token{suffix}"), rate("output_cost_per_token"))
    output_image = _first(
        rate(f"output_cost_per_image_token{suffix}"), rate("output_cost_per_image_token")
    )
    if not output_rate and output_image is not None:
        # Image models price their output as image tokens only.
        output_rate = output_image
    if input_rate is None and output_rate is None:
        return None
    # A tier's reasoning rate: its own, else (when the tier prices output) the
    # tier's output rate, else the standard reasoning rate (LiteLLM's order).
    reasoning = rate(f"output_cost_per_reasoning_token{suffix}")
    if reasoning is None and not (tier and rate(f"output_cost_per_token{suffix}") is not None):
        reasoning = rate("output_cost_per_reasoning_token")
    threshold = _threshold(entry, suffix)
    fields = {
        "input_per_token": input_rate or Decimal(0),
        "output_per_token": output_rate or Decimal(0),
        "cache_read_per_token": _first(
            rate(f"cache_read_input_token_cost{suffix}"), rate("cache_read_input_token_cost")
        ),
        "cache_write_per_token": _first(
            rate(f"cache_creation_input_token_cost{suffix}"),
            rate("cache_creation_input_token_cost"),
        ),
        "reasoning_per_token": reasoning,
        "tier_threshold_tokens": threshold,
        "input_above_threshold_per_token": above("input_cost_per_token", threshold, suffix),
        "output_above_threshold_per_token": above("output_cost_per_token", threshold, suffix),
        "cache_read_above_threshold_per_token": above(
            "cache_read_input_token_cost", threshold, suffix
        ),
        "cache_write_above_threshold_per_token": above(
            "cache_creation_input_token_cost", threshold, suffix
        ),
        "cache_write_1h_above_threshold_per_token": above(
            "cache_creation_input_token_cost_above_1hr", threshold, ""
        ),
        "cache_write_1h_per_token": rate("cache_creation_input_token_cost_above_1hr"),
        "cache_read_audio_per_token": _first(
            rate(f"cache_read_input_audio_token_cost{suffix}"),
            rate("cache_read_input_audio_token_cost"),
        ),
        "input_audio_per_token": _first(
            rate(f"input_cost_per_audio_token{suffix}"), rate("input_cost_per_audio_token")
        ),
        "input_audio_above_threshold_per_token": above(
            "input_cost_per_audio_token", threshold, suffix
        ),
        "input_image_per_token": _first(
            rate(f"input_cost_per_image_token{suffix}"), rate("input_cost_per_image_token")
        ),
        "output_audio_per_token": rate("output_cost_per_audio_token"),
        "output_image_per_token": output_image,
        **_web_search(entry),
        "region_multipliers": _region_multipliers(entry),
    }
    return _inclusive(entry, fields)


WEB_SEARCH_FIELDS = (
    "web_search_per_call",
    "web_search_low_per_call",
    "web_search_high_per_call",
    "web_search_per_request",
)
# Google's price of a grounded request when the map names none (LiteLLM's
# Gemini calculator bills it too: $35 per 1,000 grounded prompts).
GOOGLE_GROUNDING_DEFAULT = Decimal("0.035")
# The map's providers of Google's own models (Vertex AI's partner models,
# `vertex_ai-anthropic_models` and the like, bill searches their vendor's way).
GOOGLE_GROUNDING_PROVIDERS = {"gemini", "vertex_ai", "vertex_ai-language-models"}


def _web_search(entry: dict[str, Any]) -> dict[str, Any]:
    """A search's price at each search context size (the medium one is the
    default: what a request that does not say its size, or a provider that
    reports only a count of searches, bills), and whether it is billed once
    per request that searched. As LiteLLM's calculators price them: Gemini
    (Google AI Studio, Vertex AI) bills grounding per request unless the map
    says `web_search_billing_unit: per_query` (Gemini 3), at $0.035 when the
    map names no price; Vertex AI's partner models (Claude, ...) per search."""
    prices = entry.get("search_context_cost_per_query")
    if not isinstance(prices, dict):
        prices = {}
    medium = _token_price(prices, "search_context_size_medium")
    gemini = entry.get("litellm_provider") in GOOGLE_GROUNDING_PROVIDERS
    if gemini and medium is None:
        medium = GOOGLE_GROUNDING_DEFAULT
    return {
        "web_search_per_call": medium,
        "web_search_low_per_call": _token_price(prices, "search_context_size_low"),
        "web_search_high_per_call": _token_price(prices, "search_context_size_high"),
        "web_search_per_request": gemini
        and entry.get("web_search_billing_unit", "per_prompt") != "per_query",
    }


def _inclusive(entry: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    threshold = fields["tier_threshold_tokens"]
    if threshold and entry.get("litellm_provider") in INCLUSIVE_THRESHOLD_PROVIDERS:
        # Prompt >= T is prompt > T - 1 in whole tokens.
        fields["tier_threshold_tokens"] = threshold - 1
    return fields


def _batch_fields(entry: dict[str, Any]) -> dict[str, Any] | None:
    def rate(key: str) -> Decimal | None:
        return _token_price(entry, key)

    standard = price_fields_from_litellm(entry)
    if standard is None:
        return None
    batch_input = rate("input_cost_per_token_batches")
    output_image = _first(
        rate("output_cost_per_image_token_batches"), _half(rate("output_cost_per_image_token"))
    )
    if batch_input is None:
        # Half of every standard rate.
        halved = {
            name: _half(value) if isinstance(value, Decimal) else value
            for name, value in standard.items()
        }
        for name in WEB_SEARCH_FIELDS:
            halved[name] = standard[name]
        halved["output_image_per_token"] = output_image
        return halved
    # LiteLLM's batch calculator: rates the map lacks for batches fall back to
    # the batch input (cache, audio and image input) or output rate (reasoning,
    # audio output); no 1-hour cache write rate, no reasoning rate of its own.
    threshold = _threshold(entry, "_batches")

    def above(prefix: str) -> Decimal | None:
        if threshold is None:
            return None
        size = f"{threshold // 1000}k" if threshold % 1000 == 0 else str(threshold)
        return rate(f"{prefix}_above_{size}_tokens_batches")

    batch_output = _first(
        rate("output_cost_per_token_batches"), _half(rate("output_cost_per_token"))
    )
    fields = {
        "input_per_token": batch_input,
        "output_per_token": batch_output or Decimal(0),
        "cache_read_per_token": rate("cache_read_input_token_cost_batches"),
        "cache_write_per_token": rate("cache_creation_input_token_cost_batches"),
        "reasoning_per_token": None,
        "tier_threshold_tokens": threshold,
        "input_above_threshold_per_token": _first(above("input_cost_per_token"), batch_input),
        "output_above_threshold_per_token": _first(
            above("output_cost_per_token"), rate("output_cost_per_token_batches")
        ),
        "cache_read_above_threshold_per_token": _first(
            above("cache_read_input_token_cost"), rate("cache_read_input_token_cost_batches")
        ),
        "cache_write_above_threshold_per_token": _first(
            above("cache_creation_input_token_cost"),
            rate("cache_creation_input_token_cost_batches"),
        ),
        "cache_write_1h_above_threshold_per_token": None,
        "cache_write_1h_per_token": None,
        "cache_read_audio_per_token": rate("cache_read_input_audio_token_cost_batches"),
        "input_audio_per_token": rate("input_cost_per_audio_token_batches"),
        "input_audio_above_threshold_per_token": above("input_cost_per_audio_token"),
        "input_image_per_token": rate("input_cost_per_image_token_batches"),
        "output_audio_per_token": None,
        "output_image_per_token": output_image,
        **{name: standard[name] for name in WEB_SEARCH_FIELDS},
        "region_multipliers": standard["region_multipliers"],
    }
    return _inclusive(entry, fields)


def _same(price: Price, fields: dict[str, Any]) -> bool:
    return all(getattr(price, name) == fields[name] for name in PRICE_FIELDS)


@transaction.atomic
def prices_load(*, path: Path = DEFAULT_PRICE_FILE, actor: Actor = SYSTEM) -> PriceLoadReport:
    """Import a LiteLLM-format price map: one row per model and service tier
    (standard, flex, priority, batch). Idempotent: an unchanged price adds
    nothing; a changed one adds a row effective now (past costs keep theirs).

    Audited in the same transaction: one entry per changed price (old and new
    per-token prices) and one for the load with its counts and the models it
    added."""
    data = json.loads(path.read_text(), parse_float=Decimal)
    report = PriceLoadReport()
    now = timezone.now()
    latest_rows: dict[tuple[str, str, str], Price] = {}
    for price in Price.objects.order_by("provider", "model", "service_tier", "effective_from"):
        latest_rows[(price.provider, price.model, price.service_tier)] = price
    for model, entry in sorted(data.items()):
        if not isinstance(entry, dict) or model == "sample_spec":
            continue
        mode = str(entry.get("mode", "chat"))
        if mode not in PRICED_MODES:
            report.skipped_modes[mode] = report.skipped_modes.get(mode, 0) + 1
            continue
        provider = _provider(entry)
        if price_fields_from_litellm(entry) is None:
            # Priced per image, second or character, not per token.
            report.skipped_modes[mode] = report.skipped_modes.get(mode, 0) + 1
            continue
        # Counted per model: added when it is new, changed when any of its
        # tiers' prices changed.
        known = (provider, model, "") in latest_rows
        status = "unchanged" if known else "added"
        for tier in SERVICE_TIERS:
            fields = price_fields_from_litellm(entry, tier)
            if fields is None:
                continue
            latest = latest_rows.get((provider, model, tier))
            if latest is None:
                Price.objects.create(
                    provider=provider,
                    model=model,
                    service_tier=tier,
                    # A tier new to a known model starts now: its earlier
                    # requests were billed at the standard prices.
                    effective_from=now if known else FIRST_EFFECTIVE_FROM,
                    **fields,
                )
                if known:
                    status = "changed"
            elif not _same(latest, fields):
                Price.objects.create(
                    provider=provider, model=model, service_tier=tier, effective_from=now, **fields
                )
                status = "changed"
                audit_record(
                    actor=actor,
                    org=None,
                    object_type="price",
                    object_id=f"{provider}/{model}" + (f" ({tier})" if tier else ""),
                    action="update",
                    old={name: json_value(getattr(latest, name)) for name in PRICE_FIELDS},
                    new={name: json_value(fields[name]) for name in PRICE_FIELDS},
                )
        if status == "added":
            report.added.append(model)
        elif status == "changed":
            report.changed.append(model)
        else:
            report.unchanged += 1
    audit_record(
        actor=actor,
        org=None,
        object_type="prices",
        object_id=path.name,
        action="load",
        new={
            "file": path.name,
            "added": len(report.added),
            "changed": len(report.changed),
            "unchanged": report.unchanged,
            "skipped": sum(report.skipped_modes.values()),
            "added_models": report.added,
        },
    )
    return report


# --- Aggregation: hourly rollups --------------------------------------------------
#
# Watermark. The row "aggregate_usage" of AggregationState holds a time W such
# that the rollups hold exactly the events with received_at <= W: every one of
# them, and none received later. Readers (GET /v1/usage, the dashboard) add the
# raw tail, the events received after W, to the rollups; so they are exact
# and current, and what they read from raw events is a few minutes of them,
# whatever the hour's size.
#
# A pass sets a new watermark N (below), adds the events with
# W < received_at <= N to the rollups of their (org, hour, team, user, model)
# and of their local day, and sets W = N: all in one transaction, so that a reader
# sees the rollups and the watermark that vouches for them together (its
# statement's snapshot has both or neither).
#
# Where N is: ingest stamps received_at with now(), which is the start of its
# transaction, not its commit, so a transaction that is still running may yet
# commit events stamped with its start. N is therefore just before the start
# of the oldest transaction running in the database (pg_stat_activity), and
# at most a second (SETTLE) before the database clock D: the events received
# up to N have all committed. A transaction that runs longer than the lag
# (AGGREGATION_LAG_SECONDS, two minutes by default), or one this role cannot
# see, holds N back no further than D - lag: ingest transactions are one
# statement under a timeout of a few seconds, so that is a wide margin, and
# the only case in which a late commit could be missed. Both sides use the
# database's clock, so clock skew between app servers plays no part. What
# readers add from raw events is then the events received since the last
# pass, plus about a second.
#
# Why adding is exact: the rollups hold exactly the events received up to W,
# and a pass adds exactly those received in (W, N], committing the sums and
# N together (a crashed pass adds nothing and moves nothing). So a pass costs
# the new events, not the hours they fall in: recomputing every touched hour
# whole, as passes did before, re-read the whole current hour each time (at
# 300 events/s, ~1M events by the end of an hour, every 30 s). Every other
# writer of rollups (a rebuild, reprice) recomputes whole buckets from their
# raw events up to the W it reads under the rollups' lock, which also repairs
# rollups that something outside Tollgate changed (`aggregate_usage
# --rebuild`).
#
# Daily rollups (the org's local days, for the dashboard's day ranges) are
# sums of hourly ones: a pass adds its events to both (query add_received),
# and the transaction that recomputes some hours re-sums their days right
# after (query refresh_days), so the two tables agree at every commit and the
# watermark covers both. They exist in
# one time zone per org (DailyRollupZone): a pass first builds, whole, the
# days of every org that has none in its current time zone (a new org, a
# changed zone); until then the dashboard sums that org's hourly rows.
# Pruning deletes raw events only, so it leaves both kinds of rollups alone.

# See query pass_bound: how long a transaction's start may take to show in
# pg_stat_activity, with a wide margin.
SETTLE = timedelta(seconds=1)


def aggregation_lag() -> timedelta:
    return timedelta(seconds=settings.AGGREGATION_LAG_SECONDS)


# Buckets per transaction: small enough to keep locks short, large enough to
# keep round trips few.
REFRESH_BATCH_SIZE = 50
BEGINNING = selectors.BEGINNING

Bucket = tuple[int, datetime]  # (org id, UTC hour)
Progress = Callable[[int, int, int], None]  # (done, total, events so far)


@dataclass
class RefreshPlan:
    """The buckets a rebuild recomputes."""

    buckets: list[Bucket]


@dataclass
class RefreshReport:
    buckets: int = 0
    events: int = 0
    written: int = 0
    removed: int = 0
    # Local days updated with their hours, and orgs whose days were built whole.
    days: int = 0
    day_builds: int = 0
    # Late events in hours that were already pruned: not rolled up (a rebuild
    # of their hour, whose other events are gone, would lose them again).
    skipped_events: int = 0
    watermark: datetime | None = None
    # Tag rollup rows written, and tag names built or dropped (report_tags).
    tag_rows: int = 0
    tag_builds: int = 0

    def add(self, other: RefreshReport) -> None:
        self.buckets += other.buckets
        self.events += other.events
        self.written += other.written
        self.removed += other.removed
        self.days += other.days
        self.tag_rows += other.tag_rows


def hour_floor(at: datetime) -> datetime:
    return at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def rollups_plan(*, since: datetime) -> RefreshPlan:
    """The buckets a rebuild recomputes: every bucket from the hour of `since`
    on that is not pruned."""
    pruned_before = selectors.job_watermark(selectors.PRUNE_JOB) or BEGINNING
    start = max(hour_floor(since), pruned_before)
    rows = selectors.run("rebuild_buckets", {"since": start})
    return RefreshPlan(buckets=[(org_id, hour) for org_id, hour in rows])


def pass_watermarks(lag: timedelta | None = None) -> tuple[datetime, datetime]:
    """The aggregation watermark, and how far a pass starting now moves it."""
    watermark = selectors.job_watermark(selectors.AGGREGATION_JOB) or BEGINNING
    lag = aggregation_lag() if lag is None else lag
    [(bound,)] = selectors.run("pass_bound", {"lag": lag, "settle": min(SETTLE, lag)})
    # Never back: a watermark set ahead of the clock (by hand) stays.
    return watermark, max(watermark, bound)


def rollups_refresh_buckets(
    buckets: Iterable[Bucket], *, through: datetime | None = None
) -> RefreshReport:
    """Recompute these buckets from their raw events received up to `through`
    (by default the aggregation watermark), and then their local days from
    the hourly rollups, in one transaction."""
    buckets = sorted(set(buckets))
    if not buckets:
        return RefreshReport()
    org_ids, hours = [org_id for org_id, _ in buckets], [hour for _, hour in buckets]
    with transaction.atomic():
        selectors.run("lock_rollups")
        # Read under the lock: a prune that moved the horizon, or a pass that
        # moved the watermark, has committed.
        pruned_before = selectors.job_watermark(selectors.PRUNE_JOB) or BEGINNING
        if through is None:
            through = selectors.job_watermark(selectors.AGGREGATION_JOB) or BEGINNING
        [(count, events, written, removed)] = selectors.run(
            "refresh_buckets",
            {
                "org_ids": org_ids,
                "hours": hours,
                "pruned_before": pruned_before,
                "through": through,
            },
        )
        bucket_params = {
            "org_ids": org_ids,
            "hours": hours,
            "pruned_before": pruned_before,
            "through": through,
        }
        [(tag_rows, _)] = selectors.run("refresh_tag_buckets", bucket_params)
        selectors.run("refresh_key_buckets", bucket_params)
        # A statement of its own: it must see the hours just written.
        [(days, _, _)] = selectors.run("refresh_days", {"org_ids": org_ids, "hours": hours})
    return RefreshReport(
        buckets=count,
        events=int(events),
        written=written,
        removed=removed,
        days=days,
        tag_rows=tag_rows,
    )


def tag_rollups_build() -> int:
    """Build the tag rollups of every tag name an org reports on and that has
    none yet, from the raw events still kept and received up to the
    aggregation watermark, and drop those of names no longer reported on;
    one transaction per name. Returns how many names were built or dropped.

    Hours pruned before a name is built have no raw events left: reports show
    their usage under a null value (tracking_tagrollupbuild.complete_from)."""
    changes = selectors.run("tag_builds_to_change")
    for org_id, name, action in changes:
        with transaction.atomic():
            selectors.run("lock_rollups")
            selectors.run("drop_tag", {"org_id": org_id, "name": name})
            if action == "build":
                selectors.run(
                    "build_tag",
                    {
                        "org_id": org_id,
                        "name": name,
                        "pruned_before": selectors.job_watermark(selectors.PRUNE_JOB) or BEGINNING,
                        "through": selectors.job_watermark(selectors.AGGREGATION_JOB) or BEGINNING,
                    },
                )
    return len(changes)


def daily_rollups_build(*, all_orgs: bool = False) -> int:
    """Build the daily rollups of every org that has none in its current time
    zone (of every org with `all_orgs`), whole, from its hourly rollups; one
    transaction per org. Returns how many orgs were built."""
    org_ids = [org_id for (org_id,) in selectors.run("day_zones_to_build", {"all_orgs": all_orgs})]
    for org_id in org_ids:
        with transaction.atomic():
            selectors.run("lock_rollups")
            selectors.run("build_days", {"org_id": org_id})
    return len(org_ids)


def rollups_refresh(
    *,
    since: datetime | None = None,
    lag: timedelta | None = None,
    batch_size: int = REFRESH_BATCH_SIZE,
    progress: Progress | None = None,
) -> RefreshReport:
    """One pass of aggregate_usage: incremental from the watermark, in one
    transaction (the events received since, added); or with `since` a rebuild
    of every hour from then on (the watermark stays), `batch_size` hours per
    transaction, and of every org's local days.

    Idempotent: running it again leaves the same rows."""
    if since is not None:
        plan = rollups_plan(since=since)
        report = _refresh_in_batches(plan, batch_size, progress)
        # Last, from the rebuilt hours; cheap next to them (a day sums ~24 rows per key).
        report.day_builds = daily_rollups_build(all_orgs=True)
        report.tag_builds = tag_rollups_build()
        return report
    # First, so that the events added below go to these orgs' days and tag
    # names too.
    day_builds = daily_rollups_build()
    tag_builds = tag_rollups_build()
    with transaction.atomic():
        # Under the lock from the start: a second aggregator waits, and then
        # starts from the watermark this pass leaves.
        selectors.run("lock_rollups")
        watermark, through = pass_watermarks(lag)
        pruned_before = selectors.job_watermark(selectors.PRUNE_JOB) or BEGINNING
        [(buckets, events, skipped, written, days, tag_rows, _)] = selectors.run(
            "add_received",
            {"watermark": watermark, "through": through, "pruned_before": pruned_before},
        )
        selectors.run(
            "advance_watermark", {"name": selectors.AGGREGATION_JOB, "watermark": through}
        )
    if progress is not None:
        progress(buckets, buckets, int(events))
    return RefreshReport(
        buckets=buckets,
        events=int(events),
        written=written,
        days=days,
        day_builds=day_builds,
        skipped_events=int(skipped),
        watermark=through,
        tag_rows=tag_rows,
        tag_builds=tag_builds,
    )


def _refresh_in_batches(
    plan: RefreshPlan, batch_size: int, progress: Progress | None
) -> RefreshReport:
    report = RefreshReport()
    total = len(plan.buckets)
    for start in range(0, total, batch_size):
        batch = plan.buckets[start : start + batch_size]
        report.add(rollups_refresh_buckets(batch))
        if progress is not None:
            progress(min(start + batch_size, total), total, report.events)
    return report


# --- Pruning raw events ----------------------------------------------------------
PRUNE_BATCH_SIZE = 10_000


class RollupsBehind(Exception):
    """Raw events that a prune would delete are not in the rollups yet."""

    def __init__(self, events: int, aggregated_through: datetime | None) -> None:
        super().__init__(f"{events} events are not in the rollups yet")
        self.events, self.aggregated_through = events, aggregated_through


@dataclass
class PrunePlan:
    cutoff: datetime
    # org id -> events that started before the cutoff
    events_by_org: dict[int, int]
    not_rolled_up: int
    aggregated_through: datetime | None

    @property
    def total(self) -> int:
        return sum(self.events_by_org.values())


def _events_not_rolled_up(cutoff: datetime) -> int:
    [(count,)] = selectors.run(
        "events_not_rolled_up",
        {
            "aggregated_through": selectors.job_watermark(selectors.AGGREGATION_JOB) or BEGINNING,
            "cutoff": cutoff,
            "pruned_before": selectors.job_watermark(selectors.PRUNE_JOB) or BEGINNING,
        },
    )
    return count


def events_prune_plan(*, older_than: timedelta) -> PrunePlan:
    """What `prune_events` would delete. The cutoff is rounded down to a whole
    UTC hour, so that a pruned hour has lost all its raw events, never part."""
    cutoff = hour_floor(selectors.database_now() - older_than)
    counts = selectors.run("count_events_before", {"cutoff": cutoff})
    return PrunePlan(
        cutoff=cutoff,
        events_by_org={org_id: n for org_id, n in counts if n},
        not_rolled_up=_events_not_rolled_up(cutoff),
        aggregated_through=selectors.job_watermark(selectors.AGGREGATION_JOB),
    )


def events_prune(
    *,
    plan: PrunePlan,
    batch_size: int = PRUNE_BATCH_SIZE,
    progress: Progress | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> int:
    """Delete the raw events of `plan`, one batch per transaction; the rollups
    stay. Returns how many were deleted (fewer if `should_stop` said so).

    Raises RollupsBehind, and deletes nothing, when an event to delete is not
    in the rollups: it would be lost from every report."""
    with transaction.atomic():
        selectors.run("lock_rollups")
        # Again, under the lock: an aggregation or a late event since the plan.
        not_rolled_up = _events_not_rolled_up(plan.cutoff)
        if not_rolled_up:
            raise RollupsBehind(not_rolled_up, plan.aggregated_through)
        # The horizon moves first: from now on no refresh recomputes an hour
        # before the cutoff, which would rebuild it from a half-deleted hour.
        selectors.run("advance_watermark", {"name": selectors.PRUNE_JOB, "watermark": plan.cutoff})
    deleted = 0
    for org_id in sorted(plan.events_by_org):
        while not should_stop():
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(
                    selectors.QUERIES["delete_events_before"],
                    {"org_id": org_id, "cutoff": plan.cutoff, "batch_size": batch_size},
                )
                count = cursor.rowcount
            deleted += count
            if progress is not None and count:
                progress(deleted, plan.total, deleted)
            if count < batch_size:
                break
    return deleted


# --- Repricing --------------------------------------------------------------------
REPRICE_BATCH_SIZE = 1000


@dataclass
class ModelRepricing:
    events: int = 0
    delta: Decimal = Decimal(0)


@dataclass
class RepriceReport:
    by_model: dict[str, ModelRepricing] = field(default_factory=dict)
    # model -> events still without a price
    no_price: dict[str, int] = field(default_factory=dict)
    unchanged: int = 0
    windows_adjusted: int = 0
    windows_created: int = 0
    rollup_hours: int = 0
    last_id: int = 0

    @property
    def repriced(self) -> int:
        return sum(m.events for m in self.by_model.values())

    @property
    def delta(self) -> Decimal:
        return sum((m.delta for m in self.by_model.values()), Decimal(0))

    def add(self, other: RepriceReport) -> None:
        for model, part in other.by_model.items():
            mine = self.by_model.setdefault(model, ModelRepricing())
            mine.events += part.events
            mine.delta += part.delta
        for model, n in other.no_price.items():
            self.no_price[model] = self.no_price.get(model, 0) + n
        self.unchanged += other.unchanged
        self.windows_adjusted += other.windows_adjusted
        self.windows_created += other.windows_created
        self.rollup_hours += other.rollup_hours
        self.last_id = max(self.last_id, other.last_id)


def _reprice_queryset(
    *, since: datetime, until: datetime | None, model: str | None, all_events: bool
) -> QuerySet[RequestEvent]:
    events = RequestEvent.objects.filter(started_at__gte=since)
    if until is not None:
        events = events.filter(started_at__lt=until)
    if model is not None:
        events = events.filter(model=model)
    if not all_events:
        # Index event_unpriced.
        events = events.filter(priced=False)
    return events


def events_reprice_batch(
    events: QuerySet[RequestEvent], *, after_id: int, batch_size: int
) -> RepriceReport | None:
    """Reprice the next batch of `events` (by id, after `after_id`) in one
    transaction: the events, the rollup hours they are in and the budget
    windows they count in change together. None when there are no more."""
    report = RepriceReport()
    with transaction.atomic():
        batch = list(events.filter(id__gt=after_id).order_by("id").select_for_update()[:batch_size])
        if not batch:
            return None
        report.last_id = batch[-1].id
        changed: list[tuple[RequestEvent, Decimal]] = []
        # Priced by the same SQL as ingest (tollgate_price_at, tollgate_cost).
        costs = {
            pk: (cost, key)
            for pk, cost, key in selectors.run("event_costs", {"event_ids": [e.id for e in batch]})
        }
        for event in batch:
            cost, price_model = costs[event.id]
            if cost is None:
                report.no_price[event.model] = report.no_price.get(event.model, 0) + 1
                continue
            delta = cost - event.cost_usd
            if event.priced and delta == 0:
                report.unchanged += 1
                continue
            event.cost_usd, event.priced, event.price_model = cost, True, price_model
            # A fallback or hold cost (or zero) is replaced, and the
            # difference moves into the windows and rollups below.
            event.cost_source = "price"
            changed.append((event, delta))
            part = report.by_model.setdefault(event.model, ModelRepricing())
            part.events += 1
            part.delta += delta
        if not changed:
            return report
        RequestEvent.objects.bulk_update(
            [e for e, _ in changed], ["cost_usd", "priced", "price_model", "cost_source"]
        )
        report.rollup_hours = rollups_refresh_buckets(
            (e.org_id, hour_floor(e.started_at)) for e, _ in changed
        ).buckets
        # Windows last: the hot path waits on their locks, so hold them briefly.
        moved = [(e.id, d) for e, d in changed if d != 0]
        if moved:
            windows = selectors.run(
                "repriced_windows",
                {"event_pks": [pk for pk, _ in moved], "deltas": [d for _, d in moved]},
            )
            if windows:
                report.windows_created = windows[0][3]
                report.windows_adjusted = len(windows)
                adjusted = selectors.run(
                    "adjust_windows",
                    {
                        "budget_ids": [w[0] for w in windows],
                        "period_starts": [w[1] for w in windows],
                        "deltas": [w[2] for w in windows],
                    },
                )
                selectors.run("judge_alerts", {"window_ids": [row[0] for row in adjusted]})
    return report


def events_reprice(
    *,
    since: datetime,
    until: datetime | None = None,
    model: str | None = None,
    all_events: bool = False,
    batch_size: int = REPRICE_BATCH_SIZE,
    progress: Callable[[RepriceReport], None] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
) -> RepriceReport:
    """Recompute the cost of unpriced events (or, with all_events, of every
    event) that started in [since, until), at the price in effect when each
    started; move the difference into the budget windows they count in and
    refresh their rollup hours. Batches are transactions: stopping between two
    loses nothing, and a rerun carries on (repriced events are priced now)."""
    events = _reprice_queryset(since=since, until=until, model=model, all_events=all_events)
    report = RepriceReport()
    while not should_stop():
        part = events_reprice_batch(events, after_id=report.last_id, batch_size=batch_size)
        if part is None:
            break
        report.add(part)
        if progress is not None:
            progress(report)
    return report
