"""Money as people read it (messages, alerts, pages): cents, thousands
separated, and never $0 for an amount that is not zero."""

from __future__ import annotations

from decimal import Decimal

import pytest

from config.hotpath.inputs import usd_for_people


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        ("0", "$0.00"),
        ("1.27", "$1.27"),
        ("1.275", "$1.28"),
        ("1234.5", "$1,234.50"),
        ("122.4500000000", "$122.45"),
        ("0.0004125", "$0.00041"),
        ("0.009", "$0.009"),
        ("0.00999", "$0.01"),
        ("0.0000000001", "$0.0000000001"),
        ("-2.5", "-$2.50"),
    ],
)
def test_usd_for_people(amount, text):
    assert usd_for_people(Decimal(amount)) == text
