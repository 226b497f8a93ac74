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
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import psycopg
from psycopg import pq, sql
from psycopg.rows import DictRow, dict_row

from control.audit import utc_now
from control.store.base import Clock, Params, Row, Store, Transaction
from proxy.errors import StoreError

Conn = psycopg.AsyncConnection[DictRow]


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
            raise StoreError(f"postgresql: {exc}") from exc

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

    async def _new_connection(self) -> Conn:
        try:
            conn = await psycopg.AsyncConnection.connect(
                self._url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=self._connect_timeout,
            )
        except psycopg.Error as exc:
            raise StoreError(f"postgresql: cannot connect: {exc}") from exc
        if self._schema is not None:
            try:
                await conn.execute(
                    sql.SQL("SET search_path TO {}").format(sql.Identifier(self._schema))
                )
            except BaseException as exc:
                await conn.close()
                if isinstance(exc, psycopg.Error):
                    raise StoreError(f"postgresql: {exc}") from exc
                raise
        return conn

    async def _acquire(self) -> Conn:
        if not self._open:
            raise StoreError("store is not open")
        await self._slots.acquire()
        try:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
            return await self._new_connection()
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
        idle, self._idle = self._idle, []
        for conn in idle:
            await conn.close()

    async def ping(self) -> bool:
        try:
            async with self.transaction(readonly=True) as tx:
                await tx.fetchone("SELECT 1 AS ok")
        except StoreError:
            return False
        return True

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[Transaction]:
        conn = await self._acquire()
        tx: PostgresTransaction | None = None
        try:
            async with conn.transaction():
                if readonly:
                    await conn.execute("SET TRANSACTION READ ONLY")
                tx = PostgresTransaction(conn, readonly=readonly)
                try:
                    yield tx
                finally:
                    tx.closed = True
        except psycopg.Error as exc:
            raise StoreError(f"postgresql: {exc}") from exc
        finally:
            await self._release(conn)
