"""mixed --cycles: the phases with the dashboard users alternate with phases
without, and the report pools each arm and compares each phase with its
neighbours, so that a machine whose speed wanders compares like with like."""

from __future__ import annotations

import pytest

from loadtests.harness.cpu import CpuShares
from loadtests.locust.phases import Recorder, alternating, arm_of, server_time
from loadtests.locust.run import (
    SCENARIOS,
    arm_cpu,
    cycle_lines,
    hot_path_lines,
    parse_args,
    report_command,
    request_totals,
    run_name,
)


def test_each_phase_with_dashboards_lies_between_two_without():
    assert alternating(2) == [
        "hot path alone #1",
        "with dashboard #1",
        "hot path alone #2",
        "with dashboard #2",
        "hot path alone #3",
    ]
    assert {arm_of(name) for name in alternating(3)} == {"hot path alone", "with dashboard"}
    assert arm_of("hot path alone again") == "hot path alone again"  # the three-phase shape


def recorder_with(times: dict[str, list[float]]) -> Recorder:
    recorder = Recorder()
    for phase, phase_times in times.items():
        for ms in phase_times:
            recorder.add(phase, "reserve", ms, None)
        recorder.phase_seconds[phase] = [0.0, 10.0]
    return recorder


def test_an_arm_pools_the_responses_of_its_phases():
    recorder = recorder_with(
        {
            "warm-up (sign-ins)": [500.0],
            "hot path alone #1": [1.0] * 100,
            "with dashboard #1": [2.0] * 99,
            "hot path alone #2": [5.0] * 100,
        }
    )
    recorder.add("with dashboard #1", "reserve", 9.0, RuntimeError("503"))
    recorder.phase_seconds["with dashboard #1"] = [0.0, 10.0]  # as it was before that add
    arms = {r["phase"]: r for r in recorder.arm_rows()}
    assert set(arms) == {"hot path alone", "with dashboard"}  # the warm-up is no arm
    alone, loaded = arms["hot path alone"], arms["with dashboard"]
    assert (alone["requests"], alone["failures"], alone["seconds"]) == (200, 0, 20.0)
    # One percentile over both phases' responses, not the mean of theirs (3.0).
    assert (alone["p50_ms"], alone["p99_ms"]) == (1.0, 5.0)
    assert (loaded["requests"], loaded["failures"], loaded["seconds"]) == (100, 1, 10.0)
    assert (loaded["p99_ms"], loaded["max_ms"]) == (2.0, 9.0)


def test_locusts_own_delay_is_pooled_per_arm_too():
    recorder = Recorder()
    recorder.lag = {"hot path alone #1": [0.5, 0.5], "hot path alone #2": [4.0], "start": [9.0]}
    assert [(r["phase"], r["samples"], r["max_ms"]) for r in recorder.lag_rows(by_arm=True)] == [
        ("hot path alone", 3, 4.0)
    ]
    assert len(recorder.lag_rows()) == 3


def test_a_run_without_repeated_phases_has_no_arms():
    recorder = recorder_with({"hot path alone": [1.0], "with dashboard": [2.0]})
    assert recorder.arm_rows() == []


def row(phase: str, p99: float, p50: float = 1.0, name: str = "reserve") -> dict:
    return {
        "phase": phase,
        "name": name,
        "requests": 1000,
        "p50_ms": p50,
        "p95_ms": p99 / 2,
        "p99_ms": p99,
    }


def test_the_report_gives_the_pooled_ratio_and_each_phase_against_its_neighbours():
    rows = [
        row("hot path alone #1", 10.0),
        row("with dashboard #1", 15.0),
        row("hot path alone #2", 20.0),
        row("with dashboard #2", 30.0),
        row("hot path alone #3", 10.0),
    ]
    arms = [
        row("hot path alone", 16.0, 4.0),
        row("with dashboard", 24.0, 5.0),
        row("hot path alone", 4.0, 0.5, name="reserve (server)"),
        row("with dashboard", 5.0, 0.6, name="reserve (server)"),
    ]
    pooled, server, per_phase = cycle_lines(arms, rows)
    assert "without dashboard load: 16.0 ms; with it: 24.0 ms (1.50x)" in pooled
    assert "p50 4.0 → 5.0 ms" in pooled
    assert "p99 4.0 → 5.0 ms (1.25x), p50 0.5 → 0.6 ms" in server
    # 15 against (10 + 20) / 2, then 30 against (20 + 10) / 2.
    assert "median **1.50x**, 1.00x, 2.00x." in per_phase
    assert hot_path_lines("mixed", rows) == []  # the three-phase line does not apply
    assert cycle_lines([], rows) == []  # the three-phase shape has no arms


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["mixed", "--cycles", "6"], "mixed-cycles6"),
        (["mixed", "--cycles", "1"], "mixed"),
        (
            ["mixed", "--web-server", "--second-idle", "--cycles", "6"],
            "mixed-web-server-idle-cycles6",
        ),
    ],
)
def test_cycles_and_the_idle_policy_name_their_reports(argv, name):
    args = parse_args(argv)
    assert run_name(args) == name
    assert parse_args(report_command(args, SCENARIOS["mixed"]).split()[3:]) == args


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["mixed", "--second-idle"], "--second-idle"),
        (["mixed", "--cycles", "0"], "--cycles"),
        (["budget_burst", "--cycles", "3"], "--cycles"),
    ],
)
def test_options_that_cannot_apply_are_refused(argv, option, capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert option in capsys.readouterr().err


def test_the_cpu_table_averages_each_arms_phases():
    shares = {
        "warm-up (sign-ins)": CpuShares(server=90.0, postgres=90.0, other=0.0),
        "hot path alone #1": CpuShares(server=20.0, postgres=40.0, other=1.0, second=2.0),
        "with dashboard #1": CpuShares(server=24.0, postgres=50.0, other=1.0, second=18.0),
        "hot path alone #2": CpuShares(server=30.0, postgres=44.0, other=3.0, second=4.0),
    }
    arms = arm_cpu(shares)
    assert set(arms) == {"hot path alone (all)", "with dashboard (all)"}
    alone = arms["hot path alone (all)"]
    assert (alone.server, alone.postgres, alone.other, alone.second) == (25.0, 42.0, 2.0, 3.0)
    assert alone.worker is None  # not measured in these phases: not averaged to a number
    assert arms["with dashboard (all)"].second == 18.0


def test_the_servers_own_time_is_read_from_its_server_timing_header():
    assert server_time("app;dur=1.25") == 1.25
    assert server_time('summary;desc="reused", app;dur=0.40') == 0.40
    assert server_time('summary;desc="reused"') is None
    assert server_time(None) is None


def test_the_servers_own_times_are_not_counted_as_requests_twice():
    rows = [
        {"name": "reserve", "requests": 100, "failures": 2},
        {"name": "reserve (server)", "requests": 98, "failures": 0},
        {"name": "events batch of 100", "requests": 10, "failures": 0},
    ]
    assert request_totals(rows) == (110, 2)
