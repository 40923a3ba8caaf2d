"""The hot path's only door to PostgreSQL.

One `psycopg_pool.AsyncConnectionPool` per process, opened lazily on first use
(Django has no ASGI lifespan to open it at start), running named queries on
the event loop. Each app registers its file of named queries (`-- name --`
blocks, `%(name)s` parameters) from its AppConfig.ready(), and the tasks that
should run beside the pool (budgets' reservation sweeper). Connections are in
autocommit: every hot-path query is one call to a server-side function, so one
round trip is one transaction, and a result means the data is committed.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import random
import re
import time
import weakref
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any

import environ
import orjson
import psycopg
from django.conf import settings
from django.db import connections
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from config.hotpath import metrics

logger = logging.getLogger(__name__)

_BLOCK = re.compile(r"^-- (\w+) --$", re.MULTILINE)


def load_queries(path: Path) -> dict[str, str]:
    """Split a file of `-- name --` blocks into {name: sql}."""
    parts = _BLOCK.split(path.read_text())
    return {name: sql.strip() for name, sql in zip(parts[1::2], parts[2::2], strict=True)}


# Every app's named queries, by name (register_queries).
QUERIES: dict[str, str] = {}
# The queries that may run twice (see _fetch_one): by name, each with a test
# of its parameters.
_RETRYABLE: dict[str, Callable[[dict[str, Any]], bool]] = {}
# Started beside the pool when it opens (register_background_task).
_BACKGROUND: list[Callable[[], Awaitable[None]]] = []


def register_queries(
    path: Path,
    *,
    retryable: Iterable[str] = (),
    retryable_when: dict[str, Callable[[dict[str, Any]], bool]] | None = None,
) -> None:
    """Add an app's named queries. `retryable` names the ones that may run
    twice: only reads, and statements whose only writes are idempotent
    upserts; `retryable_when` those that may when their parameters say so."""
    queries = load_queries(path)
    repeated = QUERIES.keys() & queries.keys()
    if any(QUERIES[name] != queries[name] for name in repeated):
        raise ValueError(f"{path}: queries named like another app's: {sorted(repeated)}")
    QUERIES.update(queries)
    for name in retryable:
        _RETRYABLE[name] = _always
    _RETRYABLE.update(retryable_when or {})


def register_background_task(task: Callable[[], Awaitable[None]]) -> None:
    """`task()` runs in each process beside its pool, from when the pool opens
    until it closes."""
    if task not in _BACKGROUND:
        _BACKGROUND.append(task)


def _always(params: dict[str, Any]) -> bool:
    return True


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


# When the database time of the request being served runs out (monotonic
# seconds), set by the API for each request: a request that needs two calls
# (a key lookup, then its decision) still answers within BUDGET_DB_TIMEOUT_MS
# in all, not within twice that when the database does not answer.
request_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "request_deadline", default=None
)


def start_request_clock() -> None:
    request_deadline.set(time.monotonic() + settings.BUDGET_DB_TIMEOUT_MS / 1000)


def time_left(timeout: float | None) -> float:
    """`timeout` (default BUDGET_DB_TIMEOUT_MS), cut to what the request has left;
    raises StoreUnavailable when nothing is left."""
    if timeout is None:
        timeout = settings.BUDGET_DB_TIMEOUT_MS / 1000
    deadline = request_deadline.get()
    if deadline is not None:
        timeout = min(timeout, deadline - time.monotonic())
    if timeout <= 0:
        metrics.STORE_UNAVAILABLE.labels("timeout").inc()
        raise StoreUnavailable("the request's database time is used up")
    return timeout


class StoreUnavailable(Exception):
    """PostgreSQL could not answer within the hot path's time budget.

    The API answers it with 503 `store_unavailable` (or fails open); a bad
    request is an `ApiError` (4xx) and never becomes this.
    """


# A query registered as retryable whose pooled connection breaks (server
# restart, pg_terminate_backend, a failover) is retried on a fresh connection
# instead of failing the request. Never writes that may have committed: when
# the connection breaks after the server committed a hold, a release or an
# event batch but before the answer arrived, running it again would hold twice
# or turn the answer into a duplicate; those fail with 503 and the caller
# decides (events are retried by id, which is idempotent end to end).
READ_RETRIES = 2
RETRY_BACKOFF = 0.02  # seconds; full jitter over 0..base * 2**attempt


def _retryable(name: str, params: dict[str, Any]) -> bool:
    test = _RETRYABLE.get(name)
    return test is not None and test(params)


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
# When each pooled connection was opened or last given back (_check_if_idle).
_returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection, float] = (
    weakref.WeakKeyDictionary()
)
# A connection given back less than this long ago is lent again unchecked.
CHECK_IDLE_SECONDS = 1.0
_pool_loop: asyncio.AbstractEventLoop | None = None
_background_tasks: list[asyncio.Task] = []


async def get_pool() -> AsyncConnectionPool:
    """The process's pool, opened on first use in the running event loop."""
    global _pool, _pool_loop
    loop = asyncio.get_running_loop()
    if _pool is not None and _pool_loop is loop:
        return _pool
    pool = AsyncConnectionPool(
        kwargs=connection_kwargs(),
        min_size=settings.HOTPATH_POOL_MIN,
        max_size=settings.HOTPATH_POOL_MAX,
        timeout=settings.HOTPATH_POOL_TIMEOUT,
        check=_check_if_idle,
        configure=_configure,
        reset=_stamp_fresh,
        name="hotpath",
        open=False,
    )
    # Re-check after the await-free construction: only one coroutine installs it.
    if _pool is not None and _pool_loop is loop:
        return _pool
    _pool, _pool_loop = pool, loop
    # Opened, and its background tasks started, in a fresh context: not the
    # request id and deadline of the request that happened to open the pool.
    # The pool's workers copy the context they are started in, and they log
    # its reconnects and discarded connections for the life of the process.
    await loop.create_task(pool.open(wait=False), context=contextvars.Context())
    _background_tasks[:] = [
        loop.create_task(task(), context=contextvars.Context()) for task in _BACKGROUND
    ]
    return pool


