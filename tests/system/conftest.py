"""System tests: Tollgate's processes with the real parts around them (an
outage of PostgreSQL, PgBouncer, two servers, the production servers, Redis,
a real browser). Each starts what it needs; Debian's binaries are installed
by .ci/run, and with CI set a missing one fails its test instead of skipping."""

from tests.dashboard.conftest import make_user

__all__ = ["make_user"]
