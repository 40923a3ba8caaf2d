"""loadtests.hold_ids runs end to end on a small table, and what it measures
holds there too: a time-ordered id writes less WAL than a random one."""

from __future__ import annotations

import re

import pytest

from loadtests import hold_ids


@pytest.mark.django_db(transaction=True)
def test_time_ordered_ids_write_less_wal_than_random_ones(tmp_path, monkeypatch):
    report = tmp_path / "hold-ids.md"
    monkeypatch.setattr(hold_ids, "REPORT_PATH", report)

    assert hold_ids.main(["--rows", "20000", "--inserts", "300", "--rounds", "1"]) == 0

    text = report.read_text()
    wal = {
        kind: float(
            re.search(rf"^\| {kind} \|[^|]*\|[^|]*\| [^|]* \| \*\*([\d,.]+)\*\*", text, re.M)
            .group(1)
            .replace(",", "")
        )
        for kind in hold_ids.KINDS
    }
    # 300 random ids change most of a 20,000-row key's ~70 leaf pages, each
    # written whole to the WAL after the checkpoint; ordered ids change the last.
    assert wal["v7"] * 2 < wal["v4"], text
    assert "## Machine" in text