async def _configure(conn: psycopg.AsyncConnection) -> None:
    """A new pooled connection: JSON in and out with orjson (a batch's
    parameters and answers are JSON; the standard library took ~7 us per
    hold for them). Money is never a JSON number on this path (amounts go
    as strings both ways), so float parsing changes nothing."""
    set_json_dumps(orjson.dumps, conn)
    set_json_loads(orjson.loads, conn)
    await _stamp_fresh(conn)


async def _stamp_fresh(conn: psycopg.AsyncConnection) -> None:
    """Called by the pool on a new connection and on every one given back."""
    _returned_at[conn] = time.monotonic()


async def _check_if_idle(conn: psycopg.AsyncConnection) -> None:
    """Check a connection before lending it only if it sat idle for a while.

    Checking every loan (`AsyncConnectionPool.check_connection`) costs a
    round trip per request: with the database 20 ms away it doubled the
    latency of a hold (loadtests/harness/slowdb.py counted 2 round trips per request).
    A connection in steady use was working a moment ago; one that sat idle is
    the kind a restart, PgBouncer or a firewall may have closed meanwhile. A
    busy connection broken by a restart fails its one request (503, or
    `degraded` when failing open; reads are retried) and the pool drops it.
    """
    if time.monotonic() - _returned_at.get(conn, 0.0) >= CHECK_IDLE_SECONDS:
        await AsyncConnectionPool.check_connection(conn)


def pool_stats() -> dict[str, int]:
    """Counters of the process's pool (empty before first use)."""
    return _pool.get_stats() if _pool is not None else {}


metrics.REGISTRY.register(metrics.PoolCollector(pool_stats))


async def close_pool() -> None:
    global _pool, _pool_loop
    for task in _background_tasks:
        task.cancel()
    _background_tasks.clear()
    if _pool is not None:
        await _pool.close()
    _pool = _pool_loop = None


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
    timeout = time_left(timeout)
    pool = await get_pool()
    retries = READ_RETRIES if _retryable(name, params) else 0
    task = asyncio.ensure_future(_fetch_one(pool, name, params, timeout, retries))
    done, _ = await asyncio.wait((task,), timeout=timeout)
    if not done:
        task.cancel()
        task.add_done_callback(_consume_result)
        metrics.STORE_UNAVAILABLE.labels("timeout").inc()
        raise StoreUnavailable(f"no answer within {timeout * 1000:.0f} ms")
    try:
        return task.result()
    except PoolTimeout as exc:
        metrics.STORE_UNAVAILABLE.labels("pool_timeout").inc()
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc
    except psycopg.OperationalError as exc:
        metrics.STORE_UNAVAILABLE.labels("error").inc()
        raise StoreUnavailable(str(exc) or type(exc).__name__) from exc


