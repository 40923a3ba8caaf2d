"""The hot path's only door to PostgreSQL.

One `psycopg_pool.AsyncConnectionPool` per process, opened lazily on first use
(Django has no ASGI lifespan to open it at start), running the named queries of
`budgets/sql/queries.sql` on the event loop. Connections are in autocommit:
every hot-path query is one call to a server-side function, so one round trip
is one transaction, and a result means the data is committed.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
from pathlib import Path
from typing import Any

import environ
import psycopg
from django.conf import settings
from django.db import connections
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool, PoolTimeout

logger = logging.getLogger(__name__)

SQL_DIR = Path(__file__).resolve().parent / "sql"
_BLOCK = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def load_queries(path: Path) -> dict[str, str]:
    """Split a file of `-- name --` blocks into {name: sql}."""
    parts = _BLOCK.split(path.read_text())
    return {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES = load_queries(SQL_DIR / "queries.sql")

# libpq parameters we take over from Django's connection settings.
LIBPQ_KEYS = {
    "dbname",
    "user",
    "password",
    "host",
    "port",
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "options",
    "application_name",
    "connect_timeout",
    "target_session_attrs",
}


class StoreUnavailable(Exception):
    """PostgreSQL could not answer within the hot path's time budget."""


def connection_kwargs() -> dict[str, Any]:
    """Connection parameters for the hot-path pool.

    Through DATABASE_POOLER_URL (PgBouncer in transaction mode) prepared
    statements are off; otherwise the pool uses the same server and database
    as Django's default connection (which, under tests, is the test database).
    """
    if settings.DATABASE_POOLER_URL:
        config = environ.Env.db_url_config(settings.DATABASE_POOLER_URL)
        params: dict[str, Any] = {
            "dbname": config["NAME"],
            "user": config["USER"],
            "password": config["PASSWORD"],
            "host": config["HOST"],
            "port": config["PORT"],
            **config.get("OPTIONS", {}),
        }
        prepare_threshold = None
    else:
        params = dict(connections["default"].get_connection_params())
        prepare_threshold = 5
    kwargs = {k: v for k, v in params.items() if k in LIBPQ_KEYS and v not in ("", None)}
    kwargs.setdefault("application_name", "tollgate-hotpath")
    kwargs.update(autocommit=True, prepare_threshold=prepare_threshold)
    return kwargs


_pool: AsyncConnectionPool | None = None
_pool_loop: asyncio.AbstractEventLoop | None = None
_sweeper: asyncio.Task | None = None


async def get_pool() -> AsyncConnectionPool:
    """The process's pool, opened on first use in the running event loop."""
    global _pool, _pool_loop, _sweeper
    loop = asyncio.get_running_loop()
    if _pool is not None and _pool_loop is loop:
        return _pool
    pool = AsyncConnectionPool(
        kwargs=connection_kwargs(),
        min_size=settings.HOTPATH_POOL_MIN,
        max_size=settings.HOTPATH_POOL_MAX,
        timeout=settings.HOTPATH_POOL_TIMEOUT,
        check=AsyncConnectionPool.check_connection,
        name="hotpath",
        open=False,
    )
    # Re-check after the await-free construction: only one coroutine installs it.
    if _pool is not None and _pool_loop is loop:
        return _pool
    _pool, _pool_loop = pool, loop
    await pool.open(wait=False)
    _sweeper = loop.create_task(_sweep_expired_reservations())
    return pool


def pool_stats() -> dict[str, int]:
    """Counters of the process's pool (empty before first use)."""
    return _pool.get_stats() if _pool is not None else {}


async def close_pool() -> None:
    global _pool, _pool_loop, _sweeper
    if _sweeper is not None:
        _sweeper.cancel()
    if _pool is not None:
        await _pool.close()
    _pool = _pool_loop = _sweeper = None


async def _sweep_expired_reservations() -> None:
    """Expired holds stop counting without anyone running a command: every
    process sweeps every RESERVATION_SWEEP_SECONDS (jittered so that workers
    spread out; the SQL skips rows another sweeper holds)."""
    interval = settings.RESERVATION_SWEEP_SECONDS
    while True:
        await asyncio.sleep(interval * random.uniform(0.5, 1.0))
        try:
            expired = await fetch_value("expire_reservations", {"limit": 1000})
            if expired:
                logger.info("expired %s reservations", expired)
        except StoreUnavailable:
            logger.warning("reservation sweep skipped: database unavailable")
        except Exception:
            logger.exception("reservation sweep failed")


