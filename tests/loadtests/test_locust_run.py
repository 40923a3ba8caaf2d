"""A variant of a locust scenario writes its own report and CSV files: the
plain run's are not overwritten (the reports of both are published)."""

from __future__ import annotations

import pytest

from loadtests.locust.run import (
    SCENARIOS,
    lag_lines,
    parse_args,
    report_command,
    run_name,
    settings_from_environment,
)


@pytest.mark.parametrize(
    ("argv", "name"),
    [
        (["mixed"], "mixed"),
        (["mixed", "--quick"], "mixed"),
        (["mixed", "--admin-server"], "mixed-admin-server"),
        (["mixed", "--web-server"], "mixed-web-server"),
        (["mixed", "--web-server", "--second-nice", "10"], "mixed-web-server-nice10"),
        (["mixed", "--no-admin"], "mixed-no-admin"),
        (["mixed", "--aggregate-every", "5"], "mixed-agg5s"),
        (["dashboard", "--admin-server", "--no-admin"], "dashboard-admin-server-no-admin"),
        (
            [
                "mixed",
                "--web-server",
                "--set",
                "HOTPATH_POOL_MAX=4",
                "--set",
                "BUDGET_FAIL_MODE=open",
            ],
            "mixed-web-server-budget_fail_mode-open-hotpath_pool_max-4",
        ),
        (
            ["mixed", "--web-server", "--set", "REDIS_URL=redis://127.0.0.1:6379/0"],
            "mixed-web-server-redis_url",
        ),
    ],
)
def test_a_variant_has_a_name_of_its_own(argv, name):
    assert run_name(parse_args(argv)) == name


@pytest.mark.parametrize(
    "argv", [["mixed", "--second-nice", "10"], ["mixed", "--web-server", "--second-nice", "20"]]
)
def test_second_nice_needs_a_second_server_and_a_niceness(argv, capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(argv)
    assert exit.value.code == 2
    assert "--second-nice" in capsys.readouterr().err


def test_set_takes_a_name_and_a_value(capsys):
    with pytest.raises(SystemExit) as exit:
        parse_args(["mixed", "--set", "HOTPATH_POOL_MAX"])
    assert exit.value.code == 2
    assert "NAME=VALUE" in capsys.readouterr().err


def test_the_report_names_the_settings_the_environment_sets(monkeypatch):
    monkeypatch.setenv("DASHBOARD_SUMMARY_MAX_AGE_MS", "0")
    monkeypatch.setenv("HOTPATH_POOL_MAX", "7")
    monkeypatch.setenv("TG_NOT_A_SETTING", "1")
    monkeypatch.setenv("DATABASE_URL", "postgresql://user:secret@db/tollgate")
    monkeypatch.setenv("SECRET_KEY", "not-for-reports")
    named = settings_from_environment()
    assert {"DASHBOARD_SUMMARY_MAX_AGE_MS=0", "HOTPATH_POOL_MAX=7"} <= set(named)
    assert not [n for n in named if n.split("=")[0] in ("TG_NOT_A_SETTING", "DATABASE_URL")]
    assert not [n for n in named if "secret" in n]


def test_the_report_shows_the_command_that_repeats_the_run():
    argv = [
        "mixed",
        "--duration",
        "180",
        "--web-server",
        "--set",
        "DASHBOARD_SUMMARY_MAX_AGE_MS=5000",
    ]
    args = parse_args(argv)
    assert report_command(args, SCENARIOS["mixed"]) == (
        ".venv/bin/python -m loadtests.locust.run mixed --duration 180 --web-server"
        " --set DASHBOARD_SUMMARY_MAX_AGE_MS=5000"
    )
    assert parse_args(report_command(args, SCENARIOS["mixed"]).split()[3:]) == args


def test_the_report_shows_locusts_own_delay_per_phase():
    lag = [
        {
            "phase": "with dashboard",
            "samples": 22248,
            "p50_ms": 0.44,
            "p99_ms": 4.141,
            "p999_ms": 9.12,
            "max_ms": 31.94,
            "over_1ms": 0.198,
        }
    ]
    lines = lag_lines(lag)
    assert "| with dashboard | 22,248 | 0.44 | 4.14 | 9.12 | 31.9 | 19.8% |" in lines
    assert lag_lines([]) == []  # a report from before the probe
