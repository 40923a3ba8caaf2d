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
        (["mixed", "--no-admin"], "mixed-no-admin"),
        (["dashboard", "--admin-server", "--no-admin"], "dashboard-admin-server-no-admin"),
    ],
)
def test_a_variant_has_a_name_of_its_own(argv, name):
    assert run_name(parse_args(argv)) == name
