"""`python3 manage.py test` runs the pytest suite (pytest-django).

Arguments after `test` are passed to pytest, e.g.
`python3 manage.py test tests/budgets/test_reservations.py`.
"""

from __future__ import annotations

import sys


class PytestTestRunner:
    def __init__(
        self, verbosity: int = 1, failfast: bool = False, pytest_args: str = "", **kwargs
    ) -> None:
        # Django's test command passes its options here, not to run_tests().
        self.verbosity = verbosity
        self.failfast = failfast
        self.pytest_args = pytest_args

    @classmethod
    def add_arguments(cls, parser) -> None:
        parser.add_argument("--pytest-args", default="", help="Extra arguments for pytest.")

    def run_tests(self, test_labels: list[str], **kwargs) -> int:
        import shlex

        import pytest

        argv = []
        if self.verbosity == 0:
            argv.append("--quiet")
        elif self.verbosity >= 2:
            argv.append("-v")
        if self.failfast:
            argv.append("--exitfirst")
        argv.extend(shlex.split(self.pytest_args))
        argv.extend(test_labels)
        sys.stdout.flush()
        return pytest.main(argv)
