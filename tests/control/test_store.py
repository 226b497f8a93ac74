"""The state store on real databases: migrations, transactions, weights, kv, errors."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest

from control.audit import EventType
from control.store import LATEST_VERSION, PostgresStore, SqliteStore, Store, open_store
from control.store.migrations import apply_migrations
from control.store.postgres import to_pyformat
from proxy.errors import InvalidInputError, StoreError

if TYPE_CHECKING:
    from tests.control.conftest import Target


async def versions(store: Store) -> list[int]:
    async with store.transaction(readonly=True) as tx:
        rows = await tx.fetchall("SELECT version FROM schema_migrations ORDER BY version")
    return [int(r["version"]) for r in rows]


async def test_open_ping_close(target: Target) -> None:
    store = target.store()
    assert not await store.ping()
    await store.open()
    assert await store.ping()
    await store.close()
    assert not await store.ping()
    await store.close()  # twice is fine


async def test_migrations_are_idempotent(target: Target) -> None:
    async with target.store() as first:
        assert await versions(first) == list(range(1, LATEST_VERSION + 1))
        assert await apply_migrations(first) == []
    async with target.store() as second:
        assert await versions(second) == list(range(1, LATEST_VERSION + 1))


async def test_concurrent_opens_migrate_once(target: Target) -> None:
    stores = [target.store() for _ in range(4)]
    try:
        await asyncio.gather(*(s.open() for s in stores))
        assert await versions(stores[0]) == list(range(1, LATEST_VERSION + 1))
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_newer_schema_is_refused(target: Target, store: Store) -> None:
    async with store.transaction() as tx:
        await tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'x', 'now')"
        )
    with pytest.raises(StoreError, match="999"):
        await target.store().open()


async def test_route_weights_round_trip_and_persist(target: Target, store: Store) -> None:
    assert await store.get_route_weights() == {}
    await store.set_route_weights("sentiment", {"stable": 90, "canary": 10}, "alice")
    await store.set_route_weights("other", {"a": 1.5}, "bob")
    await store.set_route_weights("sentiment", {"stable": 50, "canary": 50}, "carol")
    expected = {"sentiment": {"stable": 50.0, "canary": 50.0}, "other": {"a": 1.5}}
    assert await store.get_route_weights() == expected
    await store.close()
    async with target.store() as reopened:
        assert await reopened.get_route_weights() == expected
        events = await reopened.audit.query(type="weights.changed")
        assert [(e.actor, e.resource) for e in events] == [
            ("alice", "route/sentiment"),
            ("bob", "route/other"),
            ("carol", "route/sentiment"),
        ]
        assert events[-1].details == {"weights": {"stable": 50.0, "canary": 50.0}}
        assert events[-1].type is EventType.WEIGHTS_CHANGED
        assert (await reopened.audit.verify()).ok


@pytest.mark.parametrize("weights", [{}, {"a": 0}, {"a": -1}, {"a": float("nan")}, {"a": "1"}])
async def test_bad_weights_are_refused(store: Store, weights: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        await store.set_route_weights("r", weights, "alice")
    assert await store.get_route_weights() == {}


async def test_failing_transaction_writes_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        async with store.transaction() as tx:
            await store.kv_put("ns", "k", {"v": 1}, tx=tx)
            await store.set_route_weights("r", {"a": 1}, "alice", tx=tx)
            raise RuntimeError("boom")
    with pytest.raises(StoreError):
        async with store.transaction() as tx:
            await store.kv_put("ns", "k2", 2, tx=tx)
            await tx.execute("INSERT INTO no_such_table VALUES (1)")
    assert await store.kv_list("ns") == {}
    assert await store.get_route_weights() == {}
    assert await store.audit.query() == []
    # the store is still usable, and the chain did not lose a seq
    await store.set_route_weights("r", {"a": 1}, "alice")
    assert [e.seq for e in await store.audit.query()] == [1]


async def test_transaction_rows_are_dicts_and_tx_dies_with_block(store: Store) -> None:
    async with store.transaction() as tx:
        assert await tx.execute("INSERT INTO kv VALUES (?, ?, ?, ?)", ("n", "k", "1", "t")) == 1
        assert await tx.fetchone("SELECT key, value_json FROM kv") == {
            "key": "k",
            "value_json": "1",
        }
        assert await tx.fetchone("SELECT key FROM kv WHERE key = ?", ("zz",)) is None
    with pytest.raises(StoreError, match="ended"):
        await tx.fetchall("SELECT 1")


async def test_readonly_transaction_refuses_writes(store: Store) -> None:
    with pytest.raises(StoreError):
        async with store.transaction(readonly=True) as tx:
            await tx.execute("INSERT INTO kv VALUES ('n', 'k', '1', 't')")
    assert await store.kv_list("n") == {}
    await store.kv_put("n", "k", 1)  # the connection is back to read-write
    assert await store.kv_get("n", "k") == 1


async def test_kv(store: Store) -> None:
    assert await store.kv_get("rollout", "sentiment") is None
    assert await store.kv_get("rollout", "sentiment", default={}) == {}
    await store.kv_put("rollout", "sentiment", {"step": 1, "weights": [5, 95]})
    await store.kv_put("rollout", "other", "x")
    await store.kv_put("experiment", "sentiment", None)
    await store.kv_put("rollout", "sentiment", {"step": 2})
    assert await store.kv_get("rollout", "sentiment") == {"step": 2}
    assert await store.kv_list("rollout") == {"other": "x", "sentiment": {"step": 2}}
    assert await store.kv_get("experiment", "sentiment", default=0) is None
    assert await store.kv_delete("rollout", "other")
    assert not await store.kv_delete("rollout", "other")
    assert await store.kv_list("rollout") == {"sentiment": {"step": 2}}
    with pytest.raises(InvalidInputError):
        await store.kv_put("rollout", "bad", {"x": object()})


async def test_driver_errors_are_wrapped(store: Store) -> None:
    with pytest.raises(StoreError) as info:
        async with store.transaction(readonly=True) as tx:
            await tx.fetchall("SELECT nope FROM nowhere")
    assert isinstance(info.value.__cause__, sqlite3.Error | psycopg.Error)


async def test_concurrent_writers_in_one_process(store: Store) -> None:
    await asyncio.gather(
        *(store.set_route_weights(f"r{i % 5}", {"a": i + 1}, f"u{i}") for i in range(40))
    )
    result = await store.audit.verify()
    assert (result.ok, result.checked) == (True, 40)
    assert len(await store.get_route_weights()) == 5


async def test_cancelled_writers_leave_the_store_usable(target: Target, store: Store) -> None:
    for i in range(30):
        task = asyncio.create_task(store.set_route_weights("r", {"a": i + 1}, "alice"))
        for _ in range(i % 6):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await asyncio.sleep(0.005)
        # no write lock lingers: another process can write at once
        target.raw("INSERT INTO kv VALUES ('intruder', ?, '1', 't')", (str(i),))
    await store.set_route_weights("r", {"a": 99}, "alice")
    assert await store.get_route_weights() == {"r": {"a": 99.0}}
    events = await store.audit.query(limit=1000)
    assert events[-1].details == {"weights": {"a": 99.0}}
    assert (await store.audit.verify()).ok


async def test_sqlite_waits_for_a_lock_without_blocking_the_loop(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_store(f"sqlite:///{path}") as store:
        intruder = sqlite3.connect(path, isolation_level=None)
        try:
            intruder.execute("BEGIN IMMEDIATE")  # another process holds the write lock
            write = asyncio.create_task(store.kv_put("n", "k", 1))
            ticks = 0
            for _ in range(20):
                await asyncio.sleep(0.01)
                ticks += 1
            assert ticks == 20 and not write.done()
            intruder.execute("COMMIT")
            await asyncio.wait_for(write, 10)
        finally:
            intruder.close()
        assert await store.kv_get("n", "k") == 1


async def test_unreachable_databases_fail_to_open(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        await open_store(f"sqlite:///{tmp_path}/missing-dir/x.db").open()
    with pytest.raises(StoreError):
        await PostgresStore("postgresql://nobody@127.0.0.1:1/x", connect_timeout_s=2).open()


def test_open_store_urls(tmp_path: Path) -> None:
    rel = open_store("sqlite:///state/rel.db")
    assert isinstance(rel, SqliteStore) and rel.path == "state/rel.db"
    absolute = open_store("sqlite:////var/lib/x.db?busy_timeout_ms=5&synchronous=normal")
    assert isinstance(absolute, SqliteStore) and absolute.path == "/var/lib/x.db"
    assert isinstance(open_store("postgresql://u@h:5432/db"), PostgresStore)
    assert isinstance(open_store("postgres://u@h/db", schema="s"), PostgresStore)
    for bad in ["mysql://x", "sqlite:relative.db", "sqlite://", "sqlite:///x.db?foo=1"]:
        with pytest.raises(StoreError):
            open_store(bad)
    with pytest.raises(StoreError):
        open_store("sqlite:///x.db", schema="s")


async def test_relative_sqlite_path_is_relative_to_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with open_store("sqlite:///rel.db") as store:
        await store.kv_put("n", "k", 1)
    assert (tmp_path / "rel.db").exists()


def test_placeholder_rewrite() -> None:
    assert to_pyformat("SELECT a FROM t WHERE b = ? AND c = ?") == (
        "SELECT a FROM t WHERE b = %s AND c = %s"
    )
    assert to_pyformat("SELECT '?', \"q?\", 'it''s ?' WHERE x LIKE 'a%' AND y = ?") == (
        "SELECT '?', \"q?\", 'it''s ?' WHERE x LIKE 'a%%' AND y = %s"
    )
