"""Admin lists of the big tables page without counting every row."""

from __future__ import annotations

import pytest
from django.db import connection

from budgets.models import Organization
from config import paginators
from config.paginators import LargeTablePaginator


@pytest.fixture
def orgs(db):
    return [Organization.objects.create(slug=f"org-{n}", name=f"Org {n}") for n in range(12)]


def test_filtered_count_stops_at_the_cap(orgs, monkeypatch):
    monkeypatch.setattr(paginators, "COUNT_CAP", 5)
    queryset = Organization.objects.filter(slug__startswith="org-").order_by("id")
    assert LargeTablePaginator(queryset, 2).count == 6


def test_small_unfiltered_table_is_counted_exactly(orgs):
    assert LargeTablePaginator(Organization.objects.order_by("id"), 2).count == 12


def test_large_unfiltered_table_uses_postgres_estimate(orgs, monkeypatch):
    monkeypatch.setattr(paginators, "COUNT_CAP", 5)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE budgets_organization")
    # ANALYZE of a small table counts it exactly, so the estimate is the
    # real number here, read from pg_class rather than by count(*).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(type(Organization.objects.none()), "count", _no_count)
        assert LargeTablePaginator(Organization.objects.order_by("id"), 2).count == 12


def _no_count(self):
    raise AssertionError("an unfiltered large table must not be counted")
