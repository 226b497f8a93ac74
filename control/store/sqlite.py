"""The embedded SQLite store (``sqlite:///path.db``), the default for a single host.

Why one dedicated worker thread: the ``sqlite3`` module blocks, and a write can wait
up to ``busy_timeout`` for another process's lock, so no sqlite3 call may run on the
event loop. Every call goes to a ``ThreadPoolExecutor(max_workers=1)`` owned by the
store. One thread, one connection: SQLite connections must not be shared across threads
(the connection is created on the worker, so ``check_same_thread`` holds), and calls
run strictly in submission order, so ``BEGIN``/statements/``COMMIT`` of a transaction
never interleave oddly. An ``asyncio.Lock`` gives each transaction the connection for
its whole duration; other coroutines queue on the lock, never on a blocked loop.

Settings: WAL journal (readers do not block the writer, and a commit survives the
process being killed), ``synchronous=FULL`` by default (a commit also survives power
loss; ``?synchronous=normal`` trades that for speed), ``busy_timeout`` (default 30 s,
``?busy_timeout_ms=``). Write transactions are ``BEGIN IMMEDIATE``, so they are
exclusive across processes from their first statement, which also serialises audit
appends (``lock()`` is a no-op here). Read-only transactions are plain ``BEGIN`` under
``PRAGMA query_only``.

Unavailable, not broken: SQLite answers "database is locked" when another process holds
the write lock past ``busy_timeout`` (an operator's ``sqlite3`` shell left in a
transaction, a long maintenance job), and I/O, disk-full or cannot-open errors when the
file system misbehaves. Those may pass, so they surface as
:class:`~proxy.errors.StoreUnavailableError` (503 with ``Retry-After``); anything else
(a constraint, bad SQL) stays a plain :class:`~proxy.errors.StoreError`.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from control.audit import utc_now
from control.store.base import Clock, Params, Row, Store, Transaction
from proxy.errors import StoreError, StoreUnavailableError

T = TypeVar("T")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")
# Primary result codes that say "not now" rather than "wrong": BUSY, LOCKED, IOERR, FULL,
# CANTOPEN, PROTOCOL (https://www.sqlite.org/rescode.html).
UNAVAILABLE_CODES = frozenset({5, 6, 10, 13, 14, 15})


def translate(exc: sqlite3.Error) -> StoreError:
    """The store error for a sqlite3 error: unavailable (worth retrying) or not."""
    code = getattr(exc, "sqlite_errorcode", None)
    unavailable = isinstance(code, int) and (code & 0xFF) in UNAVAILABLE_CODES
    return (StoreUnavailableError if unavailable else StoreError)(f"sqlite: {exc}")


class SqliteTransaction(Transaction):
    dialect = "sqlite"

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection, *, readonly: bool) -> None:
        super().__init__(readonly=readonly)
        self._store = store
        self._conn = conn
        self.closed = False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.closed:
            raise StoreError("transaction already ended")
        return await self._store.call(fn, self._conn, *args)

    async def execute(self, sql: str, params: Params = ()) -> int:
        return await self._run(_execute, sql, params)

    async def fetchone(self, sql: str, params: Params = ()) -> Row | None:
        rows = await self._run(_fetch, sql, params, 1)
        return rows[0] if rows else None

    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]:
        return await self._run(_fetch, sql, params, None)

    async def lock(self, key: int) -> None:
        if self.readonly:
            raise StoreError("cannot take a write lock in a read-only transaction")
        # BEGIN IMMEDIATE already holds the database write lock.


class SqliteStore(Store):
    dialect = "sqlite"

    def __init__(
        self,
        path: str,
        *,
        busy_timeout_ms: int = 30_000,
        synchronous: str = "FULL",
        hmac_key: bytes | None = None,
        clock: Clock = utc_now,
    ) -> None:
        super().__init__(hmac_key=hmac_key, clock=clock)
        if synchronous.upper() not in SYNCHRONOUS:
            raise StoreError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}")
        self.path = path
        self._busy_ms = int(busy_timeout_ms)
        self._synchronous = synchronous.upper()
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None
        self._lock = asyncio.Lock()

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on the worker thread; sqlite3 errors become StoreError."""
        if self._executor is None:
            raise StoreError("store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def _connect(self) -> None:
        if self._executor is not None:
            raise StoreError("store is already open")
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="splitway-sqlite")
        try:
            self._conn = await self.call(self._open_connection)
        except BaseException:
            self._shutdown()
            raise

    def _open_connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=self._busy_ms / 1000, isolation_level=None)
        try:
            conn.row_factory = sqlite3.Row
            conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
            self._enable_wal(conn)
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            conn.execute("PRAGMA foreign_keys = ON")
        except BaseException:
            conn.close()
            raise
        return conn

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """Switch to WAL, retrying while another connection holds the lock.

        Changing the journal mode of a fresh database answers "database is locked" at once
        when another process is doing the same — the busy timeout does not cover it — so
        two proxies starting together would fail without this retry (on the store's own
        worker thread, never the event loop)."""
        deadline = time.monotonic() + self._busy_ms / 1000
        delay = 0.005
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 0.2)

    def _shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)  # the worker is idle: returns at once
            self._executor = None

    async def close(self) -> None:
        async with self._lock:  # let a running transaction finish
            conn, self._conn = self._conn, None
            try:
                if conn is not None:
                    await self.call(conn.close)
            finally:
                self._shutdown()

    @asynccontextmanager
    async def _transaction(self, *, readonly: bool) -> AsyncIterator[Transaction]:
        async with self._lock:
            if self._conn is None:
                raise StoreError("store is not open")
            conn = self._conn
            try:
                await self.call(_begin, conn, readonly)
            except asyncio.CancelledError:
                # the BEGIN still runs on the worker: queue its undo, or the write lock
                # would be held until this connection's next transaction
                await self.call(_end, conn, readonly, False)
                raise
            tx = SqliteTransaction(self, conn, readonly=readonly)
            try:
                yield tx
            except BaseException:
                tx.closed = True
                await self.call(_end, conn, readonly, False)
                raise
            tx.closed = True
            await self.call(_end, conn, readonly, True)


# -- functions run on the worker thread ----------------------------------------------


def _execute(conn: sqlite3.Connection, sql: str, params: Params) -> int:
    return conn.execute(sql, tuple(params)).rowcount


def _fetch(conn: sqlite3.Connection, sql: str, params: Params, n: int | None) -> list[Row]:
    cur = conn.execute(sql, tuple(params))
    try:
        rows = cur.fetchall() if n is None else cur.fetchmany(n)
    finally:
        cur.close()
    return [dict(row) for row in rows]


def _begin(conn: sqlite3.Connection, readonly: bool) -> None:
    if conn.in_transaction:  # defensive: never nest into a transaction left open
        conn.execute("ROLLBACK")
    conn.execute(f"PRAGMA query_only = {int(readonly)}")
    try:
        conn.execute("BEGIN" if readonly else "BEGIN IMMEDIATE")
    except BaseException:
        conn.execute("PRAGMA query_only = 0")
        raise


def _end(conn: sqlite3.Connection, readonly: bool, commit: bool) -> None:
    try:
        if commit:
            try:
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        elif conn.in_transaction:
            conn.execute("ROLLBACK")
    finally:
        if readonly:
            conn.execute("PRAGMA query_only = 0")
