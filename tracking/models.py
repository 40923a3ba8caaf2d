"""Prices (and, later, request events and rollups)."""

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
    # Optional tier: input tokens above the threshold are billed at these prices.
    tier_threshold_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)
    output_above_threshold_per_token = models.DecimalField(**PER_TOKEN, null=True, blank=True)

    class Meta:
        ordering = ["provider", "model", "-effective_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["provider", "model", "effective_from"], name="price_unique_effective"
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
