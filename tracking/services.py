"""Price catalog writes (sync ORM)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import transaction
from django.utils import timezone

from tracking.models import Price

DEFAULT_PRICE_FILE = Path(__file__).resolve().parent / "data" / "prices.json"
# The first price known for a model also prices its earlier usage.
FIRST_EFFECTIVE_FROM = datetime(2000, 1, 1, tzinfo=UTC)
CHAT_MODES = {"chat", "completion", "responses"}
PRICE_FIELDS = [
    "input_per_token",
    "output_per_token",
    "cache_read_per_token",
    "cache_write_per_token",
    "reasoning_per_token",
    "tier_threshold_tokens",
    "input_above_threshold_per_token",
    "output_above_threshold_per_token",
]


@dataclass
class PriceLoadReport:
    added: list[str] = field(default_factory=list)
    changed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped_modes: dict[str, int] = field(default_factory=dict)


def _provider(entry: dict[str, Any]) -> str:
    provider = str(entry.get("litellm_provider", "unknown"))
    if provider.startswith("vertex_ai") or provider == "gemini":
        return "google"
    return provider


def _token_price(entry: dict[str, Any], key: str) -> Decimal | None:
    value = entry.get(key)
    return None if value is None else Decimal(str(value))


def price_fields_from_litellm(entry: dict[str, Any]) -> dict[str, Any]:
    above_in = _token_price(entry, "input_cost_per_token_above_200k_tokens")
    above_out = _token_price(entry, "output_cost_per_token_above_200k_tokens")
    return {
        "input_per_token": _token_price(entry, "input_cost_per_token") or Decimal(0),
        "output_per_token": _token_price(entry, "output_cost_per_token") or Decimal(0),
        "cache_read_per_token": _token_price(entry, "cache_read_input_token_cost"),
        "cache_write_per_token": _token_price(entry, "cache_creation_input_token_cost"),
        "reasoning_per_token": _token_price(entry, "output_cost_per_reasoning_token"),
        "tier_threshold_tokens": 200_000 if above_in is not None or above_out is not None else None,
        "input_above_threshold_per_token": above_in,
        "output_above_threshold_per_token": above_out,
    }


def _same(price: Price, fields: dict[str, Any]) -> bool:
    return all(getattr(price, name) == fields[name] for name in PRICE_FIELDS)


@transaction.atomic
def prices_load(*, path: Path = DEFAULT_PRICE_FILE) -> PriceLoadReport:
    """Import a LiteLLM-format price map. Idempotent: an unchanged price adds
    nothing; a changed one adds a row effective now (past costs keep theirs)."""
    data = json.loads(path.read_text(), parse_float=Decimal)
    report = PriceLoadReport()
    now = timezone.now()
    for model, entry in sorted(data.items()):
        if not isinstance(entry, dict) or model == "sample_spec":
            continue
        mode = str(entry.get("mode", "chat"))
        if mode not in CHAT_MODES:
            report.skipped_modes[mode] = report.skipped_modes.get(mode, 0) + 1
            continue
        provider = _provider(entry)
        fields = price_fields_from_litellm(entry)
        latest = (
            Price.objects.filter(provider=provider, model=model).order_by("-effective_from").first()
        )
        if latest is None:
            Price.objects.create(
                provider=provider, model=model, effective_from=FIRST_EFFECTIVE_FROM, **fields
            )
            report.added.append(model)
        elif _same(latest, fields):
            report.unchanged += 1
        else:
            Price.objects.create(provider=provider, model=model, effective_from=now, **fields)
            report.changed.append(model)
    return report