async def fetch_value(name: str, params: dict[str, Any], timeout: float | None = None) -> Any:
    """Run a named query and return the first column of its first row.

    Raises StoreUnavailable when no answer comes within `timeout` seconds
    (default BUDGET_DB_TIMEOUT_MS), including waiting for a pooled connection.
    """
    row = await fetch_one(name, params, timeout)
    return None if row is None else row[0]


async def fetch_one(name: str, params: dict[str, Any], timeout: float | None = None) -> Any:
    """Run a named query and return its first row (or None).

    The answer comes within `timeout` whatever the database does: the query
    runs in its own task, and on timeout that task is cancelled (psycopg then
    cancels the statement on the server, so nothing is written) without
    waiting for the cancellation to finish.
    """
    if timeout is None:
        timeout = settings.BUDGET_DB_TIMEOUT_MS / 1000
    pool = await get_pool()
    task = asyncio.ensure_future(_fetch_one(pool, QUERIES[name], params, timeout))
    done, _ = await asyncio.wait((task,), timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(_consume_result)
        raise StoreUnavailable(f"no answer within {timeout * 1000:.0f} ms")
    try:
        return task.result()
    except (PoolTimeout, psycopg.OperationalError) as exc:
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc


async def _fetch_one(
    pool: AsyncConnectionPool, sql: str, params: dict[str, Any], timeout: float
) -> Any:
    async with pool.connection(timeout=timeout) as conn:
        cursor = await conn.execute(sql, params)
        return await cursor.fetchone()


def _consume_result(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("abandoned query ended with %r", task.exception())


class DecisionBatcher:
    """Sends the holds that arrive while earlier ones are in flight as one call.

    Every hold locks the windows it touches until its transaction commits, so
    holds on a shared budget (every request of an org hits the org's window)
    run one after another, each paying a commit. With at most
    HOTPATH_BATCH_INFLIGHT calls in flight per process, the requests that
    arrive meanwhile queue here and go together in the next call
    (tollgate_decide_many): one lock and one commit for the whole batch. At low
    load a batch is a single request and nothing waits.

    Each request still gets one round trip, and its own answer within its own
    timeout: a batch is cancelled (so nothing of it commits) when its earliest
    request's time is up.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[dict[str, Any], asyncio.Future, float]] = []
        self.inflight = 0

    async def decide(self, item: dict[str, Any], timeout: float | None = None) -> Any:
        if timeout is None:
            timeout = settings.BUDGET_DB_TIMEOUT_MS / 1000
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((item, future, loop.time() + timeout))
        if self.inflight < settings.HOTPATH_BATCH_INFLIGHT:
            self._launch(loop)
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise StoreUnavailable(f"no answer within {timeout * 1000:.0f} ms") from None

    def _launch(self, loop: asyncio.AbstractEventLoop) -> None:
        size = settings.HOTPATH_BATCH_MAX
        batch = [entry for entry in self.pending[:size] if not entry[1].done()]
        del self.pending[:size]
        if batch:
            self.inflight += 1
            loop.create_task(self._run(batch, loop))

    async def _run(
        self,
        batch: list[tuple[dict[str, Any], asyncio.Future, float]],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        try:
            timeout = max(min(deadline for _, _, deadline in batch) - loop.time(), 0.001)
            if len(batch) == 1:
                results = [await fetch_value("decide", batch[0][0], timeout)]
            else:
                items = [_batch_item(item) for item, _, _ in batch]
                results = await fetch_value("decide_many", {"items": Jsonb(items)}, timeout)
            for (_, future, _), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except Exception as exc:
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(exc)
        finally:
            self.inflight -= 1
            while self.pending and self.inflight < settings.HOTPATH_BATCH_INFLIGHT:
                self._launch(loop)


def _batch_item(params: dict[str, Any]) -> dict[str, Any]:
    """A decide query's parameters as JSON (amounts as exact decimal strings)."""
    item = dict(params)
    if item.get("amount") is not None:
        item["amount"] = str(item["amount"])
    return item


_batcher: DecisionBatcher | None = None


def batcher() -> DecisionBatcher:
    global _batcher
    if _batcher is None:
        _batcher = DecisionBatcher()
    return _batcher


async def aping() -> bool:
    try:
        return await fetch_value("ping", {}) == 1
    except StoreUnavailable:
        return False
