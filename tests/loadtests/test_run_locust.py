"""A variant of a locust scenario writes its own report and CSV files: the
plain run's are not overwritten (the reports of both are published)."""

from __future__ import annotations

import pytest

from loadtests.run_locust import parse_args, run_name


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
