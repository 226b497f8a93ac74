"""The state store interface: one async API, two databases (SQLite and PostgreSQL).

Later code grows on one primitive, ``async with store.transaction() as tx``: ``tx``
runs SQL written with ``?`` placeholders on both dialects (the PostgreSQL adapter
rewrites them), returns rows as dicts, and commits when the block ends or rolls back
when it raises. Every write goes through a transaction, so a change and the audit
event describing it (``store.audit.append(tx, ...)``) commit together or not at all.

- A write transaction is exclusive for the writes that need it: on SQLite it is
  ``BEGIN IMMEDIATE`` (the database write lock is taken up front, so two writers never
  deadlock upgrading a read lock); on PostgreSQL ``tx.lock(key)`` takes a
  transaction-scoped advisory lock where a code path must read-then-write without a
  race (the audit head, the migration runner).
- ``transaction(readonly=True)`` is a consistent read that takes no write lock and
  refuses writes on both dialects.
- JSON lives in TEXT columns and timestamps in fixed-width RFC 3339 TEXT (string order
  is time order), so the SQL is shared between the dialects.
- Database errors surface as :class:`proxy.errors.StoreError` (chained to the driver's
  error); exceptions raised by the caller's own code pass through unchanged. When the
  database cannot be reached (connection refused or lost, pool exhausted, database
  locked) the error is its subclass :class:`proxy.errors.StoreUnavailableError` (503,
  worth retrying), and ``store.health`` (:mod:`control.store.health`) records it.

The concrete methods here (route weights, the generic ``kv`` table) are written once
against ``Transaction`` and take an optional ``tx`` to join a caller's transaction.
"""

from __future__ import annotations

import asyncio
import json
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import datetime
from types import TracebackType
from typing import Any, ClassVar, Self

from control.audit import AuditLog, EventType, canonical_json, format_ts, utc_now
from control.store.health import StoreHealth
from control.store.migrations import apply_migrations
from proxy.errors import InvalidInputError, StoreError, StoreUnavailableError

Row = dict[str, Any]
Params = Sequence[Any]
Clock = Callable[[], datetime]

#: how long a readiness ping may take before the store counts as unavailable
PING_TIMEOUT_S = 2.0


