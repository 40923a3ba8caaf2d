"""loadtests.bench_summary times the dashboard summary per range, and says
when the server answered with a summary it kept instead of computing one."""

from __future__ import annotations

import io

import pytest

from loadtests import bench_summary


@pytest.fixture(scope="module")
def reusing_server(live_server_factory):
    # Keys stay cached, as in tests/dashboard/test_summary_sharing.py.
    return live_server_factory(DASHBOARD_SUMMARY_MAX_AGE_MS="5000", API_KEY_CACHE_SECONDS="300")


def bench(url: str, key: str, ranges: list[str]) -> str:
    out = io.StringIO()
    bench_summary.bench(url=url, key=key, requests=3, team="", ranges=ranges, out=out)
    return out.getvalue()


def test_bench_summary_says_when_it_measured_reused_answers(reusing_server, server, org, key):
    assert "3 of 3 answers were reused" in bench(reusing_server.url, key, ["24h"])
    assert "reused" not in bench(server.url, key, ["24h"])  # the test servers compute every summary


def test_bench_summary_prints_one_line_per_range(server, org, key):
    lines = bench(server.url, key, ["24h", "7d"]).splitlines()
    assert [line.split()[0] for line in lines] == ["range=24h", "range=7d"]
    assert all("n=3" in line and "p99" in line for line in lines)


def test_bench_summary_stops_on_an_error_answer(server, org):
    with pytest.raises(bench_summary.BenchFailed, match=r"^401"):
        bench(server.url, "tg_not_a_key", ["24h"])


def test_bench_summary_refuses_fewer_than_one_request():
    with pytest.raises(SystemExit):
        bench_summary.parse_args(["--key", "k", "--requests", "0"])


def test_bench_summary_times_a_custom_range_with_its_filters(server, org, key):
    from datetime import date

    out = io.StringIO()
    bench_summary.bench(
        url=server.url,
        key=key,
        requests=2,
        team="",
        ranges=["last_month", "custom"],
        out=out,
        filters={"model": "gpt-4o", "user": ""},
        custom=(date(2026, 1, 1), date(2026, 1, 31)),
    )

    labels = [line.split(" n=")[0].split() for line in out.getvalue().splitlines()]
    assert labels == [
        ["range=last_month", "model=gpt-4o"],
        ["range=custom", "from=2026-01-01", "to=2026-01-31", "model=gpt-4o"],
    ]