async def _fetch_one(
    pool: AsyncConnectionPool, name: str, params: dict[str, Any], timeout: float, retries: int
) -> Any:
    """One query on a pooled connection; up to `retries` more attempts, each on
    another connection after a jittered pause, when the driver fails (never on
    a pool timeout: no connection came, waiting again would only be later).
    The caller's time budget bounds all attempts together."""
    # A full pool answers within HOTPATH_POOL_TIMEOUT (PoolTimeout, then 503 or
    # fail-open) even when the request's budget for a slow query is longer.
    checkout = min(timeout, settings.HOTPATH_POOL_TIMEOUT)
    _mark_query_started()
    attempt = 0
    while True:
        try:
            async with pool.connection(timeout=checkout) as conn:
                cursor = await conn.execute(QUERIES[name], params)
                return await cursor.fetchone()
        except PoolTimeout:
            raise
        except psycopg.OperationalError as exc:
            if attempt >= retries:
                raise
            attempt += 1
            metrics.READ_RETRIES.labels(name).inc()
            logger.info("retrying %s after %s (attempt %d)", name, type(exc).__name__, attempt)
            await asyncio.sleep(random.uniform(0, RETRY_BACKOFF * 2**attempt))


def _consume_result(task: asyncio.Future) -> None:
    if not task.cancelled() and task.exception() is not None:
        logger.debug("abandoned query ended with %r", task.exception())


_BATCH_GRACE = 0.1  # seconds
# How long requests wait behind the call in flight before a second call takes
# them (when HOTPATH_BATCH_INFLIGHT allows one): long enough not to split a
# local batch into smaller, dearer ones, short enough to help when the
# database is far away (docs/benchmarks/compare.md).
SECOND_CALL_AFTER = 0.005  # seconds

# Set in each batch's context (Batcher._launch): resolved when the batch's
# query starts, so that the batch before it hands out its answers only then.
_query_started: contextvars.ContextVar[asyncio.Future | None] = contextvars.ContextVar(
    "query_started", default=None
)


def _mark_query_started() -> None:
    started = _query_started.get()
    if started is not None and not started.done():
        started.set_result(None)


def _give_up(future: asyncio.Future, timeout: float) -> None:
    if not future.done():
        future.set_exception(StoreUnavailable(f"no answer within {timeout * 1000:.0f} ms"))