class Transaction(ABC):
    """One database transaction; SQL uses ``?`` placeholders on every dialect."""

    dialect: ClassVar[str]

    def __init__(self, *, readonly: bool) -> None:
        self.readonly = readonly

    @abstractmethod
    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; the number of rows it changed (-1 when unknown)."""

    @abstractmethod
    async def fetchone(self, sql: str, params: Params = ()) -> Row | None: ...

    @abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Row]: ...

    @abstractmethod
    async def lock(self, key: int) -> None:
        """Serialise against every other transaction taking ``key``, until this one ends."""


class Store(ABC):
    """A state store; ``await open()``/``await close()`` or ``async with``."""

    dialect: ClassVar[str]

    def __init__(self, *, hmac_key: bytes | None = None, clock: Clock = utc_now) -> None:
        self.clock = clock
        self.audit = AuditLog(self, hmac_key=hmac_key, clock=clock)
        self.health = StoreHealth()

    async def open(self) -> None:
        """Connect and bring the schema up to date (see :mod:`control.store.migrations`)."""
        await self._connect()
        try:
            await apply_migrations(self)
        except BaseException:
            await self.close()
            raise

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def close(self) -> None:
        """Release every connection and thread; safe to call twice."""

    async def ping(self, timeout_s: float = PING_TIMEOUT_S) -> bool:
        """Whether the database starts a write transaction within ``timeout_s``
        (readiness; nothing is written); the outcome updates ``health``. A write
        transaction, because a store that still reads but cannot take writes (a SQLite
        file another process keeps locked) refuses every admin write."""
        try:
            async with asyncio.timeout(timeout_s), self.transaction() as tx:
                await tx.fetchone("SELECT max(version) AS v FROM schema_migrations")
        except TimeoutError:
            self.health.failed(f"no answer within {timeout_s:g} s", write=True)
            return False
        except StoreError:
            return False
        return True

    @asynccontextmanager
    async def transaction(self, *, readonly: bool = False) -> AsyncIterator[Transaction]:
        """Commit on normal exit, roll back when the block raises; the outcome (reached
        or unavailable) updates ``health``."""
        try:
            async with self._transaction(readonly=readonly) as tx:
                yield tx
        except StoreUnavailableError as exc:
            self.health.failed(exc.detail, write=not readonly)
            raise
        self.health.succeeded(write=not readonly)

    @abstractmethod
    def _transaction(self, *, readonly: bool) -> AbstractAsyncContextManager[Transaction]:
        """The dialect's transaction: commit on normal exit, roll back when it raises."""

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _joined(
        self, tx: Transaction | None, *, readonly: bool = False
    ) -> AsyncIterator[Transaction]:
        if tx is not None:
            yield tx
        else:
            async with self.transaction(readonly=readonly) as own:
                yield own

    def now(self) -> str:
        return format_ts(self.clock())

    # -- route weight overrides ------------------------------------------------------

    async def get_route_weights(
        self, *, tx: Transaction | None = None
    ) -> dict[str, dict[str, float]]:
        """Every route's weight override, ``{route: {variant: weight}}``."""
        async with self._joined(tx, readonly=True) as t:
            rows = await t.fetchall("SELECT route, weights_json FROM route_weights ORDER BY route")
        return {
            str(r["route"]): {str(k): float(v) for k, v in json.loads(r["weights_json"]).items()}
            for r in rows
        }

    async def set_route_weights(
        self,
        route: str,
        weights: Mapping[str, float],
        actor: str,
        *,
        tx: Transaction | None = None,
    ) -> None:
        """Replace a route's weights and audit it (``weights.changed``), in one transaction."""
        clean = _check_weights(weights)
        async with self._joined(tx) as t:
            await t.execute(
                "INSERT INTO route_weights (route, weights_json, updated_by, updated_at) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (route) DO UPDATE SET "
                "weights_json = excluded.weights_json, updated_by = excluded.updated_by, "
                "updated_at = excluded.updated_at",
                (route, json.dumps(clean), actor, self.now()),
            )
            await self.audit.append(
                t, EventType.WEIGHTS_CHANGED, actor, f"route/{route}", {"weights": clean}
            )

    # -- generic key/value state (rollouts, experiments...) --------------------------

    async def kv_get(
        self, namespace: str, key: str, default: Any = None, *, tx: Transaction | None = None
    ) -> Any:
        async with self._joined(tx, readonly=True) as t:
            row = await t.fetchone(
                "SELECT value_json FROM kv WHERE namespace = ? AND key = ?", (namespace, key)
            )
        return default if row is None else json.loads(row["value_json"])

    async def kv_list(self, namespace: str, *, tx: Transaction | None = None) -> dict[str, Any]:
        async with self._joined(tx, readonly=True) as t:
            rows = await t.fetchall(
                "SELECT key, value_json FROM kv WHERE namespace = ? ORDER BY key", (namespace,)
            )
        return {str(r["key"]): json.loads(r["value_json"]) for r in rows}

    async def kv_put(
        self, namespace: str, key: str, value: Any, *, tx: Transaction | None = None
    ) -> None:
        try:
            text = canonical_json(value)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"value is not JSON: {exc}", field="value") from exc
        async with self._joined(tx) as t:
            await t.execute(
                "INSERT INTO kv (namespace, key, value_json, updated_at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (namespace, key) DO UPDATE SET "
                "value_json = excluded.value_json, updated_at = excluded.updated_at",
                (namespace, key, text, self.now()),
            )

    async def kv_delete(self, namespace: str, key: str, *, tx: Transaction | None = None) -> bool:
        """Whether the key existed."""
        async with self._joined(tx) as t:
            n = await t.execute("DELETE FROM kv WHERE namespace = ? AND key = ?", (namespace, key))
        return n > 0


def _check_weights(weights: Mapping[str, float]) -> dict[str, float]:
    clean: dict[str, float] = {}
    for variant, weight in weights.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise InvalidInputError(f"weight of {variant!r} is not a number", field="weights")
        if not math.isfinite(weight) or weight < 0:
            raise InvalidInputError(f"weight of {variant!r} must be >= 0", field="weights")
        clean[str(variant)] = float(weight)
    if not any(clean.values()):
        raise InvalidInputError("weights must not all be zero", field="weights")
    return clean
