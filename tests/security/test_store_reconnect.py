"""The stores tell "away for now" from "wrong", and a PostgreSQL store reconnects by itself.

Real databases only: PostgreSQL through a loopback forwarder the test cuts (the shared
server is never stopped), SQLite with another connection holding its write lock.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from control.store import PostgresStore, Store, open_store
from proxy.errors import StoreError, StoreUnavailableError
from tests.harness import pg_schema
from tests.security.tcp_cut import TcpCut, tcp_cut

PG_URL = os.environ.get("SPLITWAY_TEST_POSTGRES_URL")
needs_pg = pytest.mark.skipif(not PG_URL, reason="SPLITWAY_TEST_POSTGRES_URL is not set")


@pytest.fixture
async def pg_via_cut() -> AsyncIterator[tuple[TcpCut, str]]:
    """A forwarder to PostgreSQL and a state URL through it, on a fresh schema."""
    assert PG_URL is not None
    parts = urlsplit(PG_URL)
    with pg_schema(PG_URL, "sw_reconnect") as schema:
        async with tcp_cut(parts.hostname or "127.0.0.1", parts.port or 5432) as fwd:
            user = f"{parts.username}@" if parts.username else ""
            yield fwd, (f"{parts.scheme}://{user}127.0.0.1:{fwd.port}{parts.path}"
                        f"?options=-csearch_path%3D{schema}")


@needs_pg
async def test_postgres_outage_is_unavailable_and_heals(
    pg_via_cut: tuple[TcpCut, str]
) -> None:
    fwd, url = pg_via_cut
    async with open_store(url) as store:
        await store.kv_put("n", "k", 1)
        # Lost in the middle of a transaction: unavailable, nothing committed.
        with pytest.raises(StoreUnavailableError):
            async with store.transaction() as tx:
                await tx.execute("INSERT INTO kv (namespace, key, value_json, updated_at) "
                                 "VALUES ('n', 'lost', '1', 'now')")
                fwd.cut()
                await tx.fetchone("SELECT 1 AS one")
        assert not store.health.available
        # Refused while away; the readiness problem names the store and why.
        with pytest.raises(StoreUnavailableError):
            await store.kv_get("n", "k")
        assert not await store.ping()
        assert "state store unavailable" in (store.health.problem() or "")
        fwd.restore()
        assert await store.ping() and store.health.available
        assert await store.kv_get("n", "k") == 1 and await store.kv_get("n", "lost") is None
        # A wrong statement is a plain store error, not an outage.
        with pytest.raises(StoreError) as wrong:
            async with store.transaction() as tx:
                await tx.fetchone("SELECT nothing FROM nowhere")
        assert not isinstance(wrong.value, StoreUnavailableError)
        assert store.health.available


@needs_pg
async def test_connections_that_died_while_idle_are_replaced(
    pg_via_cut: tuple[TcpCut, str]
) -> None:
    """A restart nobody noticed (no transaction while it happened) costs no failed
    request: the idle connection's BEGIN finds it dead and a new one is made."""
    fwd, url = pg_via_cut
    async with open_store(url) as store:
        for i in range(3):
            await store.kv_put("n", "k", i)
            fwd.cut()
            fwd.restore()
        assert await store.kv_get("n", "k") == 2
        assert store.health.available


@needs_pg
async def test_waiting_for_a_connection_is_bounded(pg_via_cut: tuple[TcpCut, str]) -> None:
    _, url = pg_via_cut
    store = PostgresStore(url, pool_size=1, connect_timeout_s=1)
    await store.open()
    try:
        async with store.transaction(readonly=True):
            with pytest.raises(StoreUnavailableError, match="no connection free"):
                async with store.transaction(readonly=True):
                    pass
        assert await store.ping()
    finally:
        await store.close()


@pytest.fixture
async def sqlite_store(tmp_path: Path) -> AsyncIterator[tuple[Store, Path]]:
    path = tmp_path / "state.db"
    async with open_store(f"sqlite:///{path}?busy_timeout_ms=100") as store:
        yield store, path


async def test_sqlite_locked_by_another_process_is_unavailable(
    sqlite_store: tuple[Store, Path]
) -> None:
    store, path = sqlite_store
    holder = sqlite3.connect(path, timeout=5, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailableError, match="locked"):
            await store.kv_put("n", "k", 1)
        assert not await store.ping()
        # Reads still work, but do not make a store that refuses writes look healthy.
        assert await store.kv_get("n", "k") is None
        assert not store.health.available
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    await store.kv_put("n", "k", 1)
    assert store.health.available and await store.ping()
    with pytest.raises(StoreError) as wrong:
        async with store.transaction() as tx:
            await tx.execute("INSERT INTO nowhere VALUES (1)")
    assert not isinstance(wrong.value, StoreUnavailableError)