class Batcher:
    """Sends the requests that arrive while an earlier call is in flight as one call.

    Every write locks the budget windows it touches until its transaction
    commits, so writes on a shared budget (every request of an org hits the
    org's window) run one after another, each paying a commit. With one call
    in flight, the requests that arrive meanwhile queue here and go together
    in the next call: one lock and one commit for the whole batch. At low
    load a batch is a single request and nothing waits.

    The server and PostgreSQL work in turn on alternate batches: when a call
    returns, the next batch's query is sent before this batch's answers are
    handed out (handing them out wakes every request of the batch, and the
    event loop would run them all, writing their responses, before a query
    sent afterwards left; PostgreSQL would wait meanwhile). A second call
    (up to HOTPATH_BATCH_INFLIGHT) starts only when a full batch
    (HOTPATH_BATCH_MAX requests) waits, or when requests have waited
    SECOND_CALL_AFTER behind the first (a database far away): starting one
    whenever a slot was free filled the second slot with single requests
    while all the others queued behind them.

    Each request still gets one round trip, and its own answer within its own
    timeout: a batch is cancelled (so nothing of it commits) when its earliest
    request's time is up. Subclasses say how a batch is sent (`send`) and
    which requests may share one (`fits`).
    """

    def __init__(self) -> None:
        self.pending: list[tuple[Any, asyncio.Future, float]] = []
        self.inflight = 0
        self._second_call: asyncio.TimerHandle | None = None

    async def send(self, items: list[Any], timeout: float) -> list[Any]:
        """One result per item, in order; an exception instance in a result's
        place is raised to that item's caller alone. Runs its query through
        `fetch_one` (or `fetch_value`) without awaiting anything else first."""
        raise NotImplementedError

    def fits(self, batch: list[Any], item: Any) -> bool:
        """Whether `item` may join the items already in `batch`."""
        return len(batch) < settings.HOTPATH_BATCH_MAX

    def _may_launch(self) -> bool:
        if self.inflight == 0:
            return True
        return (
            self.inflight < settings.HOTPATH_BATCH_INFLIGHT
            and len(self.pending) >= settings.HOTPATH_BATCH_MAX
        )

    async def submit(self, item: Any, timeout: float | None = None) -> Any:
        timeout = time_left(timeout)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self.pending.append((item, future, loop.time() + timeout))
        if self._may_launch():
            self._launch(loop)
        else:
            self._arm_second_call(loop)
        # The batch answers by this request's deadline (its call has that
        # timeout); the timer only guards against a lost batch. Giving up
        # exactly at the deadline instead would race the batch: a write
        # committed a moment before would be answered 503 and stay. (A timer
        # on the future, not asyncio.wait_for: ~10 us less per request.)
        timer = loop.call_later(timeout + _BATCH_GRACE, _give_up, future, timeout)
        try:
            return await future
        finally:
            timer.cancel()

    def _arm_second_call(self, loop: asyncio.AbstractEventLoop) -> None:
        """Requests wait behind the call in flight: if it is still out after
        SECOND_CALL_AFTER (a database far away), they go in a call of their own."""
        if (
            self._second_call is None
            and self.pending
            and self.inflight < settings.HOTPATH_BATCH_INFLIGHT
        ):
            self._second_call = loop.call_later(SECOND_CALL_AFTER, self._start_second_call, loop)

    def _start_second_call(self, loop: asyncio.AbstractEventLoop) -> None:
        self._second_call = None
        if self.pending and self.inflight < settings.HOTPATH_BATCH_INFLIGHT:
            self._launch(loop)

    def _launch(self, loop: asyncio.AbstractEventLoop) -> asyncio.Future | None:
        """Start a call with the waiting requests that fit in one batch;
        returns a future resolved when its query starts (None: nothing sent)."""
        now = loop.time()
        batch: list[tuple[Any, asyncio.Future, float]] = []
        items: list[Any] = []
        waiting = []
        for entry in self.pending:
            item, future, deadline = entry
            if future.done():
                continue
            if deadline <= now:  # its time ran out while it queued: not sent
                future.set_exception(StoreUnavailable("no answer within the time budget"))
                continue
            if self.fits(items, item):
                batch.append(entry)
                items.append(item)
            else:  # the next batch's, in arrival order
                waiting.append(entry)
        self.pending = waiting
        if self._second_call is not None:
            self._second_call.cancel()
            self._second_call = None
        if not batch:
            return None
        self.inflight += 1
        started = loop.create_future()
        # A fresh context: a batch serves many requests, and its time is its
        # earliest request's (below), not that of whichever request (or
        # earlier batch) launched it.
        context = contextvars.Context()
        context.run(_query_started.set, started)
        loop.create_task(self._run(batch, started, loop), context=context)
        return started

    async def _run(
        self,
        batch: list[tuple[Any, asyncio.Future, float]],
        started: asyncio.Future,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        results: list[Any] | Exception
        try:
            timeout = max(min(deadline for _, _, deadline in batch) - loop.time(), 0.001)
            results = await self.send([item for item, _, _ in batch], timeout)
        except Exception as exc:
            results = exc
        finally:
            if not started.done():
                started.set_result(None)
            self.inflight -= 1
            next_started = None
            while self.pending and self._may_launch():
                launched = self._launch(loop)
                next_started = next_started or launched
            self._arm_second_call(loop)
        if next_started is not None:
            await next_started
        if isinstance(results, Exception):
            for _, future, _ in batch:
                if not future.done():
                    future.set_exception(results)
            return
        for (_, future, _), result in zip(batch, results, strict=True):
            if future.done():
                continue
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)


async def aping() -> bool:
    try:
        return await fetch_value("ping", {}) == 1
    except StoreUnavailable:
        return False
