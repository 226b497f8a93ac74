"""The PostgreSQL store (``postgresql://user@host:5432/db``), for a fleet of proxies.

psycopg 3 async connections, in autocommit mode so that ``conn.transaction()`` is the
only thing that opens (and always closes) a transaction. ``psycopg_pool`` is not a
dependency, so a tiny pool lives here: at most ``pool_size`` connections, made on
demand, kept while idle and healthy, dropped when broken or left mid-transaction.

Why the advisory lock: on PostgreSQL two write transactions run concurrently, so a
read-then-write (read the audit chain's head, insert the next event; read the
applied migrations, apply the rest) would race between processes. ``tx.lock(key)``
takes ``pg_advisory_xact_lock(key, hashtext(current_schema()))``: one lock per key and
schema, held until commit or rollback, so it can never leak, and under READ COMMITTED
every statement after it sees what the previous holder committed.

SQL is written with ``?`` placeholders (like SQLite) and rewritten to psycopg's ``%s``
by :func:`to_pyformat`; a literal ``%`` is escaped and ``?`` inside quotes is left
alone (so the JSONB ``?`` operators are not usable; JSON is TEXT here anyway).
``schema=`` sets the ``search_path`` of every connection (the tests use a fresh schema
each).

When the server goes away (a restart, a failover, a network cut) the store recovers by
itself: an error that says the connection is gone (:func:`is_unavailable`) becomes
:class:`~proxy.errors.StoreUnavailableError` and drops every idle connection (they share
the fate of the one that failed); the next transaction connects afresh. A connection
taken from the idle list may still have died unnoticed, so its ``BEGIN`` doubles as the
liveness check: if it fails for that reason, the transaction starts again on a new
connection (nothing of the caller's has run yet). Waiting for a free connection is bounded
by ``connect_timeout_s`` too, and TCP keepalives plus ``tcp_user_timeout`` are on by
default (:data:`KEEPALIVE_DEFAULTS`, unless the URL sets them), so a transaction waiting
on a server that vanished without a reset fails within about 15 s instead of hanging on
its connection for the kernel's two hours.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import psycopg
from psycopg import pq, sql
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import DictRow, dict_row

from control.audit import utc_now
from control.store.base import Clock, Params, Row, Store, Transaction
from proxy.errors import StoreError, StoreUnavailableError

Conn = psycopg.AsyncConnection[DictRow]

#: libpq settings that bound how long a dead server can hold a connection (seconds;
#: ``tcp_user_timeout`` in ms). The state URL overrides any of them.
KEEPALIVE_DEFAULTS = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2,
                      "keepalives_count": 3, "tcp_user_timeout": 15_000}
# SQLSTATEs that mean "the server is not there for now": connection exceptions (08),
# insufficient resources (53: too many connections, disk full), and a server shutting
# down or starting up (57P01 admin shutdown, 57P02 crash shutdown, 57P03 cannot connect).
_UNAVAILABLE_CLASSES = ("08", "53")
_UNAVAILABLE_STATES = frozenset({"57P01", "57P02", "57P03"})


def is_unavailable(exc: psycopg.Error) -> bool:
    """Whether a driver error means the server cannot be reached (worth retrying later)
    rather than that the statement was wrong. libpq's own errors (no SQLSTATE: refused,
    reset, EOF, connect timeout) are all about the connection."""
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError)
    return state.startswith(_UNAVAILABLE_CLASSES) or state in _UNAVAILABLE_STATES


def translate(exc: psycopg.Error, prefix: str = "postgresql") -> StoreError:
    """The store error for a driver error."""
    cls = StoreUnavailableError if is_unavailable(exc) else StoreError
    first = str(exc).strip().partition("\n")[0]  # libpq adds indented advice lines
    return cls(f"{prefix}: {first}")


@functools.lru_cache(maxsize=1024)
def to_pyformat(query: str) -> str:
    """``?`` -> ``%s`` outside quoted literals/identifiers; ``%`` -> ``%%`` everywhere."""
    out: list[str] = []
    quote: str | None = None
    for ch in query:
        if ch == "%":
            out.append("%%")
        elif quote is not None:
            out.append(ch)
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
            out.append(ch)
        else:
            out.append("%s" if ch == "?" else ch)
    return "".join(out)


class PostgresTransaction(Transaction):
    dialect = "postgresql"

    def __init__(self, conn: Conn, *, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self._conn = conn
        self.closed = False

    async def _run(self, query: str, params: Params, n: int | None) -> tuple[int, list[Row]]:
        if self.closed:
            raise StoreError("transaction already ended")
        try:
            async with self._conn.cursor() as cur:
                await cur.execute(to_pyformat(query), tuple(params))
                if cur.description is None or n == 0:
                    return cur.rowcount, []
                rows = await (cur.fetchall() if n is None else cur.fetchmany(n))
                return cur.rowcount, rows
        except psycopg.Error as exc:
            raise translate(exc) from exc

    async def execute(self, sql: str, params: Params = ()) -> int:
        return (await self._run(sql, params, 0))[0]

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = (await self._run(sql, params, 1))[1]
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return (await self._run(sql, params, None))[1]

    async def lock(self, key: int) -> None:
        await self._run(
            "SELECT pg_advisory_xact_lock(CAST(? AS INTEGER), "
            "hashtext(coalesce(current_schema(), '')))",
            (key,),
            0,
        )


class PostgresStore(Store):
    dialect = "postgresql"

    def __init__(
        self,
        url: str,
        *,
        schema: str | None = None,
        pool_size: int = 4,
        connect_timeout_s: int = 10,
        hmac_key: bytes | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(hmac_key=hmac_key, clock=clock)
        if pool_size < 1:
            raise StoreError("pool_size must be >= 1")
        self._url = url
        self._schema = schema
        self._connect_timeout = connect_timeout_s
        self._slots = asyncio.Semaphore(pool_size)
        self._idle: list[Conn] = []
        self._open = False
        try:
            given = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StoreError(f"postgresql: bad URL: {exc}") from exc
        self._keepalive: dict[str, Any] = {
            k: v for k, v in KEEPALIVE_DEFAULTS.items() if k not in given}

    async def _new_connection(self) -> Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=self._connect_timeout,
                **self._keepalive,
            )
        except psycopg.Error as exc:
            raise translate(exc, "postgresql: cannot connect") from exc
        if self._schema is not None:
            try:
                await conn.execute(
                    sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
                )
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, psycopg.Error):
                    raise translate(exc) from exc
                raise
        return conn

    async def _acquire(self) -> tuple[Conn, bool]:
        """A connection and whether it was reused from the idle list."""
        if not self._open:
            raise StoreError("store is not open")
        try:
            async with asyncio.timeout(self._connect_timeout):
                await self._slots.acquire()
        except TimeoutError:
            raise StoreUnavailableError(
                f"postgresql: no connection free within {self._connect_timeout} s") from None
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn, True
            return await self._new_connection(), False
        except BaseException:
            self._slots.release()
            raise

    async def _release(self, conn: Conn) -> None:
        try:
            healthy = conn.info.transaction_status == pq.TransactionStatus.IDLE
            if self._open and healthy and not conn.closed:
                self._idle.append(conn)
            else:
                await conn.close()
        finally:
            self._slots.release()

    async def _connect(self) -> None:
        if self._open:
            raise StoreError("store is already open")
        self._idle.append(await self._new_connection())  # fail fast on a bad URL
        self._open = True

    async def close(self) -> None:
        self._open = False  # connections still in use are closed when released
        await self._drop_idle()

    async def _drop_idle(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def _begin(self, stack: AsyncExitStack, readonly: bool) -> Conn:
        """A connection inside a fresh transaction (``BEGIN [READ ONLY]``), ended and
        released when ``stack`` closes; a reused connection whose BEGIN finds it dead is
        replaced (nothing of the caller's has run yet)."""
        while True:
            conn, reused = await self._acquire()
            attempt = AsyncExitStack()
            attempt.push_async_callback(self._release, conn)  # runs after the tx ends
            try:
                await conn.set_read_only(readonly)  # BEGIN READ ONLY: no extra round trip
                await attempt.enter_async_context(conn.transaction())
            except BaseException as exc:
                await attempt.aclose()
                if isinstance(exc, psycopg.Error) and reused and is_unavailable(exc):
                    await self._drop_idle()  # its siblings likely died too
                    continue
                raise
            stack.push_async_exit(attempt)
            return conn

    @asynccontextmanager
    async def _transaction(self, *, readonly: bool) -> AsyncIterator[Transaction]:
        try:
            async with AsyncExitStack() as stack:
                tx = PostgresTransaction(await self._begin(stack, readonly), readonly=readonly)
                try:
                    yield tx
                finally:
                    tx.closed = True
        except psycopg.Error as exc:
            error = translate(exc)
            if isinstance(error, StoreUnavailableError):
                await self._drop_idle()
            raise error from exc
        except StoreUnavailableError:
            await self._drop_idle()
            raise
