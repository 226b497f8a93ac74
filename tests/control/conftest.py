"""Store fixtures: every store test runs on SQLite and, when configured, PostgreSQL.

PostgreSQL comes from ``SPLITWAY_TEST_POSTGRES_URL``; each test gets a fresh schema
(``search_path`` set through the store's ``schema=``), dropped afterwards. Without the
variable the PostgreSQL parameters skip with a reason.
"""

from __future__ import annotations

import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from control.store import Store, open_store
from control.store.postgres import to_pyformat
from tests.harness import pg_schema

PG_URL = os.environ.get("SPLITWAY_TEST_POSTGRES_URL")
WRITER = Path(__file__).with_name("audit_writer.py")

BACKENDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not PG_URL, reason="SPLITWAY_TEST_POSTGRES_URL is not set"),
        ],
    ),
]


class FakeClock:
    """An aware UTC clock that moves one second per call."""

    def __init__(self, start: datetime = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now


@dataclass
class Target:
    """One database to test against: how to open it, from here or from a subprocess."""

    kind: str
    url: str
    schema: str | None = None

    def store(self, **kwargs: Any) -> Store:
        return open_store(self.url, schema=self.schema, **kwargs)

    def argv(self) -> list[str]:
        return ["--url", self.url] + (["--schema", self.schema] if self.schema else [])

    def writer(self, *args: str) -> list[str]:
        return [sys.executable, str(WRITER), *self.argv(), *args]

    def raw(self, statement: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run SQL (``?`` placeholders) behind the store's back, as an intruder would."""
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.url.removeprefix("sqlite:///"), isolation_level=None)
            try:
                return conn.execute(statement, tuple(params)).fetchall()
            finally:
                conn.close()
        assert PG_URL and self.schema
        with psycopg.connect(PG_URL, autocommit=True) as pg:
            pg.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(self.schema)))
            cur = pg.execute(to_pyformat(statement), tuple(params))
            return cur.fetchall() if cur.description else []


@pytest.fixture(params=BACKENDS)
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        yield Target("sqlite", f"sqlite:///{tmp_path}/state.db")
        return
    assert PG_URL
    with pg_schema(PG_URL, "sw_test") as schema:
        yield Target("postgres", PG_URL, schema)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(target: Target, clock: FakeClock) -> AsyncIterator[Store]:
    async with target.store(clock=clock) as opened:
        yield opened
